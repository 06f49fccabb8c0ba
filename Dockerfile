# slime operator image: `slime run` as a non-root user.
# BASE: any image with Python >= 3.11 and pip (the local test bed passes its own Debian-built one).
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY slime ./slime
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${BASE}
RUN useradd --uid 65532 --create-home --shell /usr/sbin/nologin slime
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["slime", "run"]
CMD ["--all-namespaces"]

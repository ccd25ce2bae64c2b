# secondary-dns-operator: the two commands a newcomer needs are `make test`
# (sets everything up, then runs every tier) and, with the demo issue, `make demo`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-packages venv binaries test test-unit test-dataplane test-cluster lint clean

setup: system-packages venv binaries

# Debian packages the tests and the local cluster use (BIND 9, iproute2 for
# network namespaces, openssl for the local cluster's certificates).
system-packages:
	@bash hack/install-system-packages

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Builds (or reuses from ~/.cache/secondary-dns) etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and kwok.
binaries: venv
	PYTHON=$(PY) hack/local-cluster build >/dev/null

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-dataplane: setup
	$(PY) -m pytest tests/dataplane $(PYTEST_ARGS)

test-cluster: setup
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check operator hack/localcluster tests
	$(PY) -m ruff format --check operator hack/localcluster tests
	$(PY) -m mypy operator/secondary_dns hack/localcluster
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

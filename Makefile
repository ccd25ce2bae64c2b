# secondary-dns-operator: the two commands a newcomer needs are `make demo`
# (sets everything up and runs the local demo) and `make test` (every tier).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-packages venv binaries image demo demo-down test test-unit test-dataplane test-cluster bench bench-pods bench-scale bench-agent-apply bench-availability lint clean

setup: system-packages venv binaries image

# Debian packages the tests and the local cluster use (BIND 9, Knot DNS, iproute2 for
# network namespaces, openssl for the local cluster's certificates, nftables
# for its kube-proxy, podman, buildah, runc and mmdebstrap for the image).
system-packages:
	@bash hack/install-system-packages

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Builds (or reuses from ~/.cache/secondary-dns) etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kube-proxy, kwok, helm and
# kubeconform; then Flux's source-controller and kustomize-controller with their
# CRDs, and the kstatus checker (hack/local-flux, docs/local-cluster.md).
binaries: venv
	PYTHON=$(PY) hack/local-cluster build >/dev/null
	PYTHON=$(PY) hack/local-flux build >/dev/null

# The project's image (Dockerfile), built here without a registry and cached by
# content: an unchanged tree builds nothing (hack/image.py).
image: system-packages
	python3 hack/image.py build

# The local demo: local cluster, real primary, operator, 3 real named replicas
# over 3 failure zones; bumps the serial and shows how fast it propagates.
demo: setup
	PYTHON=$(PY) hack/demo $(DEMO_ARGS)

demo-down:
	PYTHON=$(PY) hack/local-cluster down

# Propagation benchmark (minutes): p50/p99 in milliseconds for the relay, the primary's
# own fan-out and a lost NOTIFY (bench/propagation.py --help).
bench: setup
	PYTHON=$(PY) PYTHONPATH=hack:operator $(PY) bench/propagation.py $(BENCH_ARGS)

# Availability benchmark (about 15 minutes): failed queries through the Service
# while the StatefulSet rolls, a pod is deleted, the operator restarts, Zones come
# and go and the primary is away (dnsperf's fixed source ports, and a client with a
# new source port per query).
bench-availability: setup
	PYTHON=$(PY) PYTHONPATH=hack:operator $(PY) bench/availability.py $(BENCH_ARGS)

# Pod start benchmark: scheduled -> containers running -> Ready, per DNS pod.
bench-pods: setup
	PYTHON=$(PY) PYTHONPATH=hack:operator $(PY) bench/pod_start.py $(BENCH_ARGS)

# Scale benchmark (issue 16): N Zones on one SecondaryServer of 3 replicas; prints
# convergence, the operator's RSS, CPU and API writes when quiet, one-Zone changes.
N ?= 1000
bench-scale: setup
	PYTHON=$(PY) PYTHONPATH=hack:operator $(PY) bench/scale.py --zones $(N) $(BENCH_ARGS)

# The agent's apply of a one-zone change among N zones (issue 16), BIND 9 and Knot
# DNS on loopback: check, write and reload times, the engine's RSS.
ZONES ?= 1000,10000
bench-agent-apply: setup
	PYTHONPATH=.:hack:operator $(PY) bench/agent_apply.py --zones $(ZONES) $(BENCH_ARGS)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-dataplane: setup
	$(PY) -m pytest tests/dataplane $(PYTEST_ARGS)

test-cluster: setup
	$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check operator hack/localcluster hack/image.py tests bench
	$(PY) -m ruff format --check operator hack/localcluster hack/image.py tests
	$(PY) -m mypy operator/secondary_dns hack/localcluster hack/image.py bench
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# mlops-operator — developer entry points. Everything installs into .venv at the repo root.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# test files run in parallel workers (pytest-xdist), each with a control plane, MLflow, node and
# Prometheus of its own; a file's tests stay together (they share its fixtures)
TEST_WORKERS ?= 4
HELM_VERSION ?= v3.19.0
HELM := $(shell go env GOPATH 2>/dev/null || echo $(HOME)/go)/bin/helm
# the same version and place as tests/integration/chart/test_workflows.py looks for
ACTIONLINT_VERSION ?= v1.7.7
MLOPS_CACHE_DIR ?= $(HOME)/.cache/mlops-operator
ACTIONLINT := $(MLOPS_CACHE_DIR)/actionlint/$(ACTIONLINT_VERSION)/actionlint
CHART := charts/mlops-operator

.PHONY: install constraints binaries helm actionlint argocd-health tools crds crds-check lint test test-install test-unit test-integration demo demo-down bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the project, editable, with every extra, at the versions of constraints.txt
$(VENV)/.installed: pyproject.toml localstack/pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e ./localstack -e '.[runtime,dev,dvc]'
	touch $@

# re-resolve every dependency afresh (newest releases) in a scratch venv and pin them; run the
# tests before committing the new constraints.txt
constraints:
	rm -rf $(VENV)-constraints && $(PY) -m venv $(VENV)-constraints
	$(VENV)-constraints/bin/pip install -q --upgrade pip
	$(VENV)-constraints/bin/pip install -q -e ./localstack -e '.[runtime,dev,dvc]'
	{ sed -n '/^#/p' constraints.txt; $(VENV)-constraints/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf $(VENV)-constraints

install: $(VENV)/.installed

# etcd, kube-apiserver, kube-controller-manager, kubectl, and Prometheus with Kubernetes service
# discovery: found, or built once from the Go module proxy into ~/.cache/mlops-operator/
binaries: install
	$(BIN)/mlops-operator local build
	$(BIN)/python -m mlops_localstack.prometheus build
	bash hack/system-packages.sh

# helm, for linting and rendering the chart in the tests (built from the Go module proxy)
$(HELM):
	GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

helm: $(HELM)

# actionlint, for the workflows (built from the Go module proxy like helm)
$(ACTIONLINT):
	mkdir -p $(dir $@)
	cd $(dir $@) && GOBIN=$(abspath $(dir $@)) CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
		go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

actionlint: $(ACTIONLINT)

# hack/argocd-health: the chart's Argo CD health script in gopher-lua (Argo CD's Lua), built
# from the Go module proxy into the cache under a digest of its sources (tests/argocd_health.py)
argocd-health: install
	$(BIN)/python -c 'import sys; sys.path.insert(0, "tests"); from argocd_health import ensure_binary; print(ensure_binary())'

# every tool the tests need beyond Python: built from the Go module proxy, nothing from apt
tools: helm actionlint argocd-health

crds: install
	$(BIN)/python -m mlops_operator.crdgen crds/

crds-check: install
	$(BIN)/python -m mlops_operator.crdgen --check crds/

lint: install helm actionlint
	$(BIN)/ruff check .
	$(BIN)/python -m mlops_operator.crdgen --check crds/
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set 'watchNamespaces={a,b}' --set peering=mlops \
		--set replicaCount=2 --set networkPolicy.enabled=true --set dashboard.enabled=true \
		--set prometheusRule.enabled=true --set mlflow.enabled=true
	$(ACTIONLINT) -no-color

# the whole suite: unit, integration (real control plane + MLflow), e2e, and the helm-install
# suites (tests/integration/chart: one audited control plane per worker that runs them)
test: install binaries tools
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=30 $(PYTEST_ARGS)

# only the helm-install suites (issue 12's proof: a control plane with an audit log, the operator
# as a pod running the examples end to end, HA with two operator pods)
test-install: install binaries tools
	$(BIN)/pytest -n 2 --dist loadfile -m install $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install binaries
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# the local stack plus the demo loop (see README)
demo: install binaries
	$(BIN)/python hack/demo.py

demo-down:
	$(BIN)/mlops-operator local down

bench: install
	$(BIN)/python bench/serving/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

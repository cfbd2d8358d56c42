# The README's commands are the contract: `make test` on a fresh machine installs everything
# it needs (a virtual environment, the Go-built control plane, Prometheus) and runs every test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# `make test` runs lint, types and every test: unit, against the real local control plane
# (hack/cluster), and packaging (a wheel in a clean virtual environment).
.PHONY: demo test e2e-real venv lint typecheck pytest test-clients images test-images krew crds dashboards cluster-tools cluster-up cluster-down bench-analysis bench-operator bench-serving bench-cache bench-gateway bench-streaming bench-cold bench-safety bench-tracing clean

test: lint typecheck pytest

# `make demo` brings up the whole stack on this machine and runs a real rollout (hack/demo.py).
demo: $(STAMP) cluster-tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m hack.demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,serving,otlp,torch,tensorflow]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

# mypy strict over every package. The folders are mapped under `cutover` (pyproject's
# package-dir), so mypy reads them through links laid out as the import names.
TYPETREE := .mypy_cache/tree
typecheck: $(STAMP)
	rm -rf $(TYPETREE) && mkdir -p $(TYPETREE)/cutover
	ln -s $(CURDIR)/operator $(TYPETREE)/cutover/operator
	ln -s $(CURDIR)/operator/analysis $(TYPETREE)/cutover/analysis
	ln -s $(CURDIR)/operator/api $(TYPETREE)/cutover/api
	ln -s $(CURDIR)/serving $(TYPETREE)/cutover/serving
	cd $(TYPETREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml --namespace-packages \
		--explicit-package-bases -p cutover.operator -p cutover.analysis -p cutover.api -p cutover.serving

cluster-tools:
	hack/build-tools
	hack/system-deps

# Clients the tests drive cutover serve with, each cached: Triton's perf_analyzer (libb64 from
# hack/system-deps) and KServe's REST client in KServe's own environment; and kstatus, which
# reads ModelDeployments as Flux does; and krew, which installs `kubectl cutover` as users do.
test-clients: $(STAMP) cluster-tools
	hack/perf-analyzer
	hack/kserve-client
	hack/build-kstatus
	hack/krew

pytest: $(STAMP) cluster-tools test-clients test-images
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest

# The images (Dockerfile) built with podman on a Debian base made by debootstrap (hack/images):
# every target, or those the container tests run (tests/containers). Each prints its build time
# and size; `hack/images save DIR` writes them as archives for containerd or another machine.
images: cluster-tools
	hack/images

test-images: cluster-tools
	hack/images operator serving gateway

# The canary scenario with pods that really run, on one real node beside kwok's (hack/node: the
# kubelet and containerd built by hack/build-node, Debian's runc and CNI plugins) with the serving
# image (hack/images, which the test builds or reuses) loaded into it. Slower than the rest and needs
# root, so `make test` leaves it out (the realnode marker); hack/README gives its run time.
e2e-real: $(STAMP) cluster-tools
	hack/build-node
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -m realnode tests/e2e/test_real_node.py

cluster-up: $(STAMP)
	@hack/cluster up

cluster-down:
	@hack/cluster down

bench-analysis: $(STAMP)
	$(BIN)/python benchmarks/analysis.py

bench-operator: $(STAMP) cluster-tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/operator_scale.py

# Installs MLServer, KServe and Triton into .bench/ (pinned), wrk with apt-get when missing, and perf_analyzer
# with hack/perf-analyzer (its libb64 comes from hack/system-deps).
bench-serving: $(STAMP)
	hack/system-deps
	$(BIN)/python benchmarks/serving.py

# The prediction cache's hit path beside its miss path and beside no cache (wrk, two cutover serve).
bench-cache: $(STAMP)
	$(BIN)/python benchmarks/cache.py

bench-gateway: $(STAMP) cluster-tools
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/gateway.py

# Time to the first token of streamed chat: the upstream directly, cutover serve, the gateway, a SafetyPolicy.
bench-streaming: $(STAMP)
	$(BIN)/python benchmarks/streaming.py

# What running code that has not run for a while costs on this machine (the CPU time of serve's gRPC
# handler, onnxruntime and numpy back to back and after a gap): behind every one-call-in-flight figure.
bench-cold: $(STAMP)
	$(BIN)/python benchmarks/cold_code.py

# Tracing's cost on the REST path: off, on, and 1% sampled (wrk, three cutover serve, one run).
bench-tracing: $(STAMP)
	$(BIN)/python benchmarks/tracing.py

# SafetyPolicy filters on their held-out test splits beside offline baselines, and the latency
# they add to a chat request (issue 15's targets).
bench-safety: $(STAMP)
	$(BIN)/python benchmarks/safety.py

# The kubectl plugin's krew archive (build/krew/) and its manifest plugins/cutover.yaml, whose
# sha256 a test checks: run it after changing operator/kubectl_plugin.py.
krew: $(STAMP)
	$(BIN)/python -m hack.krew_package

crds: $(STAMP)
	$(BIN)/cutover crds --output crds
	$(BIN)/cutover crds --output charts/cutover/crds

# The Grafana dashboards the chart ships (monitoring.dashboards), generated from operator/dashboards.py;
# tests/operator/test_dashboards.py fails while the committed copies differ from what this writes.
dashboards: $(STAMP)
	$(BIN)/python -m cutover.operator.dashboards --output charts/cutover/dashboards

clean:
	rm -rf $(VENV) .demo .tools build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

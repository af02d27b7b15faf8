# Two entry points (see README): `make demo` and `make test`. Each creates or reuses .venv and
# installs what it needs; re-running is cheap (stamps are refreshed only when pyproject changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: demo test test-fast peers bench clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Runtime only: onnxruntime, never torch.
$(VENV)/.stamp-runtime: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

# Tests also train tiny models and check ONNX parity: the pinned CPU torch goes in FIRST,
# so that no dependency can pull an unpinned torch (GBs of CUDA wheels).
$(VENV)/.stamp-test: pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[train,test]'
	touch $@ $(VENV)/.stamp-runtime

demo: $(VENV)/.stamp-runtime
	$(VENV)/bin/cds demo --out ./demo-output

peers:
	bash scripts/install_peers.sh

# In CI (CI=true) a missing peer is a failure, never a skip.
# Lint first (each step fails the target): ruff, strict types on cds/contracts, import rules.
test: $(VENV)/.stamp-test peers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy cds/contracts
	$(VENV)/bin/lint-imports --no-cache
	CONF_REQUIRE_PEERS=$(if $(CI),1,$${CONF_REQUIRE_PEERS:-0}) $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(VENV)/.stamp-test
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not peers" $(PYTEST_ARGS)

bench: $(VENV)/.stamp-test peers
	@echo "benchmarks: see bench/README.md (they are not part of the test run)"

clean-demo:
	rm -rf ./demo-output

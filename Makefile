# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The instance's home: Dagster keeps its storage inside it (dagster.yaml, linked there, says so).
INSTANCE_HOME := $(CURDIR)/data/dagster
INSTANCE := $(INSTANCE_HOME)/dagster.yaml

.PHONY: demo test ui simulator bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(INSTANCE):
	mkdir -p $(INSTANCE_HOME)
	ln -sf ../../dagster.yaml $(INSTANCE)

demo: $(STAMP) $(INSTANCE)
	DAGSTER_HOME=$(INSTANCE_HOME) $(BIN)/staging-validation rehearse --profile healthy

# Tests make their own temporary Dagster instances. Three workers share the two cores (most tests wait on real time, not on the CPU); work stealing keeps a
# queue of long rehearsals from piling up behind one worker at the end.
test: $(STAMP)
	$(BIN)/ruff check staging_validation staging_validation_tests benchmarks
	$(BIN)/mypy
	env -u DAGSTER_HOME $(BIN)/pytest -n 3 --dist worksteal

# The built-in staging service at the address and log path the launchpad's defaults point to.
simulator: $(STAMP)
	$(BIN)/staging-validation simulate --port 8765 --log data/simulator/staging.log --organic-rps 5

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_monitor.py
	$(BIN)/python benchmarks/bench_ingest.py

# dagster dev, stopping with its webserver and daemon on SIGTERM too (`make ui &` then `kill %1`).
ui: $(STAMP) $(INSTANCE)
	DAGSTER_HOME=$(INSTANCE_HOME) exec $(BIN)/python -m staging_validation.campaign.dev_server -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV)

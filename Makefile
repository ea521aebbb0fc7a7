# The two commands of the README: `make serve` runs the service, `make test` runs the tests.
# Both set up the virtualenv first (once; again when pyproject.toml changes).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu,test]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/mediamatch serve

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_index.py

clean:
	rm -rf $(VENV) build dist *.egg-info

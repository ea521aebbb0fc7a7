# The two commands of the README: `make serve` runs the service, `make test` runs the tests.
# Both set up the virtualenv first (once; again when pyproject.toml changes).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test testdata fuzz chaos soak bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[cpu,test]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/mediamatch serve

test: $(STAMP) testdata
	$(BIN)/python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning

# Real media for the match-quality tests and the eval, where apt can install them: drawings
# (Debian's openclipart-png), speech (espeak-ng renders real documentation texts) and real
# photographs (the examples of opencv-doc, 95 MB; the puzzle photos of palapeli-data); and a
# real browser for the web console's test (chromium driven through chromium-driver).
TESTDATA_PACKAGES := openclipart-png espeak-ng opencv-doc palapeli-data chromium chromium-driver
testdata:
	@{ test -d /usr/share/openclipart && command -v espeak-ng >/dev/null && test -d /usr/share/doc/opencv-doc/examples && \
	   test -d /usr/share/palapeli/collection && command -v chromedriver >/dev/null; } || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TESTDATA_PACKAGES) >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TESTDATA_PACKAGES) >/dev/null 2>&1; }; }; } || \
		echo "note: $(TESTDATA_PACKAGES) could not be installed; the tests that need them will be skipped"

# The long hostile-input run: hypothesis at 20,000 examples per parser, schemathesis at 300 per operation.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_fuzz.py

# The long fault runs on a real multi-node Ray cluster (tests/test_chaos.py): a minute of banking
# before the crash, 30 s of matching each side of a node loss, 5,000 entries reindexed.
chaos: $(STAMP)
	MEDIAMATCH_CHAOS=long $(BIN)/python -m pytest -q -s -p no:cacheprovider -W ignore::DeprecationWarning tests/test_chaos.py

# The 20-minute soak (docs/capacity.md) of a service running on this machine (`make serve` first;
# MEDIAMATCH_URL, default http://127.0.0.1:8000): 70% of the capacity measured there, banking in
# the mix; exits 1 when an error, a p99 drift over 20% or a replica's memory growth over 10% shows.
SOAK_CAPACITY_QPS ?= 40
soak: $(STAMP)
	$(BIN)/mediamatch loadtest --soak 20 --capacity-qps $(SOAK_CAPACITY_QPS) --out soak-report

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_index.py

clean:
	rm -rf $(VENV) build dist *.egg-info

# The two commands of the README's quick start:  `make app`  and  `make test`.
# Each creates the virtual environment .venv when it is missing (about 1-2 minutes, ~5 GB).
PY := .venv/bin/python
PORT ?= 8501

.PHONY: app test test-slow venv browser bench-app fuzz

venv: .venv/.installed

.venv/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

app: venv
	$(PY) -m streamlit run app --server.headless true --server.port $(PORT) --browser.gatherUsageStats false

# Headless Chromium for the end-to-end app test (Debian packages); skipped quietly where apt is absent.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	    echo "chromium not installed: the browser test will be skipped"; }

test: venv browser
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

# The long fuzz campaign of the mask and weights file readers (docs/fuzzing.md): FUZZ_SEED empty draws one, printed.
FUZZ_CASES ?= 100000
FUZZ_SEED ?=
FUZZ_WORKERS ?= 2
fuzz: venv
	OMP_NUM_THREADS=1 $(PY) tests/fuzz_campaign.py --cases $(FUZZ_CASES) --workers $(FUZZ_WORKERS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

test-slow: venv
	RUN_SLOW=1 $(PY) -m pytest -q -m "slow or not slow"

# The app's benchmark: server start to the first page in headless Chromium, and the R2S live page's default.
bench-app: venv browser
	$(PY) bench/app_bench.py

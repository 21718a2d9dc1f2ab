# flowrec: `make demo` runs the job on its embedded defaults, `make test` runs the suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,learn]'
	@touch $(STAMP)

setup: $(STAMP)
	@deploy/bootstrap.sh java redis

demo: setup
	$(VENV)/bin/flowrec demo

test: setup
	@deploy/bootstrap.sh chromium nginx
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not flink and not cluster and not browser" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# flowrec: `make demo` runs the job on its embedded defaults, `make test` runs the suite.
# Both create .venv and install what they need on first use: the demo the package alone,
# the tests also the test tools and the `learn` extra (PyTorch + faiss, ~2 GB).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

.PHONY: setup setup-test demo test test-fast clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	@touch $@

$(INSTALLED_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,learn]'
	@touch $@ $(INSTALLED)

setup: $(INSTALLED)
	@deploy/bootstrap.sh java redis jemalloc

setup-test: $(INSTALLED_TEST)
	@deploy/bootstrap.sh java redis jemalloc chromium nginx

demo: setup
	$(VENV)/bin/flowrec demo

test: setup-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup-test
	$(PY) -m pytest -m "not flink and not cluster and not browser" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

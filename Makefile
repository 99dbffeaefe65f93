# Two entry points: `make demo` and `make test`. Each creates .venv and installs only what it needs:
# the demo the training extra, the tests the training and test extras (pytest, ruff, playwright, hadolint).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test install install-test checks clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed-train: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[train]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[train,test]"
	touch $@ $(VENV)/.installed-train

install: $(VENV)/.installed-train

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed-train
	$(PY) -m edgecat.demo --out demo

checks: $(VENV)/.installed-train
	$(PY) -m edgecat checks

test: $(VENV)/.installed-test
	$(PY) -m ruff check edgecat tests benchmarks
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 --durations=15

clean:
	rm -rf $(VENV) demo runs

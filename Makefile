# Every target builds on `.venv`, made once (and remade when the pins change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quiet TensorFlow's start-up chatter in every target.
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test test-all bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

demo: venv
	$(PY) examples/lenet5.py --dataset=mnist5k --out_dir=out/demo

test: venv
	$(PY) -m pytest -q -m "not slow" tests

test-all: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) out .pytest_cache

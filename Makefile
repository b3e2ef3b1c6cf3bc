# Every target builds on `.venv`, made once (and remade when the pins change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quiet TensorFlow's start-up chatter in every target.
export TF_CPP_MIN_LOG_LEVEL := 2

NEXT_VENV := .venv-next
NEXT_PY := $(NEXT_VENV)/bin/python

.PHONY: venv demo test test-all test-next bench clean

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

# The suite on the keras-nightly build pinned in constraints-next.txt, in its own .venv-next
# (keras-nightly installs the same `keras` package: the release is removed and the nightly
# force-reinstalled, since both own the same files).
test-next: pyproject.toml constraints.txt constraints-next.txt
	test -x $(NEXT_PY) || $(PYTHON) -m venv $(NEXT_VENV)
	$(NEXT_PY) -m pip install -q --upgrade pip
	$(NEXT_PY) -m pip install -q -c constraints.txt -e '.[test,export,examples,jax]'
	$(NEXT_PY) -m pip uninstall -q -y keras
	$(NEXT_PY) -m pip install -q --no-deps --force-reinstall -r constraints-next.txt
	$(NEXT_PY) -c "import keras; print('keras', keras.version())"
	$(NEXT_PY) -m pytest -q -m "not slow" tests --ignore=tests/test_examples.py

bench: venv
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(NEXT_VENV) out .pytest_cache

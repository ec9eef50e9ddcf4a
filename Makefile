# medseg: two commands on a fresh machine with Python 3.11 and make.
#   make demo  - create .venv, install pinned dependencies, run synth -> train -> predict -> evaluate
#   make test  - create .venv if needed, run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medseg demo --out demo_out

# two pytest workers (pytest-xdist), a test file per worker: most tests start medseg in a subprocess,
# whose single-threaded start-up (torch, monai, mlflow imports) leaves a core idle otherwise;
# files in the order tests/conftest.py gives them (the long ones first), not by their test count
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) demo_out runs

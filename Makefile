# One setup step shared by the quickstart and the tests: a .venv with the project installed editable,
# pinned by requirements.lock. Re-running with nothing changed only checks the stamp (seconds).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test demo

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(VENV)/bin/python jobs/pretrain.py --config configs/quickstart.yaml

demo: setup
	$(VENV)/bin/python -m encoders.demo

test: setup
	$(VENV)/bin/python -m pytest -q

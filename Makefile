# One setup step shared by the quickstart and the tests: a .venv with the project installed editable,
# pinned by requirements.lock. Re-running with nothing changed only checks the stamp (seconds).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test demo cluster-package

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

# Zips of HEAD for cluster/kuberay/rayjob*.yaml (upload them to s3://YOUR-BUCKET/raybind/<commit>/):
# the working dir (jobs, configs) and the two packages as py_modules, all from one commit.
cluster-package:
	rm -rf dist/cluster && mkdir -p dist/cluster
	git archive --format=zip -o dist/cluster/working_dir.zip HEAD jobs configs
	git archive --format=zip -o dist/cluster/raybind.zip HEAD:platform raybind
	git archive --format=zip -o dist/cluster/encoders.zip HEAD encoders
	@echo "upload dist/cluster/*.zip to s3://YOUR-BUCKET/raybind/$$(git rev-parse --short HEAD)/"

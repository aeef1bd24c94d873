# One setup step shared by the quickstart and the tests: a .venv with the project installed editable,
# pinned by requirements.lock. Re-running with nothing changed only checks the stamp (seconds).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test test-fast lint demo imagebind-demo cluster-package device-check

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

# ImageBind's recipe on the demo: fit the tiny image tower to the captions (the anchor), then bind audio,
# depth and thermal to it from uncaptioned clips, then evaluate (text retrieval is emergent).
imagebind-demo: setup
	$(VENV)/bin/python -m raybind pretrain --config configs/imagebind_anchor_demo.yaml
	$(VENV)/bin/python -m raybind pretrain --config configs/imagebind_demo.yaml
	$(VENV)/bin/python -m raybind evaluate --checkpoint runs/imagebind-demo --data data/demo/val.jsonl \
		--output runs/imagebind-demo/eval

test: setup
	$(VENV)/bin/python -m pytest -q

# The fast tier: every module's tests without the `slow`-marked ones (whole runs, sweeps, clusters,
# benchmarks); a few minutes on 2 cores. `make test` (CI) runs everything.
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check platform encoders jobs tests

# Zips of HEAD for cluster/kuberay/rayjob*.yaml (upload them to s3://YOUR-BUCKET/raybind/<commit>/):
# the working dir (jobs, configs) and the two packages as py_modules, all from one commit.
cluster-package:
	rm -rf dist/cluster && mkdir -p dist/cluster
	git archive --format=zip -o dist/cluster/working_dir.zip HEAD jobs configs
	git archive --format=zip -o dist/cluster/raybind.zip HEAD:platform raybind
	git archive --format=zip -o dist/cluster/encoders.zip HEAD encoders
	@echo "upload dist/cluster/*.zip to s3://YOUR-BUCKET/raybind/$$(git rev-parse --short HEAD)/"

# The accelerator machine's checks in one bounded run (never CI; see docs/gpus.md): the gpu-marked
# tests, then the gpu and gpu_train benchmark suites, each under its own time cap so a hang cannot spend
# the whole lease; DEVICE_PARTS=test or =bench runs one of them (one call each fits the 10-minute limit).
# Runs on that machine's own python3 and torch, with Ray, PyAV, open_clip and pydantic from the archive
# that ../shared/tools/device-site.sh writes to .device/ (carry .device there). Logs and the benchmark's
# table + JSON land in $(DEVICE_OUT); exits non-zero when a part failed or hit its cap (124).
DEVICE_PYTHON ?= python3
DEVICE_SITE ?= .device/site312.tar.xz
DEVICE_OUT ?= runs/device-check
DEVICE_PARTS ?= test bench
DEVICE_TEST_S ?= 270
DEVICE_BENCH_S ?= 420
device-check:
	@test -f $(DEVICE_SITE) || { echo "no $(DEVICE_SITE): run ../shared/tools/device-site.sh here first"; exit 2; }
	mkdir -p $(DEVICE_OUT) /tmp/raybind-site && tar -xJf $(DEVICE_SITE) -C /tmp/raybind-site
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
	PYTHONPATH=/tmp/raybind-site/site312 $(DEVICE_PYTHON) -c "import torch; assert torch.cuda.is_available(), \
	  'torch sees no CUDA device: the gpu tests would only skip'; print('torch', torch.__version__)"
	@export PYTHONPATH=/tmp/raybind-site/site312:$$PWD/platform:$$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1; \
	status=0; \
	case " $(DEVICE_PARTS) " in *" test "*) \
	  timeout $(DEVICE_TEST_S) $(DEVICE_PYTHON) -m pytest -m gpu tests/raybind/test_gpu.py -q -p no:cacheprovider \
	    >$(DEVICE_OUT)/pytest-gpu.log 2>&1; rc=$$?; tail -n 40 $(DEVICE_OUT)/pytest-gpu.log; \
	  echo "device-check: gpu tests exit $$rc (124: hit the $(DEVICE_TEST_S) s cap)"; [ $$rc = 0 ] || status=1;; esac; \
	case " $(DEVICE_PARTS) " in *" bench "*) \
	  timeout $(DEVICE_BENCH_S) $(DEVICE_PYTHON) jobs/benchmark.py --suite gpu,gpu_train --workdir /tmp/raybind-bench \
	    >$(DEVICE_OUT)/benchmark-gpu.txt 2>$(DEVICE_OUT)/benchmark-gpu.err; rc=$$?; \
	  tail -n 15 $(DEVICE_OUT)/benchmark-gpu.err; cat $(DEVICE_OUT)/benchmark-gpu.txt; \
	  echo "device-check: gpu benchmarks exit $$rc (124: hit the $(DEVICE_BENCH_S) s cap)"; [ $$rc = 0 ] || status=1;; esac; \
	exit $$status

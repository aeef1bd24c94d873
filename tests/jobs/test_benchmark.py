"""The benchmark job end to end on small settings: every suite runs and reports its ratio (no timing asserted)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(600)


def test_every_suite_reports_its_ratios(tmp_path):
    result = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "--suite", "masking,lora,ingest,streaming_memory,train_overhead,gpu",
         "--workdir", str(tmp_path), "--preset", "tiny", "--batch", "2", "--steps", "1",
         "--clips-per-resolution", "1", "--clip-seconds", "1", "--repeats", "1", "--memory-rows", "2",
         "--overhead-steps", "4"],
        capture_output=True, text=True, timeout=580)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("| suite | figure |") for line in lines)  # Ray may log to stdout too
    suites = report["suites"]
    assert report["machine"]["logical_cpus"] >= 1
    assert suites["masking"]["speedup"] > 0 and set(suites["masking"]["samples_per_s"]) >= {"0.0", "0.5"}
    assert suites["lora"]["lora"]["trainable_params"] < suites["lora"]["full"]["trainable_params"]
    assert suites["lora"]["lora"]["optimizer_state_mib"] < suites["lora"]["full"]["optimizer_state_mib"]
    ingest = suites["ingest"]
    assert ingest["ray_data"]["rows"] == ingest["dataloader"]["rows"] == ingest["decode_bound"]["rows"] == 2
    assert ingest["ratio_vs_dataloader"] > 0 and ingest["ratio_vs_decode_bound"] > 0
    memory = suites["streaming_memory"]
    assert (memory["n"]["rows"], memory["10n"]["rows"]) == (2, 20) and memory["ratio"] > 0
    assert suites["train_overhead"]["ratio"] > 0
    assert suites["gpu"] == {"skipped": "no CUDA device", "suite_seconds": suites["gpu"]["suite_seconds"]} or \
        "tower_samples_per_s" in suites["gpu"]

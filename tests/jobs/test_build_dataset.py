"""The build_dataset and make_demo_data jobs as users run them: subprocesses, last stdout line is JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=280)


@pytest.mark.slow
def test_demo_data_then_build_dataset_counts_add_up(tmp_path):
    demo = _run("jobs/make_demo_data.py", "--output", str(tmp_path / "demo"), "--train", "10", "--val", "4")
    assert demo.returncode == 0, demo.stderr
    manifest = json.loads(demo.stdout.strip().splitlines()[-1])["train"]
    rows = Path(manifest).read_text().splitlines()
    rows.append(json.dumps({"id": "broken", "text": "a broken clip", "video": "clips/missing.mp4"}))
    Path(manifest).write_text("\n".join(rows) + "\n")
    out = tmp_path / "built"
    missing = _run("jobs/build_dataset.py", "--config", "configs/quickstart.yaml", "--input", manifest,
                   "--output", str(out), "--set", f"data.depth.model={tmp_path / 'no-glpn'}")
    assert missing.returncode == 2 and f"data.depth.model: {tmp_path / 'no-glpn'} does not exist" in missing.stderr
    # the demo's fitted synthesizers are not there in a fresh clone: tiny random ones stand in
    result = _run("jobs/build_dataset.py", "--config", "configs/quickstart.yaml", "--input", manifest,
                  "--output", str(out), "--set", "ray.num_cpus=4", "--set", "data.depth.model=null",
                  "--set", "data.thermal.model=null")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (11, 10, 1)
    assert set(summary["columns"]) >= {"video", "audio", "depth", "thermal", "tokens"}
    assert json.loads((out / "quarantine.jsonl").read_text())["id"] == "broken"
    assert list((out / "data").glob("*.parquet"))


def test_invalid_config_exits_2_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {train: m.jsonl, modalities: [video]}\ntrain: {batch_size: 0}\n")
    result = _run("jobs/build_dataset.py", "--config", str(bad), "--input", "m.jsonl", "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "train.batch_size" in result.stderr and "Ray" not in result.stderr


@pytest.mark.slow
def test_unreadable_manifest_exits_2_with_a_clear_message(tmp_path):
    result = _run("jobs/build_dataset.py", "--config", "configs/quickstart.yaml", "--input",
                  str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "manifest not found" in result.stderr

"""The main job as users launch it: `python jobs/pretrain.py` and `ray job submit` against a real head."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raybind.demo_data import generate

pytestmark = pytest.mark.timeout(400)
RAY = str(Path(sys.executable).parent / "ray")
TINY = ["--set", "data.modalities=[video,audio]", "--set", "model.towers={}", "--set", "train.steps=4",
        "--set", "train.batch_size=4", "--set", "train.log_every=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo"), train_clips=12, val_clips=8, seed=2)


def test_invalid_pretrain_config_exits_2_naming_the_field(tmp_path):
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/quickstart.yaml",
                             "--set", "train.steps=-3", "--set", "model.towers.video.mask_ratio=1.5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "train.steps: Input should be greater than or equal to 1" in result.stderr
    assert "model.towers.video.mask_ratio: Input should be less than 1" in result.stderr


def test_unwritable_storage_fails_fast(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/quickstart.yaml",
                             "--set", f"storage={blocker}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "cannot write to storage" in result.stderr


def test_ray_job_submit_runs_pretrain_on_a_local_head(demo, tmp_path):
    """`ray start --head` turns token auth on; the client sends the token with RAY_AUTH_MODE=token."""
    port, dashboard = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # as with an activated venv: the head (and the job's `python`) is the project's interpreter
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = subprocess.run([RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}",
                              "--dashboard-host=127.0.0.1", "--num-cpus=4", "--disable-usage-stats"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        storage = tmp_path / "runs"
        submit = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", ".", "--",
             "python", "jobs/pretrain.py", "--config", "configs/quickstart.yaml", "--set", f"data.train={demo['train']}",
             "--set", f"data.val={demo['val']}", "--set", f"storage={storage}", *TINY],
            capture_output=True, text=True, env={**env, "RAY_AUTH_MODE": "token"}, timeout=360)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        output = submit.stdout + submit.stderr
        assert "succeeded" in output
        assert "step 2/4  loss video" in output and "step 4/4" in output  # the job's own progress lines
        assert "Reporting training result" not in output  # Ray's per-report dumps stay off without --verbose
        summary = json.loads((storage / "quickstart" / "summary.json").read_text())
        assert summary["steps"] == 4 and summary["rows_in"] == 12
        assert Path(summary["checkpoint"], "raybind.json").is_file()
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_dry_run_prints_the_plan_of_an_l14_recipe_without_starting_anything():
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/languagebind_video_l14.yaml",
                             "--dry-run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    assert plan["towers"]["video"]["trainable_params"] == plan["trainable_params"] == 4_130_817
    assert (plan["global_batch"], plan["negatives_per_step"]) == (640, 639)  # 10 x accum 4 x 16 GPUs, cached
    assert plan["resources"]["train"] == {"workers": 16, "CPU": 8.0, "GPU": 1.0}
    assert plan["resources"]["total"]["GPU"] == 16.0
    assert "global batch 640" in result.stderr and "Started a local Ray" not in result.stderr


def test_dry_run_of_a_local_config_that_cannot_fit_exits_2_with_what_is_short():
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/quickstart.yaml", "--dry-run",
                             "--set", "train.use_gpu=true", "--set", "train.num_workers=4"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "this machine cannot run this config: it needs" in result.stderr
    assert "train: 4 workers x 0.5 CPU, 1 GPU" in result.stderr

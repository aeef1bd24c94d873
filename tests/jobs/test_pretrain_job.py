"""The main job as users launch it: `python jobs/pretrain.py` (its `ray job submit` on an autoscaling head
is tested in tests/cluster/test_autoscaling.py)."""

import json
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(400)


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


@pytest.mark.slow   # the AWS SDK's own connect retries: ~20 s
def test_an_s3_endpoint_that_does_not_answer_stops_the_job_at_start_with_one_line_naming_it():
    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = f"s3://rb-runs/runs?endpoint_override=127.0.0.1:{port}&region=us-east-1&scheme=http"
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/quickstart.yaml",
                             "--set", f"storage={storage}"], capture_output=True, text=True, timeout=120,
)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if "cannot write to storage" in line]
    assert f"s3://rb-runs/runs/quickstart?endpoint_override=127.0.0.1:{port}" in line and "Could not connect" in line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_dry_run_prints_the_plan_of_an_l14_recipe_without_starting_anything():
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/languagebind_video_l14.yaml",
                             "--dry-run"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout.strip().splitlines()[-1])
    assert plan["towers"]["video"]["trainable_params"] == plan["trainable_params"] == 4_180_993
    assert (plan["global_batch"], plan["negatives_per_step"]) == (640, 639)  # 10 x accum 4 x 16 GPUs, cached
    assert plan["resources"]["train"] == {"workers": 16, "CPU": 8.0, "GPU": 1.0, "train": 0.01}  # on train nodes
    assert plan["resources"]["total"]["GPU"] == 16.0
    assert "global batch 640" in result.stderr and "Started a local Ray" not in result.stderr
    assert "no pretrained weights given" not in result.stderr   # the recipe loads DataComp.XL CLIP; the plan counts shapes
    memory = plan["memory"]   # one worker's GPU layout, estimated on this CPU (tests/raybind/test_memory_estimate.py)
    assert memory["layout"] == "gpu bf16" and 1 < memory["peak_gib"] < memory["with_margin_gib"] < 80
    assert f"~{memory['peak_gib']:g} GiB estimated peak" in result.stderr


@pytest.mark.slow
def test_dry_run_of_a_local_config_that_cannot_fit_exits_2_with_what_is_short():
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/quickstart.yaml", "--dry-run",
                             "--set", "train.use_gpu=true", "--set", "train.num_workers=4"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "this machine cannot run this config: it needs" in result.stderr
    assert "train: 4 workers x 0.5 CPU, 1 GPU" in result.stderr

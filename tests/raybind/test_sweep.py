"""Ray Tune sweeps on the real local Ray: ASHA, outputs, TensorBoard files, best config, resume, S3."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from raybind.config import ConfigError, load_config, validate
from raybind.data.demo_data import generate

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("sweep-demo"), train_clips=16, val_clips=8, seed=3)


def _cfg(demo, storage: str, name: str, space: dict, **sweep) -> dict:
    return {
        "name": name, "storage": storage, "seed": 0,
        "data": {"train": demo["train"], "val": demo["val"], "modalities": ["video"], "num_frames": 4,
                 "decode": {"batch_size": 4, "num_cpus": 0.5}},
        "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"},
                  "towers": {"video": {"lr": 2e-3}}},
        "train": {"steps": 12, "batch_size": 4, "log_every": 4, "val_every": 4, "checkpoint_every": 4,
                  "val_batch_size": 8, "cpus_per_worker": 0.5},
        "sweep": {"space": space, **sweep},
    }


def test_a_space_naming_a_field_that_does_not_exist_fails_before_anything_starts(demo, tmp_path):
    tree = _cfg(demo, str(tmp_path), "bad", {"model.towers.video.mask_ration": {"grid": [0.1]}})
    with pytest.raises(ConfigError, match=r"sweep\.space\.model\.towers\.video\.mask_ration: .*mask_ration: "
                                          r"Extra inputs are not permitted"):
        validate(tree)
    with pytest.raises(ConfigError, match=r"sweep\.space\.model\.towers\.video\.mask_ratio: .*less than 1"):
        validate(_cfg(demo, str(tmp_path), "bad", {"model.towers.video.mask_ratio": {"grid": [0.2, 1.5]}}))
    with pytest.raises(ConfigError, match=r"sweep\.space\.data\.train: .*data is built once per sweep"):
        validate(_cfg(demo, str(tmp_path), "bad", {"data.train": {"choice": ["a.jsonl"]}}))
    with pytest.raises(ConfigError, match=r"exactly one of grid, choice, uniform, loguniform"):
        validate(_cfg(demo, str(tmp_path), "bad", {"train.steps": {"grid": [1], "choice": [2]}}))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    result = subprocess.run([sys.executable, "jobs/sweep.py", "--config", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "mask_ration" in result.stderr and "Started a local Ray" not in result.stderr


@pytest.mark.slow
def test_asha_stops_the_weak_trial_and_the_sweep_writes_table_plot_tensorboard_and_best_config(
        ray_cluster, demo, tmp_path):
    """Two trials in grid order with a fixed temperature: 1.0 (logits within [-1, 1]: a val loss near
    ln 8) and 0.01 (logit scale 100: confident, wrong, a val loss far above it, which 4 steps cannot close).
    ASHA compares them at step 4 and stops the second."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from raybind.train.sweep import sweep

    tree = _cfg(demo, str(tmp_path / "runs"), "asha", {"model.towers.video.temperature": {"grid": [1.0, 0.01]}},
                metric="val_loss/video", mode="min", grace_period=4, reduction_factor=2)
    tree["model"]["towers"]["video"]["learn_temperature"] = False
    cfg = validate(tree)
    summary = sweep(cfg)
    sweep_dir = tmp_path / "runs" / "asha"
    assert summary["sweep_dir"] == str(sweep_dir) and summary["trials"] == 2 and summary["errored"] == 0
    assert summary["stopped_early"] == 1
    assert summary["best"]["params"] == {"model.towers.video.temperature": 1.0}
    assert summary["best"]["metric"] == "val_loss/video"

    rows = list(csv.DictReader(open(sweep_dir / "trials.csv")))
    assert len(rows) == 2 and {r["trial"] for r in rows} == {summary["best"]["trial"], *(r["trial"] for r in rows)}
    by_temperature = {float(r["model.towers.video.temperature"]): r for r in rows}
    assert by_temperature[0.01]["stopped_early"] == "True" and int(by_temperature[0.01]["step"]) < 12
    assert by_temperature[1.0]["stopped_early"] == "False" and int(by_temperature[1.0]["step"]) == 12
    assert float(by_temperature[1.0]["final val_r1/video"]) >= 0 and by_temperature[1.0]["samples_per_s"]
    assert (sweep_dir / "trials.md").read_text().count("\n") == 4  # header, rule, two trials

    from PIL import Image

    png = sweep_dir / "tradeoff.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        assert image.size == (1000, 400)

    # TensorBoard's own reader finds the validation curve of the finished trial
    events = sorted(sweep_dir.glob("*/events.out.tfevents.*"))
    assert sorted(p.parent.name for p in events) == sorted(r["trial"] for r in rows)
    curves = []
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        tags = [t for t in accumulator.Tags()["scalars"] if t.endswith("val_loss/video")]
        assert tags, accumulator.Tags()["scalars"]
        curves.append([(e.step, e.value) for e in accumulator.Scalars(tags[0])])
    assert max(len(c) for c in curves) == 3  # reports at steps 4, 8, 12

    best = load_config(sweep_dir / "best.yaml")  # the file as jobs/pretrain.py reads it (and validates)
    assert best.name == "asha-best" and best.sweep is None and best.model.towers["video"].temperature == 1.0
    assert best.model_dump(exclude={"name", "sweep"}) == cfg.model_copy(update={"model": best.model}).model_dump(
        exclude={"name", "sweep"})  # the whole run config, with the winning parameters


def _kill_tree(process: subprocess.Popen) -> None:
    import psutil

    parent = psutil.Process(process.pid)
    for proc in [*parent.children(recursive=True), parent]:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=60)


@pytest.mark.slow
def test_a_killed_sweep_on_s3_resumes_without_rerunning_its_finished_trial(ray_cluster, demo, s3_bucket, tmp_path):
    """`jobs/sweep.py` is SIGKILLed (with its Ray) right after its first trial finished; re-running the same
    sweep keeps that trial as it was and runs the other one."""
    from raybind.train.sweep import sweep

    client, bucket, query = s3_bucket
    tree = _cfg(demo, f"s3://{bucket}/sweeps{query}", "resumable",
                {"model.towers.video.temperature": {"grid": [0.05, 0.1]}}, scheduler="fifo")
    tree["ray"] = {"num_cpus": 2}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    job = subprocess.Popen([sys.executable, "jobs/sweep.py", "--config", str(path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    finished = None
    try:
        for line in job.stderr:  # the job's own progress line for a finished trial
            if line.startswith("trial ") and " finished at step 12" in line:
                finished = line.split()[1]
                break
    finally:
        _kill_tree(job)
    assert finished is not None, "the sweep job ended without finishing a trial"

    def files_of(trial_id: str) -> dict[str, str]:
        listing = client.list_objects_v2(Bucket=bucket, Prefix=f"sweeps/resumable/runs/{trial_id}/")
        return {o["Key"]: o["ETag"] + str(o["LastModified"]) for o in listing.get("Contents", [])}

    before = files_of(finished)
    assert any("/checkpoint_" in key for key in before)
    resumed = sweep(validate(tree))
    assert resumed["trials"] == 2 and resumed["stopped_early"] == 0 and resumed["errored"] == 0
    assert {k: v for k, v in files_of(finished).items() if "/checkpoint_" in k} == {
        k: v for k, v in before.items() if "/checkpoint_" in k}  # no step of the finished trial ran again
    rows = json.loads(client.get_object(Bucket=bucket, Key="sweeps/resumable/sweep.json")["Body"].read())["rows"]
    assert sorted(r["step"] for r in rows) == [12, 12] and finished in {r["trial"] for r in rows}
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="sweeps/resumable/")["Contents"]]
    assert "sweeps/resumable/best.yaml" in keys and "sweeps/resumable/data/train/dataset.json" in keys

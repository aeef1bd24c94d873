"""Distributed LoRA contrastive training on a real local Ray cluster: S3 checkpoints, resume, worker loss."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import psutil
import pytest
import torch
from peft import PeftModel
from ray.train.v2.api.callback import UserCallback
from safetensors.torch import load_file

from raybind.config import validate
from raybind.data.demo_data import generate
from raybind.train.trainer import pretrain
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    manifests = generate(root, train_clips=16, val_clips=8, seed=1)
    rows = Path(manifests["train"]).read_text()
    bad = json.dumps({"id": "broken", "text": "a clip that is not there", "video": "clips/missing.mp4"})
    Path(manifests["train"]).write_text(rows + bad + "\n")
    return manifests


def _cfg(demo, storage: str, name: str, **train):
    settings = {"steps": 10, "batch_size": 4, "log_every": 5, "checkpoint_every": 5, "val_batch_size": 8,
                "cpus_per_worker": 0.5, "keep_checkpoints": 2, **train}
    return validate({
        "name": name, "storage": storage, "seed": 0,
        "data": {"train": demo["train"], "val": demo["val"], "modalities": ["video", "audio"], "num_frames": 4,
                 "decode": {"batch_size": 4, "num_cpus": 0.5}},
        "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"},
                  "towers": {"video": {"lr": 2e-3}, "audio": {"lr": 2e-3}}},
        "train": settings})


def _adam_steps(checkpoint_dir: Path) -> list[int]:
    state = torch.load(checkpoint_dir / "trainer_state.pt", weights_only=True)
    return sorted({int(s["step"]) for s in state["optimizer"]["state"].values()})


def test_training_on_s3_through_storage_faults_checkpoints_adapters_and_counts(ray_cluster, demo, s3_bucket,
                                                                              s3_server, tmp_path, request):
    """Manifests, media and checkpoints all on S3, every request through the fault proxy: connections reset,
    503 Slow Down and delays on a seeded share of first tries. The run ends with the rows and steps of a run
    without faults, and resumes through them too."""
    client, bucket, _ = s3_bucket
    root = Path(demo["train"]).parent
    for path in root.rglob("*"):
        if path.is_file() and (path.suffix in (".jsonl", ".mp4", ".wav") or path.parent.name == "clips"):
            client.upload_file(str(path), bucket, f"demo/{path.relative_to(root)}")
    host, port = s3_server.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port), seed=3, reset=0.15, slow_down=0.15, delay=0.1, delay_s=0.05)
    query = f"?endpoint_override={proxy.start().removeprefix('http://')}&region=us-east-1&scheme=http"
    request.addfinalizer(proxy.stop)
    on_s3 = {name: f"s3://{bucket}/demo/{Path(demo[name]).name}{query}" for name in ("train", "val")}
    summary = pretrain(_cfg(on_s3, f"s3://{bucket}/runs{query}", "s3run"))
    assert proxy.counts["reset"] > 0 and proxy.counts["slow_down"] > 0 and proxy.counts["delay"] > 0, proxy.counts
    assert summary["steps"] == 10
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (17, 16, 1)
    assert summary["first_pass_complete"] is True
    assert (summary["val_ingest"]["rows_in"], summary["val_ingest"]["rows_out"]) == (8, 8)
    for modality in ("video", "audio"):
        row = summary["metrics"][modality]
        assert row["chance"] == pytest.approx(1 / 8)
        assert 0 <= row["val_r1_before"] <= 1 and 0 <= row["val_r1_after"] <= 1
        assert row["val_loss_after"] != row["val_loss_before"]  # the towers changed (learning: test_learning.py)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/s3run/")["Contents"]]
    assert "runs/s3run/summary.json" in keys and "runs/s3run/quarantine.jsonl" in keys
    checkpoints = sorted({k.split("/")[2] for k in keys if k.split("/")[2].startswith("checkpoint_") and "/" in k[len("runs/s3run/"):]})
    assert len(checkpoints) == 2  # checkpoints at steps 5 and 10, both kept
    newest = checkpoints[-1]
    assert summary["checkpoint"].startswith(f"s3://{bucket}/runs/s3run/{newest}")
    local = tmp_path / "ckpt"
    for key in keys:
        if f"/{newest}/" in key and not key.endswith("/"):
            target = local / key.split(f"/{newest}/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))
    assert {p.name for p in (local / "video").iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                            "trained.safetensors"}
    assert json.loads((local / "progress.json").read_text())["step"] == 10
    # the adapters load onto the plain backbone with peft itself
    from encoders.checkpoint import read_metadata
    from encoders.config import ModelConfig
    from encoders.model import bare_backbone

    config = ModelConfig.from_dict(read_metadata(local)["model"])
    for modality in ("video", "audio"):
        backbone = bare_backbone(config, modality)
        trained = load_file(str(local / modality / "trained.safetensors"))
        backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in trained.items()
                                  if k.startswith("backbone.")}, strict=False)
        peft_model = PeftModel.from_pretrained(backbone, str(local / modality))
        assert any("lora_A" in n for n, _ in peft_model.named_parameters())
    bad = client.get_object(Bucket=bucket, Key="runs/s3run/quarantine.jsonl")["Body"].read().decode()
    assert json.loads(bad.splitlines()[0])["id"] == "broken"
    assert _adam_steps(local) == [5]  # video and audio alternate: 5 AdamW steps each

    # re-running with the same storage and name resumes: same step counter, same optimizer state
    resumed = pretrain(_cfg(on_s3, f"s3://{bucket}/runs{query}", "s3run", steps=14, checkpoint_every=7))
    assert resumed["steps"] == 14 and resumed["resumed_from"] == [10]
    newest = resumed["checkpoint"].split("/runs/s3run/")[1].split("?")[0]
    state = client.get_object(Bucket=bucket, Key=f"runs/s3run/{newest}/trainer_state.pt")["Body"].read()
    steps = {int(v["step"]) for v in torch.load(io.BytesIO(state), weights_only=True)["optimizer"]["state"].values()}
    assert steps == {7}, "optimizer state was not carried over from the first run"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/s3run/")["Contents"]]
    kept = {k.split("/")[2] for k in keys if k.split("/")[2].startswith("checkpoint_") and k.count("/") > 2}
    assert len(kept) == 2 and newest in kept  # keep_checkpoints=2: the step-5 checkpoint was deleted

    # a finished run, run again, reports its final state: the validation taken at its last step
    reports = tmp_path / "reports.jsonl"
    again = pretrain(_cfg(on_s3, f"s3://{bucket}/runs{query}", "s3run", steps=14, checkpoint_every=7),
                     callbacks=[RecordReports(reports)])
    (last,) = [json.loads(line) for line in reports.read_text().splitlines()]
    assert again["steps"] == last["step"] == last["val_step"] == 14 and last["resumed_from"] == [10, 14]
    for modality in ("video", "audio"):   # not the validation before training (what was reported)
        assert last[f"val_r1/{modality}"] == last[f"val_r1_after/{modality}"]
        assert last[f"val_loss/{modality}"] == last[f"val_loss_after/{modality}"] != last[f"val_loss_before/{modality}"]


class RecordReports(UserCallback):
    """Runs on the Ray Train controller (another process): appends every report's metrics (rank 0's) to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        with self.path.open("a") as out:
            out.write(json.dumps(metrics[0]) + "\n")


class KillWorkersAfterFirstCheckpoint(UserCallback):
    """Runs on the Ray Train controller: once the first checkpoint is persisted, SIGKILL the worker processes."""

    def __init__(self) -> None:
        self.killed_at_step = None

    def after_report(self, run_context, metrics, checkpoint):
        if checkpoint is None or self.killed_at_step is not None:
            return
        self.killed_at_step = metrics[0]["step"]
        workers = [p for p in psutil.process_iter(["cmdline"])
                   if p.info["cmdline"] and p.info["cmdline"][0].startswith("ray::RayTrainWorker")]
        assert workers, "no Ray Train worker process to kill"
        for worker in workers:
            os.kill(worker.pid, signal.SIGKILL)


def test_killed_workers_restore_from_checkpoint_and_finish_with_two_ddp_ranks(ray_cluster, demo, tmp_path):
    """Two DDP workers; both processes are SIGKILLed after the first checkpoint; FailureConfig restarts the
    group from that checkpoint and the run completes every step, with every row accounted for."""
    cfg = _cfg(demo, str(tmp_path / "runs"), "faulty", num_workers=2, batch_size=2, grad_accum=2, steps=12,
               checkpoint_every=4, log_every=4, val_every=4, max_failures=1)
    result = pretrain(cfg, callbacks=[KillWorkersAfterFirstCheckpoint()])
    assert result["steps"] == 12
    assert result["resumed_from"] == [4], "training did not restart from the checkpoint written before the kill"
    assert _adam_steps(Path(result["checkpoint"])) == [6]
    assert (result["rows_in"], result["rows_out"], result["rows_quarantined"]) == (17, 16, 1)
    assert (Path(result["checkpoint"]) / "video" / "adapter_model.safetensors").is_file()


def test_a_run_the_local_cluster_cannot_hold_fails_before_training(ray_cluster, demo, tmp_path):
    """The session cluster has 4 CPUs and 1 GPU: three one-GPU workers would wait forever; instead the
    run stops at once and says what is short."""
    from raybind.errors import ResourceError

    cfg = _cfg(demo, str(tmp_path / "runs"), "toobig", num_workers=3, use_gpu=True)
    with pytest.raises(ResourceError, match=r"the local Ray cluster cannot run this config: it needs 3 GPU \(has 1\)"):
        pretrain(cfg)
    assert not (tmp_path / "runs" / "toobig" / "summary.json").exists()


def test_a_training_split_within_the_cache_budget_is_decoded_once(ray_cluster, tmp_path):
    """With `data.cache_mb` the decoded rows stay in the object store: once cached, every pass yields all
    rows even after the media files are gone (nothing decodes again). Over budget, passes stream."""
    import shutil

    import numpy as np

    from raybind.data.pipeline import build_stream, decoded_row_bytes
    from raybind.train.trainer import cache_decoded_rows

    manifests = generate(tmp_path / "demo", train_clips=8, val_clips=2, seed=4)
    columns = ["video", "audio", "tokens"]

    def stream(cache_mb: int):
        tree = _cfg(manifests, str(tmp_path / "runs"), "cache").model_dump(mode="json")
        tree["data"]["cache_mb"] = cache_mb
        cfg = validate(tree)
        built = build_stream(cfg, manifests["train"], str(tmp_path / f"q{cache_mb}"), shuffle=True, columns=columns)
        cache_decoded_rows(cfg, built, columns)
        return cfg, built

    cfg, cached = stream(cache_mb=64)
    _, streamed = stream(cache_mb=1)
    first = list(cached.dataset.iter_batches(batch_size=4, batch_format="numpy"))
    row_bytes = sum(a.nbytes for a in first[0].values()) / len(first[0]["tokens"])
    assert decoded_row_bytes(cfg, columns) == row_bytes and 8 * row_bytes > 2**20  # 1 MiB is too small
    shutil.rmtree(tmp_path / "demo" / "clips")
    for _ in range(2):  # two more passes, media gone
        batches = list(cached.dataset.iter_batches(batch_size=4, batch_format="numpy"))
        assert sum(len(b["tokens"]) for b in batches) == 8
        assert np.array_equal(np.sort(np.concatenate([b["tokens"][:, 1] for b in batches])),
                              np.sort(np.concatenate([b["tokens"][:, 1] for b in first])))
    lazy = sum(len(b["tokens"]) for b in streamed.dataset.iter_batches(batch_size=4, batch_format="numpy"))
    assert lazy == 0  # not cached: this pass decodes again and finds no files (all quarantined)

"""Ray Train with one worker on the streaming pipeline vs a plain PyTorch loop over the same batches in memory."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from encoders import BindModel
from encoders.optim import build_optimizer, cosine_with_warmup, parameter_groups
from encoders.step import apply_update
from raybind.bench.clips import write_manifest
from raybind.config import RayBindConfig, validate
from raybind.data.demo_data import generate
from raybind.data.pipeline import build_stream
from raybind.train.loop import train_step
from raybind.train.trainer import pretrain


def _config(manifest: Path, storage: Path, steps: int, batch: int) -> RayBindConfig:
    return validate({
        "name": "overhead", "storage": str(storage),
        "data": {"train": str(manifest), "modalities": ["video"], "num_frames": 8,
                 "decode": {"batch_size": 8, "num_cpus": 0.5}},
        "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"}},
        "train": {"steps": steps, "batch_size": batch, "log_every": steps // 2, "checkpoint_every": 0,
                  "cpus_per_worker": 1.0}})


def _plain_loop(cfg: RayBindConfig, batches: list[dict[str, torch.Tensor]]) -> float:
    """The same step as the Ray worker (same function), timed over the second half like the worker's last window."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = BindModel(cfg.encoder_config()).train()
    optimizer = build_optimizer(parameter_groups(model.towers, cfg.learning_rates()))
    scheduler = cosine_with_warmup(optimizer, 0, cfg.train.steps)
    half = cfg.train.steps // 2
    start = 0.0
    for step in range(cfg.train.steps):
        if step == half:
            start = time.perf_counter()
        batch = batches[step % len(batches)]
        text = model.encode_text(batch["tokens"].long())
        train_step(model, model.tower("video"), "video", batch, text, cfg.train.batch_size, cfg.train.accumulation,
                   contextlib.nullcontext)
        apply_update(model.tower("video"), optimizer, scheduler)
    return (cfg.train.steps - half) * cfg.train.batch_size / (time.perf_counter() - start)


def train_overhead_suite(workdir: Path, steps: int, batch: int) -> dict:
    """Samples/s of a Ray Train run on the streaming pipeline against `_plain_loop` over the same rows held in
    memory: `ratio` is what Ray Train plus streaming cost per step."""
    demo = generate(workdir / "overhead-demo", train_clips=32, val_clips=2, seed=0)
    clips = sorted((workdir / "overhead-demo" / "clips").glob("train-*.mp4"))
    manifest = write_manifest(workdir / "overhead.jsonl", clips, steps * batch)
    cfg = _config(manifest, workdir / "runs", steps, batch)
    summary = pretrain(cfg)
    stream = build_stream(cfg, str(manifest), str(workdir / "q-overhead"), columns=["video", "tokens"])
    batches = [dict(b) for b in stream.dataset.iter_torch_batches(batch_size=batch, drop_last=True)]
    plain = _plain_loop(cfg, batches)
    ray_rate = float(summary["samples_per_s"])
    return {"steps": steps, "batch": batch, "ray_train_samples_per_s": round(ray_rate, 2),
            "plain_loop_samples_per_s": round(plain, 2), "ray_data_wait_frac": round(summary["data_wait_frac"], 3),
            "ray_wall_s": summary["wall_s"], "ratio": round(ray_rate / plain, 3), "demo": demo["train"]}

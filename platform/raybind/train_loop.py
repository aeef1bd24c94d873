"""The training loop each Ray Train worker runs. Reusable parts live in `encoders` (towers, loss,
optimizer, checkpoints) and beside this file (schedule, batches, evaluation); this file is the loop.

Per step: pick the tower for this step (same on every rank), turn the batch's column into tower input
on the device, encode text with the frozen language tower (no grad), all-gather features, symmetric
InfoNCE, AdamW + cosine schedule, clamp the logit scale. Each data batch serves every tower once
before the next batch is pulled, so decoded media is not wasted.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F

from encoders import BindModel, contrastive_loss
from encoders.optim import build_optimizer, cosine_with_warmup, parameter_groups
from raybind.batches import tower_input
from raybind.config import RayBindConfig
from raybind.evaluation import retrieval_metrics
from raybind.schedule import modality_sequence
from raybind.train_state import load_training_checkpoint, save_training_checkpoint


def _all_reduce(value: float, op=dist.ReduceOp.SUM) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=op)
    return float(tensor.item())


class _Meter:
    """Running sums between two log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss: dict[str, list[float]] = defaultdict(list)
        self.samples = 0
        self.data_wait = 0.0
        self.started = time.perf_counter()

    def summary(self, world: int) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self.started)
        out = {f"loss/{m}": sum(v) / len(v) for m, v in self.loss.items()}
        out["samples_per_s"] = self.samples * world / elapsed
        out["data_wait_frac"] = self.data_wait / elapsed
        return out


class _Batches:
    """One pass over this worker's shard, with all ranks agreeing when the pass ends.

    Only full batches train (all-gather needs equal sizes everywhere); when any rank runs out, every
    rank drains what is left of its shard so the streaming split can start the next pass. Every row
    delivered is counted, trained on or not.
    """

    def __init__(self, shard, batch_rows: int, device: torch.device, meter: _Meter) -> None:
        self.iterator: Iterator[dict[str, torch.Tensor]] = iter(shard.iter_torch_batches(
            batch_size=batch_rows, device=device, drop_last=False))
        self.batch_rows, self.meter = batch_rows, meter
        self.rows_delivered = 0
        self.exhausted = False
        self.full_batches = 0

    def next(self) -> dict[str, torch.Tensor] | None:
        start = time.perf_counter()
        batch = next(self.iterator, None)
        self.meter.data_wait += time.perf_counter() - start
        rows = 0 if batch is None else len(batch["tokens"])
        self.rows_delivered += rows
        if _all_reduce(float(rows == self.batch_rows), dist.ReduceOp.MIN) < 1:
            for rest in self.iterator:
                self.rows_delivered += len(rest["tokens"])
            self.exhausted = True
            return None
        self.full_batches += 1
        return batch


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = RayBindConfig.model_validate(loop_config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed * 1000 + rank)  # augmentation and masking draws; towers are seeded by init_seed
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))

    model = BindModel(cfg.model_config_for_encoders()).to(device).train()
    wrapped = {m: ray.train.torch.prepare_model(model.tower(m), move_to_device=False) for m in model.modalities}
    optimizer = build_optimizer(parameter_groups(model.towers, cfg.learning_rates(), cfg.train.weight_decay))
    scheduler = cosine_with_warmup(optimizer, cfg.train.warmup_steps, cfg.train.steps)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext

    progress: dict[str, Any] = {"step": 0, "epoch": 0, "val_before": {}, "val_after": {}, "rows_first_pass": None,
                                "resumed_from": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            progress = load_training_checkpoint(Path(directory), model, optimizer, scheduler)
        progress["resumed_from"] = [*progress.get("resumed_from", []), progress["step"]]

    val_batches = _load_val(cfg, device) if rank == 0 else []
    progress["val_rows"] = sum(len(b["tokens"]) for b in val_batches)
    if rank == 0 and not progress["val_before"]:
        progress["val_before"] = _validate(model, val_batches, device)

    schedule = modality_sequence(cfg.tower_weights(), cfg.train.steps)
    shard = ray.train.get_dataset_shard("train")
    micro, accum = cfg.train.batch_size, cfg.train.grad_accum
    meter = _Meter()
    latest_val: dict[str, Any] = {}
    step = progress["step"]
    reported = False
    while step < cfg.train.steps:  # one iteration per pass over the shard (epoch)
        batches = _Batches(shard, micro * accum, device, meter)
        batch, used, text_cache = None, set(), {}
        while step < cfg.train.steps:
            modality = schedule[step]
            if batch is None or modality in used:
                batch, used, text_cache = batches.next(), set(), {}
                if batch is None:
                    break
            used.add(modality)
            loss = train_step(model, wrapped[modality], modality, batch, text_cache, micro, accum, autocast)
            apply_update(model, modality, optimizer, scheduler)
            step += 1
            meter.loss[modality].append(loss)
            meter.samples += micro * accum
            if cfg.train.val_every and step % cfg.train.val_every == 0 and rank == 0:
                latest_val = _validate(model, val_batches, device)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                progress["step"] = step
                _report(cfg, rank, world, step, progress, model, optimizer, scheduler, meter, latest_val, val_batches,
                        device)
                reported = True
                meter.reset()
        if batches.exhausted:
            if batches.full_batches == 0:
                raise RuntimeError(f"a pass over the training data gave no full batch of {micro * accum} rows per "
                                   f"worker ({batches.rows_delivered} rows reached this worker); lower "
                                   "train.batch_size or add data")
            if progress["rows_first_pass"] is None:
                progress["rows_first_pass"] = int(_all_reduce(float(batches.rows_delivered)))
            progress["epoch"] += 1
    if not reported:  # resumed a run that had already finished: report its state once more
        ray.train.report(_metrics(step, progress, model, optimizer, meter, world, latest_val))


def _report(cfg: RayBindConfig, rank: int, world: int, step: int, progress: dict[str, Any], model: BindModel,
            optimizer, scheduler, meter: _Meter, latest_val: dict[str, Any], val_batches, device) -> None:
    """Metrics every `log_every` steps; with a checkpoint every `checkpoint_every` steps and at the end."""
    final = step == cfg.train.steps
    if final and rank == 0:
        progress["val_after"] = _validate(model, val_batches, device)
    metrics = _metrics(step, progress, model, optimizer, meter, world, latest_val)
    if final or (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0):
        _report_with_checkpoint(rank, metrics, model, optimizer, scheduler, progress)
    else:
        ray.train.report(metrics)


def apply_update(model: BindModel, modality: str, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """After a step's gradients: optimizer and schedule step, clear gradients, clamp the tower's temperature."""
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    model.tower(modality).clamp_logit_scale()


def train_step(model: BindModel, tower, modality: str, batch: dict[str, torch.Tensor],
                text_cache: dict[int, torch.Tensor], micro: int, accum: int, autocast) -> float:
    """Forward/backward over `accum` micro-batches of one batch; DDP syncs on the last one only."""
    pre = model.tower_config(modality).preprocess
    total = 0.0
    for index in range(accum):
        rows = slice(index * micro, (index + 1) * micro)
        sync = index == accum - 1 or not hasattr(tower, "no_sync")
        with (contextlib.nullcontext() if sync else tower.no_sync()), autocast():
            if index not in text_cache:
                text_cache[index] = model.encode_text(batch["tokens"][rows].long())
            inputs = tower_input(modality, batch[modality][rows], pre, train=True)
            features = F.normalize(tower(inputs).float(), dim=-1)
            loss = contrastive_loss(features, text_cache[index], model.tower(modality).logit_scale()) / accum
        loss.backward()
        total += float(loss.detach())
    return total


def _load_val(cfg: RayBindConfig, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The validation split, held in memory on rank 0 (it is small) so every validation reuses it."""
    shard = ray.train.get_dataset_shard("val") if cfg.data.val else None
    if shard is None:
        return []
    return [{k: v.cpu() for k, v in b.items()} for b in shard.iter_torch_batches(
        batch_size=cfg.train.val_batch_size, device="cpu")]


def _validate(model: BindModel, val_batches: list[dict[str, torch.Tensor]], device: torch.device) -> dict[str, Any]:
    if not val_batches:
        return {}
    return {m: retrieval_metrics(model, m, val_batches, device) for m in model.modalities}


def _val_metrics(progress: dict[str, Any]) -> dict[str, float]:
    out = {}
    for when in ("before", "after"):
        for modality, values in progress.get(f"val_{when}", {}).items():
            for key in ("val_r1", "val_loss"):
                if key in values:
                    out[f"{key}_{when}/{modality}"] = values[key]
            if "chance" in values:
                out[f"chance/{modality}"] = values["chance"]
    return out


def _metrics(step: int, progress: dict[str, Any], model: BindModel, optimizer, meter: _Meter, world: int,
             latest_val: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"step": step, "epoch": progress["epoch"], **meter.summary(world)}
    for group in optimizer.param_groups:  # named "<modality>/decay" and "<modality>/no_decay"
        metrics[f"lr/{group['name'].split('/')[0]}"] = group["lr"]
    for modality in model.modalities:
        metrics[f"logit_scale/{modality}"] = float(model.logit_scale(modality).detach())
        if modality in latest_val and "val_r1" in latest_val[modality]:
            metrics[f"val_r1/{modality}"] = latest_val[modality]["val_r1"]
            metrics[f"val_loss/{modality}"] = latest_val[modality]["val_loss"]
    metrics["rows_first_pass"] = progress["rows_first_pass"]
    metrics["val_rows"] = progress.get("val_rows", 0)
    metrics["resumed_from"] = list(progress.get("resumed_from", []))
    metrics.update(_val_metrics(progress))
    return metrics


def _report_with_checkpoint(rank: int, metrics: dict[str, Any], model: BindModel, optimizer, scheduler,
                            progress: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_training_checkpoint(Path(directory), model, optimizer, scheduler, progress)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)

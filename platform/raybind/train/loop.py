"""The training loop each Ray Train worker runs. Reusable parts live in `encoders` (towers, loss,
optimizer, the training step, checkpoints) and beside this file (schedule, batches, validation, metric
names); this file is the loop.

Per step: pick the tower for this step (same on every rank), turn the batch's column into tower input
on the device, encode what the rows bind to with the frozen anchor (captions through the language tower,
or anchor frames through the image tower; no grad), then `encoders.step`: features
all-gathered across ranks, symmetric InfoNCE over the (accumulated) global batch, AdamW + cosine
schedule, logit-scale clamp. Each data batch serves every tower once before the next batch is pulled,
so decoded media is not wasted.

Host-side agreement between ranks (pass end, rows delivered) all-reduces small CPU tensors: GPU runs
get a `cpu:gloo,cuda:nccl` process group (`raybind.train.trainer.process_group_backend`) for exactly this.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterator

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from encoders import BindModel
from encoders.optim import cosine_with_warmup
from encoders.step import accumulate_gradients, apply_update
from raybind import metrics as M
from raybind.config import RayBindConfig
from raybind.data.batch_format import SOURCE_KEY, VIDEO_FRAMES, rows_in
from raybind.data.tower_input import tower_input
from raybind.train.anchor import anchor_features, anchor_rows
from raybind.train.schedule import modality_sequence
from raybind.train.stages import FRAME_PICK, CaptionViews, StageComposer, stage_at, video_shares
from raybind.train.state import load_training_checkpoint, save_training_checkpoint
from raybind.train.validation import retrieval_metrics
from raybind.train.worker_model import autocast_for, build_model, build_worker_optimizer


def _merged_counts(counts: Counter[int]) -> dict[str, int]:
    """Every rank's rows per source, summed (all ranks call it at the same step)."""
    merged = Counter(counts)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Counter[int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, counts)
        merged = sum((Counter(c) for c in gathered if c), Counter())
    return {str(key): int(count) for key, count in sorted(merged.items())}


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
        self.loss: dict[str, list[torch.Tensor]] = defaultdict(list)  # on the device: read at log time only
        self.samples = 0
        self.data_wait = 0.0
        self.started = time.perf_counter()

    def summary(self, world: int) -> dict[str, float]:
        # losses first: reading them waits for the GPU, so the elapsed time covers every step's work
        out = {M.tower_key(M.TRAIN_LOSS, m): float(torch.stack(v).mean()) for m, v in self.loss.items()}
        elapsed = max(1e-9, time.perf_counter() - self.started)
        out[M.SAMPLES_PER_S] = self.samples * world / elapsed
        out[M.DATA_WAIT_FRAC] = self.data_wait / elapsed
        return out


class _Batches:
    """One pass over this worker's shard, with all ranks agreeing when the pass ends.

    Only full batches train (all-gather needs equal sizes everywhere); when any rank runs out, every
    rank drains what is left of its shard so the streaming split can start the next pass. Every row
    delivered is counted, trained on or not.
    """

    def __init__(self, shard, batch_rows: int, device: torch.device, meter: _Meter,
                 shuffle_buffer: int | None = None, shuffle_seed: int | None = None) -> None:
        # the buffer shuffles rows as they stream in (seeded per rank and pass); no all-to-all step
        self.iterator: Iterator[dict[str, torch.Tensor]] = iter(()) if shard is None else iter(
            shard.iter_torch_batches(batch_size=batch_rows, device=device, drop_last=False,
                                     local_shuffle_buffer_size=shuffle_buffer,
                                     local_shuffle_seed=shuffle_seed if shuffle_buffer else None))
        self.batch_rows, self.meter, self.device = batch_rows, meter, device
        self.rows_delivered = 0
        self.by_source: Counter[int] = Counter()   # rows per manifest file (`source_key`), when rows carry it
        self.exhausted = False
        self.full_batches = 0

    def _count(self, batch: dict[str, torch.Tensor]) -> int:
        rows = rows_in(batch)
        self.rows_delivered += rows
        if SOURCE_KEY in batch:
            self.by_source.update(batch[SOURCE_KEY].tolist())
        return rows

    def next(self) -> dict[str, torch.Tensor] | None:
        if self.device.type == "cuda":
            # Ray copies the next batch to the GPU in stream order, behind this step's kernels: without the
            # sync, the wait below would count the GPU finishing the step as waiting for data. One sync per
            # batch (steps themselves never sync: losses stay on the device until a log line).
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        batch = next(self.iterator, None)
        self.meter.data_wait += time.perf_counter() - start
        rows = 0 if batch is None else self._count(batch)
        if _all_reduce(float(rows == self.batch_rows), dist.ReduceOp.MIN) < 1:
            for rest in self.iterator:
                self._count(rest)
            self.exhausted = True
            return None
        self.full_batches += 1
        return batch


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry point. `loop_config["cfg"]`: the config as JSON, validated again here.
    Resumes from Ray's latest checkpoint, trains pass after pass until `train.steps`, reports every
    `log_every` steps; rank 0 validates."""
    cfg = RayBindConfig.model_validate(loop_config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed * 1000 + rank)  # augmentation and masking draws; towers are seeded by init_seed
    torch.set_num_threads(cfg.train.threads())

    model = build_model(cfg, device)
    # a video tower fed images only (a first stage) leaves its temporal attention without gradients
    unused = {"find_unused_parameters": True} if cfg.video_takes_images() else {}
    wrapped = {m: ray.train.torch.prepare_model(model.tower(m), move_to_device=False,
                                                parallel_strategy_kwargs=unused if m == "video" else {})
               for m in model.modalities}
    optimizer = build_worker_optimizer(cfg, model, device)
    scheduler = cosine_with_warmup(optimizer, cfg.train.warmup_steps, cfg.train.steps)
    autocast = autocast_for(device)

    progress: dict[str, Any] = {"step": 0, "epoch": 0, "val_before": {}, "val_after": {}, "rows_first_pass": None,
                                "resumed_from": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            progress = load_training_checkpoint(Path(directory), model, optimizer, scheduler)
        progress["resumed_from"] = [*progress.get("resumed_from", []), progress["step"]]

    views = CaptionViews(cfg)
    if rank == 0 and progress.get("caption_views"):  # totals over all ranks, restored once
        views.counts += [progress["caption_views"].get(name, 0) for name in views.names]
    val_batches = [views.validation(b) for b in _load_val(cfg, device)] if rank == 0 else []
    progress["val_rows"] = sum(anchor_rows(b) for b in val_batches)

    def validate() -> dict[str, Any]:
        return _validate(model, val_batches, device, autocast)

    if rank == 0 and not progress["val_before"]:
        progress["val_before"] = validate()

    schedule = modality_sequence(cfg.tower_weights(), cfg.train.steps)
    shard = ray.train.get_dataset_shard("train")
    micro, accum = cfg.train.batch_size, cfg.train.grad_accum
    meter = _Meter()
    # every report carries the newest validation; a resumed run starts from the one its checkpoint holds
    latest_val: dict[str, Any] = dict(progress.get("val_latest") or progress["val_before"])
    step = progress["step"]
    reported = False
    stages = cfg.train.stages
    skipped = progress.get("stage_skipped_rows", 0) if rank == 0 else 0
    # a run resumed inside a pass over a sharded manifest reads only that pass's unfinished files first
    rest = loop_config.get("rest")
    while step < cfg.train.steps:  # one iteration per pass over the shard (epoch)
        resuming = rest is not None and progress["epoch"] == rest["epoch"]
        reader = shard if not resuming else ray.train.get_dataset_shard("train_rest") if rest["files"] else None
        batches = _Batches(reader, micro * accum, device, meter, cfg.data.shuffle_buffer,
                           shuffle_seed=(cfg.seed * 1_000_003 + progress["epoch"]) * 1009 + rank)
        if resuming:   # the pass trained full batches before it stopped; its finished files' rows count (rank 0)
            batches.full_batches = 1
            if rank == 0:
                batches.by_source.update({int(k): v for k, v in rest["finished"].items()})
                batches.rows_delivered = sum(rest["finished"].values())
            batches.exhausted = reader is None   # every file of the pass was finished: the pass is over
        composer = StageComposer(batches.next, micro * accum,
                                 lambda short: _all_reduce(float(short), dist.ReduceOp.MAX) > 0)
        batch, used, text = None, set(), None
        while step < cfg.train.steps and reader is not None:
            modality = schedule[step]
            if batch is None or modality in used:
                stage = stages[stage_at(stages, step)] if stages else None
                batch, used = composer.next(video_shares(stage)), set()
                if batch is None:
                    break
                batch = views.apply(batch, progress["epoch"])
                with autocast():  # the frozen anchor (language or image): once per batch, shared by every tower
                    text = anchor_features(model, batch)
            used.add(modality)
            loss = train_step(model, wrapped[modality], modality, batch, text, micro, cfg.train.accumulation, autocast)
            apply_update(model.tower(modality), optimizer, scheduler)
            step += 1
            meter.loss[modality].append(loss)
            meter.samples += micro * accum
            final = step == cfg.train.steps
            if rank == 0 and (final or (cfg.train.val_every and step % cfg.train.val_every == 0)):
                latest_val, progress["val_step"] = validate(), step
                progress["val_latest"] = latest_val
                if final:
                    progress["val_after"] = latest_val
            if step % cfg.train.log_every == 0 or final:
                if checkpoint_due(cfg, step):   # the pass's rows per file so far, for a resume inside it
                    progress["pass_rows"] = {"epoch": progress["epoch"], "by_source": _merged_counts(batches.by_source)}
                progress["step"] = step
                progress["stage"] = stage_at(stages, step - 1)
                progress["caption_views"] = {k: int(_all_reduce(float(v))) for k, v in views.drawn().items()}
                progress["stage_skipped_rows"] = int(_all_reduce(float(skipped + composer.skipped)))
                _report(cfg, rank, world, step, progress, model, optimizer, scheduler, meter, latest_val)
                reported = True
                meter.reset()
        skipped += composer.skipped
        if batches.exhausted:
            if batches.full_batches == 0:
                raise RuntimeError(f"a pass over the training data gave no full batch of {micro * accum} rows per "
                                   f"worker ({batches.rows_delivered} rows reached this worker); lower "
                                   "train.batch_size or add data")
            if progress["rows_first_pass"] is None:
                progress["rows_first_pass"] = int(_all_reduce(float(batches.rows_delivered)))
            progress["epoch"] += 1
            progress["pass_rows"] = None
    if not reported:  # resumed a run that had already finished: report its state once more
        ray.train.report(_metrics(step, progress, model, optimizer, meter, world, latest_val))


def checkpoint_due(cfg: RayBindConfig, step: int) -> bool:
    """Whether the report after `step` carries a checkpoint: every `checkpoint_every` steps and the last."""
    return step == cfg.train.steps or bool(cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0)


def _report(cfg: RayBindConfig, rank: int, world: int, step: int, progress: dict[str, Any], model: BindModel,
            optimizer, scheduler, meter: _Meter, latest_val: dict[str, Any]) -> None:
    """Metrics every `log_every` steps; with a checkpoint every `checkpoint_every` steps and at the end."""
    metrics = _metrics(step, progress, model, optimizer, meter, world, latest_val)
    if checkpoint_due(cfg, step):
        _report_with_checkpoint(rank, metrics, model, optimizer, scheduler, progress, cfg.data.media().model_dump(mode="json"))
    else:
        ray.train.report(metrics)


def train_step(model: BindModel, tower, modality: str, batch: dict[str, torch.Tensor], text: torch.Tensor,
               micro: int, accumulation: str, autocast) -> torch.Tensor:
    """Gradients of one step of `modality` over this batch (split into micro-batches; DDP syncs on the last)."""
    inputs = tower_input(modality, batch[modality], model.tower_config(modality).preprocess, train=True,
                         frames=batch.get(FRAME_PICK))
    micro_inputs = inputs.split(micro)
    if modality == "video" and VIDEO_FRAMES in batch:  # images ride along as 1-frame clips
        micro_inputs = list(zip(micro_inputs, batch[VIDEO_FRAMES].split(micro)))

        def forward(x, frames):
            return tower(x, frames=frames)
    else:
        forward = tower
    return accumulate_gradients(model.tower(modality), micro_inputs, text.split(micro), accumulation,
                                forward=forward, no_sync=getattr(tower, "no_sync", None), autocast=autocast)


def _load_val(cfg: RayBindConfig, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The validation split, held in memory on rank 0 (it is small) so every validation reuses it."""
    shard = ray.train.get_dataset_shard("val") if cfg.data.val else None
    if shard is None:
        return []
    return [{k: v.cpu() for k, v in b.items()} for b in shard.iter_torch_batches(
        batch_size=cfg.train.val_batch_size, device="cpu")]


def _validate(model: BindModel, val_batches: list[dict[str, torch.Tensor]], device: torch.device,
              autocast) -> dict[str, Any]:
    if not val_batches:
        return {}
    with autocast():
        return {m: retrieval_metrics(model, m, val_batches, device) for m in model.modalities}


def _val_metrics(progress: dict[str, Any]) -> dict[str, float]:
    out = {}
    for moment in (M.BEFORE, M.AFTER):
        for modality, values in progress.get(f"val_{moment}", {}).items():
            for name in M.VALIDATION:
                if name in values:
                    out[M.tower_key(name, modality, moment)] = values[name]
            if M.CHANCE in values:
                out[M.tower_key(M.CHANCE, modality)] = values[M.CHANCE]
    return out


def _metrics(step: int, progress: dict[str, Any], model: BindModel, optimizer, meter: _Meter, world: int,
             latest_val: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {M.STEP: step, M.EPOCH: progress["epoch"], **meter.summary(world)}
    for group in optimizer.param_groups:  # named "<modality>/decay" and "<modality>/no_decay"
        metrics[M.tower_key(M.LR, group["name"].split("/")[0])] = group["lr"]
    for modality in model.modalities:
        metrics[M.tower_key(M.LOGIT_SCALE, modality)] = float(model.logit_scale(modality).detach())
        for name in M.VALIDATION:
            if name in latest_val.get(modality, {}):
                metrics[M.tower_key(name, modality)] = latest_val[modality][name]
    r1 = [latest_val[m][M.VAL_R1] for m in model.modalities if M.VAL_R1 in latest_val.get(m, {})]
    if r1:
        metrics[M.VAL_R1_MEAN] = sum(r1) / len(r1)
    metrics[M.VAL_STEP] = progress.get("val_step", 0)
    metrics[M.ROWS_FIRST_PASS] = progress["rows_first_pass"]
    metrics[M.VAL_ROWS] = progress.get("val_rows", 0)
    metrics[M.RESUMED_FROM] = list(progress.get("resumed_from", []))
    metrics[M.STAGE] = progress.get("stage", 0)
    metrics[M.CAPTION_VIEWS] = dict(progress.get("caption_views", {}))
    metrics[M.STAGE_SKIPPED_ROWS] = progress.get("stage_skipped_rows", 0)
    metrics.update(_val_metrics(progress))
    return metrics


def _report_with_checkpoint(rank: int, metrics: dict[str, Any], model: BindModel, optimizer, scheduler,
                            progress: dict[str, Any], data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            save_training_checkpoint(Path(directory), model, optimizer, scheduler, progress, data)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)

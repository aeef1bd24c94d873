"""What a run asks of the cluster and of the model, computed without running it.

`jobs/pretrain.py --dry-run` prints this plan; `raybind.train.trainer.prepare` checks the same resource request
against a local cluster before anything starts, because Ray would otherwise wait forever for a GPU or
CPU that a single machine does not have (no autoscaler will ever add it).
"""

from __future__ import annotations

import os
from typing import Any

from raybind.config import RayBindConfig
from raybind.data.pipeline import synthesis_settings
from raybind.errors import ResourceError


def worker_resources(cfg: RayBindConfig) -> dict[str, float]:
    """What each Ray Train worker asks for (with the `train` placement resources on a cluster)."""
    return {"CPU": cfg.train.cpus_per_worker, "GPU": cfg.train.gpus_per_worker if cfg.train.use_gpu else 0.0,
            **cfg.ray.placement.train}


def resource_request(cfg: RayBindConfig) -> dict[str, Any]:
    """Logical CPUs/GPUs per part of the run, and their sum (what must fit at once)."""
    train = {"workers": cfg.train.num_workers, **worker_resources(cfg)}
    pool, decode = cfg.data.synthesis, cfg.data.decode
    parts: dict[str, Any] = {"train": train}
    if synthesis_settings(cfg):
        parts["synthesis"] = {"actors": pool.actors, "CPU": pool.num_cpus, "GPU": pool.num_gpus}
    if not synthesis_settings(cfg) or pool.num_gpus > 0:  # decode runs as its own CPU tasks: one must fit
        parts["decode"] = {"tasks": 1, "CPU": decode.num_cpus, "GPU": 0.0}
    total = {"CPU": 0.0, "GPU": 0.0}
    for part in parts.values():
        count = part.get("workers", part.get("actors", part.get("tasks", 1)))
        for kind in total:
            total[kind] += count * part[kind]
    parts["total"] = {k: round(v, 3) for k, v in total.items()}
    return parts


def _describe(request: dict[str, Any]) -> str:
    lines = []
    for name, part in request.items():
        if name == "total":
            continue
        count_key = next(k for k in ("workers", "actors", "tasks") if k in part)
        lines.append(f"{name}: {part[count_key]} {count_key} x {part['CPU']:g} CPU, {part['GPU']:g} GPU")
    return "; ".join(lines)


def check_fits(cfg: RayBindConfig, available: dict[str, float], where: str) -> None:
    """Raise `ResourceError` when the run's request cannot be placed on `available` (a single node)."""
    request = resource_request(cfg)
    short = [f"{need:g} {kind} (has {available.get(kind, 0.0):g})" for kind, need in request["total"].items()
             if need > available.get(kind, 0.0) + 1e-9]
    for kind in {**cfg.ray.placement.data, **cfg.ray.placement.train}:
        if available.get(kind, 0.0) <= 0:
            short.append(f"the custom resource {kind!r} that ray.placement asks for (has none)")
    if cfg.train.use_gpu and cfg.train.gpus_per_worker > available.get("GPU", 0.0):
        short.append(f"{cfg.train.gpus_per_worker:g} GPU per training worker (has {available.get('GPU', 0.0):g})")
    if short:
        raise ResourceError(
            f"{where} cannot run this config: it needs {', '.join(short)} [{_describe(request)}]. Lower "
            "train.num_workers / train.cpus_per_worker / train.gpus_per_worker or data.synthesis.actors / "
            "num_cpus / num_gpus, set train.use_gpu: false, or run on a cluster that has them")


def local_machine_resources(cfg: RayBindConfig) -> dict[str, float]:
    """What a local Ray started for this config would have: `ray.num_cpus` (or every core) and the GPUs."""
    import torch

    cpus = cfg.ray.num_cpus if cfg.ray.num_cpus is not None else float(os.cpu_count() or 1)
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def local_gpu_gib() -> float | None:
    """Memory of this machine's first GPU, or None without one."""
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2 ** 30 if torch.cuda.is_available() else None


def check_memory_fits(memory: dict[str, Any], gpu_gib: float, where: str) -> None:
    """Raise `ResourceError` when a worker's estimated peak (`raybind.train.memory_estimate`) exceeds its GPU: the
    estimate undercounts (see its margin), so such a run would stop with CUDA out of memory at its first step."""
    if memory["peak_gib"] > gpu_gib:
        towers = ", ".join(f"{m} {gib:g} GiB" for m, gib in memory["towers_peak_gib"].items())
        raise ResourceError(
            f"{where} cannot hold this config's training step: its estimated peak is {memory['peak_gib']:g} GiB "
            f"per worker ({towers}), the GPU has {gpu_gib:.1f} GiB. Lower train.batch_size and raise "
            "train.grad_accum (cached accumulation keeps every negative), or turn on "
            "model.towers.<modality>.grad_checkpointing")


def is_local(cfg: RayBindConfig) -> bool:
    """A run that starts its own Ray on this machine (no cluster address given or inherited)."""
    return cfg.ray.address is None and not os.environ.get("RAY_ADDRESS")


def training_plan(cfg: RayBindConfig) -> dict[str, Any]:
    """Towers, trainable parameters, batch layout, resources and each worker's estimated peak memory: the
    `--dry-run` summary."""
    from encoders.model import parameter_counts
    from raybind.train.memory_estimate import estimate_worker_memory

    counts = parameter_counts(cfg.encoder_config())
    micro, accum, workers = cfg.train.batch_size, cfg.train.grad_accum, cfg.train.num_workers
    global_batch = micro * accum * workers
    seen_together = global_batch if cfg.train.accumulation == "cached" else micro * workers
    towers = {m: {"trainable_params": c["trainable"], "total_params": c["total"],
                  "mask_ratio": t.mask_ratio, "lora_rank": t.lora.r if t.lora else None,
                  "grad_checkpointing": cfg.tower(m).grad_checkpointing, "lr": cfg.learning_rates()[m]}
              for (m, c), t in zip(counts.items(), cfg.encoder_config().towers)}
    plan: dict[str, Any] = {
        "name": cfg.name, "preset": cfg.model.preset, "towers": towers,
        "trainable_params": sum(c["trainable"] for c in counts.values()),
        "batch": {"per_worker": micro, "grad_accum": accum, "workers": workers, "accumulation": cfg.train.accumulation},
        "global_batch": global_batch, "negatives_per_step": seen_together - 1,
        "steps": cfg.train.steps, "compile": cfg.compile_enabled(),
        "resources": resource_request(cfg), "config_hash": cfg.hash(),
    }
    if is_local(cfg):
        available = local_machine_resources(cfg)
        plan["local_resources"] = available
        check_fits(cfg, available, "this machine")
        plan["fits"] = True
    else:
        plan["fits"] = "decided by the cluster (its autoscaler may add nodes)"
    plan["memory"] = estimate_worker_memory(cfg)
    gpu_gib = local_gpu_gib() if is_local(cfg) and cfg.train.use_gpu else None
    if gpu_gib is not None:
        plan["memory"]["gpu_gib"] = round(gpu_gib, 1)
        check_memory_fits(plan["memory"], gpu_gib, "this machine's GPU")
    return plan

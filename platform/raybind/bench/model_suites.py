"""Tower suites without Ray: token masking speed-up and LoRA vs full fine-tuning (GPU suites: gpu_suites)."""

from __future__ import annotations

import multiprocessing
import resource
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from encoders import BindModel, LoraSettings, ModelConfig, TowerConfig, get_preset
from encoders.modalities import REGISTRY
from encoders.optim import build_optimizer, parameter_groups
from encoders.step import training_step


def _tower_model(preset: str, mask_ratio: float, lora: bool, modality: str = "depth") -> BindModel:
    spec = get_preset(preset)
    tower = TowerConfig(modality=modality, mask_ratio=mask_ratio, lora=LoraSettings(r=2) if lora else None,
                        preprocess=spec.preprocess(modality))
    return BindModel(ModelConfig(preset=preset, towers=(tower,)))


def _batch(model: BindModel, batch: int, device: torch.device, seed: int = 0):
    size = model.tower_config("depth").preprocess.image_size
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, size, size, generator=g).to(device)
    text = F.normalize(torch.randn(batch, model.embed_dim, generator=g), dim=-1).to(device)
    return inputs, text


def _step_seconds(model: BindModel, optimizer: torch.optim.Optimizer, batch: int, steps: int,
                  device: torch.device, dtype: torch.dtype | None = None) -> float:
    """Mean seconds per training step of the depth tower, after one warm-up step."""
    inputs, text = _batch(model, batch, device)
    model.train()
    training_step(model, "depth", inputs, text, optimizer, dtype)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        training_step(model, "depth", inputs, text, optimizer, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _optimizer(model: BindModel) -> torch.optim.Optimizer:
    return build_optimizer(parameter_groups(model.towers, {"depth": 1e-4}))


def _samples_per_s(model: BindModel, batch: int, steps: int, device: torch.device,
                   dtype: torch.dtype | None = None) -> float:
    return batch / _step_seconds(model, _optimizer(model), batch, steps, device, dtype)


def masking_suite(preset: str, batch: int, steps: int) -> dict:
    """Samples/s of one tower's training step at mask ratio 0 and 0.5 (plus the paper's per-modality ratios)."""
    model = _tower_model(preset, 0.0, lora=True)
    tower = model.tower("depth")
    ratios = sorted({0.0, 0.5, *(kind.mask_ratio for kind in REGISTRY.values())})
    rates = {}
    for ratio in ratios:
        tower.config = replace(tower.config, mask_ratio=ratio)
        rates[str(ratio)] = round(_samples_per_s(model, batch, steps, torch.device("cpu")), 3)
    return {"preset": preset, "tower_tokens": tower.backbone.num_patches + 1, "batch": batch, "steps": steps,
            "samples_per_s": rates, "speedup": round(rates["0.5"] / rates["0.0"], 3)}


def _lora_worker(preset: str, lora: bool, batch: int, steps: int, queue) -> None:
    model = _tower_model(preset, 0.0, lora=lora)
    trainable = sum(p.numel() for p in model.towers.parameters() if p.requires_grad)
    optimizer = _optimizer(model)
    step_s = _step_seconds(model, optimizer, batch, steps, torch.device("cpu"))
    state_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                      if torch.is_tensor(t))
    queue.put({"trainable_params": trainable, "optimizer_state_mib": round(state_bytes / 2**20, 2),
               "step_s": round(step_s, 4), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                  / 1024, 1)})


def lora_suite(preset: str, batch: int, steps: int) -> dict:
    """LoRA vs full fine-tuning of the same tower, each in a fresh process so peak memory is its own."""
    ctx = multiprocessing.get_context("spawn")
    out = {}
    for name, lora in (("lora", True), ("full", False)):
        queue = ctx.Queue()
        proc = ctx.Process(target=_lora_worker, args=(preset, lora, batch, steps, queue))
        proc.start()
        out[name] = queue.get(timeout=1800)
        proc.join()
    return {"preset": preset, "batch": batch, "steps": steps, **out,
            "step_time_ratio": round(out["lora"]["step_s"] / out["full"]["step_s"], 3),
            "peak_memory_ratio": round(out["lora"]["peak_rss_mib"] / out["full"]["peak_rss_mib"], 3)}

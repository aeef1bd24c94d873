"""The model as a training worker holds it, built from the config: no Ray here, so GPU benchmarks and
checks time exactly what the Ray Train loop trains."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from encoders import BindModel
from encoders.lora import cast_frozen_weights
from encoders.optim import build_optimizer, parameter_groups
from raybind.config import RayBindConfig


def autocast_for(device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on GPUs, plain fp32 on CPUs."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_model(cfg: RayBindConfig, device: torch.device) -> BindModel:
    """Activation checkpointing and `torch.compile` per the config; on GPUs frozen weight matrices in bf16
    (they only ever meet bf16 autocast there; trained parameters stay fp32)."""
    model = BindModel(cfg.model_config_for_encoders())
    if device.type == "cuda":
        cast_frozen_weights(model, torch.bfloat16)
    model = model.to(device).train()
    for modality in model.modalities:
        backbone = model.tower(modality).backbone
        backbone.set_grad_checkpointing(cfg.tower_fields(modality).grad_checkpointing)
        if cfg.compile_enabled():
            backbone.compile_blocks(dynamic=False)
    return model


def build_worker_optimizer(cfg: RayBindConfig, model: BindModel, device: torch.device) -> torch.optim.AdamW:
    """AdamW with one group per tower and decay class; fused kernels when the parameters are on a GPU."""
    return build_optimizer(parameter_groups(model.towers, cfg.learning_rates(), cfg.train.weight_decay),
                           fused=device.type == "cuda")

"""The model as a training worker holds it, built from the config: no Ray here, so GPU benchmarks and
checks time exactly what the Ray Train loop trains."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from encoders import BindModel
from encoders.checkpoint import init_from
from encoders.lora import cast_frozen_weights
from encoders.modalities import modality as modality_spec
from encoders.optim import build_optimizer, parameter_groups
from raybind import storage
from raybind.config import RayBindConfig
from raybind.evaluate.embed import resolve_checkpoint


def autocast_for(device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on GPUs, plain fp32 on CPUs."""
    if device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_model(cfg: RayBindConfig, device: torch.device) -> BindModel:
    """The worker's model on `device`: started from `model.init_from` when set, `apply_worker_layout` for it,
    then `torch.compile` per the config."""
    model = BindModel(cfg.encoder_config())
    if cfg.model.init_from:
        with storage.local_dir(resolve_checkpoint(cfg.model.init_from)) as folder:
            init_from(model, folder)
    apply_worker_layout(model, cfg, gpu=device.type == "cuda")
    model = model.to(device)
    if cfg.compile_enabled():
        for modality in model.modalities:
            model.tower(modality).backbone.compile_blocks(dynamic=False)
    return model


def apply_worker_layout(model: BindModel, cfg: RayBindConfig, gpu: bool) -> None:
    """Train mode and activation checkpointing per tower; on GPUs frozen weight matrices in bf16 (they only
    ever meet bf16 autocast there; trained parameters stay fp32). `raybind.train.memory_estimate` lays out its
    model with this too, so what it measures is what the worker holds."""
    if gpu:
        cast_frozen_weights(model, torch.bfloat16)
    model.train()
    for modality in model.modalities:
        model.tower(modality).backbone.set_grad_checkpointing(cfg.tower(modality).grad_checkpointing)


def random_step_inputs(model: BindModel, modality: str, batch: int,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A tower input batch of the model's shapes and normalised text features, fixed by seed 0 (benchmarks,
    GPU checks and the memory estimate step on these)."""
    pre = model.tower_config(modality).preprocess
    g = torch.Generator().manual_seed(0)
    kind = modality_spec(modality)
    if kind.temporal:
        shape = (batch, pre.num_frames, 3, pre.image_size, pre.image_size)
    elif kind.tower_input == "spectrogram":
        shape = (batch, 3, pre.mel_bins, pre.target_length)
    else:
        shape = (batch, 3, pre.image_size, pre.image_size)
    text = F.normalize(torch.randn(batch, model.embed_dim, generator=g), dim=-1)
    return torch.randn(shape, generator=g).to(device), text.to(device)


def build_worker_optimizer(cfg: RayBindConfig, model: BindModel, device: torch.device,
                           fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with one group per tower and decay class; fused kernels when the parameters are on a GPU (or
    when `fused` says so: the memory estimate's fake tensors cannot run the unfused update's host reads)."""
    return build_optimizer(parameter_groups(model.towers, cfg.learning_rates(), cfg.train.weight_decay),
                           fused=device.type == "cuda" if fused is None else fused)

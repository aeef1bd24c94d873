"""A training worker's peak accelerator memory, estimated on any machine in seconds (no GPU needed).

The worker's model is built on the meta device (no weights: their values change no byte), then its
optimizer and training step run under `FakeTensorMode`: every op computes shapes and dtypes, never data,
so a ViT-L/14 step costs seconds of CPU and no memory. A dispatch mode counts the bytes
of every live tensor storage and keeps the peak: weights, LoRA adapters, gradients, AdamW states and each
activation autograd saves, exactly as the step holds them (accumulation mode, masking, activation
checkpointing included). The GPU layout is rebuilt on the CPU: frozen weights in bf16, bf16 autocast.

What the CPU cannot show (CUDA's kernel workspaces, the caching allocator's block rounding, which attention
kernel runs) is `ALLOCATOR_MARGIN`, calibrated on a measurement: the L/14 video tower with 16 clips
allocated ~27 GiB on an H100 where this estimates 24.9 GiB, and with 64 clips ran out of 80 GB where this
estimates 97 GiB (docs/gpus.md: the H100 figures). The language tower's forward (no gradients, freed within the step) and the
raw input batch are not counted; both are small beside a tower's activations.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from encoders import BindModel
from encoders.step import training_step
from raybind.config import RayBindConfig
from raybind.train.worker_model import apply_worker_layout, build_worker_optimizer, random_step_inputs

ALLOCATOR_MARGIN = 1.15  # measured 27 / estimated 24.9 = 1.08, rounded up
GIB = 2 ** 30


class LiveStorageBytes(TorchDispatchMode):
    """Bytes of the tensor storages alive now, and the most alive at once, counted after every op.

    A storage is counted once however many views share it, and uncounted when Python frees it."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def count(self, tensor: torch.Tensor) -> None:
        """Count `tensor`'s storage once while it lives (a finalizer uncounts it when freed); update the peak."""
        storage = tensor.untyped_storage()
        if storage in self._counted:
            return
        size = storage.nbytes()
        self._counted[storage] = size
        weakref.finalize(storage, self._release, size)
        self.live += size
        self.peak = max(self.peak, self.live)

    def _release(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.count(leaf)
        return out


def _fake_parameters(model: nn.Module) -> None:
    """Give every parameter and buffer of `model` (built on the meta device) a fake CPU tensor of its shape,
    dtype and trainability, in place, ties kept. Building on meta and swapping the tensors in by hand,
    rather than building under the fake mode, keeps module methods off fake parameters: `Module.to` has to
    swap those, which torch 2.11 refuses while the fake mode holds a reference to them."""
    fakes: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                if id(param) not in fakes:
                    fake = torch.empty(param.shape, dtype=param.dtype, device="cpu")
                    fakes[id(param)] = nn.Parameter(fake, requires_grad=param.requires_grad)
                module._parameters[name] = fakes[id(param)]
        for name, buffer in module._buffers.items():
            if buffer is not None:
                fakes.setdefault(id(buffer), torch.empty(buffer.shape, dtype=buffer.dtype, device="cpu"))
                module._buffers[name] = fakes[id(buffer)]


def _make_optimizer_states(optimizer: torch.optim.Optimizer) -> None:
    """AdamW's moments for every trained parameter, as a worker holds them from its second step on (an
    update with zero gradients makes them)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def estimate_worker_memory(cfg: RayBindConfig, gpu: bool | None = None) -> dict[str, Any]:
    """Peak memory of one training worker running `cfg`: every tower's step at the per-worker batch and
    accumulation, with AdamW's states in place. `gpu` (default `train.use_gpu`) picks the
    layout: bf16 frozen weights and autocast, or the CPU's fp32."""
    gpu = cfg.train.use_gpu if gpu is None else gpu
    device = torch.device("cpu")  # fake tensors on the CPU; the GPU's dtypes come from the layout and autocast
    accum = cfg.train.grad_accum
    rows = cfg.train.batch_size * accum
    towers: dict[str, int] = {}
    with torch.device("meta"):
        model = BindModel(dataclasses.replace(cfg.encoder_config(), pretrained=None))
    with FakeTensorMode():
        _fake_parameters(model)
        apply_worker_layout(model, cfg, gpu=gpu)
        optimizer = build_worker_optimizer(cfg, model, device, fused=True)
        counter = LiveStorageBytes()
        for tensor in [*model.parameters(), *model.buffers()]:
            counter.count(tensor)
        weights = counter.live
        with counter:
            _make_optimizer_states(optimizer)
            for modality in model.modalities:
                inputs, text = random_step_inputs(model, modality, rows, device)
                counter.peak = counter.live
                training_step(model, modality, inputs, text, optimizer, torch.bfloat16 if gpu else None,
                              micro_batches=accum, mode=cfg.train.accumulation)
                towers[modality] = counter.peak
                del inputs, text
    peak = max(towers.values())
    return {"layout": "gpu bf16" if gpu else "cpu fp32", "weights_gib": round(weights / GIB, 2),
            "towers_peak_gib": {m: round(v / GIB, 2) for m, v in towers.items()}, "peak_gib": round(peak / GIB, 2),
            "with_margin_gib": round(peak * ALLOCATOR_MARGIN / GIB, 2), "peak_bytes": peak}

"""The one place a contrastive training step lives: gradients over micro-batches, then the update.

The Ray Train loop (`raybind.train.loop`), the benchmarks and the GPU checks all call these, so what is
timed is what trains.

Two ways to accumulate gradients over N micro-batches of one step:

- `cached` (open_clip's accum-freq): a no-grad forward of every micro-batch caches its features; then
  each micro-batch is forwarded again with grad and its loss is taken over the *whole* accumulated batch
  (its fresh features in place of its cached slice). Every sample sees N x micro - 1 negatives (times the
  world size), and the summed gradients equal those of one batch N times larger. The random draws of the
  first forward (token masking) are replayed in the second, so both see the same tokens.
- `plain`: each micro-batch is a small contrastive batch of its own (micro - 1 negatives); losses are
  averaged. Cheaper (one forward per micro-batch), weaker negatives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from encoders.loss import contrastive_loss
from encoders.model import BindModel
from encoders.towers import ModalityTower

ACCUMULATION_MODES = ("cached", "plain")

Forward = Callable[..., torch.Tensor]
ContextFactory = Callable[[], contextlib.AbstractContextManager]
# A micro-batch: the tower input, or a tuple of forward arguments (e.g. video clips and per-row frame counts)
MicroInput = torch.Tensor | tuple[torch.Tensor, ...]


def _features(forward: Forward, inputs: MicroInput) -> torch.Tensor:
    out = forward(*inputs) if isinstance(inputs, tuple) else forward(inputs)
    return F.normalize(out.float(), dim=-1)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def accumulate_gradients(tower: ModalityTower, micro_inputs: Sequence[MicroInput],
                         micro_text: Sequence[torch.Tensor], mode: str = "cached", forward: Forward | None = None,
                         no_sync: ContextFactory | None = None,
                         autocast: ContextFactory = contextlib.nullcontext) -> torch.Tensor:
    """Backward of one step's loss over `micro_inputs` (tower inputs) and `micro_text` (frozen, normalised
    text features); returns the step's loss, detached and on the inputs' device: reading it (`float`) waits
    for the GPU, so callers do that when they log, not every step. `forward` is the tower as the caller runs
    it (e.g. wrapped in DDP; default: `tower`); `no_sync` (DDP's) skips gradient all-reduce on all but the
    last backward.
    """
    if mode not in ACCUMULATION_MODES:
        raise ValueError(f"unknown accumulation mode {mode!r}; valid: {list(ACCUMULATION_MODES)}")
    if len(micro_inputs) != len(micro_text) or not micro_inputs:
        raise ValueError(f"need as many text as input micro-batches (>= 1), got {len(micro_inputs)} and "
                         f"{len(micro_text)}")
    forward = forward or tower
    count = len(micro_inputs)

    def sync_context(index: int) -> contextlib.AbstractContextManager:
        last = index == count - 1
        return contextlib.nullcontext() if last or no_sync is None else no_sync()

    if mode == "plain" or count == 1:
        losses = []
        for index, (inputs, text) in enumerate(zip(micro_inputs, micro_text)):
            with sync_context(index), autocast():
                loss = contrastive_loss(_features(forward, inputs), text, tower.logit_scale()) / count
            loss.backward()
            losses.append(loss.detach())
        return torch.stack(losses).sum()

    first = micro_inputs[0]
    device = (first[0] if isinstance(first, tuple) else first).device
    states, cached = [], []
    with torch.no_grad(), autocast():
        for inputs in micro_inputs:
            states.append(_rng_state(device))
            cached.append(_features(forward, inputs))
    after = _rng_state(device)
    text = torch.cat(list(micro_text))
    for index, inputs in enumerate(micro_inputs):
        _set_rng_state(states[index], device)  # the same masking draws as the cached forward
        last = index == count - 1
        with sync_context(index), autocast():
            fresh = _features(forward, inputs)
            features = torch.cat([*cached[:index], fresh, *cached[index + 1:]])
            # The loss depends on the scale once, not once per micro-batch: its gradient flows on the last
            # backward only (the one DDP synchronises).
            scale = tower.logit_scale() if last else tower.logit_scale().detach()
            loss = contrastive_loss(features, text, scale)
        loss.backward()
    _set_rng_state(after, device)
    return loss.detach()  # each micro-batch's loss is the whole batch's


def apply_update(tower: ModalityTower, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> None:
    """After a step's gradients: optimizer (and schedule) step, clear gradients, clamp the tower's temperature."""
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tower.clamp_logit_scale()


def training_step(model: BindModel, modality: str, inputs: torch.Tensor, text_features: torch.Tensor,
                  optimizer: torch.optim.Optimizer, autocast_dtype: torch.dtype | None = None,
                  micro_batches: int = 1, mode: str = "cached") -> torch.Tensor:
    """One whole step without Ray (benchmarks, GPU checks): gradients over `micro_batches` slices, then the
    update; returns the detached loss (see `accumulate_gradients`)."""
    device_type = inputs.device.type

    def autocast() -> contextlib.AbstractContextManager:
        return (torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype
                else torch.autocast(device_type, enabled=False))

    tower = model.tower(modality)
    loss = accumulate_gradients(tower, inputs.chunk(micro_batches), text_features.chunk(micro_batches), mode,
                                autocast=autocast)
    apply_update(tower, optimizer)
    return loss

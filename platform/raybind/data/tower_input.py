"""Turning a pipeline batch (uint8 frames, float16 spectrograms/depth, int32 tokens) into tower inputs.

Normalisation and augmentation run here, on the training device, through the same public transforms
that inference uses (`encoders.transforms`).
"""

from __future__ import annotations

import torch

from encoders import transforms
from encoders.config import PreprocessConfig
from encoders.modalities import modality as modality_spec


def _one_frame(stack: torch.Tensor, train: bool, generator: torch.Generator | None,
               bound: torch.Tensor | None = None) -> torch.Tensor:
    """[B, K, ...] synthesized frames -> [B, ...]: a random one when training, the middle one at eval;
    `bound` [B] (>= 0) fixes a row's frame (the frame its drawn per-frame caption describes)."""
    count = stack.shape[1]
    if count == 1:
        return stack[:, 0]
    if not train:
        return stack[:, count // 2]
    picks = torch.randint(0, count, (stack.shape[0],), generator=generator).to(stack.device)
    if bound is not None:
        picks = torch.where(bound >= 0, bound.to(picks.device), picks)
    return stack[torch.arange(stack.shape[0], device=stack.device), picks]


def tower_input(modality: str, column: torch.Tensor, pre: PreprocessConfig, train: bool,
                generator: torch.Generator | None = None, frames: torch.Tensor | None = None) -> torch.Tensor:
    """Pipeline column of one modality -> normalised float input for that tower. `frames`: depth/thermal
    rows' bound frame (-1: free)."""
    kind = modality_spec(modality)
    if kind.tower_input == "spectrogram":
        return column.float()   # normalised when decoded (the mel statistics are the transform's)
    if kind.synthesized:        # a stack of K maps: the one this row trains on
        column = _one_frame(column, train, generator, frames)
    if kind.shipped_dtype == "float16":
        column = column.float()
    return getattr(transforms, kind.transform)(column, pre, train=train, generator=generator)

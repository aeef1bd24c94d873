"""AdamW parameter groups and the cosine-with-warmup schedule (LanguageBind/open_clip recipe).

Every group's learning rate and weight decay are set here once, explicitly; nothing downstream
overwrites them (LanguageBind's code silently did).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from encoders import constants as C

# Embedding-like parameters never get weight decay.
_NO_DECAY_NAMES = ("class_embedding", "positional_embedding", "temporal_embedding", "log_logit_scale")


def wants_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Matrices decay; norms, biases, the logit scale and embeddings do not."""
    return param.ndim >= 2 and not name.endswith(_NO_DECAY_NAMES)


def parameter_groups(towers: Mapping[str, nn.Module], learning_rates: Mapping[str, float],
                     weight_decay: float = C.WEIGHT_DECAY) -> list[dict]:
    """Two groups per tower (decay / no decay), each with that tower's own learning rate."""
    groups = []
    for modality, tower in towers.items():
        if modality not in learning_rates:
            raise KeyError(f"no learning rate for tower {modality!r}; given {sorted(learning_rates)}")
        decay, no_decay = [], []
        for name, param in tower.named_parameters():
            if param.requires_grad:
                (decay if wants_weight_decay(name, param) else no_decay).append(param)
        for params, wd, kind in ((decay, weight_decay, "decay"), (no_decay, 0.0, "no_decay")):
            if params:
                groups.append({"params": params, "lr": learning_rates[modality], "base_lr": learning_rates[modality],
                               "weight_decay": wd, "name": f"{modality}/{kind}"})
    return groups


def build_optimizer(groups: Iterable[dict], betas: tuple[float, float] = C.ADAM_BETAS,
                    eps: float = C.ADAM_EPS, fused: bool = False) -> torch.optim.AdamW:
    """AdamW; `fused` (one kernel for every parameter's update) when all parameters live on a GPU."""
    return torch.optim.AdamW(list(groups), betas=betas, eps=eps, fused=fused or None)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                       min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to each group's base lr, then cosine decay to `min_ratio` of it."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

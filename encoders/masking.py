"""Token masking (FLIP/MAE style): keep a random subset of patch tokens during training.

Dropping tokens before the transformer is what makes masked training cheaper: attention and MLP cost
scale with the number of tokens kept.
"""

from __future__ import annotations

import torch


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """How many patch tokens survive masking (at least one)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, int(num_tokens * (1.0 - mask_ratio)))


def random_keep_indices(batch: int, num_tokens: int, mask_ratio: float, device: torch.device,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted indices [batch, kept] of the patch tokens each sample keeps."""
    keep = num_kept(num_tokens, mask_ratio)
    # No `generator=None` keyword: that overload wants concrete sizes and breaks torch.compile's
    # symbolic batch dimension.
    noise = (torch.rand(batch, num_tokens, device=device) if generator is None
             else torch.rand(batch, num_tokens, device=device, generator=generator))
    return noise.argsort(dim=1)[:, :keep].sort(dim=1).values


def gather_tokens(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Select `keep` [batch, kept] from `tokens` [batch, num_tokens, width]."""
    index = keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, index)

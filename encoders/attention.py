"""Multi-head attention with separate q, k, v and out projections.

open_clip's default blocks use `nn.MultiheadAttention`, which fuses q, k, v into one `in_proj_weight`
parameter that peft cannot target as separate Linear layers. Splitting it (weights copied exactly) gives
LoRA real, independent adapters on q, k, v and out, as LanguageBind's towers have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitAttention(nn.Module):
    """Self-attention over [batch, tokens, width] with four plain `nn.Linear` projections."""

    def __init__(self, width: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=bias)
        self.k_proj = nn.Linear(width, width, bias=bias)
        self.v_proj = nn.Linear(width, width, bias=bias)
        self.out_proj = nn.Linear(width, width, bias=bias)

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> "SplitAttention":
        """Copy the weights of a fused `nn.MultiheadAttention` (self-attention, batch-first or not)."""
        if mha.in_proj_weight is None:
            raise ValueError("only nn.MultiheadAttention with a fused in_proj_weight can be split")
        width = mha.embed_dim
        bias = mha.in_proj_bias is not None
        split = cls(width, mha.num_heads, bias=bias)
        with torch.no_grad():
            for i, proj in enumerate((split.q_proj, split.k_proj, split.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * width:(i + 1) * width])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[i * width:(i + 1) * width])
            split.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                split.out_proj.bias.copy_(mha.out_proj.bias)
        return split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unmasked self-attention, [batch, tokens, width] -> the same shape (scaled_dot_product_attention)."""
        batch, tokens, width = x.shape
        shape = (batch, tokens, self.heads, width // self.heads)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))

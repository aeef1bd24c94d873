"""Symmetric InfoNCE over the global batch.

Features from every rank are all-gathered so each sample sees the whole global batch as negatives;
the local slice is the caller's own tensor, so gradients flow through it (and only it) on each rank.
Summed over ranks, the gradients equal those of one process holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """All-gather [local_batch, dim] across ranks into [global_batch, dim], keeping this rank's grad."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    gathered = [torch.zeros_like(features) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, features.detach().contiguous())
    gathered[dist.get_rank()] = features
    return torch.cat(gathered, dim=0)


def contrastive_loss(modality_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor, gather: bool = True) -> torch.Tensor:
    """Mean of modality->text and text->modality cross-entropy; inputs are L2-normalised [batch, dim]."""
    if modality_features.shape != text_features.shape:
        raise ValueError(f"feature shapes differ: {list(modality_features.shape)} vs {list(text_features.shape)}")
    if gather:
        modality_features = gather_features(modality_features)
        text_features = gather_features(text_features)
    logits = logit_scale * modality_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

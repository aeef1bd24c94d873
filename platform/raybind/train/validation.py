"""Validation: contrastive loss and anchor-to-X retrieval over a whole (small) validation set: text-to-X
with the language anchor, image-to-X with the image anchor."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from encoders import BindModel, contrastive_loss
from raybind.data.batch_format import VIDEO_FRAMES
from raybind.data.tower_input import tower_input
from raybind.ranking import recall_at
from raybind.train.anchor import anchor_features


@torch.no_grad()
def embed_split(model: BindModel, modality: str, batches: Iterable[dict[str, torch.Tensor]],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(modality embeddings, anchor embeddings: text or image) of every validation row, in order."""
    was_training = model.training
    model.eval()
    pre = model.tower_config(modality).preprocess
    xs, ts = [], []
    for batch in batches:
        frames = batch[VIDEO_FRAMES].to(device) if modality == "video" and VIDEO_FRAMES in batch else None
        xs.append(model.encode(modality, tower_input(modality, batch[modality].to(device), pre, train=False),
                               frames=frames))
        ts.append(anchor_features(model, batch, device))
    model.train(was_training)
    return torch.cat(xs), torch.cat(ts)


def retrieval_metrics(model: BindModel, modality: str, batches: list[dict[str, torch.Tensor]],
                      device: torch.device) -> dict[str, float]:
    """Embeddings as the caller runs the model (bf16 autocast on GPUs); scores from them in fp32."""
    x, t = embed_split(model, modality, batches, device)
    if len(x) == 0:
        return {}
    return split_metrics(x, t, model.logit_scale(modality).detach())


def split_metrics(x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor) -> dict[str, float]:
    """Loss and ranks of normalised modality (`x`) and text (`t`) embeddings, row i matching row i. Always
    fp32, also inside a caller's autocast: bf16 products keep ~3 digits, and similarities that differ
    beyond them would tie and share ranks, lowering R@k."""
    with torch.autocast(x.device.type, enabled=False):
        x, t, scale = x.float(), t.float(), scale.float()
        similarity = t @ x.T  # text queries over modality items
        loss = contrastive_loss(x, t, scale, gather=False)
    return {
        "val_loss": float(loss),
        "val_r1": recall_at(similarity, 1),
        "val_r5": recall_at(similarity, 5),
        "val_r10": recall_at(similarity, 10),
        "val_r1_x2t": recall_at(similarity.T, 1),
        "chance": 1.0 / len(x),
        "val_rows": float(len(x)),
    }

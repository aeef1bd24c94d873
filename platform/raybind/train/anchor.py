"""What a batch's rows bind to: their captions through the frozen language tower, or their anchor frame
through the frozen image tower (`model.anchor`). The training loop and validation both ask here."""

from __future__ import annotations

import torch

from encoders import BindModel
from raybind.data.batch_format import ANCHOR, TOKENS
from raybind.data.tower_input import tower_input


def anchor_features(model: BindModel, batch: dict[str, torch.Tensor], device: torch.device | None = None) -> torch.Tensor:
    """L2-normalised frozen anchor embeddings [rows, D] of a batch (no gradients), on `device` (default: the
    batch's). Anchor frames are prepared as evaluation prepares images: centre crop, no flip."""
    if model.anchor == "image":
        frames = batch[ANCHOR] if device is None else batch[ANCHOR].to(device)
        return model.encode_anchor_images(tower_input("image", frames, model.anchor_preprocess, train=False))
    tokens = batch[TOKENS] if device is None else batch[TOKENS].to(device)
    return model.encode_text(tokens.long())


def anchor_rows(batch: dict[str, torch.Tensor]) -> int:
    """Rows of a batch as its anchor column counts them."""
    return len(batch[ANCHOR] if ANCHOR in batch else batch[TOKENS])

"""One contrastive training step for one tower, without Ray: what benchmarks and GPU checks time.

The distributed loop in `raybind.train_loop` does the same per micro-batch, plus DDP and accumulation.
"""

from __future__ import annotations

import torch

from encoders.loss import contrastive_loss
from encoders.model import BindModel


def training_step(model: BindModel, modality: str, inputs: torch.Tensor, text_features: torch.Tensor,
                  optimizer: torch.optim.Optimizer, autocast_dtype: torch.dtype | None = None) -> float:
    """Forward, symmetric InfoNCE against precomputed (frozen) text features, backward, AdamW, clamp."""
    device_type = inputs.device.type
    context = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else torch.autocast(
        device_type, enabled=False)
    with context:
        loss = contrastive_loss(model.encode(modality, inputs), text_features, model.logit_scale(modality))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.tower(modality).clamp_logit_scale()
    return float(loss.detach())

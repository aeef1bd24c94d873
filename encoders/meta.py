"""Builds for shapes only: inside `torch.device("meta")` (a dry-run plan, a memory estimate) there are no
weights to load or initialise, and nothing a build would log is true of a real model."""

from __future__ import annotations

import torch


def building_on_meta() -> bool:
    """True while factory functions make meta tensors (`with torch.device("meta"):`)."""
    return torch.empty(0).device.type == "meta"

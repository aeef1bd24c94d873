"""Build the open_clip CLIP model a preset describes, with its weights (pretrained tag, local file, or seeded random)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from encoders.meta import building_on_meta
from encoders.presets import Preset

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")  # what a local weights file ends with


def build_clip(preset: Preset, pretrained: str | None, embed_dim: int | None, seed: int) -> torch.nn.Module:
    """Return an open_clip `CLIP` for `preset`.

    `pretrained` is an open_clip tag for the preset's architecture or a local weights file; `None` gives
    a random init seeded with `seed` (so the same config always yields the same backbone). `embed_dim`
    overrides the joint embedding width when the language tower is not the preset's own (the vision
    projection is then freshly initialised, the rest of the tower keeps its weights).
    """
    import open_clip
    from open_clip.model import CLIP

    config = dict(preset.clip_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if pretrained is None:
            if not building_on_meta():
                log.info("preset %s: no pretrained weights given, towers are randomly initialised (seed %d)",
                         preset.name, seed)
            model = CLIP(**config)
        elif _looks_like_path(pretrained):
            path = Path(pretrained).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights file not found: {path}")
            model = CLIP(**config)
            open_clip.load_checkpoint(model, str(path))
            log.info("preset %s: loaded weights from %s", preset.name, path)
        else:
            tags = open_clip.list_pretrained_tags_by_model(preset.open_clip_name) if preset.open_clip_name else []
            if pretrained not in tags:
                raise ValueError(
                    f"unknown pretrained {pretrained!r} for preset {preset.name!r}: give a local weights file "
                    f"or one of the open_clip tags {tags}"
                )
            model = open_clip.create_model(preset.open_clip_name, pretrained=pretrained)
            log.info("preset %s: loaded open_clip pretrained tag %s", preset.name, pretrained)
        if embed_dim is not None and embed_dim != model.visual.output_dim:
            _reset_vision_projection(model.visual, embed_dim)
    return model


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith((".", "~")) or value.endswith(WEIGHT_SUFFIXES)


def _reset_vision_projection(visual: torch.nn.Module, embed_dim: int) -> None:
    width = visual.proj.shape[0]
    visual.proj = torch.nn.Parameter(width ** -0.5 * torch.randn(width, embed_dim))
    visual.output_dim = embed_dim

"""Build the open_clip CLIP model a preset describes, with its weights (pretrained tag, local file, or seeded random)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from encoders.meta import building_on_meta
from encoders.presets import WEIGHT_SUFFIXES, Preset, looks_like_path

log = logging.getLogger(__name__)

__all__ = ["WEIGHT_SUFFIXES", "build_clip"]


def build_clip(preset: Preset, pretrained: str | None, embed_dim: int | None, seed: int,
               legacy_activation: bool = False) -> torch.nn.Module:
    """Return an open_clip `CLIP` for `preset`.

    `pretrained` is an open_clip tag for the preset's architecture or a local weights file; `None` gives
    a random init seeded with `seed` (so the same config always yields the same backbone). `embed_dim`
    overrides the joint embedding width when the language tower is not the preset's own (the vision
    projection is then freshly initialised, the rest of the tower keeps its weights). The activation
    (GELU or QuickGELU) is the one the weights were trained with (`Preset.quick_gelu`); with
    `legacy_activation` the preset config's own, as checkpoints of format 1 were built.
    """
    import open_clip
    from open_clip.model import CLIP

    quick_gelu = preset.quick_gelu(None if legacy_activation else pretrained)
    config = {**preset.clip_config, "quick_gelu": quick_gelu}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if pretrained is None:
            if not building_on_meta():
                log.info("preset %s: no pretrained weights given, towers are randomly initialised (seed %d)",
                         preset.name, seed)
            model = CLIP(**config)
        elif looks_like_path(pretrained):
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
            # open_clip builds its config's activation whatever the tag: force QuickGELU where the tag needs it
            model = open_clip.create_model(preset.open_clip_name, pretrained=pretrained, force_quick_gelu=quick_gelu)
            log.info("preset %s: loaded open_clip pretrained tag %s (%s)", preset.name, pretrained,
                     "QuickGELU" if quick_gelu else "GELU")
        if embed_dim is not None and embed_dim != model.visual.output_dim:
            _reset_vision_projection(model.visual, embed_dim)
    return model


def _reset_vision_projection(visual: torch.nn.Module, embed_dim: int) -> None:
    width = visual.proj.shape[0]
    visual.proj = torch.nn.Parameter(width ** -0.5 * torch.randn(width, embed_dim))
    visual.output_dim = embed_dim

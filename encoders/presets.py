"""Backbone presets: which open_clip architecture a tower is built from, and its preprocessing defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from encoders.config import PreprocessConfig
from encoders.modalities import modality as modality_spec


@dataclass(frozen=True)
class Preset:
    """A named backbone: the open_clip CLIP config towers are cut from, plus audio preprocessing overrides."""

    name: str
    open_clip_name: str | None          # architecture name known to open_clip (for pretrained tags)
    clip_config: dict[str, Any]         # embed_dim, vision_cfg, text_cfg as open_clip.model.CLIP takes them
    audio_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """The ViT's input side in pixels: the default image size of the image-like towers."""
        return int(self.clip_config["vision_cfg"]["image_size"])

    @property
    def patch_size(self) -> int:
        """The ViT's patch side in pixels."""
        return int(self.clip_config["vision_cfg"]["patch_size"])

    def quick_gelu(self, pretrained: str | None) -> bool:
        """Whether the towers use QuickGELU (x * sigmoid(1.702 x)) rather than GELU: the activation the weights
        were trained with. OpenAI's CLIP weights need QuickGELU and DataComp.XL's (LanguageBind's starting
        point) or LAION's need GELU; open_clip's `ViT-L-14` config says GELU whatever the tag, so an open_clip
        tag decides by its pretrained config's `quick_gelu` flag. A local weights file or a random init takes
        the preset's own (the `-quickgelu` presets: QuickGELU)."""
        if pretrained is not None and self.open_clip_name and not looks_like_path(pretrained):
            import open_clip

            tag = open_clip.get_pretrained_cfg(self.open_clip_name, pretrained)
            if tag:
                return bool(tag.get("quick_gelu", False))
        return bool(self.clip_config.get("quick_gelu", False))

    def preprocess(self, modality: str) -> PreprocessConfig:
        """Preprocessing defaults of this preset for one modality."""
        base = PreprocessConfig(image_size=self.image_size)
        spectrogram = modality_spec(modality).tower_input == "spectrogram"
        return replace(base, **self.audio_overrides) if spectrogram else base


WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")  # what a local weights file ends with


def looks_like_path(value: str) -> bool:
    """A `pretrained` value that names a local weights file rather than an open_clip tag."""
    return os.sep in value or value.startswith((".", "~")) or value.endswith(WEIGHT_SUFFIXES)


def _open_clip_config(name: str) -> dict[str, Any]:
    import open_clip

    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip has no model config {name!r}")
    return config


# A few layers, small width and resolution: CPU tests and the quickstart. The audio grid stays
# rectangular like the real one (4 x 16 patches of 16) so position-embedding interpolation is exercised.
_TINY = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}

_PRESETS: dict[str, Preset] = {}


def _register(preset: Preset) -> None:
    _PRESETS[preset.name] = preset


_register(Preset("tiny", None, _TINY, audio_overrides={"mel_bins": 64, "target_length": 256}))


def available_presets() -> list[str]:
    """Every preset name, the lazily loaded ViTs included (for choices and error messages)."""
    return sorted({*_PRESETS, *_LAZY})   # a lazy preset is registered once loaded: listed once


# ViT presets read their architecture from open_clip on first use (open_clip import is not free).
# `vit-h-14` is LanguageBind's Huge towers (tag laion2b_s32b_b79k); the `-quickgelu` ones are the same
# architectures with OpenAI's activation, for OpenAI-trained weights given as a local file.
_LAZY = {"vit-b-32": "ViT-B-32", "vit-b-16": "ViT-B-16", "vit-l-14": "ViT-L-14", "vit-h-14": "ViT-H-14",
         "vit-b-32-quickgelu": "ViT-B-32-quickgelu", "vit-b-16-quickgelu": "ViT-B-16-quickgelu",
         "vit-l-14-quickgelu": "ViT-L-14-quickgelu"}


def get_preset(name: str) -> Preset:
    """Look up a preset by name; the error lists the valid choices."""
    if name in _PRESETS:
        return _PRESETS[name]
    if name in _LAZY:
        preset = Preset(name, _LAZY[name], _open_clip_config(_LAZY[name]))
        _register(preset)
        return preset
    raise ValueError(f"unknown preset {name!r}; valid: {available_presets()}")

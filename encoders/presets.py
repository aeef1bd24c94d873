"""Backbone presets: which open_clip architecture a tower is built from, and its preprocessing defaults."""

from __future__ import annotations

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

    def preprocess(self, modality: str) -> PreprocessConfig:
        """Preprocessing defaults of this preset for one modality."""
        base = PreprocessConfig(image_size=self.image_size)
        spectrogram = modality_spec(modality).tower_input == "spectrogram"
        return replace(base, **self.audio_overrides) if spectrogram else base


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
    return sorted([*_PRESETS, *_LAZY])


# ViT presets read their architecture from open_clip on first use (open_clip import is not free).
_LAZY = {"vit-b-32": "ViT-B-32", "vit-b-16": "ViT-B-16", "vit-l-14": "ViT-L-14"}


def get_preset(name: str) -> Preset:
    """Look up a preset by name; the error lists the valid choices."""
    if name in _PRESETS:
        return _PRESETS[name]
    if name in _LAZY:
        preset = Preset(name, _LAZY[name], _open_clip_config(_LAZY[name]))
        _register(preset)
        return preset
    raise ValueError(f"unknown preset {name!r}; valid: {available_presets()}")

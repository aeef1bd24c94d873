"""RayBind's model library: LanguageBind towers on open_clip with LoRA, token masking and InfoNCE.

Pure PyTorch (never imports ray): everything here runs the same inside a Ray worker, in a notebook,
or on an accelerator machine without Ray.

The heavy names (models, checkpoints, LoRA via peft, the tokenizer) load on first use: a Ray decode
task that only needs `encoders.transforms` must not pay seconds importing peft and transformers.
"""

from importlib import import_module
from typing import Any

from encoders.config import LoraSettings, ModelConfig, PreprocessConfig, TextConfig, TowerConfig
from encoders.modalities import MODALITIES
from encoders.presets import available_presets, get_preset

_LAZY = {"load_model": "encoders.checkpoint", "save_model": "encoders.checkpoint",
         "contrastive_loss": "encoders.loss", "gather_features": "encoders.loss",
         "BindModel": "encoders.model", "Tokenizer": "encoders.text"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")


def languagebind_config(preset: str, modalities: list[str] | tuple[str, ...], text: TextConfig | None = None,
                        pretrained: str | None = None, init_seed: int = 0) -> ModelConfig:
    """A model config with the paper's per-modality recipe and the preset's preprocessing defaults."""
    spec = get_preset(preset)
    towers = tuple(TowerConfig.languagebind(m, spec.preprocess(m)) for m in modalities)
    return ModelConfig(preset=preset, pretrained=pretrained, init_seed=init_seed, text=text or TextConfig(),
                       towers=towers)


__all__ = [
    "MODALITIES", "BindModel", "LoraSettings", "ModelConfig", "PreprocessConfig", "TextConfig", "Tokenizer",
    "TowerConfig", "available_presets", "contrastive_loss", "gather_features", "get_preset",
    "languagebind_config", "load_model", "save_model",
]

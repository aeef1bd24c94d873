"""LanguageBind folders on disk: `config.json` plus `model.safetensors` or a pickled `pytorch_model.bin`.

A `.bin` is read with `torch.load(weights_only=True)` only: the unpickler then builds nothing but tensors
and plain containers, and a file holding anything else is refused with a message naming it (never executed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"

# LanguageBind's model_type per modality (config.json), and back
MODEL_TYPES = {"LanguageBindVideo": "video", "LanguageBindAudio": "audio", "LanguageBindDepth": "depth",
               "LanguageBindThermal": "thermal", "LanguageBindImage": "image"}
MODEL_TYPE_OF = {modality: model_type for model_type, modality in MODEL_TYPES.items()}


class LanguageBindError(ValueError):
    """A LanguageBind folder that cannot be read or does not fit: the message names the file, key or field."""


@dataclass
class LanguageBindFolder:
    """One LanguageBind checkpoint as read: its path, modality, config and tensors (names as in the file)."""

    path: str
    modality: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def vision(self) -> dict[str, Any]:
        """The `vision_config` section."""
        return self.config.get("vision_config") or {}

    @property
    def text(self) -> dict[str, Any]:
        """The `text_config` section."""
        return self.config.get("text_config") or {}


def read_config(folder: Path) -> tuple[dict[str, Any], str]:
    """(config.json, modality) of a LanguageBind folder; unknown `model_type` is an error naming it."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise LanguageBindError(f"not a LanguageBind folder (no {CONFIG_FILE}): {folder}")
    config = json.loads(path.read_text())
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise LanguageBindError(f"{path}: unknown model_type {model_type!r}; LanguageBind's are {sorted(MODEL_TYPES)}")
    for section in ("vision_config", "text_config"):
        if not isinstance(config.get(section), dict):
            raise LanguageBindError(f"{path}: missing {section!r}")
    return config, MODEL_TYPES[model_type]


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's weights: `model.safetensors`, else `pytorch_model.bin` loaded with weights_only=True."""
    from safetensors.torch import load_file

    if (folder / SAFETENSORS_FILE).is_file():
        return load_file(str(folder / SAFETENSORS_FILE))
    path = folder / PICKLE_FILE
    if not path.is_file():
        raise LanguageBindError(f"{folder} has neither {SAFETENSORS_FILE} nor {PICKLE_FILE}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # the restricted unpickler refuses anything but tensors and containers
        raise LanguageBindError(f"{path} holds more than tensors and is refused (loaded with weights_only=True, "
                                f"never unpickled freely): {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)] if isinstance(state, dict) else ["<root>"]
    if bad:
        raise LanguageBindError(f"{path} is not a state dict of tensors: {bad[:5]} are not tensors")
    return state


def read_folder(path: str | Path) -> LanguageBindFolder:
    """Read a local LanguageBind folder (config and weights)."""
    folder = Path(path)
    if not folder.is_dir():
        raise LanguageBindError(f"not a folder: {folder}")
    config, modality = read_config(folder)
    return LanguageBindFolder(str(folder), modality, config, read_tensors(folder))


def write_folder(path: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write `config.json` and `model.safetensors` (with the `format: pt` metadata transformers expects)."""
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / SAFETENSORS_FILE),
              metadata={"format": "pt"})
    return folder


def resolve_source(source: str) -> str:
    """A local folder as is; anything else that looks like a hub id (`org/name`) is downloaded with
    `huggingface_hub.snapshot_download` where the hub is reachable (s3:// is the platform's job)."""
    if "://" in source:
        raise LanguageBindError(f"{source}: a URI is read through the platform (raybind import-languagebind copies "
                                "s3:// folders first); the library reads local folders and hub ids")
    if Path(source).expanduser().exists():
        return str(Path(source).expanduser())
    if source.count("/") != 1:
        raise LanguageBindError(f"not a folder nor a hub id (org/name): {source}")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"])
    except Exception as error:   # offline, unknown repo, no access: one line naming both readings of it
        raise LanguageBindError(f"{source}: no such local folder, and the Hugging Face hub could not provide it "
                                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None

"""Model checkpoints: adapters, not full models, and never pickle (loads are safetensors or weights_only).

    <dir>/raybind.json                  model config (preset, towers, preprocessing), config hash
    <dir>/<modality>/adapter_config.json    peft LoRA config  } `PeftModel.from_pretrained(tower.backbone, dir)`
    <dir>/<modality>/adapter_model.safetensors                }
    <dir>/<modality>/trained.safetensors    every other trained tensor (post-norm, projection,
                                            temporal embeddings, logit scale; all blocks when full FT)
    <dir>/base.safetensors              only in models whose frozen weights no preset rebuilds (see below)
    <dir>/anchor.safetensors            only with an image anchor taken from another checkpoint (`anchor_from`):
                                        the anchor tower and its language tower, so the checkpoint stands alone

Base weights: a checkpoint normally rebuilds its frozen weights from the preset, the `pretrained` tag and
`init_seed`. A model imported from elsewhere (`encoders.languagebind`: LanguageBind's towers and text tower)
has frozen weights no preset gives, so it carries them: `base.safetensors` holds every tensor of the model
(text tower and towers; names as in `state_dict()` without peft's wrapping, LoRA adapters left to their
own files). `load_into` loads it first when present and marks the model (`CARRIES_BASE`), and `save_model`
writes it again for a marked model, so a run fine-tuned from an imported checkpoint (`init_from`) keeps
carrying the weights it started from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from encoders.config import ModelConfig
from encoders.lora import load_adapter, plain_name, save_adapter
from encoders.model import BindModel
from encoders.towers import ModalityTower

log = logging.getLogger(__name__)

METADATA_FILE = "raybind.json"   # the checkpoint's metadata (model config, hash, the run's extras)
TRAINED_TENSORS = "trained.safetensors"
CLASS_EMBEDDING = "backbone.class_embedding"   # trained since towers became LanguageBind's; older checkpoints lack it
BASE_TENSORS = "base.safetensors"
ANCHOR_TENSORS = "anchor.safetensors"   # an image anchor taken from another checkpoint (`anchor_from`), and its text
CARRIES_BASE = "carries_base"   # attribute set on a BindModel whose frozen weights come from base.safetensors
FORMAT_VERSION = 2   # 2: the activation follows the pretrained weights (format 1: the preset config's)


def config_hash(config: ModelConfig) -> str:
    """Digest of the model's identity (`ModelConfig.to_dict`): equal for checkpoints of one architecture."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _non_adapter_trained(model: BindModel, modality: str) -> dict:
    tower = model.tower(modality)
    # the temperature is saved learned or fixed: it is the tower's, whatever the training settings were
    return {name: p.detach().cpu().contiguous() for name, p in tower.named_parameters()
            if (p.requires_grad or name == "log_logit_scale") and "lora_" not in name}


def upgrade_trained_tensors(tower: ModalityTower, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill in what checkpoints of an older tower layout lack, so they compute what they computed when saved.

    Video checkpoints written before the temporal step had its own LayerNorm (`temporal_ln`, LanguageBind's
    `temporal_layer_norm1`) normalised the temporal attention's input with the block's `ln_1`: each missing
    `temporal_ln` tensor becomes that block's `ln_1` - the checkpoint's own when it holds it (full
    fine-tuning), else the tower's (LoRA mode, where `ln_1` is frozen and rebuilt as it was). Checkpoints
    from before the class embedding trained lack it: it was frozen, so the rebuilt tower's is the one they used.
    """
    own = tower.state_dict()
    wanted = [n for n in own if ".temporal_ln." in n and n not in tensors]
    upgraded = dict(tensors)
    if wanted:
        log.info("%s: checkpoint predates the temporal LayerNorm; %d tensors copied from each block's ln_1",
                 tower.modality, len(wanted))
    for name in wanted:
        source = name.replace(".temporal_ln.", ".ln_1.")
        upgraded[name] = tensors[source] if source in tensors else own[source].detach().clone()
    if CLASS_EMBEDDING in own and CLASS_EMBEDDING not in tensors:
        upgraded[CLASS_EMBEDDING] = own[CLASS_EMBEDDING].detach().clone()
    return upgraded


def save_model(model: BindModel, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the trained state of every tower plus `raybind.json`; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for modality in model.modalities:
        folder = directory / modality
        folder.mkdir(exist_ok=True)
        if model.tower_config(modality).lora is not None:
            save_adapter(model.tower(modality), folder)
        save_file(_non_adapter_trained(model, modality), str(folder / TRAINED_TENSORS))
    if getattr(model, CARRIES_BASE, False):
        save_base(model, directory)
    if model.anchor_carried:   # the checkpoint stands alone: the anchor's source folder is not needed to load it
        tensors = {f"anchor_tower.{k}": v for k, v in model.anchor_tower.state_dict().items()}
        tensors.update({f"text.{k}": v for k, v in model.text.state_dict().items()})
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(directory / ANCHOR_TENSORS))
    meta = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(),
                "config_hash": config_hash(model.config), **(extra or {})}
    (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's `raybind.json`."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a RayBind checkpoint (no {METADATA_FILE}): {directory}")
    return json.loads(path.read_text())


def load_into(model: BindModel, directory: str | Path) -> BindModel:
    """Load trained tensors into an already built model of the same config."""
    directory = Path(directory)
    meta = read_metadata(directory)
    if meta["config_hash"] != config_hash(model.config):
        raise ValueError(f"checkpoint {directory} was written for a different model config "
                         f"({meta['config_hash']} != {config_hash(model.config)})")
    if (directory / BASE_TENSORS).is_file():
        load_base(model, directory)
    if (directory / ANCHOR_TENSORS).is_file():
        _load_anchor(model, directory / ANCHOR_TENSORS)
    for modality in model.modalities:
        _load_tower(model, modality, directory / modality)
    return model


def _load_anchor(model: BindModel, path: Path) -> None:
    """The image anchor and its language tower as the checkpoint carries them (`anchor_from` models)."""
    tensors = load_file(str(path))
    for prefix, module in (("anchor_tower.", model.anchor_tower), ("text.", model.text)):
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    model.anchor_missing = None


def _load_tower(model: BindModel, modality: str, folder: Path) -> None:
    """A tower's adapters and other trained tensors from its checkpoint folder."""
    tower = model.tower(modality)
    if tower.config.lora is not None:
        load_adapter(tower, folder)
    tensors = upgrade_trained_tensors(tower, load_file(str(folder / TRAINED_TENSORS)))
    missing = set(_non_adapter_trained(model, modality)) - set(tensors)
    if missing:
        raise ValueError(f"{folder / TRAINED_TENSORS} lacks {sorted(missing)[:5]}")
    tower.load_state_dict(tensors, strict=False)


def init_problem(saved: ModelConfig, config: ModelConfig) -> str | None:
    """Why a model of `config` cannot start from a checkpoint of `saved` (None: it can). The backbone and the
    language tower must be the same; without a carried base also the frozen weights' origin (pretrained tag,
    seed), checked by `init_from`. Each tower both have must be the same tower (LoRA, preprocessing, variant);
    towers only one has are fine (new towers start fresh, the checkpoint's others are not loaded)."""
    if (saved.preset, saved.text) != (config.preset, config.text):
        return (f"it holds preset {saved.preset!r} with text {saved.text}, this model preset {config.preset!r} "
                f"with text {config.text}")
    for tower in config.towers:
        mine = next((t for t in saved.towers if t.modality == tower.modality), None)
        if mine is not None and mine.to_dict() != tower.to_dict():
            ours, theirs = tower.to_dict(), mine.to_dict()
            fields = sorted(k for k in ours if ours[k] != theirs.get(k))
            return f"its {tower.modality} tower differs in {fields}: {[theirs.get(k) for k in fields]}"
    return None


def init_from(model: BindModel, directory: str | Path) -> BindModel:
    """Start `model` from a checkpoint (fine-tuning `model.init_from`): its carried base weights when it has
    them (an imported LanguageBind model), then, for every tower of `model` the checkpoint has, its adapters and
    trained tensors, logit scale included. Towers the checkpoint lacks keep their fresh initialisation."""
    directory = Path(directory)
    saved = ModelConfig.from_dict(read_metadata(directory)["model"])
    problem = init_problem(saved, model.config)
    has_base = (directory / BASE_TENSORS).is_file()
    if problem is None and not has_base and (saved.pretrained, saved.init_seed) != (
            model.config.pretrained, model.config.init_seed):
        problem = (f"its frozen weights come from pretrained {saved.pretrained!r} seed {saved.init_seed}, this "
                   f"model's from {model.config.pretrained!r} seed {model.config.init_seed}")
    if problem is not None:
        raise ValueError(f"cannot start from {directory}: {problem}")
    if has_base:
        load_base(model, directory, strict=False)
    for modality in model.modalities:
        if any(t.modality == modality for t in saved.towers):
            _load_tower(model, modality, directory / modality)
    return model


def load_model(directory: str | Path) -> BindModel:
    """Rebuild the model from `raybind.json` (same backbone weights, same seed) and load its trained state."""
    meta = read_metadata(directory)
    config = ModelConfig.from_dict(meta["model"])
    if meta.get("format_version", 1) < 2:
        config = replace(config, legacy_activation=True)
    return load_into(BindModel(config), directory)


def save_base(model: BindModel, directory: str | Path) -> Path:
    """Write every non-adapter tensor of `model` to `<directory>/base.safetensors` and mark the model."""
    path = Path(directory) / BASE_TENSORS
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({plain_name(k): v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if "lora_" not in k}, str(path))
    setattr(model, CARRIES_BASE, True)
    return path


def load_base(model: BindModel, directory: str | Path, strict: bool = True) -> BindModel:
    """Load `<directory>/base.safetensors` into `model` (any LoRA mode) and mark it as carrying its base.

    `strict`: every non-adapter tensor of the model must be in the file with its shape (False: load the
    ones there are, e.g. a fine-tuning config with fewer towers than the checkpoint)."""
    import torch

    path = Path(directory) / BASE_TENSORS
    tensors = load_file(str(path))
    targets = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    missing = [k for k in targets if plain_name(k) not in tensors]
    if strict and missing:
        raise ValueError(f"{path} lacks {len(missing)} tensors of this model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, target in targets.items():
            source = tensors.get(plain_name(name))
            if source is None:
                continue
            if source.shape != target.shape:
                raise ValueError(f"{path}: {plain_name(name)} has shape {list(source.shape)}, the model's "
                                 f"{list(target.shape)}")
            target.copy_(source)
    setattr(model, CARRIES_BASE, True)
    return model

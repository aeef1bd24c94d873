"""LoRA via peft and the freezing policy of a tower (what trains, what stays as pretrained)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.config import TowerConfig
from encoders.modalities import modality as modality_spec
from encoders.towers import ModalityTower

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PeftModel.save_pretrained prefixes keys with the wrapper path; we write the same so
# `PeftModel.from_pretrained(backbone, folder)` loads our adapters onto a bare backbone.
PEFT_PREFIX = "base_model.model."

_PROJECTIONS = "(q_proj|k_proj|v_proj|out_proj)"
SPATIAL_TARGETS = rf"blocks\.\d+\.attn\.{_PROJECTIONS}"
TEMPORAL_TARGETS = rf"blocks\.\d+\.temporal_attn\.{_PROJECTIONS}"

# Frozen in every mode: the patch and position embeddings and the pre-norm. The class embedding trains, as in
# LanguageBind: its `main.py` locks the image embeddings (`--lock-image`) and then sets `requires_grad` on
# `class_embedding` again, in LoRA and full fine-tuning alike (V1.5's per-frame rows can only differ so).
_ALWAYS_FROZEN = ("conv1.", "positional_embedding", "ln_pre.")


def _trained_with_lora(name: str) -> bool:
    """Trained next to the adapters in LoRA mode: class embedding, post-norm, projection, and video's
    temporal embeddings and temporal LayerNorms. LanguageBind's video script (`--convert_to_lora`) wraps the
    encoder in peft, which freezes everything but the adapters, then its `main.py` sets `requires_grad`
    again on every parameter named `temporal_layer_norm*` or `temporal_embedding`; class embedding,
    post-norm and projection sit outside the encoder and stay trainable."""
    return (name.startswith("ln_post.") or name in ("proj", "class_embedding")
            or name.endswith(".temporal_embedding") or ".temporal_ln." in name)


def lora_config(tower: TowerConfig) -> LoraConfig:
    """q/k/v/out adapters; video with temporal attention adapts only the temporal attention."""
    if tower.lora is None:
        raise ValueError(f"{tower.modality} tower has no LoRA settings (full fine-tuning)")
    temporal = modality_spec(tower.modality).temporal and tower.temporal == "attention"
    return LoraConfig(
        r=tower.lora.r,
        lora_alpha=tower.lora.alpha,
        lora_dropout=tower.lora.dropout,
        target_modules=TEMPORAL_TARGETS if temporal else SPATIAL_TARGETS,
        bias="none",
    )


def prepare_tower(tower: ModalityTower) -> ModalityTower:
    """Inject adapters (LoRA mode) and set requires_grad on exactly the parameters that train."""
    if tower.config.lora is not None:
        inject_adapter_in_model(lora_config(tower.config), tower.backbone)
    for name, param in tower.backbone.named_parameters():
        param.requires_grad = _trains(name, lora=tower.config.lora is not None)
    tower.log_logit_scale.requires_grad = tower.config.learn_temperature
    return tower


def cast_frozen_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Store frozen weight matrices in `dtype` (bf16 on GPUs: half the memory, no per-step cast under bf16
    autocast). Trained parameters keep full precision for the optimizer; so do norms and biases (tiny, and
    layer norms must see one dtype for input and weight where autocast does not cast them)."""
    for param in module.parameters():
        if not param.requires_grad and param.ndim >= 2:
            param.data = param.data.to(dtype)


def _trains(name: str, lora: bool) -> bool:
    if name.startswith(_ALWAYS_FROZEN):
        return False
    if not lora:
        return True
    return "lora_" in name or _trained_with_lora(name)


def plain_name(name: str) -> str:
    """A state-dict name without peft's wrapping: the same for a LoRA and a fully fine-tuned tower."""
    return name.replace(".base_layer.", ".")


def merged_state_dict(tower: ModalityTower) -> dict[str, torch.Tensor]:
    """The tower's tensors under plain names with its LoRA merged into the weights (W + alpha/r * B A): what
    the same tower without adapters loads (an export, a frozen copy)."""
    state = {plain_name(k): v.detach() for k, v in tower.state_dict().items()}
    lora = tower.config.lora
    if lora is None:
        return state
    scale = lora.alpha / lora.r
    for name in [k for k in state if ".lora_A." in k]:
        module = name.split(".lora_A.")[0]
        a = state.pop(name)
        b = state.pop(next(k for k in state if k.startswith(module + ".lora_B.")))
        state[module + ".weight"] = state[module + ".weight"] + scale * (b.float() @ a.float()).to(b.dtype)
    return state


def save_adapter(tower: ModalityTower, folder: Path) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` in the layout PeftModel loads."""
    folder.mkdir(parents=True, exist_ok=True)
    config = lora_config(tower.config)
    config.save_pretrained(str(folder))
    state = get_peft_model_state_dict(tower.backbone)
    save_file({PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / ADAPTER_WEIGHTS))


def load_adapter(tower: ModalityTower, folder: Path) -> None:
    """Load adapter weights written by `save_adapter` (or PeftModel.save_pretrained) into a prepared tower."""
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"no {ADAPTER_CONFIG} in {folder}")
    saved = json.loads(config_path.read_text())
    if saved.get("r") != tower.config.lora.r:
        raise ValueError(f"adapter in {folder} has rank {saved.get('r')}, tower expects {tower.config.lora.r}")
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in load_file(str(folder / ADAPTER_WEIGHTS)).items()}
    result = set_peft_model_state_dict(tower.backbone, state)
    if result.unexpected_keys:
        raise ValueError(f"adapter in {folder} does not fit this tower: unexpected {result.unexpected_keys[:5]}")

"""Parameter names between LanguageBind (Hugging Face CLIP names) and RayBind (open_clip names), both ways.

One table per tower kind maps a RayBind *canonical* name to the LanguageBind name; import and export both
read it, so the two directions cannot drift. Canonical names are a module's state-dict names with peft's
wrapping taken out (`q_proj.base_layer.weight` -> `q_proj.weight`, `lora_A.default.weight` ->
`lora_A.weight`), so one name serves a LoRA tower and a fully fine-tuned one.

LanguageBind's LoRA checkpoints wrap `vision_model.encoder` in peft: every encoder key sits under
`vision_model.encoder.base_model.model.` and adapted projections carry `lora_A` / `lora_B` (peft of mid-2023,
which LanguageBind pins, writes the base weight as `q_proj.weight`; newer peft as `q_proj.base_layer.weight`).
`normalise_languagebind` folds all of these onto plain names.
"""

from __future__ import annotations

import re

import torch

from encoders.lora import plain_name

VISION = "vision_model."
ENCODER = "vision_model.encoder."
PEFT_ENCODER = "vision_model.encoder.base_model.model."
TEXT = "text_model."
IGNORED_SUFFIXES = ("position_ids",)   # buffers older transformers saved; rebuilt from the config, never trained

# Inside one layer: RayBind block name -> LanguageBind layer name (first match wins, prefixes).
_BLOCK_PARTS = (
    ("temporal_embedding", "temporal_embedding"),
    ("temporal_ln.", "temporal_layer_norm1."),
    ("temporal_attn.", "temporal_attn."),
    ("attn.", "self_attn."),
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)
_TOWER_FIXED = {
    "log_logit_scale": "logit_scale",
    "backbone.class_embedding": "vision_model.embeddings.class_embedding",
    "backbone.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "backbone.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "backbone.proj": "visual_projection.weight",
}
_TOWER_NORMS = {"backbone.ln_pre.": "vision_model.pre_layrnorm.", "backbone.ln_post.": "vision_model.post_layernorm."}
_TEXT_FIXED = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "text_projection": "text_projection.weight",          # open_clip [D, P] parameter: transposed
    "text_projection.weight": "text_projection.weight",   # open_clip Linear (proj_bias): same layout
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
TEXT_UNMAPPED = ("logit_scale", "logit_bias")   # open_clip CLIP's own, unused by the text tower
_TRANSPOSED = {"backbone.proj", "text_projection"}
_BLOCK = re.compile(r"backbone\.blocks\.(\d+)\.(.+)")
_RESBLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")


def canonical(name: str) -> str:
    """A state-dict name without peft's wrapping (base_layer: `encoders.lora.plain_name`; adapter name)."""
    return re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", plain_name(name))


def normalise_languagebind(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LanguageBind keys with peft's encoder wrapping folded away (old and new peft names alike)."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name.startswith(PEFT_ENCODER):
            name = ENCODER + name[len(PEFT_ENCODER):]
        out[canonical(name)] = value
    return out


def peft_wrapped(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `normalise_languagebind` for a LoRA folder: encoder keys under peft's wrapper, adapters
    named `lora_A.default.weight`, base weights as plain `q_proj.weight` (the peft LanguageBind pins)."""
    out = {}
    for name, value in tensors.items():
        if name.startswith(ENCODER):
            name = PEFT_ENCODER + name[len(ENCODER):]
        out[re.sub(r"\.lora_([AB])\.weight$", r".lora_\1.default.weight", name)] = value
    return out


def tower_name(name: str) -> str:
    """LanguageBind name of a canonical tower parameter (relative to `ModalityTower`); KeyError if none."""
    if name in _TOWER_FIXED:
        return _TOWER_FIXED[name]
    for ours, theirs in _TOWER_NORMS.items():
        if name.startswith(ours):
            return theirs + name[len(ours):]
    match = _BLOCK.fullmatch(name)
    if match:
        layer, rest = match.groups()
        for ours, theirs in _BLOCK_PARTS:
            if rest.startswith(ours):
                return f"{ENCODER}layers.{layer}.{theirs}{rest[len(ours):]}"
    raise KeyError(f"RayBind tower parameter {name!r} has no LanguageBind counterpart")


def text_names(name: str) -> list[str]:
    """LanguageBind name(s) of a canonical open_clip text parameter (relative to open_clip's CLIP); the fused
    q/k/v input projection maps to three. Empty for the CLIP's own unused logit scale/bias."""
    if name in TEXT_UNMAPPED:
        return []
    if name in _TEXT_FIXED:
        return [_TEXT_FIXED[name]]
    match = _RESBLOCK.fullmatch(name)
    if match:
        layer, rest = match.groups()
        prefix = f"{TEXT}encoder.layers.{layer}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            return [f"{prefix}self_attn.{p}_proj.{kind}" for p in "qkv"]
        for ours, theirs in _BLOCK_PARTS:
            if rest.startswith(ours):
                return [prefix + theirs + rest[len(ours):]]
    raise KeyError(f"RayBind text parameter {name!r} has no LanguageBind counterpart")


def to_languagebind(name: str, value: torch.Tensor) -> torch.Tensor:
    """A RayBind tensor in LanguageBind's layout (projections transposed, temporal embedding [1, T, D])."""
    if name in _TRANSPOSED:
        return value.t()
    if name.endswith("temporal_embedding"):
        return value.unsqueeze(0)
    return value


def from_languagebind(name: str, value: torch.Tensor) -> torch.Tensor:
    """A LanguageBind tensor in RayBind's layout (the inverse of `to_languagebind`)."""
    if name in _TRANSPOSED:
        return value.t()
    if name.endswith("temporal_embedding") and value.ndim == 3 and value.shape[0] == 1:
        return value[0]
    return value

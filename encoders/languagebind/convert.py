"""LanguageBind folders -> a `BindModel`, and a `BindModel`'s tower -> a LanguageBind folder.

Import picks the RayBind preset whose architecture equals the folder's (widths, depths, heads, patch,
text), maps the config onto tower settings (frames, mask ratio, mel bins, target length, LoRA, V1.5), builds
the model and copies every tensor in by the one name table of `encoders.languagebind.keys`. The imported
weights are nothing a preset rebuilds, so the model is marked to carry them (`base.safetensors`, see
`encoders.checkpoint`): it saves as an ordinary checkpoint that `load_model` reloads exactly.

Export writes what LanguageBind's `from_pretrained` reads: `config.json`, `model.safetensors` (LoRA merged
into the base weights unless kept) and the CLIP tokenizer files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.checkpoint import CARRIES_BASE
from encoders.config import LoraSettings, ModelConfig, TextConfig, TowerConfig
from encoders.languagebind import keys as K
from encoders.languagebind.folder import MODEL_TYPE_OF, LanguageBindError, LanguageBindFolder, read_folder, write_folder
from encoders.lora import merged_state_dict
from encoders.model import BindModel
from encoders.presets import available_presets, get_preset

ACTIVATIONS = {"GELU": "gelu", "QuickGELU": "quick_gelu"}   # module class -> Hugging Face hidden_act


# ---- architecture: which preset a folder is ----

def _architecture(folder: LanguageBindFolder) -> dict[str, int]:
    v, t = folder.vision, folder.text
    try:
        return {"vision width": int(v["hidden_size"]), "vision layers": int(v["num_hidden_layers"]),
                "vision heads": int(v["num_attention_heads"]), "vision mlp": int(v["intermediate_size"]),
                "patch": int(v["patch_size"]), "text width": int(t["hidden_size"]),
                "text layers": int(t["num_hidden_layers"]), "text heads": int(t["num_attention_heads"]),
                "text mlp": int(t["intermediate_size"]), "vocab": int(t.get("vocab_size", 49408)),
                "context": int(t.get("max_position_embeddings", 77)),
                "embed dim": int(folder.config.get("projection_dim", v.get("projection_dim")))}
    except (KeyError, TypeError) as error:
        raise LanguageBindError(f"{folder.path}/config.json lacks architecture field {error}") from None


def _preset_architecture(name: str) -> dict[str, int]:
    config = get_preset(name).clip_config
    v, t = config["vision_cfg"], config["text_cfg"]
    width, text_width = int(v["width"]), int(t["width"])
    return {"vision width": width, "vision layers": int(v["layers"]),
            "vision heads": width // int(v.get("head_width", 64)),
            "vision mlp": int(width * float(v.get("mlp_ratio", 4.0))), "patch": int(v["patch_size"]),
            "text width": text_width, "text layers": int(t["layers"]), "text heads": int(t.get("heads", 8)),
            "text mlp": int(text_width * float(t.get("mlp_ratio", 4.0))), "vocab": int(t.get("vocab_size", 49408)),
            "context": int(t.get("context_length", 77)), "embed dim": int(config["embed_dim"])}


def matching_preset(folder: LanguageBindFolder) -> str:
    """The RayBind preset with this folder's architecture and activation (`hidden_act`: GELU for DataComp's
    and LAION's CLIP, QuickGELU for OpenAI's); an error lists the folder's architecture and the presets."""
    wanted = _architecture(folder)
    quick = folder.vision.get("hidden_act", "quick_gelu") == "quick_gelu"
    wanted["quick_gelu"] = quick
    for name in available_presets():
        try:
            if {**_preset_architecture(name), "quick_gelu": get_preset(name).quick_gelu(None)} == wanted:
                return name
        except ValueError:   # a preset whose open_clip config is unavailable cannot match (get_preset says so)
            continue
    raise LanguageBindError(f"{folder.path}: no RayBind preset has this architecture {wanted}; presets: "
                            f"{available_presets()}")


# ---- config.json <-> TowerConfig ----

def tower_config(folder: LanguageBindFolder, preset: str) -> TowerConfig:
    """The RayBind tower settings a LanguageBind folder's `vision_config` describes."""
    v, modality = folder.vision, folder.modality
    pre = get_preset(preset).preprocess(modality)
    pre = replace(pre, image_size=int(v.get("image_size", pre.image_size)))
    if modality == "video":
        pre = replace(pre, num_frames=int(v.get("num_frames", pre.num_frames)))
    if modality == "audio":
        mel, length = int(v.get("num_mel_bins") or 0), int(v.get("target_length") or 0)
        if not (mel and length):
            raise LanguageBindError(f"{folder.path}/config.json: an audio tower needs vision_config.num_mel_bins "
                                    f"and target_length, got {v.get('num_mel_bins')!r}, {v.get('target_length')!r}")
        pre = replace(pre, mel_bins=mel, target_length=length)
    rank = int(v.get("lora_r") or 0)
    lora = None
    if rank > 0:
        lora = LoraSettings(r=rank, alpha=int(v.get("lora_alpha", 16)), dropout=float(v.get("lora_dropout", 0.0)))
    extra: dict[str, Any] = {}
    if modality == "video":
        extra["temporal"] = "attention" if v.get("add_time_attn") else "mean"
        extra["video_variant"] = "v1.5" if v.get("clip_type") == "vl_new" else "v1"
        if int(v.get("tube_size", 1)) != 1:
            raise LanguageBindError(f"{folder.path}/config.json: tube_size {v['tube_size']} (RayBind has tube 1)")
    return TowerConfig(modality=modality, mask_ratio=float(v.get("force_patch_dropout") or 0.0), lora=lora,
                       preprocess=pre, **extra)


def _activation(module: nn.Module) -> str:
    for sub in module.modules():
        if type(sub).__name__ in ACTIVATIONS:
            return ACTIVATIONS[type(sub).__name__]
    raise ValueError(f"no GELU or QuickGELU in {type(module).__name__}")


def _check_activations(model: BindModel, folder: LanguageBindFolder) -> None:
    built = {"vision": _activation(model.tower(folder.modality).backbone.blocks[0].mlp),
             "text": _activation(model.text.clip.transformer.resblocks[0].mlp)}
    for part, section in (("vision", folder.vision), ("text", folder.text)):
        wanted = section.get("hidden_act", "quick_gelu")
        if wanted != built[part]:
            raise LanguageBindError(f"{folder.path}: {part}_config.hidden_act is {wanted!r} but preset "
                                    f"{model.config.preset!r} builds {built[part]!r}")


# ---- tensors in ----

def _take(source: dict[str, torch.Tensor], used: set[str], hf: str, target: torch.Tensor, path: str,
          ours: str) -> torch.Tensor:
    if hf not in source:
        raise LanguageBindError(f"{path}: missing key {hf} (for RayBind's {ours})")
    used.add(hf)
    value = K.from_languagebind(ours, source[hf])
    if tuple(value.shape) != tuple(target.shape):
        raise LanguageBindError(f"{path}: {hf} has shape {list(source[hf].shape)}, RayBind's {ours} needs "
                                f"{list(K.to_languagebind(ours, target).shape)}")
    return value


def load_tower(tower: nn.Module, folder: LanguageBindFolder, source: dict[str, torch.Tensor], used: set[str]) -> None:
    """Copy a folder's vision tensors (normalised names) into a RayBind `ModalityTower`."""
    with torch.no_grad():
        for name, target in tower.state_dict().items():
            ours = K.canonical(name)
            target.copy_(_take(source, used, K.tower_name(ours), target, folder.path, ours))


def load_text(text: nn.Module, folder: LanguageBindFolder, source: dict[str, torch.Tensor], used: set[str]) -> None:
    """Copy a folder's text tensors into RayBind's open_clip text tower (q, k, v fused into in_proj)."""
    clip = text.clip
    with torch.no_grad():
        for name, target in clip.state_dict().items():
            names = K.text_names(name)
            if len(names) == 3:
                parts = []
                for hf in names:
                    if hf not in source:
                        raise LanguageBindError(f"{folder.path}: missing key {hf} (for RayBind's text {name})")
                    used.add(hf)
                    parts.append(source[hf])
                value = torch.cat(parts)
                if value.shape != target.shape:
                    raise LanguageBindError(f"{folder.path}: {names[0]} and its k/v have shape {list(parts[0].shape)}, "
                                            f"RayBind's text {name} needs {list(target.shape)} in all")
                target.copy_(value)
            elif names:
                target.copy_(_take(source, used, names[0], target, folder.path, name))


def text_tensors(folder: LanguageBindFolder) -> dict[str, torch.Tensor]:
    """The folder's text tower tensors (what must agree between folders imported into one model)."""
    return {k: v for k, v in K.normalise_languagebind(folder.tensors).items()
            if k.startswith(K.TEXT) or k.startswith("text_projection")}


def _check_same_text(folders: list[LanguageBindFolder]) -> None:
    first, reference = folders[0], text_tensors(folders[0])
    for other in folders[1:]:
        theirs = text_tensors(other)
        differing = sorted(k for k in reference.keys() | theirs.keys()
                           if k not in reference or k not in theirs or reference[k].shape != theirs[k].shape
                           or not torch.equal(reference[k], theirs[k]))
        if differing:
            raise LanguageBindError(f"the text towers of {first.path} and {other.path} differ (e.g. {differing[0]}); "
                                    f"one model has one text tower: import them separately")


def import_languagebind(sources: list[str | Path], init_seed: int = 0) -> BindModel:
    """A `BindModel` holding the towers of one or more local LanguageBind folders (one per modality) and
    their shared text tower, marked to carry its weights when saved."""
    folders = [read_folder(s) for s in sources]
    if not folders:
        raise LanguageBindError("no LanguageBind folder given")
    seen: dict[str, str] = {}
    for folder in folders:
        if folder.modality in seen:
            raise LanguageBindError(f"{seen[folder.modality]} and {folder.path} are both {folder.modality} towers")
        seen[folder.modality] = folder.path
    preset = matching_preset(folders[0])
    for folder in folders[1:]:
        if matching_preset(folder) != preset:
            raise LanguageBindError(f"{folders[0].path} and {folder.path} have different architectures")
    _check_same_text(folders)
    config = ModelConfig(preset=preset, pretrained=None, init_seed=init_seed, text=TextConfig(),
                         towers=tuple(tower_config(f, preset) for f in folders))
    model = BindModel(config)
    for index, folder in enumerate(folders):
        _check_activations(model, folder)
        source, used = K.normalise_languagebind(folder.tensors), set()
        _check_lora_present(folder, source)
        load_tower(model.tower(folder.modality), folder, source, used)
        if index == 0:
            load_text(model.text, folder, source, used)
        else:
            used |= set(text_tensors(folder))
        unused = sorted(set(source) - used)
        if unused:
            raise LanguageBindError(f"{folder.path}: {len(unused)} tensors RayBind has no place for, e.g. {unused[:3]}")
    setattr(model, CARRIES_BASE, True)
    return model.eval()


def _check_lora_present(folder: LanguageBindFolder, source: dict[str, torch.Tensor]) -> None:
    has_lora = any(".lora_" in k for k in source)
    rank = int(folder.vision.get("lora_r") or 0)
    if rank > 0 and not has_lora:
        raise LanguageBindError(f"{folder.path}: vision_config.lora_r is {rank} but the weights have no lora_A/lora_B")
    if rank == 0 and has_lora:
        raise LanguageBindError(f"{folder.path}: the weights hold LoRA adapters but vision_config.lora_r is 0")


# ---- tensors and config out ----

def _merged_tower_state(tower: nn.Module, keep_lora: bool) -> dict[str, torch.Tensor]:
    """Canonical tower tensors; LoRA merged into its base weights (W + alpha/r * B A) unless kept."""
    if tower.config.lora is None or not keep_lora:
        return merged_state_dict(tower)
    return {K.canonical(k): v.detach() for k, v in tower.state_dict().items()}


def _vision_config(model: BindModel, modality: str, keep_lora: bool) -> dict[str, Any]:
    tower = model.tower(modality)
    backbone, config = tower.backbone, tower.config
    block, pre = backbone.blocks[0], config.preprocess
    audio = tower.spec.tower_input == "spectrogram"
    video = tower.spec.temporal
    lora = config.lora if keep_lora else None
    out = {"model_type": "clip_vision_model", "hidden_size": int(backbone.ln_pre.weight.shape[0]),
           "intermediate_size": int(block.mlp.c_fc.out_features), "num_hidden_layers": len(backbone.blocks),
           "num_attention_heads": int(block.attn.heads), "num_channels": 3,
           "image_size": get_preset(model.config.preset).image_size if audio else int(pre.image_size),
           "patch_size": int(backbone.patch_size[0]), "hidden_act": _activation(block.mlp),
           "layer_norm_eps": float(block.ln_1.eps), "projection_dim": int(model.embed_dim),
           "attention_dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0,
           "add_time_attn": bool(video and config.temporal == "attention"),
           "num_frames": int(pre.num_frames) if video else 1, "force_patch_dropout": float(config.mask_ratio),
           "lora_r": int(lora.r) if lora else 0, "lora_alpha": int(lora.alpha) if lora else 16,
           "lora_dropout": float(lora.dropout) if lora else 0.0,
           "num_mel_bins": int(pre.mel_bins) if audio else 0, "target_length": int(pre.target_length) if audio else 0,
           "video_decode_backend": "decord", "audio_sample_rate": int(pre.sample_rate)}
    if video:
        out["clip_type"] = "vl_new" if getattr(config, "video_variant", "v1") == "v1.5" else "vl"
        out["tube_size"] = 1
    return out


def _text_config(model: BindModel) -> dict[str, Any]:
    clip = model.text.clip
    block = clip.transformer.resblocks[0]
    return {"model_type": "clip_text_model", "vocab_size": int(clip.token_embedding.num_embeddings),
            "hidden_size": int(clip.transformer.width), "intermediate_size": int(block.mlp.c_fc.out_features),
            "num_hidden_layers": len(clip.transformer.resblocks), "num_attention_heads": int(block.attn.num_heads),
            "max_position_embeddings": int(clip.positional_embedding.shape[0]), "hidden_act": _activation(block.mlp),
            "layer_norm_eps": float(block.ln_1.eps), "projection_dim": int(model.embed_dim),
            "attention_dropout": 0.0, "initializer_range": 0.02, "initializer_factor": 1.0,
            "pad_token_id": 1, "bos_token_id": 49406, "eos_token_id": 49407}


def languagebind_state(model: BindModel, modality: str, keep_lora: bool = False) -> dict[str, torch.Tensor]:
    """The LanguageBind tensors of one tower and the text tower (peft-wrapped names when LoRA is kept)."""
    if model.config.text.kind != "open_clip":
        raise LanguageBindError("LanguageBind's text tower is CLIP's: a model with a Hugging Face sentence encoder "
                                "(text.kind hf) cannot be exported")
    tower = model.tower(modality)
    out = {K.tower_name(name): K.to_languagebind(name, value)
           for name, value in _merged_tower_state(tower, keep_lora).items()}
    if keep_lora and tower.config.lora is not None:
        out = K.peft_wrapped(out)
    clip = model.text.clip
    for name, value in clip.state_dict().items():
        names = K.text_names(name)
        if len(names) == 3:
            out.update(zip(names, value.detach().chunk(3)))
        elif names:
            out[names[0]] = K.to_languagebind(name, value.detach())
    return {k: v.contiguous() for k, v in out.items()}


def languagebind_config(model: BindModel, modality: str, keep_lora: bool = False) -> dict[str, Any]:
    """`config.json` of a LanguageBind folder for one tower of `model`."""
    model_type = MODEL_TYPE_OF[modality]
    return {"model_type": model_type, "architectures": [model_type], "projection_dim": int(model.embed_dim),
            "logit_scale_init_value": float(model.tower(modality).log_logit_scale.detach()),
            "torch_dtype": "float32", "text_config": _text_config(model),
            "vision_config": _vision_config(model, modality, keep_lora)}


def export_languagebind(model: BindModel, modality: str, output: str | Path, keep_lora: bool = False) -> Path:
    """Write one tower of `model` with its text tower as a LanguageBind folder (config, weights, tokenizer)."""
    from encoders.tokenizer_files import write_clip_tokenizer

    folder = write_folder(output, languagebind_config(model, modality, keep_lora),
                          languagebind_state(model, modality, keep_lora))
    write_clip_tokenizer(folder, context_length=model.config.text.context_length)
    return folder

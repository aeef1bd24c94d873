"""BindModel: one frozen anchor (a language tower, or an image tower) plus one LoRA-adapted tower per
modality, in a shared space."""

from __future__ import annotations

import os
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from encoders.backbone import build_clip
from encoders.config import ModelConfig, PreprocessConfig, TowerConfig
from encoders.lora import prepare_tower
from encoders.modalities import MODALITIES
from encoders.presets import get_preset
from encoders.text import Tokenizer, build_text_tower
from encoders.towers import ModalityTower


class BindModel(nn.Module):
    """`encode_text` and `encode(modality, batch)` return L2-normalised embeddings in one space."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not config.towers:
            raise ValueError(f"model config has no towers; add at least one of {list(MODALITIES)}")
        self.config = config
        preset = get_preset(config.preset)
        own_text = config.text.kind == "open_clip"
        text_dim = None
        if not own_text:
            self.text = build_text_tower(config.text, None, seed=config.init_seed)
            text_dim = self.text.output_dim
        clip = build_clip(preset, config.pretrained, embed_dim=text_dim, seed=config.init_seed,
                          legacy_activation=config.legacy_activation)
        visual = clip.visual
        if own_text:
            self.text = build_text_tower(config.text, clip, seed=config.init_seed)
        self.anchor_tower: ModalityTower | None = None
        # an anchor taken from a checkpoint (`anchor_from`) is this model's own from then on, and its checkpoints
        # carry it; without the source folder its weights await `encoders.checkpoint.load_into`
        self.anchor_missing: str | None = None
        if config.anchor == "image":
            self.anchor_tower, text, self.anchor_missing = build_image_anchor(config, visual, preset.image_size)
            self.text = text or self.text
        self.embed_dim = int(self.text.output_dim)
        self.towers = build_towers(config, visual)
        if self.anchor_tower is not None and self.anchor_tower.backbone.proj.shape[-1] != self.embed_dim:
            raise ValueError(f"the anchor image tower embeds into {self.anchor_tower.backbone.proj.shape[-1]} "
                             f"dimensions, the towers into {self.embed_dim}")

    @property
    def modalities(self) -> list[str]:
        """The modalities that have a tower, in config order."""
        return list(self.towers.keys())

    def tower(self, modality: str) -> ModalityTower:
        """The tower of `modality`; KeyError naming the towers there are."""
        if modality not in self.towers:
            raise KeyError(f"no {modality!r} tower in this model; it has {self.modalities}")
        return self.towers[modality]

    def tower_config(self, modality: str) -> TowerConfig:
        """The `TowerConfig` (preprocessing included) the tower was built from."""
        return self.tower(modality).config

    def train(self, mode: bool = True) -> "BindModel":
        """`nn.Module.train`, except that the frozen language tower stays in eval mode (no dropout, ever)."""
        super().train(mode)
        self.text.eval()  # frozen: no dropout, ever
        if self.anchor_tower is not None:
            self.anchor_tower.eval()   # frozen too: no token masking, no dropout
        return self

    @property
    def anchor(self) -> str:
        """What the towers bind to: `language` or `image` (`ModelConfig.anchor`)."""
        return self.config.anchor

    @property
    def anchor_carried(self) -> bool:
        """The image anchor came from another checkpoint (`anchor_from`): this model's checkpoints carry it."""
        return self.config.anchor_from is not None

    def _image_anchor(self) -> ModalityTower:
        if self.anchor_tower is None:
            raise ValueError("this model binds to language; it has no image anchor")
        return self.anchor_tower

    @property
    def anchor_preprocess(self) -> PreprocessConfig:
        """How anchor frames are prepared (the image anchor's resolution and normalisation)."""
        return self._image_anchor().config.preprocess

    def encode_anchor_images(self, images: torch.Tensor) -> torch.Tensor:
        """Prepared anchor frames [batch, 3, S, S] -> L2-normalised anchor embeddings [batch, D] float32,
        without gradients (the image anchor is frozen)."""
        anchor = self._image_anchor()
        if self.anchor_missing:
            raise ValueError(self.anchor_missing)
        with torch.no_grad():
            return F.normalize(anchor(images).float(), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [batch, context_length] int -> L2-normalised text embeddings [batch, D] float32, without
        gradients (the language tower is frozen)."""
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text tokens must be integer ids [batch, context_length], got {list(tokens.shape)} "
                             f"{tokens.dtype}")
        with torch.no_grad():
            return F.normalize(self.text(tokens).float(), dim=-1)

    def encode(self, modality: str, batch: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """`frames`: video only, per-row frame counts when images (1 frame) ride along with clips."""
        tower = self.tower(modality)
        return F.normalize((tower(batch) if frames is None else tower(batch, frames=frames)).float(), dim=-1)

    def logit_scale(self, modality: str) -> torch.Tensor:
        """The modality's logit scale (exp of its clamped learnable log-scale), as its contrastive loss uses it."""
        return self.tower(modality).logit_scale()

    def tokenizer(self) -> Tokenizer:
        """A new tokenizer for the language tower (ids [batch, context_length]); build it once and keep it."""
        return Tokenizer(self.config.text)


def build_image_anchor(config: ModelConfig, visual: nn.Module,
                       image_size: int) -> tuple[ModalityTower, nn.Module | None, str | None]:
    """The frozen image anchor, a plain image tower of the preset (no LoRA, no masking), with
    - the preset's CLIP weights as they came (`anchor_from` None), or
    - the `image` tower of the checkpoint `anchor_from`, LoRA merged, and that checkpoint's language tower
      (returned, so that text queries land in the anchor's space; otherwise None), or
    - when `anchor_from` is no folder here (a checkpoint of this model read elsewhere), weights still to come
      from the checkpoint being loaded: the third value says what is missing until then."""
    from encoders.lora import merged_state_dict

    anchor = ModalityTower(TowerConfig("image", lora=None, preprocess=PreprocessConfig(image_size=image_size)), visual)
    anchor.requires_grad_(False)
    text, missing = None, None
    if config.anchor_from is not None and not os.path.isdir(config.anchor_from):
        missing = (f"the image anchor's weights were not loaded: anchor_from {config.anchor_from} is not a folder "
                   "here, and no checkpoint carrying them was loaded")
    elif config.anchor_from is not None:
        from encoders.checkpoint import load_model  # a checkpoint holds a BindModel: imported on use

        source = load_model(config.anchor_from)
        if "image" not in source.modalities:
            raise ValueError(f"anchor_from {config.anchor_from} has no image tower (it has {source.modalities})")
        if (source.config.preset, source.config.text) != (config.preset, config.text):
            raise ValueError(f"anchor_from {config.anchor_from} is preset {source.config.preset!r} with text "
                             f"{source.config.text}; this model's must be the same (it is {config.preset!r}, "
                             f"{config.text})")
        anchor.load_state_dict(merged_state_dict(source.tower("image")))
        text = source.text
    return anchor.eval(), text, missing


def build_towers(config: ModelConfig, visual: nn.Module) -> nn.ModuleDict:
    """One LoRA-prepared tower per modality, each from its own copy of `visual`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)  # LoRA A matrices are random: seed them too
        return nn.ModuleDict({t.modality: prepare_tower(ModalityTower(t, visual)) for t in config.towers})


def parameter_counts(config: ModelConfig) -> dict[str, dict[str, int]]:
    """{modality: {"trainable": n, "total": n}} without allocating or initialising the towers: they are
    built on the meta device (a ViT-L/14 plan costs a second, not gigabytes). A Hugging Face language
    tower is loaded for its width only."""
    text_dim = None
    if config.text.kind != "open_clip":
        text_dim = int(build_text_tower(config.text, None, seed=config.init_seed).output_dim)
    with torch.device("meta"):
        visual = build_clip(get_preset(config.preset), None, embed_dim=text_dim, seed=config.init_seed).visual
        towers = build_towers(config, visual)
    return {m: {"trainable": sum(p.numel() for p in t.parameters() if p.requires_grad),
                "total": sum(p.numel() for p in t.parameters())} for m, t in towers.items()}


def bare_backbone(config: ModelConfig, modality: str) -> nn.Module:
    """A tower's backbone exactly as LoRA found it (same weights, no adapters).

    This is the model `peft.PeftModel.from_pretrained(backbone, "<checkpoint>/<modality>")` loads a
    saved adapter onto; the checkpoint's `trained.safetensors` supplies the tensors trained beside it.
    """
    tower = replace(config.tower(modality), lora=None)
    return BindModel(replace(config, towers=(tower,))).tower(modality).backbone

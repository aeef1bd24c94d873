"""Typed settings of the model library: what a tower is, how its inputs are prepared, how it is adapted.

The one schema of model settings: each field, its default and its range live here, once. They are plain
dataclasses (no pydantic import) so `encoders` stays dependency-light. A range is declared on the field's
type (`Annotated[float, Ge(0), Lt(1)]`, the `annotated_types` that pydantic reads): `raybind.config` has
pydantic validate these very classes from YAML, naming a bad field by its dotted path, and `check_bounds`
enforces the same declarations when the library is used directly. The `__pydantic_config__` hint makes
pydantic reject unknown keys, as every other config section does.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt

from encoders import constants as C
from encoders.modalities import modality as modality_spec

_STRICT = {"extra": "forbid"}   # read by pydantic when raybind.config validates these classes

Ratio = Annotated[float, Ge(0), Lt(1)]   # a share of something that must leave some of it (mask, dropout)
Positive = Annotated[int, Ge(1)]
_WORDS = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt")}


@functools.cache
def _bounds(cls: type) -> dict[str, list[tuple[str, float]]]:
    """Each field's declared bounds, from its `Annotated` type (also inside `X | None`)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        for option in (typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType)
                       else (hint,)):
            for item in getattr(option, "__metadata__", ()):
                for kind, (word, attribute) in _WORDS.items():
                    if isinstance(item, kind):
                        out.setdefault(name, []).append((word, getattr(item, attribute)))
    return out


def check_bounds(settings: Any) -> None:
    """Raise for a field outside its declared bounds (what pydantic checks when it validates a config)."""
    for name, limits in _bounds(type(settings)).items():
        value = getattr(settings, name)
        for word, limit in limits if value is not None else ():
            if not {">=": value >= limit, ">": value > limit, "<=": value <= limit, "<": value < limit}[word]:
                raise ValueError(f"{name} must be {word} {limit}, got {value}")


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything the transforms need for one tower; stored in `raybind.json` so inference matches training."""

    __pydantic_config__ = _STRICT

    image_size: int = 224
    mean: tuple[float, float, float] = C.CLIP_MEAN
    std: tuple[float, float, float] = C.CLIP_STD
    num_frames: int = C.VIDEO_NUM_FRAMES
    sample_rate: int = C.AUDIO_SAMPLE_RATE
    mel_bins: int = C.AUDIO_MEL_BINS
    target_length: int = C.AUDIO_TARGET_LENGTH
    frame_length_ms: float = C.AUDIO_FRAME_LENGTH_MS
    frame_shift_ms: float = C.AUDIO_FRAME_SHIFT_MS
    audio_norm_mean: float = C.AUDIO_NORM_MEAN
    audio_norm_std: float = C.AUDIO_NORM_STD
    depth_min_m: float = C.DEPTH_MIN_M
    depth_max_m: float = C.DEPTH_MAX_M
    # Horizontal flips in training. Off where captions name left and right of a clip's motion: a flipped
    # clip moving left looks like one moving right, and the caption would lie.
    random_flip: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain values (what the checkpoint's `raybind.json` stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        """Inverse of `to_dict`: unknown keys are an error, missing ones take their defaults, mean/std lists
        become tuples again."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}; valid: {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True)
class LoraSettings:
    """Adapters on q, k, v and out projections (rank, scale alpha/r, dropout); LanguageBind: alpha 16, dropout 0."""

    __pydantic_config__ = _STRICT
    r: Positive = 16
    alpha: Positive = C.LORA_ALPHA
    dropout: Ratio = 0.0

    def __post_init__(self) -> None:
        check_bounds(self)


VIDEO_VARIANTS = ("v1", "v1.5")   # LanguageBind's video towers: V1 (2D patches, one class token), V1.5 (vl_new)


@dataclass(frozen=True)
class TowerConfig:
    """One modality tower. `lora=None` means full fine-tuning of the transformer blocks.

    `mask_ratio`, `temperature` (initial) and `learn_temperature` are training settings: they shape how the
    tower trains, not what it is, so they stay out of `to_dict()` (the checkpoint's model identity and
    config hash) and out of equality. A sweep over them trains one model identity.
    """

    __pydantic_config__ = _STRICT
    modality: str
    mask_ratio: Ratio = field(default=0.0, compare=False)
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    temporal: Literal["attention", "mean"] = "attention"  # video: LanguageBind's attention, or frame average only
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # initial; the logit scale starts at 1/temperature
    temperature: Annotated[float, Gt(0), Le(1)] = field(default=C.TEMPERATURE_INIT, compare=False)
    learn_temperature: bool = field(default=True, compare=False)            # False: fixed at `temperature`
    # video: LanguageBind's V1 tower, or V1.5 (`clip_type: vl_new`): a tube-1 3D patch embedding and one class
    # embedding per frame. Part of the tower's identity; absent from old checkpoints, which are all V1.
    video_variant: Literal["v1", "v1.5"] = "v1"

    def __post_init__(self) -> None:
        modality_spec(self.modality)  # raises for an unknown name, listing the valid ones
        check_bounds(self)
        if self.temporal not in ("attention", "mean"):
            raise ValueError(f"{self.modality}.temporal must be 'attention' or 'mean', got {self.temporal!r}")
        if self.video_variant not in VIDEO_VARIANTS:
            raise ValueError(f"{self.modality}.video_variant must be one of {list(VIDEO_VARIANTS)}, "
                             f"got {self.video_variant!r}")
        if self.video_variant != "v1" and not modality_spec(self.modality).temporal:
            raise ValueError(f"video_variant {self.video_variant!r} is for video towers, not {self.modality}")

    @classmethod
    def languagebind(cls, modality: str, preprocess: PreprocessConfig | None = None) -> "TowerConfig":
        """The paper's recipe for a modality (mask ratio, LoRA rank, alpha 16, dropout 0)."""
        spec = modality_spec(modality)
        return cls(
            modality=modality,
            mask_ratio=spec.mask_ratio,
            lora=LoraSettings(r=spec.lora_rank, alpha=C.LORA_ALPHA, dropout=0.0),
            preprocess=preprocess or PreprocessConfig(),
        )

    def to_dict(self) -> dict[str, Any]:
        """The tower's identity as the checkpoint records it, without training-only fields (mask ratio, temperature)."""
        return {
            "modality": self.modality,
            "lora": None if self.lora is None else dataclasses.asdict(self.lora),
            "temporal": self.temporal,
            "preprocess": self.preprocess.to_dict(),
            # left out at the default so checkpoints from before V1.5 keep their config hash
            **({"video_variant": self.video_variant} if self.video_variant != "v1" else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TowerConfig":
        """Inverse of `to_dict`; training-only fields take their defaults (`mask_ratio` is read when present)."""
        lora = data.get("lora")
        return cls(
            modality=data["modality"],
            mask_ratio=float(data.get("mask_ratio", 0.0)),
            lora=None if lora is None else LoraSettings(**lora),
            temporal=data.get("temporal", "attention"),
            preprocess=PreprocessConfig.from_dict(data.get("preprocess", {})),
            video_variant=data.get("video_variant", "v1"),
        )


@dataclass(frozen=True)
class TextConfig:
    """The frozen language tower: the preset's open_clip text tower, or a Hugging Face sentence encoder."""

    __pydantic_config__ = _STRICT
    kind: Literal["open_clip", "hf"] = "open_clip"
    name: str | None = None          # hf: model name, local folder, or a bundled alias (see encoders.text)
    context_length: Annotated[int, Ge(8)] = C.TEXT_CONTEXT_LENGTH
    projection_dim: Positive | None = None  # hf: frozen projection to this size; None keeps the encoder's width

    def __post_init__(self) -> None:
        if self.kind not in ("open_clip", "hf"):
            raise ValueError(f"text.kind must be 'open_clip' or 'hf', got {self.kind!r}")
        if self.kind == "hf" and not self.name:
            raise ValueError("text.name is required when text.kind is 'hf'")
        check_bounds(self)


ANCHORS = ("language", "image")   # what the trained towers bind to (LanguageBind's way, ImageBind's way)


@dataclass(frozen=True)
class ModelConfig:
    """A whole bind model: one preset backbone, one frozen anchor, one tower per modality.

    The anchor is what every tower is pulled towards: the frozen language tower (`language`, LanguageBind)
    or a frozen image tower (`image`, ImageBind) fed one frame per clip; the language tower is kept either
    way (zero-shot and text retrieval, emergent under the image anchor). The image anchor is the preset's
    CLIP image tower (its pretrained weights, in the space of its own text tower), or with `anchor_from` the
    `image` tower and language tower of a RayBind checkpoint (a tiny demo, an in-house image model).
    """

    preset: str = "tiny"
    pretrained: str | None = None  # open_clip pretrained tag or local checkpoint file; None = random init
    init_seed: int = 0             # random init is seeded so a checkpoint reloads onto the same backbone
    text: TextConfig = field(default_factory=TextConfig)
    towers: tuple[TowerConfig, ...] = ()
    anchor: Literal["language", "image"] = "language"
    anchor_from: str | None = None   # image anchor: a RayBind checkpoint folder whose image + language towers anchor
    # Checkpoints written before the activation followed the weights (format 1) were built with the preset
    # config's own activation whatever the tag (GELU for `vit-l-14` even with `openai` weights): they reload so.
    legacy_activation: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {list(ANCHORS)}, got {self.anchor!r}")
        if self.anchor_from is not None and self.anchor != "image":
            raise ValueError("anchor_from names the frozen image tower of `anchor: image`; set anchor: image")
        if self.anchor == "image" and any(t.modality == "image" for t in self.towers):
            raise ValueError("with anchor: image the image tower is the frozen anchor; it cannot also be trained")
        if self.anchor == "image" and self.anchor_from is None and self.text.kind != "open_clip":
            raise ValueError("anchor: image binds to the preset's CLIP image tower, whose space is its own text "
                             "tower's: use text.kind open_clip (or anchor_from a checkpoint with an image tower)")

    def tower(self, modality: str) -> TowerConfig:
        """The config of `modality`'s tower; KeyError naming the towers there are."""
        for tower in self.towers:
            if tower.modality == modality:
                return tower
        raise KeyError(f"no {modality!r} tower; this model has {[t.modality for t in self.towers]}")

    def to_dict(self) -> dict[str, Any]:
        """The model's identity as the checkpoint records it (what `from_dict` rebuilds it from)."""
        return {
            "preset": self.preset,
            "pretrained": self.pretrained,
            "init_seed": self.init_seed,
            "text": dataclasses.asdict(self.text),
            "towers": [t.to_dict() for t in self.towers],
            # left out at the default so checkpoints from before the image anchor keep their config hash
            **({"anchor": self.anchor, "anchor_from": self.anchor_from} if self.anchor != "language" else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of `to_dict`: a checkpoint reloads onto the architecture it was trained with."""
        return cls(
            preset=data["preset"],
            pretrained=data.get("pretrained"),
            init_seed=int(data.get("init_seed", 0)),
            text=TextConfig(**data.get("text", {})),
            towers=tuple(TowerConfig.from_dict(t) for t in data.get("towers", [])),
            anchor=data.get("anchor", "language"),
            anchor_from=data.get("anchor_from"),
        )

"""The experiment config: one YAML file validated into typed objects before anything starts.

Errors name the field by its dotted path (`train.batch_size: ...`); `--set a.b=c` overrides any field.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from encoders import constants as C
from encoders.config import LoraSettings, ModelConfig, PreprocessConfig, TextConfig, TowerConfig
from encoders.modalities import MODALITIES, REGISTRY
from encoders.presets import get_preset
from raybind.errors import InputError


def _switch_word(value: Any) -> Any:
    """YAML 1.1 reads on/off (and yes/no) as booleans, in files and in `--set` values alike: take a boolean
    as the switch word it was written as."""
    return ("on" if value else "off") if isinstance(value, bool) else value


# Settings written on/off (plus auto or inherit): `--set train.compile=off` must mean "off", not False.
AutoSwitch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch_word)]
InheritSwitch = Annotated[Literal["inherit", "on", "off"], BeforeValidator(_switch_word)]


class ConfigError(InputError):
    """An invalid config; the message names each bad field by dotted path. Jobs exit with code 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlacementSettings(_Strict):
    """Custom resources that pin each part of a run to its node type on a cluster (the node types of
    `cluster/aws.yaml` and the KubeRay groups advertise `data` and `train`). Empty on one machine, where
    every part shares it."""

    data: dict[str, float] = Field(default_factory=dict)   # decode tasks, CPU synthesis and inference actors
    train: dict[str, float] = Field(default_factory=dict)  # Ray Train workers, GPU synthesis and inference actors


class RaySettings(_Strict):
    address: str | None = None            # None: start a local Ray; "auto" or ray://...: connect
    num_cpus: float | None = Field(default=None, gt=0)   # local cluster only
    object_store_memory_mb: int | None = Field(default=None, gt=0)
    progress_bars: AutoSwitch = "auto"  # auto: on for a terminal, off in logs and CI
    verbose: bool = False    # Ray's own logs (per-report dumps, dataset plans, worker output) on the console
    # HF_HUB_OFFLINE for every worker: inherit (the driver's environment; unset means online), on or off.
    # Air-gapped clusters set "on" and pre-stage weights (README: Run on a cluster).
    hub_offline: InheritSwitch = "inherit"
    placement: PlacementSettings = PlacementSettings()


class SynthesisSettings(_Strict):
    """Depth or thermal: synthesized from decoded frames (by the synthesis pool), or read from a manifest column."""

    source: Literal["synthesize", "column"] = "synthesize"
    model: str | None = None              # depth: transformers model name/folder; thermal: MUNIT .pt or TorchScript
    frames: Literal["one", "all"] = "one"  # one random frame per clip (LanguageBind) or all N frames
    seed: int = 0                         # frame choice, and the random init of the synthesizer when `model` is null


class SynthesisPoolSettings(_Strict):
    """The one actor pool that runs every synthesized modality: each actor loads all synthesizers once."""

    actors: int = Field(default=1, ge=1)              # actors from the start (the pool's minimum)
    max_actors: int | None = Field(default=None, ge=1)  # Ray Data adds actors up to this while synthesis lags
    batch_size: int = Field(default=8, ge=1)   # clips per call of a GPU actor (CPU actors take decode.batch_size)
    num_cpus: float = Field(default=0.5, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)


    @model_validator(mode="after")
    def _ordered(self) -> "SynthesisPoolSettings":
        if self.max_actors is not None and self.max_actors < self.actors:
            raise ValueError(f"max_actors ({self.max_actors}) is below actors ({self.actors})")
        return self


class DecodeSettings(_Strict):
    num_cpus: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=4, ge=1)
    crop_margin: int = Field(default=0, ge=0)   # frames ship as (size + margin)^2 so training can random-crop
    threads: int = Field(default=1, ge=0)       # FFmpeg threads per video; 0: one per core (oversubscribes)


class DataSettings(_Strict):
    train: str                            # manifest (parquet/jsonl/csv) or a built dataset folder, local or s3://
    val: str | None = None
    demo: dict[str, Any] | None = None    # generate demo data at `train`/`val` when missing (see raybind.data.demo_data)
    modalities: tuple[str, ...] = ("video",)
    num_frames: int = Field(default=C.VIDEO_NUM_FRAMES, ge=1)
    audio_source: Literal["auto", "column", "video"] = "auto"
    depth: SynthesisSettings = SynthesisSettings()
    thermal: SynthesisSettings = SynthesisSettings()
    synthesis: SynthesisPoolSettings = SynthesisPoolSettings()
    decode: DecodeSettings = DecodeSettings()
    object_store_budget_mb: int | None = Field(default=None, gt=0)
    # Keep the decoded training rows in the object store when they fit this budget: passes after the first
    # read them instead of decoding again (no actor pool start-up and model loading per pass). None: stream.
    cache_mb: int | None = Field(default=None, gt=0)
    # Multi-view captions (raybind.data.captions): view name -> sampling weight; each pass draws one view per
    # row. None: `text` is one caption. Validation always uses `val_caption_view` (default: the heaviest).
    caption_views: dict[str, float] | None = None
    val_caption_view: str | None = None

    @field_validator("caption_views")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("name at least one view, e.g. {title: 0.1, frames: 0.2, video: 0.3, polished: 0.4}")
        bad = {k: w for k, w in value.items() if not (isinstance(w, (int, float)) and 0 < w < float("inf"))}
        if bad:
            raise ValueError(f"weights must be positive numbers, got {bad}")
        return value

    @model_validator(mode="after")
    def _val_view(self) -> "DataSettings":
        if self.val_caption_view is not None and (self.caption_views is None or
                                                  self.val_caption_view not in self.caption_views):
            raise ValueError(f"val_caption_view {self.val_caption_view!r} is not one of caption_views "
                             f"{sorted(self.caption_views or {})}")
        return self

    def validation_view(self) -> str | None:
        if self.caption_views is None:
            return None
        return self.val_caption_view or max(self.caption_views, key=lambda v: (self.caption_views[v], v))

    @field_validator("modalities")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; valid: {list(MODALITIES)}")
        if not value:
            raise ValueError("at least one modality is required")
        return value


class LoraFields(_Strict):
    r: int = Field(ge=1)
    alpha: int = Field(default=C.LORA_ALPHA, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class TowerFields(_Strict):
    # training settings (not part of the checkpoint's model identity)
    mask_ratio: float | None = Field(default=None, ge=0, lt=1)          # None: LanguageBind's ratio
    temperature: float = Field(default=C.TEMPERATURE_INIT, gt=0, le=1)  # initial; logit scale = 1/temperature
    learn_temperature: bool = True                                      # False: fixed at `temperature`
    lora: LoraFields | None | Literal["default"] = "default"   # null: full fine-tuning
    lr: float | None = Field(default=None, gt=0)
    temporal: Literal["attention", "mean"] = "attention"
    weight: float = Field(default=1.0, gt=0)   # share of training steps this tower gets
    grad_checkpointing: bool = False           # recompute block activations in backward (larger per-GPU batches)
    images: bool = False                       # video only: rows with an image and no video feed it as 1-frame clips
    preprocess: dict[str, Any] = Field(default_factory=dict)


class TextFields(_Strict):
    kind: Literal["open_clip", "hf"] = "open_clip"
    name: str | None = None
    context_length: int = Field(default=C.TEXT_CONTEXT_LENGTH, ge=8)
    projection_dim: int | None = Field(default=None, ge=1)


class ModelFields(_Strict):
    preset: str = "tiny"
    pretrained: str | None = None
    init_seed: int = 0
    text: TextFields = TextFields()
    towers: dict[str, TowerFields] = Field(default_factory=dict)

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        get_preset(value)  # raises with the valid choices
        return value


class StageSettings(_Strict):
    """One training stage: its steps and what feeds each tower (OmniVL's image-text, then image+video)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    steps: int = Field(ge=1)
    # tower -> source -> share of that tower's batch rows; sources: image (1-frame clips), video. Towers not
    # named take every row as it comes.
    feeds: dict[str, dict[Literal["image", "video"], float]] = Field(default_factory=dict)

    @field_validator("feeds")
    @classmethod
    def _shares(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for tower, shares in value.items():
            if any(w < 0 for w in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(f"{tower}: shares must be >= 0 with a positive sum, got {shares}")
        return value


class TrainSettings(_Strict):
    steps: int = Field(default=100, ge=1)
    batch_size: int = Field(default=16, ge=2)          # per worker, per step
    grad_accum: int = Field(default=1, ge=1)
    # cached: the loss of every micro-batch sees the whole accumulated batch as negatives (open_clip's
    # accum-freq; equals one batch grad_accum times larger). plain: each micro-batch only its own.
    accumulation: Literal["cached", "plain"] = "cached"
    num_workers: int = Field(default=1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    # torch's intra-op threads per worker; None: cpus_per_worker (at least 1). More than the Ray reservation
    # lets a worker use cores that only the first pass's decode actors need (the quickstart: data.cache_mb).
    torch_threads: int | None = Field(default=None, ge=1)
    gpus_per_worker: float = Field(default=1.0, gt=0, le=1)  # < 1 shares a GPU (e.g. with GPU synthesis)
    compile: AutoSwitch = "auto"           # torch.compile the tower blocks; auto: on GPUs
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=C.WEIGHT_DECAY, ge=0)
    log_every: int = Field(default=10, ge=1)
    val_every: int = Field(default=0, ge=0)           # 0: validate only before and after training
    checkpoint_every: int = Field(default=0, ge=0)    # 0: only at the end
    keep_checkpoints: int = Field(default=2, ge=1)
    max_failures: int = Field(default=0, ge=-1)
    val_batch_size: int = Field(default=64, ge=2)
    stages: list[StageSettings] | None = None   # their steps add up to `steps`; None: one stage

    def threads(self) -> int:
        """torch's intra-op threads in each worker."""
        return self.torch_threads or max(1, int(self.cpus_per_worker))


class InferenceSettings(_Strict):
    """The model actor pool of evaluation and embedding (`raybind.evaluate.inference`). It autoscales between
    `min_actors` and `max_actors` as the decode stages keep up or fall behind."""

    min_actors: int = Field(default=1, ge=1)
    max_actors: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=1)
    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float | None = Field(default=None, ge=0)   # None: one GPU per actor when the cluster has GPUs

    @model_validator(mode="after")
    def _ordered(self) -> "InferenceSettings":
        if self.max_actors < self.min_actors:
            raise ValueError(f"max_actors ({self.max_actors}) is below min_actors ({self.min_actors})")
        return self


class SearchDomain(_Strict):
    """One parameter's values in a sweep: exactly one of these."""

    grid: list[Any] | None = None                      # every value, crossed with the other grids
    choice: list[Any] | None = None                    # sampled uniformly, num_samples times
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "SearchDomain":
        given = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid, choice, uniform, loguniform (got {given or 'none'})")
        for key in ("uniform", "loguniform"):
            bounds = getattr(self, key)
            if bounds is not None and not (bounds[0] < bounds[1] and (key == "uniform" or bounds[0] > 0)):
                raise ValueError(f"{key} needs [low, high] with low < high{' and low > 0' if key == 'loguniform' else ''}")
        return self

    def candidates(self) -> list[Any]:
        """Values that must each make a valid config (every listed value, or the range's ends)."""
        return list(self.grid or self.choice or self.uniform or self.loguniform)


class SweepSettings(_Strict):
    """A Ray Tune search over config fields; see `raybind.train.sweep`."""

    space: dict[str, SearchDomain] = Field(min_length=1)   # dotted config path -> values
    metric: str = "val_r1_mean"      # a reported metric name (raybind.metrics), e.g. val_r1/video, val_loss/audio
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int | None = Field(default=None, ge=1)   # ASHA: steps before stopping anything (default val_every)
    reduction_factor: float = Field(default=2.0, gt=1)
    num_samples: int = Field(default=1, ge=1)
    max_concurrent_trials: int = Field(default=1, ge=1)


class RayBindConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = "./runs"
    seed: int = 0
    ray: RaySettings = RaySettings()
    data: DataSettings
    model: ModelFields = ModelFields()
    train: TrainSettings = TrainSettings()
    sweep: SweepSettings | None = None
    inference: InferenceSettings = InferenceSettings()

    @model_validator(mode="after")
    def _towers_cover_modalities(self) -> "RayBindConfig":
        extra = sorted(set(self.model.towers) - set(self.data.modalities))
        if extra:
            raise ValueError(f"model.towers has {extra} which data.modalities does not list")
        if self.sweep is not None and self.sweep.metric.startswith("val") and not self.data.val:
            raise ValueError(f"sweep.metric {self.sweep.metric} needs validation data: set data.val")
        for modality, fields in self.model.towers.items():
            if fields.images and not REGISTRY[modality].temporal:
                raise ValueError(f"model.towers.{modality}.images: only the video tower takes images as 1-frame clips")
        if self.video_takes_images() and "audio" in self.data.modalities:
            raise ValueError("model.towers.video.images: image rows carry no audio; train the audio tower in a "
                             "run without image rows")
        stages = self.train.stages
        if stages is not None:
            if sum(s.steps for s in stages) != self.train.steps:
                raise ValueError(f"train.stages: their steps add up to {sum(s.steps for s in stages)}, "
                                 f"train.steps is {self.train.steps}")
            if len({s.name for s in stages}) != len(stages):
                raise ValueError("train.stages: stage names must be unique")
            for index, stage in enumerate(stages):
                for tower in stage.feeds:
                    if tower != "video" or not self.video_takes_images():
                        raise ValueError(f"train.stages.{index}.feeds.{tower}: only a video tower with "
                                         "`images: true` takes a mix of sources")
        return self

    def video_takes_images(self) -> bool:
        return "video" in self.data.modalities and self.tower_fields("video").images

    def model_config_for_encoders(self) -> ModelConfig:
        """The `encoders` model config: paper defaults per modality, overridden by this config's fields."""
        preset = get_preset(self.model.preset)
        towers = []
        for modality in self.data.modalities:
            fields = self.tower_fields(modality)
            paper = TowerConfig.languagebind(modality)
            pre = preset.preprocess(modality)
            pre = PreprocessConfig.from_dict({**pre.to_dict(), "num_frames": self.data.num_frames, **fields.preprocess})
            if fields.lora == "default":
                lora = paper.lora
            elif fields.lora is None:
                lora = None
            else:
                lora = LoraSettings(r=fields.lora.r, alpha=fields.lora.alpha, dropout=fields.lora.dropout)
            towers.append(TowerConfig(
                modality=modality,
                mask_ratio=paper.mask_ratio if fields.mask_ratio is None else fields.mask_ratio,
                lora=lora, temporal=fields.temporal, preprocess=pre, temperature=fields.temperature,
                learn_temperature=fields.learn_temperature))
        text = TextConfig(kind=self.model.text.kind, name=self.model.text.name,
                          context_length=self.model.text.context_length, projection_dim=self.model.text.projection_dim)
        return ModelConfig(preset=self.model.preset, pretrained=self.model.pretrained, init_seed=self.model.init_seed,
                           text=text, towers=tuple(towers))

    def inference_data(self) -> dict[str, Any]:
        """The data settings that decide how media becomes tower input (frames, audio source, synthesizers,
        decoding); saved in checkpoints so evaluation and embedding decode as training did. Manifests,
        demo and cache settings are the run's own and stay out."""
        return self.data.model_dump(mode="json", exclude={"train", "val", "demo", "cache_mb", "object_store_budget_mb"})

    def tower_fields(self, modality: str) -> TowerFields:
        return self.model.towers.get(modality, TowerFields())

    def compile_enabled(self) -> bool:
        return self.train.compile == "on" or (self.train.compile == "auto" and self.train.use_gpu)

    def learning_rates(self) -> dict[str, float]:
        return {m: (self.tower_fields(m).lr or REGISTRY[m].learning_rate) for m in self.data.modalities}

    def tower_weights(self) -> dict[str, float]:
        return {m: self.tower_fields(m).weight for m in self.data.modalities}

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a config tree, creating sections on the way."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key, {}), dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", yaml-parsed c)."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.path=value, got {text!r}")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects dotted.path=value, got {text!r}")
    return key, yaml.safe_load(raw) if raw else None


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"{path}: {item['msg']}")
    return "invalid config:\n  " + "\n  ".join(lines)


def validate(tree: dict[str, Any]) -> RayBindConfig:
    try:
        cfg = RayBindConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None
    if cfg.sweep is not None:
        _check_search_space(cfg)
    return cfg


# A sweep builds its data once and names its own trials and storage: these cannot vary per trial.
_FIXED_IN_A_SWEEP = ("data", "sweep", "name", "storage", "ray", "inference")


def _check_search_space(cfg: RayBindConfig) -> None:
    """Every path of `sweep.space` must be a real field and each value valid there: fail before anything runs."""
    base = cfg.model_dump(mode="json")
    base.pop("sweep")
    problems = []
    for path, domain in cfg.sweep.space.items():
        if path.split(".")[0] in _FIXED_IN_A_SWEEP:
            problems.append(f"sweep.space.{path}: cannot be searched (data is built once per sweep; "
                            f"{', '.join(_FIXED_IN_A_SWEEP)} are fixed)")
            continue
        for value in domain.candidates():
            tree = copy.deepcopy(base)
            try:
                set_dotted(tree, path, value)
                RayBindConfig.model_validate(tree)
            except (ConfigError, ValidationError) as error:
                reason = format_validation_error(error) if isinstance(error, ValidationError) else str(error)
                problems.append(f"sweep.space.{path}: value {value!r}: {reason.replace(chr(10), ' ')}")
                break
    if problems:
        raise ConfigError("invalid sweep:\n  " + "\n  ".join(problems))


EXTENDS = "extends"  # a config may name a base file (relative to itself) that it overlays


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Overlay wins; mappings merge key by key, anything else (lists included) is replaced whole."""
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One YAML file as a mapping, with its `extends:` chain resolved."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `{EXTENDS}` loops back to itself")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = tree.pop(EXTENDS, None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: `{EXTENDS}` must be a file name, got {base!r}")
    return _merge(_read_tree(path.parent / base, (*seen, path.resolve())), tree)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RayBindConfig:
    """Read YAML (and the base it `extends`), apply `--set` overrides, validate. Relative data paths stay
    relative to the working dir."""
    tree = copy.deepcopy(_read_tree(Path(path)))
    for item in overrides:
        set_dotted(tree, *parse_override(item))
    return validate(tree)

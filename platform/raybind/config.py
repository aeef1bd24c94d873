"""The experiment config: one YAML file validated into typed objects before anything starts.

Errors name the field by its dotted path (`train.batch_size: ...`); `--set a.b=c` overrides any field.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Gt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from encoders import constants as C
from encoders.config import ModelConfig, TextConfig, TowerConfig
from encoders.modalities import MODALITIES, REGISTRY, SYNTHESIZABLE
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
    """Where Ray runs (a local Ray with these resources, or a cluster joined by address), its logs and Hub access."""

    address: str | None = None            # None: start a local Ray; "auto" or ray://...: connect
    num_cpus: float | None = Field(default=None, gt=0)   # local cluster only
    object_store_memory_mb: int | None = Field(default=None, gt=0)
    progress_bars: AutoSwitch = "auto"  # auto: on for a terminal, off in logs and CI
    verbose: bool = False    # Ray's own logs (per-report dumps, dataset plans, worker output) on the console
    # HF_HUB_OFFLINE for every worker: inherit (the driver's environment; unset means online), on or off.
    # Air-gapped clusters set "on" and pre-stage weights (docs/clusters.md).
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
    """The decode tasks: CPUs each, rows per call, the margin frames ship with (for random crops), FFmpeg
    threads, and the per-row bounds that keep one hostile file from taking a worker down."""

    num_cpus: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=4, ge=1)
    crop_margin: int = Field(default=0, ge=0)   # frames ship as (size + margin)^2 so training can random-crop
    threads: int = Field(default=1, ge=0)       # FFmpeg threads per video; 0: one per core (oversubscribes)
    max_file_mb: float = Field(default=1024, gt=0)    # a file read whole (remote media, images, depth, members)
    row_timeout_s: float = Field(default=120, gt=0)   # one row's decode (a FIFO, a stalled read, a bomb)
    read_attempts: int = Field(default=4, ge=1)       # tries of a remote read on transient storage errors
    read_backoff_s: float = Field(default=0.5, ge=0)  # first wait between them, doubling


class MediaSettings(_Strict):
    """How media become tower input: which towers, frames, audio source, synthesizers, decoding, caption views.

    The part of `data` a checkpoint keeps (`raybind.json`), so evaluation and embedding decode as training
    did; the run's own manifests and caches (`DataSettings`) stay out."""

    modalities: tuple[str, ...] = ("video",)
    num_frames: int = Field(default=C.VIDEO_NUM_FRAMES, ge=1)
    audio_source: Literal["auto", "column", "video"] = "auto"
    depth: SynthesisSettings = SynthesisSettings()
    thermal: SynthesisSettings = SynthesisSettings()
    synthesis: SynthesisPoolSettings = SynthesisPoolSettings()
    decode: DecodeSettings = DecodeSettings()
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
    def _val_view(self) -> "MediaSettings":
        if self.val_caption_view is not None and (self.caption_views is None or
                                                  self.val_caption_view not in self.caption_views):
            raise ValueError(f"val_caption_view {self.val_caption_view!r} is not one of caption_views "
                             f"{sorted(self.caption_views or {})}")
        return self

    def validation_view(self) -> str | None:
        """The caption view validation and inference read (None: `text` is one caption)."""
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


class DataSettings(MediaSettings):
    """The run's data: its manifests (or built datasets), demo generation and object-store budgets, plus
    the media settings it trains with."""

    # A manifest (a Parquet/JSONL/CSV file, a folder or glob of them, or a list) or a built dataset folder,
    # local or s3://. Several files (or one over 64 MiB) are read by Ray Data on the cluster (raybind.data.sources).
    train: str | list[str]
    val: str | list[str] | None = None
    demo: dict[str, Any] | None = None    # generate demo data at `train`/`val` when missing (see raybind.data.demo_data)
    # Rows each training worker shuffles among as it reads (Ray Data's local shuffle buffer, seeded); None:
    # rows come in the order the files are read. Passes also visit the files in a new seeded order.
    shuffle_buffer: int | None = Field(default=None, ge=2)
    object_store_budget_mb: int | None = Field(default=None, gt=0)
    # Keep the decoded training rows in the object store when they fit this budget: passes after the first
    # read them instead of decoding again (no actor pool start-up and model loading per pass). None: stream.
    cache_mb: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _demo_manifests(self) -> "DataSettings":
        if self.demo is not None and not (isinstance(self.train, str) and (self.val is None or isinstance(self.val, str))):
            raise ValueError("demo data is generated into one train (and val) file: give each as a single path")
        return self

    def media(self) -> MediaSettings:
        """The media settings alone (what a checkpoint saves)."""
        return MediaSettings(**{name: getattr(self, name) for name in MediaSettings.model_fields})


@dataclass(frozen=True)
class TowerSettings(TowerConfig):
    """A tower as a run sets it: the model's own tower settings (`encoders.config.TowerConfig`: mask ratio,
    LoRA, temperature, temporal mode, preprocessing; their defaults and checks live there) plus how this
    run trains it. Unset mask ratio and LoRA take LanguageBind's for the modality (`encoders.modalities`),
    preprocessing the preset's; `RayBindConfig` fills them in before validation."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    lr: Annotated[float, Gt(0)] | None = None   # None: LanguageBind's learning rate for the modality
    weight: Annotated[float, Gt(0)] = 1.0       # share of training steps this tower gets
    grad_checkpointing: bool = False    # recompute block activations in backward (larger per-GPU batches)
    images: bool = False                # video only: rows with an image and no video feed it as 1-frame clips

    def tower_config(self) -> TowerConfig:
        """The model library's tower (what the checkpoint records), without the run's training fields."""
        return TowerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TowerConfig)})


class ModelSettings(_Strict):
    """The bind model: `encoders.config.ModelConfig`'s backbone and language tower, towers keyed by modality."""

    preset: str = ModelConfig.preset
    pretrained: str | None = ModelConfig.pretrained
    init_seed: int = ModelConfig.init_seed
    text: TextConfig = Field(default_factory=TextConfig)
    towers: dict[str, TowerSettings] = Field(default_factory=dict)
    # what the towers bind to: the frozen language tower (LanguageBind), or a frozen image tower fed one
    # frame per clip (ImageBind; manifests need no captions). See encoders.config.ModelConfig.
    anchor: Literal["language", "image"] = ModelConfig.anchor
    anchor_from: str | None = ModelConfig.anchor_from   # image anchor: a checkpoint with an image tower
    # fine-tune from a checkpoint (or run folder; local or s3://), e.g. one `raybind import-languagebind` wrote:
    # its weights for the towers it shares with this model (see encoders.checkpoint.init_from)
    init_from: str | None = None

    @field_validator("anchor_from", "init_from")
    @classmethod
    def _local_checkpoint(cls, value: str | None) -> str | None:
        # made absolute where the config is read, so Ray workers (another working directory) find it too
        return _local_folder(value)

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        get_preset(value)  # raises with the valid choices
        return value


def _resolved_towers(tree: Any) -> Any:
    """Fill each trained modality's tower with its defaults before validation: its name, LanguageBind's
    mask ratio and LoRA where unset (`null` mask ratio or `lora: default` say so too), the preset's
    preprocessing with `data.num_frames`, the config's own preprocess keys over both. Anything malformed is
    left for validation to report."""
    if not isinstance(tree, dict) or not isinstance(tree.get("data"), dict):
        return tree
    model = tree.get("model") or {}
    modalities = tree["data"].get("modalities", MediaSettings.model_fields["modalities"].default)
    towers = model.get("towers") or {} if isinstance(model, dict) else None
    if not isinstance(towers, dict) or not isinstance(modalities, (list, tuple)) or \
            any(m not in MODALITIES for m in modalities):
        return tree
    try:
        preset = get_preset(model.get("preset", ModelConfig.preset))
    except (ValueError, KeyError, TypeError):
        return tree
    num_frames = tree["data"].get("num_frames", C.VIDEO_NUM_FRAMES)
    # a tower no modality trains gets its name only (the after-validator reports it as not listed)
    resolved = {m: {**v, "modality": m} if isinstance(v, dict) else v for m, v in towers.items()}
    for modality in modalities:
        given = towers.get(modality) or {}
        if not isinstance(given, dict):
            continue
        paper = TowerConfig.languagebind(modality)
        tower = {**given, "modality": modality,
                 "preprocess": {**preset.preprocess(modality).to_dict(), "num_frames": num_frames,
                                **(given.get("preprocess") or {})}}
        if tower.get("mask_ratio") is None:
            tower["mask_ratio"] = paper.mask_ratio
        if tower.get("lora", "default") == "default":
            tower["lora"] = dataclasses.asdict(paper.lora)
        resolved[modality] = tower
    return {**tree, "model": {**model, "towers": resolved}}


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
    """How the Ray Train run trains: steps, per-worker batch and accumulation, workers and their resources,
    schedule, and the cadence of logs, validation and checkpoints (optionally in stages)."""

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
    """One experiment (`configs/*.yaml`). Each tower's defaults are filled in before validation; the sections
    are then checked against each other (towers vs modalities, stages vs steps, sweep metric vs `data.val`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    storage: str = "./runs"
    seed: int = 0
    ray: RaySettings = RaySettings()
    data: DataSettings
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    sweep: SweepSettings | None = None
    inference: InferenceSettings = InferenceSettings()

    @model_validator(mode="before")
    @classmethod
    def _tower_defaults(cls, tree: Any) -> Any:
        return _resolved_towers(tree)

    @model_validator(mode="after")
    def _towers_cover_modalities(self) -> "RayBindConfig":
        extra = sorted(set(self.model.towers) - set(self.data.modalities))
        if extra:
            raise ValueError(f"model.towers has {extra} which data.modalities does not list")
        if self.sweep is not None and self.sweep.metric.startswith("val") and not self.data.val:
            raise ValueError(f"sweep.metric {self.sweep.metric} needs validation data: set data.val")
        for modality, tower in self.model.towers.items():
            if tower.images and not REGISTRY[modality].temporal:
                raise ValueError(f"model.towers.{modality}.images: only the video tower takes images as 1-frame clips")
        if self.video_takes_images() and "audio" in self.data.modalities:
            raise ValueError("model.towers.video.images: image rows carry no audio; train the audio tower in a "
                             "run without image rows")
        self._check_anchor()
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
        """The video tower also takes image rows as 1-frame clips (`model.towers.video.images`)."""
        return "video" in self.data.modalities and self.tower("video").images

    def _check_anchor(self) -> None:
        """What the image anchor rules out: captions drive nothing in training, and every synthesized map must
        come from the anchor's frame."""
        model = self.model
        if model.anchor != "image":
            if model.anchor_from is not None:
                raise ValueError("model.anchor_from names the frozen image tower of `model.anchor: image`")
            return
        if "image" in self.data.modalities:
            raise ValueError("data.modalities: with model.anchor: image the image tower is the frozen anchor; "
                             "it cannot also be trained")
        if model.anchor_from is None and model.text.kind != "open_clip":
            raise ValueError("model.text.kind: model.anchor: image binds to the preset's CLIP image tower, whose "
                             "space is its own text tower's: use open_clip, or model.anchor_from a checkpoint")
        if self.data.caption_views is not None or self.train.stages is not None:
            raise ValueError("data.caption_views / train.stages: captions and image stages drive language-anchored "
                             "training; with model.anchor: image leave them unset")
        for modality in SYNTHESIZABLE:
            settings = getattr(self.data, modality)
            if modality in self.data.modalities and settings.source == "synthesize" and (
                    settings.frames != "one" or settings.seed != self.data.depth.seed):
                raise ValueError(f"data.{modality}: with model.anchor: image a synthesized map is made from the "
                                 f"anchor frame: frames one, seed {self.data.depth.seed} (data.depth.seed)")

    def encoder_config(self) -> ModelConfig:
        """The `encoders` model this run trains (towers in `data.modalities` order)."""
        return ModelConfig(preset=self.model.preset, pretrained=self.model.pretrained, init_seed=self.model.init_seed,
                           text=self.model.text,
                           towers=tuple(self.tower(m).tower_config() for m in self.data.modalities),
                           anchor=self.model.anchor, anchor_from=self.model.anchor_from)

    def tower(self, modality: str) -> TowerSettings:
        """A trained modality's tower settings, defaults filled in."""
        return self.model.towers[modality]

    def compile_enabled(self) -> bool:
        """torch.compile the tower blocks: `train.compile` on, or auto on GPUs."""
        return self.train.compile == "on" or (self.train.compile == "auto" and self.train.use_gpu)

    def learning_rates(self) -> dict[str, float]:
        """Per tower: its `lr`, else LanguageBind's for the modality."""
        return {m: (self.tower(m).lr or REGISTRY[m].learning_rate) for m in self.data.modalities}

    def tower_weights(self) -> dict[str, float]:
        """Per tower: its share of training steps."""
        return {m: self.tower(m).weight for m in self.data.modalities}

    def hash(self) -> str:
        """A short digest of the whole validated config (reported with the plan and the run summary)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _local_folder(path: str | None) -> str | None:
    """A local checkpoint, or a run folder's final checkpoint, as an absolute path (Ray workers may run
    elsewhere in the tree); anything else as given (loading it names what is wrong)."""
    if not path or not os.path.isdir(path):
        return path
    from raybind.evaluate.embed import CheckpointError, resolve_checkpoint  # imports this module

    try:
        return os.path.abspath(resolve_checkpoint(path))
    except CheckpointError:
        return os.path.abspath(path)


class InferenceConfig(_Strict):
    """What evaluation, embedding and queries run with: a checkpoint's media settings (`data`), the model
    actor pool and Ray. Built by `raybind.evaluate.settings` from the checkpoint; `--set` overrides any field."""

    data: MediaSettings
    inference: InferenceSettings = InferenceSettings()
    ray: RaySettings = RaySettings()

    def video_takes_images(self) -> bool:
        """Inference embeds images with an image tower only, never as 1-frame clips of a video tower."""
        return False


# Either config where only media, Ray and the inference pool matter (decoding, synthesis, starting Ray):
# both carry `data` (media settings), `ray`, `inference` and `video_takes_images()`.
MediaRunConfig = RayBindConfig | InferenceConfig

# Key in a checkpoint's `raybind.json` that holds the run's `MediaSettings`.
CHECKPOINT_MEDIA_KEY = "data"


def saved_media_settings(checkpoint_meta: dict[str, Any]) -> MediaSettings | None:
    """The media settings a checkpoint was trained with (None for checkpoints written before they were kept)."""
    saved = checkpoint_meta.get(CHECKPOINT_MEDIA_KEY)
    if not saved:
        return None
    try:
        return MediaSettings.model_validate(saved)
    except ValidationError as error:
        raise ConfigError(f"the checkpoint's {CHECKPOINT_MEDIA_KEY!r} settings: "
                          f"{format_validation_error(error)}") from None


def inference_config(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> InferenceConfig:
    """Validate an inference config from media settings (a `MediaSettings` tree) and `--set` overrides."""
    tree: dict[str, Any] = {"data": data}
    for item in overrides:
        set_dotted(tree, *parse_override(item))
    try:
        return InferenceConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error)) from None


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
    """pydantic's errors as one `dotted.path: message` line each, the form every config error takes."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "<root>"
        # an unknown key reads the same in a dataclass section (the model's) as in every other section
        message = "Extra inputs are not permitted" if item["type"] == "unexpected_keyword_argument" else item["msg"]
        lines.append(f"{path}: {message}")
    return "invalid config:\n  " + "\n  ".join(lines)


def validate(tree: dict[str, Any]) -> RayBindConfig:
    """A config tree -> `RayBindConfig`, or `ConfigError` (exit code 2) naming every bad field; a sweep's
    search space is checked value by value too."""
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

"""The streaming ingest pipeline on Ray Data: manifest -> decode + tokenize -> depth + thermal synthesis.

Everything is lazy: nothing runs until a consumer (a training worker's `iter_torch_batches`, or the
build job's `write_parquet`) pulls, and blocks stream through the stages without materialising the
dataset. A folder written by `raybind.data.build.build_dataset` is read back directly and skips decoding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pyarrow as pa
import ray.data
from ray.data import ActorPoolStrategy, Dataset, FileShuffleConfig

from encoders.backbone import WEIGHT_SUFFIXES
from encoders.config import ModelConfig
from encoders.modalities import MODALITIES, REGISTRY, SYNTHESIZABLE
from raybind import storage
from raybind.config import MediaRunConfig, RayBindConfig, SynthesisPoolSettings, SynthesisSettings
from raybind.data.batch_format import (
    ANCHOR_SOURCES,
    FRAMES,
    ID,
    SHIPPED_DTYPE,
    SOURCE_KEY,
    DecodeSpec,
    decoded_template,
    synthesized_shape,
)
from raybind.data.decode import decode_batch
from raybind.data.manifest import REQUIRED_COLUMNS, load_manifest
from raybind.data.sources import ManifestError, ManifestFiles, count_rows, manifest_files, manifest_name, read_rows
from raybind.data.synthesis import DecodeAndSynthesisStage, SynthesisStage
from raybind.errors import InputError

VIDEO = "video"   # the column that audio tracks and synthesized depth/thermal frames come from
BUILT_MARKER = "dataset.json"
BUILT_DATA = "data"


@dataclass
class Stream:
    """A lazy dataset plus what the run needs to account for every row."""

    dataset: Dataset
    rows_in: int
    quarantine_uri: str | None   # None for a built dataset: its quarantine was settled at build time
    source: str
    files: ManifestFiles | None = None   # a sharded manifest whose rows carry `source_key` (resume bookkeeping)
    file_rows: list[int] | None = None   # its rows per file


def synthesis_settings(cfg: MediaRunConfig) -> dict[str, SynthesisSettings]:
    """The trained modalities that the synthesis pool makes from frames, with their settings. A model
    given as a local relative path is made absolute here, so actors find it whatever their working dir."""
    settings = {m: getattr(cfg.data, m) for m in SYNTHESIZABLE
                if m in cfg.data.modalities and getattr(cfg.data, m).source == "synthesize"}
    return {m: s.model_copy(update={"model": os.path.abspath(s.model)}) if s.model and os.path.exists(s.model) else s
            for m, s in settings.items()}


def check_synthesizer_paths(cfg: MediaRunConfig) -> None:
    """A synthesizer named by a local path that is not there fails now, naming the field, not later inside
    an actor. Hub names (`org/model`) and remote URIs are left to the loader."""
    for modality, settings in synthesis_settings(cfg).items():
        model = settings.model
        if not model or storage.is_remote(model) or os.path.exists(model):
            continue
        if os.path.isabs(model) or model.startswith((".", "~")) or model.endswith(WEIGHT_SUFFIXES) \
                or model.count("/") > 1:
            raise InputError(f"data.{modality}.model: {model} does not exist (for the demo synthesizers run "
                             "the quickstart or `jobs/make_demo_data.py --synthesizers` first)")


def decode_spec(cfg: MediaRunConfig, manifest_uri: str, quarantine_uri: str, media_columns: list[str],
                model: ModelConfig | None = None, manifest_dir: str | None = None) -> DecodeSpec:
    """How rows decode for `cfg`'s data settings and a model's preprocessing (default: the config's model;
    inference passes the checkpoint's). Relative media URIs resolve against `manifest_dir` (default: the
    folder holding `manifest_uri`)."""
    model = model or cfg.encoder_config()
    image_size = model.towers[0].preprocess.image_size
    audio = next((t.preprocess for t in model.towers if REGISTRY[t.modality].tower_input == "spectrogram"),
                 model.towers[0].preprocess)
    return DecodeSpec(
        modalities=tuple(cfg.data.modalities), manifest_dir=manifest_dir or storage.parent(manifest_uri),
        quarantine_uri=quarantine_uri, text=model.text, num_frames=cfg.data.num_frames,
        frame_size=image_size + cfg.data.decode.crop_margin, audio=audio, threads=cfg.data.decode.threads,
        audio_source=cfg.data.audio_source,
        from_column=tuple(m for m in SYNTHESIZABLE if getattr(cfg.data, m).source == "column"),
        media_columns=tuple(media_columns), synthesize=tuple(synthesis_settings(cfg)),
        caption_views=tuple(cfg.data.caption_views or ()), video_images=cfg.video_takes_images(),
        synth_seed=cfg.data.depth.seed, max_file_mb=cfg.data.decode.max_file_mb,
        row_timeout_s=cfg.data.decode.row_timeout_s, read_attempts=cfg.data.decode.read_attempts,
        read_backoff_s=cfg.data.decode.read_backoff_s,
        anchor_image=model.anchor == "image", with_text=model.anchor == "language")


def decoded_row_bytes(cfg: RayBindConfig, columns: list[str] | None = None) -> int:
    """Bytes one decoded training row occupies (the shipped columns: frames, spectrograms, maps, tokens)."""
    spec = decode_spec(cfg, "", "", media_columns=[])
    shapes = {name: (shape, np.dtype(dtype).itemsize) for name, (shape, dtype) in decoded_template(spec).items()
              if dtype is not object}
    for modality, settings in synthesis_settings(cfg).items():
        count = 1 if settings.frames == "one" else cfg.data.num_frames
        shapes[modality] = (synthesized_shape(modality, count, spec.frame_size),
                            np.dtype(SHIPPED_DTYPE[modality]).itemsize)
    return sum(int(np.prod(shape)) * size for name, (shape, size) in shapes.items()
               if columns is None or name in columns)


def decoded_split_mb(cfg: RayBindConfig, rows: int, columns: list[str]) -> float:
    """MiB that `rows` decoded training rows occupy in the object store: what `data.cache_mb` is compared with."""
    return rows * decoded_row_bytes(cfg, columns) / 2**20


def _needed_columns(cfg: RayBindConfig) -> list[str]:
    synthesized = synthesis_settings(cfg)
    needed = {VIDEO} if VIDEO in cfg.data.modalities or synthesized else set()
    for modality in cfg.data.modalities:
        if REGISTRY[modality].from_video == "track":   # audio: its own column, the video's track, or either
            needed.update({"column": {modality}, "video": {VIDEO}}.get(cfg.data.audio_source, set()))
        elif modality != VIDEO and modality not in synthesized:
            needed.add(modality)
    return sorted(needed)


def is_built_dataset(uri: str) -> bool:
    """A folder that `raybind build` finished: its marker is written last, so a half-written build is not one."""
    return storage.exists(storage.join(uri, BUILT_MARKER))


# Enough blocks to spread decoding over any cluster, few enough that a 10M-row manifest stays cheap to
# schedule (each block is one object and at least one task).
MAX_MANIFEST_BLOCKS = 4096


def manifest_blocks(table: pa.Table, batch_rows: int, shuffle_seed: int | None) -> Dataset:
    """Manifest rows as blocks of whole decode batches (one batch each for small manifests), so decoding
    spreads over tasks from the first row.

    Built on the driver (no read or repartition tasks that a full actor pool could starve of CPUs).
    With a seed the rows are permuted once; the caller randomises the block order anew on every pass.
    """
    if shuffle_seed is not None:
        table = table.take(np.random.default_rng(shuffle_seed).permutation(table.num_rows))
    batches_per_block = max(1, -(-table.num_rows // (batch_rows * MAX_MANIFEST_BLOCKS)))
    rows_per_block = batches_per_block * batch_rows
    blocks = [table.slice(start, rows_per_block) for start in range(0, table.num_rows, rows_per_block)]
    return ray.data.from_arrow(blocks or [table])


@dataclass
class ManifestRows:
    """A manifest's rows as a lazy dataset (not yet decoded), with what decoding and accounting need."""

    dataset: Dataset
    rows_in: int
    media_columns: list[str]
    source: ManifestFiles
    file_rows: list[int] | None = None   # rows per file (sharded, from metadata): what resume bookkeeping needs


def check_media_storage(source: ManifestFiles, media_columns: Sequence[str]) -> None:
    """Media on storage that does not answer at all (a wrong endpoint, a bucket that is not there, no
    credentials) stop a job now with one line, instead of every row failing after its retries: the first
    row's remote media are looked up once. A missing file is the row's problem, not the storage's."""
    for column, value in source.first_row(media_columns).items():
        if not isinstance(value, str) or not value.strip():
            continue
        uri = storage.resolve_relative(value, source.base_dir)
        if not storage.is_remote(uri) or storage.unsupported_scheme(uri):
            continue
        try:
            storage.file_size(uri)
        except (FileNotFoundError, storage.NotReadable):
            pass
        except OSError as error:
            raise InputError(f"cannot reach the media storage: {storage.redact(uri)} ('{column}' of the first row "
                             f"of {manifest_name(source.entries)}): {' '.join(str(error).split())}") from None


def manifest_rows(cfg: MediaRunConfig, source: ManifestFiles, needed: list[str], shuffle: bool,
                  required: tuple[str, ...] = REQUIRED_COLUMNS) -> ManifestRows:
    """A manifest's rows, checked for `required` and `needed` columns before anything runs. One small file is
    read on the driver (ids checked, rows permuted once by the seed, blocks visited in a new order each pass);
    a sharded one by Ray Data's read tasks where the files are (the driver reads one schema and the footers;
    each pass visits the files in a new seeded order)."""
    seed = cfg.seed if shuffle else None
    check_media_storage(source, MODALITIES)
    if not source.sharded:
        manifest = load_manifest(list(source.files), needed, required)
        ds = manifest_blocks(manifest.table, cfg.data.decode.batch_size, seed)
        return ManifestRows(ds.randomize_block_order() if shuffle else ds, manifest.rows, manifest.media_columns,
                            source)
    names = source.columns()
    missing = [c for c in (*required, *needed) if c not in names]
    if missing:
        raise ManifestError(f"manifest {manifest_name(source.entries)} lacks column(s) {missing}; it has {names}")
    read_args = placement_args(cfg, "data")
    file_rows = source.file_rows()
    rows_in = sum(file_rows) if file_rows is not None else count_rows(source, read_args)
    return ManifestRows(read_rows(source, seed, read_args, with_paths=True), rows_in,
                        [c for c in MODALITIES if c in names], source, file_rows)


def build_stream(cfg: RayBindConfig, source_uri: str | list[str] | ManifestFiles, quarantine_uri: str,
                 shuffle: bool = False, columns: list[str] | None = None, track_sources: bool = False) -> Stream:
    """The lazy pipeline over a manifest, WebDataset shards or a built dataset folder. Fails fast on unusable
    input.

    With `shuffle`, a one-file manifest's rows are permuted once by the seed (cheap metadata, before any
    decoding) and its blocks visited in a fresh random order every pass; a sharded manifest, WebDataset
    shards or a built dataset visit their files in a new seeded order every pass (`raybind.data.sources`).
    Rows are shuffled further within `data.shuffle_buffer` by the consumer. `columns`: only these leave the
    pipeline. `track_sources`: rows of a sharded manifest with per-file row counts (Parquet, indexed shards)
    carry `source_key` too (the stream's `files` say which), so a resumed run can skip finished files.
    """
    if isinstance(source_uri, str) and is_built_dataset(source_uri):
        return _built_stream(cfg, source_uri, tuple(columns) if columns is not None else None,
                             cfg.seed if shuffle else None)
    source = source_uri if isinstance(source_uri, ManifestFiles) else manifest_files(source_uri)
    anchor_image = cfg.model.anchor == "image"
    rows = manifest_rows(cfg, source, _needed_columns(cfg), shuffle, required=(ID,) if anchor_image else REQUIRED_COLUMNS)
    _check_audio_source(cfg, source, rows.media_columns)
    if anchor_image and not set(ANCHOR_SOURCES) & set(rows.media_columns):
        raise ManifestError(f"manifest {manifest_name(source.entries)} has none of the columns {list(ANCHOR_SOURCES)} "
                            "to take the anchor frame from (model.anchor: image)")
    check_synthesizer_paths(cfg)
    spec = decode_spec(cfg, source.files[0], quarantine_uri, rows.media_columns, manifest_dir=source.base_dir)
    tracked = track_sources and rows.file_rows is not None
    if tracked:
        spec = replace(spec, track_sources=True)
        columns = None if columns is None else [*columns, SOURCE_KEY]
    keep = tuple(columns) if columns is not None else None
    return Stream(decode_stages(rows.dataset, cfg, spec, keep), rows.rows_in, quarantine_uri,
                  manifest_name(source.entries),
                  source if tracked else None, rows.file_rows if tracked else None)


def _check_audio_source(cfg: RayBindConfig, source: ManifestFiles, media_columns: list[str]) -> None:
    if "audio" in cfg.data.modalities and cfg.data.audio_source == "auto" and not {"audio", "video"} & set(media_columns):
        raise ManifestError(f"manifest {manifest_name(source.entries)} has neither an 'audio' nor a 'video' column")


def decode_stages(ds: Dataset, cfg: RayBindConfig, spec: DecodeSpec, keep: tuple[str, ...] | None) -> Dataset:
    """Manifest blocks -> decoded (and, for `spec.synthesize`, synthesized) batches: the stages training,
    evaluation and embedding share."""
    decode, pool = cfg.data.decode, cfg.data.synthesis
    on_data, on_train = placement_args(cfg, "data"), placement_args(cfg, "train")
    frames_column = "video" if "video" in spec.modalities else FRAMES
    synthesized = {m: s for m, s in synthesis_settings(cfg).items() if m in spec.synthesize}
    if synthesized and pool.num_gpus == 0:
        # CPU synthesis: each actor decodes and synthesizes its batch. Separate CPU decode tasks and CPU
        # synthesis actors compete for the same cores and the OS splits them evenly, starving synthesis.
        return ds.map_batches(DecodeAndSynthesisStage,
                              fn_constructor_args=(spec, synthesized, pool, frames_column, keep),
                              compute=_pool_strategy(pool), batch_size=decode.batch_size,
                              num_cpus=pool.num_cpus, batch_format="numpy", **on_data)
    if synthesized:  # CPU tasks decode, GPU actors synthesize
        ds = ds.map_batches(partial(decode_batch, spec=spec), batch_size=decode.batch_size,
                            num_cpus=decode.num_cpus, batch_format="numpy", **on_data)
        return ds.map_batches(SynthesisStage, fn_constructor_args=(synthesized, pool, frames_column, keep),
                              compute=_pool_strategy(pool), batch_size=pool.batch_size,
                              num_cpus=pool.num_cpus, num_gpus=pool.num_gpus, batch_format="numpy", **on_train)
    return ds.map_batches(partial(decode_batch, spec=spec, columns=keep), batch_size=decode.batch_size,
                          num_cpus=decode.num_cpus, batch_format="numpy", **on_data)


def _pool_strategy(pool: SynthesisPoolSettings) -> ActorPoolStrategy:
    """The synthesis pool: `actors` from the start, growing to `max_actors` while synthesis lags."""
    return ActorPoolStrategy(min_size=pool.actors, max_size=pool.max_actors or pool.actors)


def placement_args(cfg: MediaRunConfig, part: str) -> dict[str, dict[str, float]]:
    """Ray remote args that pin a stage to the `data` or `train` nodes (`ray.placement`); none on one machine."""
    resources = getattr(cfg.ray.placement, part)
    return {"resources": dict(resources)} if resources else {}


def _built_stream(cfg: RayBindConfig, uri: str, columns: tuple[str, ...] | None, shuffle_seed: int | None) -> Stream:
    """A built dataset streamed from its Parquet files: only `columns` are read (None: all). With a seed each
    pass visits the files in a new seeded order, file by file: no all-to-all step reads them all first."""
    info = json.loads(storage.read_text(storage.join(uri, BUILT_MARKER)))
    missing = [m for m in (columns or cfg.data.modalities) if m not in info["columns"]]
    if missing:   # e.g. built for the language anchor (tokens) and read for the image anchor (anchor frames)
        raise ManifestError(f"built dataset {storage.redact(uri)} lacks {missing}; it has {info['columns']} "
                            "(build it with this run's config)")
    fs, path = storage.resolve(storage.join(uri, BUILT_DATA))
    ds = ray.data.read_parquet(path, filesystem=fs, columns=list(columns) if columns is not None else None,
                               shuffle=FileShuffleConfig(seed=shuffle_seed) if shuffle_seed is not None else None)
    return Stream(ds, int(info["rows_out"]), None, uri)


def check_counts(summary: dict) -> None:
    """rows_in == rows_out + rows_quarantined, always; a mismatch is a bug worth stopping for."""
    if summary["rows_in"] != summary["rows_out"] + summary["rows_quarantined"]:
        raise RuntimeError(f"row accounting broken: rows_in {summary['rows_in']} != rows_out {summary['rows_out']} "
                           f"+ rows_quarantined {summary['rows_quarantined']}")

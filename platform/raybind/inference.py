"""Batch inference on Ray Data: manifest rows -> the training decode stages (deterministic, no
augmentation) -> an autoscaling actor pool that holds the model -> embeddings per row.

Evaluation (`raybind.evaluation`) and corpus embedding (`raybind.corpus`) both stream through here, and
each actor embeds with the same `raybind.embed.Embedder` the API uses, so the three agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, Dataset

from encoders import constants as C
from encoders.config import ModelConfig
from raybind.batch_format import ID, PASSTHROUGH, TEXT, TEXT_EMBEDDING, TOKENS, embedding_column
from raybind.config import RayBindConfig, set_dotted, parse_override, validate
from raybind.decode_stage import DecodeSpec
from raybind.embed import Embedder, inference_device, read_checkpoint
from raybind.pipeline import decode_spec, decode_stages, manifest_blocks, placement_args
from raybind.train_state import saved_data_settings


def available_modalities(towers: Sequence[str], media_columns: Sequence[str], data: dict[str, Any],
                         synthesize: bool) -> list[str]:
    """The checkpoint's towers that rows of this manifest can feed: from their own column, audio from a
    video's track, depth/thermal synthesized from video frames as in training (when `synthesize`)."""
    columns = set(media_columns)
    out = []
    for modality in towers:
        if modality in columns:
            out.append(modality)
        elif modality == "audio" and "video" in columns:
            out.append(modality)
        elif modality in ("depth", "thermal") and synthesize and "video" in columns and \
                data.get(modality, {}).get("source", "synthesize") == "synthesize":
            out.append(modality)
    return out


def inference_config(checkpoint_manifest: dict[str, Any], manifest_uri: str, modalities: Sequence[str],
                     overrides: Sequence[str] = (), synthesize: bool = True,
                     media_columns: Sequence[str] = ()) -> RayBindConfig:
    """A run config for inference: the checkpoint's data settings (frames, synthesizers, decoding), this
    manifest, these modalities; depth/thermal read from their column when the manifest has one.
    `overrides` are `--set` strings (e.g. `data.depth.model=...`, `inference.max_actors=4`, `ray.num_cpus=2`)."""
    model = ModelConfig.from_dict(checkpoint_manifest["model"])
    data = saved_data_settings(checkpoint_manifest)
    if not data:  # written without data settings: the frames the video tower was built for
        video = next((t for t in model.towers if t.modality == "video"), None)
        data = {"num_frames": video.preprocess.num_frames if video else C.VIDEO_NUM_FRAMES}
    data.update(train=manifest_uri or "-", modalities=list(modalities) or [t.modality for t in model.towers],
                audio_source="auto")
    for modality in ("depth", "thermal"):
        if modality in media_columns or not synthesize:
            data[modality] = {**data.get(modality, {}), "source": "column"}
    tree: dict[str, Any] = {"name": "inference", "data": data, "model": {"preset": model.preset}}
    for item in overrides:
        set_dotted(tree, *parse_override(item))
    return validate(tree)


def inference_spec(cfg: RayBindConfig, model: ModelConfig, manifest_uri: str, quarantine_uri: str = "",
                   media_columns: Sequence[str] = (), with_text: bool = True) -> DecodeSpec:
    spec = decode_spec(cfg, manifest_uri, quarantine_uri, list(media_columns), model)
    # one caption per row: the run's validation view when it trained on caption views
    return replace(spec, with_text=with_text, text_view=cfg.data.validation_view())


class EmbedStage:
    """Actor-pool stage: loads the checkpoint once per actor (GPU when given one, bf16 there), embeds
    each decoded batch: `emb_<modality>` per modality, `emb_text` for captions; ids and labels pass on."""

    def __init__(self, checkpoint: str, spec: DecodeSpec, modalities: tuple[str, ...], use_gpu: bool) -> None:
        model, _ = read_checkpoint(checkpoint)
        self.embedder = Embedder(model, spec, inference_device(use_gpu))
        self.modalities, self.with_text = modalities, spec.with_text

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {name: batch[name] for name in (ID, TEXT, *PASSTHROUGH) if name in batch}
        if len(batch[ID]) == 0:  # every row of the batch was quarantined: keep the schema
            empty = np.zeros((0, self.embedder.embed_dim), np.float32)
            return {**out, **{embedding_column(m): empty for m in self.modalities},
                    **({TEXT_EMBEDDING: empty} if self.with_text else {})}
        for modality in self.modalities:
            out[embedding_column(modality)] = self.embedder.embed_column(modality, batch[modality]).numpy()
        if self.with_text:
            out[TEXT_EMBEDDING] = self.embedder.embed_tokens(batch[TOKENS]).numpy()
        return out


def _gpus_per_actor(cfg: RayBindConfig) -> float:
    if cfg.inference.num_gpus is not None:
        return cfg.inference.num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def embedding_stream(cfg: RayBindConfig, model: ModelConfig, checkpoint: str, table: pa.Table, manifest_uri: str,
                     quarantine_uri: str, modalities: Sequence[str], with_text: bool = True) -> Dataset:
    """Lazy: manifest rows -> decode (and synthesis) -> model actors -> embedding columns."""
    spec = inference_spec(cfg, model, manifest_uri, quarantine_uri, [c for c in table.column_names], with_text)
    spec = replace(spec, modalities=tuple(modalities), synthesize=tuple(m for m in spec.synthesize if m in modalities))
    ds = manifest_blocks(table, cfg.data.decode.batch_size, None)
    ds = decode_stages(ds, cfg, spec, None)
    pool, gpus = cfg.inference, _gpus_per_actor(cfg)
    return ds.map_batches(EmbedStage, fn_constructor_args=(checkpoint, spec, tuple(modalities), gpus > 0),
                          compute=ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors),
                          batch_size=pool.batch_size, num_cpus=pool.num_cpus, num_gpus=gpus, batch_format="numpy",
                          **placement_args(cfg, "train" if gpus > 0 else "data"))


def collect(batches: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate embedding batches on the driver, sorted by id (the order Ray delivers varies)."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, column in batch.items():
            parts.setdefault(name, []).append(column)
    columns = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    if not columns or len(columns[ID]) == 0:
        return columns
    order = np.argsort(columns[ID].astype(str), kind="stable")
    return {name: column[order] for name, column in columns.items()}


def run(ds: Dataset) -> dict[str, np.ndarray]:
    return collect(ds.iter_batches(batch_size=None, batch_format="numpy"))

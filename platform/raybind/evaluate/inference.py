"""Batch inference on Ray Data: manifest rows -> the training decode stages (deterministic, no
augmentation) -> an autoscaling actor pool that holds the model -> embeddings per row.

Evaluation (`raybind.evaluate.tasks`) and corpus embedding (`raybind.evaluate.corpus`) both stream through here, and
each actor embeds with the same `raybind.evaluate.embed.Embedder` the API uses, so the three agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, Dataset

from encoders.config import ModelConfig
from raybind.config import InferenceConfig
from raybind.data.batch_format import (
    ANCHOR,
    ANCHOR_EMBEDDING,
    ID,
    PASSTHROUGH,
    TEXT,
    TEXT_EMBEDDING,
    TOKENS,
    DecodeSpec,
    embedding_column,
)
from raybind.data.pipeline import decode_stages, manifest_blocks, placement_args
from raybind.evaluate.embed import Embedder, inference_device, read_checkpoint
from raybind.evaluate.settings import inference_spec


class EmbedStage:
    """Actor-pool stage: loads the checkpoint once per actor (GPU when given one, bf16 there), embeds
    each decoded batch: `emb_<modality>` per modality, `emb_text` for captions; ids and labels pass on."""

    def __init__(self, checkpoint: str, spec: DecodeSpec, modalities: tuple[str, ...], use_gpu: bool) -> None:
        model, _ = read_checkpoint(checkpoint)
        self.embedder = Embedder(model, spec, inference_device(use_gpu))
        self.modalities, self.with_text, self.with_anchor = modalities, spec.with_text, spec.anchor_image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {name: batch[name] for name in (ID, TEXT, *PASSTHROUGH) if name in batch}
        if len(batch[ID]) == 0:  # every row of the batch was quarantined: keep the schema
            empty = np.zeros((0, self.embedder.embed_dim), np.float32)
            return {**out, **{embedding_column(m): empty for m in self.modalities},
                    **({TEXT_EMBEDDING: empty} if self.with_text else {}),
                    **({ANCHOR_EMBEDDING: empty} if self.with_anchor else {})}
        for modality in self.modalities:
            out[embedding_column(modality)] = self.embedder.embed_column(modality, batch[modality]).numpy()
        if self.with_text:
            out[TEXT_EMBEDDING] = self.embedder.embed_tokens(batch[TOKENS]).numpy()
        if self.with_anchor:
            out[ANCHOR_EMBEDDING] = self.embedder.embed_anchor(batch[ANCHOR]).numpy()
        return out


def _gpus_per_actor(cfg: InferenceConfig) -> float:
    if cfg.inference.num_gpus is not None:
        return cfg.inference.num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def embedding_stream(cfg: InferenceConfig, model: ModelConfig, checkpoint: str, rows: pa.Table | Dataset,
                     manifest_uri: str, quarantine_uri: str, modalities: Sequence[str], with_text: bool = True,
                     columns: Sequence[str] | None = None, manifest_dir: str | None = None,
                     with_anchor: bool = False) -> Dataset:
    """Lazy: manifest rows (a driver table, or a dataset read on the cluster with its `columns`) -> decode
    (and synthesis) -> model actors -> embedding columns. Relative media resolve against `manifest_dir`
    (default: the folder of `manifest_uri`). `with_anchor`: an image-anchored model also embeds each row's
    anchor frame (`emb_anchor`)."""
    if isinstance(rows, pa.Table):
        columns = rows.column_names
        rows = manifest_blocks(rows, cfg.data.decode.batch_size, None)
    spec = inference_spec(cfg, model, manifest_uri, quarantine_uri, list(columns or ()), with_text, manifest_dir)
    spec = replace(spec, modalities=tuple(modalities), synthesize=tuple(m for m in spec.synthesize if m in modalities),
                   anchor_image=with_anchor and model.anchor == "image")
    ds = decode_stages(rows, cfg, spec, None)
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
    """Execute a stream and gather every column on the driver, sorted by id (for what fits there, e.g. one
    corpus shard)."""
    return collect(ds.iter_batches(batch_size=None, batch_format="numpy"))

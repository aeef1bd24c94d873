"""Embedding a whole corpus into Parquet, and querying it.

    <output>/vectors/part-00000.parquet ...   id (str), modality (str: video/audio/.../text), vector (list<float32>)
    <output>/index.json               checkpoint, embedding size, counts per modality, shards
    <output>/quarantine.jsonl         rows whose media could not be decoded, with the reason

The manifest is cut into shards of `shard_rows` rows in manifest order; a shard whose Parquet file exists
is skipped, so an interrupted job resumes where it stopped. Each row is embedded for every modality it has
a file for (and its caption when it has one) by the inference path of `raybind.evaluate.inference`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from encoders.modalities import MODALITIES, REGISTRY
from raybind import storage
from raybind.data import quarantine
from raybind.data.batch_format import ID, TEXT, TEXT_EMBEDDING, embedding_column
from raybind.data.manifest import load_manifest
from raybind.data.sources import manifest_format
from raybind.errors import InputError
from raybind.evaluate.embed import Embedder, read_checkpoint, resolve_checkpoint
from raybind.evaluate.inference import embedding_stream, run
from raybind.evaluate.settings import available_modalities, checkpoint_inference_config
from raybind.runtime import init_ray

INDEX_FILE = "index.json"
VECTORS_DIR = "vectors"
# A folder named after a modality whose files are images (depth, thermal) holds that modality's images.
IMAGE_FOLDERS = tuple(name for name, kind in REGISTRY.items() if kind.tower_input == "image" and kind.synthesized)
EXTENSIONS = {name: kind.extensions for name, kind in REGISTRY.items() if kind.extensions}


def folder_manifest(root: str) -> pa.Table:
    """A folder of media as a manifest: one row per file, its modality from the extension (images under a
    folder named `depth` or `thermal` are that modality; depth also as `.npy`), id = path inside `root`."""
    files = storage.list_files(root)
    base = storage.resolve(root)[1].rstrip("/")
    rows: dict[str, list] = {ID: [], **{m: [] for m in MODALITIES}}
    for uri in files:
        relative = storage.resolve(uri)[1][len(base) + 1:]
        lower, folders = relative.lower(), relative.split("/")[:-1]
        modality = next((m for m, ext in EXTENSIONS.items() if lower.endswith(ext)), None)
        if modality is not None and REGISTRY[modality].reads == "image":  # images under depth/ or thermal/ are that
            modality = next((m for m in IMAGE_FOLDERS if m in folders), modality)
        if modality is None:
            continue  # not media (e.g. a README); the index counts only media files
        rows[ID].append(relative)
        for m in MODALITIES:
            rows[m].append(uri if m == modality else None)
    if not rows[ID]:
        raise InputError(f"no media files under {storage.redact(root)} (extensions: {EXTENSIONS})")
    return pa.table({k: v for k, v in rows.items() if k == ID or any(x is not None for x in v)})


def _load_rows(data: str) -> tuple[pa.Table, str]:
    if storage.is_dir(data) and not any(manifest_format(f) in ("parquet", "webdataset") for f in storage.list_files(data)):
        return folder_manifest(data), storage.join(data, "_")
    return load_manifest(data, [], required=(ID,)).table, data


def _groups(rows: pa.Table, modalities: Sequence[str], with_text: bool) -> list[tuple[list[str], bool, pa.Table]]:
    """Rows grouped by what they have (which modalities' files, a caption or not): one inference pass per
    group, so a manifest whose rows all have everything takes one pass, a folder of files one per type."""
    def present(column: str) -> np.ndarray:
        return np.asarray(pc.is_valid(rows.column(column)).to_numpy(zero_copy_only=False), bool)

    # audio may come from a video's track: what matters is the file the modality decodes from
    has = {m: present(m if m in rows.column_names else "video") for m in modalities}
    caption = present(TEXT) if with_text else np.zeros(rows.num_rows, bool)
    keys = [(tuple(m for m in modalities if has[m][i]), bool(caption[i])) for i in range(rows.num_rows)]
    out = []
    for key in sorted(set(keys)):
        if key[0] or key[1]:
            mask = pa.array([k == key for k in keys])
            out.append((list(key[0]), key[1], rows.filter(mask)))
    return out


def _shard_table(pieces: list[tuple[np.ndarray, str, np.ndarray]]) -> pa.Table:
    ids, kinds, vectors = [], [], []
    for row_ids, modality, matrix in pieces:
        ids += [str(i) for i in row_ids]
        kinds += [modality] * len(row_ids)
        vectors.append(matrix.astype(np.float32))
    dim = vectors[0].shape[1] if vectors else 0
    flat = np.concatenate(vectors).reshape(-1) if vectors else np.zeros(0, np.float32)
    return pa.table({"id": ids, "modality": kinds,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)})


def embed_corpus(checkpoint: str, data: str, output: str, shard_rows: int = 1024,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Embed every row of a manifest (or a media folder) into Parquet shards under `output`; resumable."""
    checkpoint = resolve_checkpoint(checkpoint)
    output = storage.absolute(output)
    model, ckpt_meta = read_checkpoint(checkpoint)
    table, manifest_uri = _load_rows(data)
    media_columns = [c for c in MODALITIES if c in table.column_names]
    modalities = available_modalities(model.modalities, media_columns, {}, synthesize=False)
    with_text = TEXT in table.column_names
    if not modalities and not with_text:
        raise InputError(f"{storage.redact(data)} has no text and no media for the checkpoint's towers "
                         f"{model.modalities} (its columns: {table.column_names})")
    cfg = checkpoint_inference_config(ckpt_meta, modalities or model.modalities, overrides,
                                      synthesize=False, media_columns=media_columns)
    init_ray(cfg)
    quarantine_uri = storage.join(output, quarantine.QUARANTINE_DIR)
    shards = max(1, -(-table.num_rows // shard_rows))
    written, resumed = 0, 0
    for shard in range(shards):
        uri = storage.join(output, VECTORS_DIR, f"part-{shard:05d}.parquet")
        if storage.exists(uri):
            resumed += 1
            continue
        rows = table.slice(shard * shard_rows, shard_rows)
        pieces = []
        for group, with_captions, subset in _groups(rows, modalities, with_text):
            columns = run(embedding_stream(cfg, model.config, checkpoint, subset, manifest_uri, quarantine_uri,
                                           group, with_text=with_captions))
            if not len(columns.get(ID, [])):
                continue
            for name in group:
                pieces.append((columns[ID], name, columns[embedding_column(name)]))
            if with_captions:
                pieces.append((columns[ID], "text", columns[TEXT_EMBEDDING]))
        fs, path = storage.resolve(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(_shard_table(pieces), path + ".tmp", filesystem=fs)
        fs.move(path + ".tmp", path)  # a shard appears whole or not at all
        written += 1
        print(f"shard {shard + 1}/{shards} written", file=sys.stderr, flush=True)
    bad = quarantine.collect(quarantine_uri, storage.join(output, quarantine.QUARANTINE_FILE))
    fs, path = storage.resolve(storage.join(output, VECTORS_DIR))
    embedded = pq.read_table(path, filesystem=fs, columns=["modality"]).column("modality").to_pylist()
    counts = {m: embedded.count(m) for m in sorted(set(embedded))}
    summary = {"checkpoint": storage.redact(checkpoint), "data": storage.redact(data), "output": storage.redact(output),
               "rows_in": table.num_rows, "embedded": counts, "rows_quarantined": len(bad),
               "shards": shards, "shards_written": written, "shards_resumed": resumed, "embed_dim": model.embed_dim}
    storage.write_text(storage.join(output, INDEX_FILE), json.dumps(summary, indent=2, sort_keys=True))
    return summary


def read_index(output: str, modality: str | None = None) -> tuple[list[str], list[str], torch.Tensor]:
    """(ids, modalities, [n, D] vectors) of an embedded corpus, optionally of one modality."""
    if not storage.exists(storage.join(output, INDEX_FILE)):
        raise InputError(f"{storage.redact(output)} is not an embedded corpus (no {INDEX_FILE}); run jobs/embed.py")
    fs, path = storage.resolve(storage.join(output, VECTORS_DIR))
    table = pq.read_table(path, filesystem=fs)
    if modality is not None:
        table = table.filter(pc.equal(table.column("modality"), modality))
    vectors = np.array(table.column("vector").combine_chunks().flatten(), np.float32)
    dim = table.schema.field("vector").type.list_size
    return (table.column("id").to_pylist(), table.column("modality").to_pylist(),
            torch.from_numpy(vectors.reshape(-1, dim)))


def query(output: str, embedder: Embedder, text: str | None = None, modality: str | None = None,
          item: Any = None, k: int = 5, among: str | None = None) -> list[dict[str, Any]]:
    """Top-k corpus entries for a text query, or a media query (`modality` + a path, bytes or array);
    `among` restricts the search to one embedded modality."""
    if (text is None) == (item is None):
        raise InputError("give a text query or a media query (modality and input), not both")
    vector = embedder.embed_text([text]) if text is not None else embedder.embed(modality, [item])
    ids, kinds, vectors = read_index(output, among)
    scores = (vectors @ vector[0]).numpy()
    top = np.argsort(-scores, kind="stable")[:k]
    return [{"id": ids[i], "modality": kinds[i], "score": round(float(scores[i]), 6)} for i in top]

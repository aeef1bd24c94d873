"""Embedding a whole corpus into Parquet, and querying it.

    <output>/vectors/part-00000.parquet ...   id (str), modality (str: video/audio/.../text), vector (list<float32>)
    <output>/index.json               checkpoint, embedding size, counts per modality, shards
    <output>/quarantine.jsonl         rows whose media could not be decoded, with the reason

A one-file manifest (or a media folder) is read on the driver and cut into shards of `shard_rows` rows in
manifest order. A sharded manifest or WebDataset shards are read by Ray Data's tasks where they are, one
input file at a time, and each input file becomes one output shard (`vectors/<its name>.parquet`): the
driver never holds more than one file's ids and vectors. Either way a shard whose Parquet file exists is
skipped, so an interrupted job resumes where it stopped. Each row is embedded for every modality it has a
file for (and its caption when it has one) by the inference path of `raybind.evaluate.inference`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from encoders.modalities import MODALITIES, REGISTRY
from raybind import storage
from raybind.data import quarantine, webdataset
from raybind.data.batch_format import ID, SOURCE_PATH, TEXT, TEXT_EMBEDDING, embedding_column
from raybind.data.decode import field_value
from raybind.data.manifest import load_manifest
from raybind.data.pipeline import manifest_rows, placement_args
from raybind.data.sources import ManifestFiles, manifest_files, manifest_format, read_path, read_rows
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


def _load_rows(data: str) -> tuple[pa.Table | ManifestFiles, str]:
    """A media folder or a one-file manifest as a driver table; a sharded manifest or WebDataset shards as
    their files (read by tasks)."""
    if storage.is_dir(data):   # media files, unless it holds manifest files (Parquet, shards, or only JSONL/CSV)
        formats = {manifest_format(f) for f in storage.list_files(data)}
        if not ({"parquet", "webdataset"} & formats or (formats and None not in formats)):
            return folder_manifest(data), storage.join(data, "_")
    source = manifest_files(data)
    if source.sharded:
        return source, data
    return load_manifest(list(source.files), [], required=(ID,)).table, data


def _group_key(has: Sequence[bool], modalities: Sequence[str], caption: bool) -> tuple[tuple[str, ...], bool]:
    return tuple(m for m, present in zip(modalities, has) if present), caption


def _groups(rows: pa.Table, modalities: Sequence[str], with_text: bool) -> list[tuple[list[str], bool, pa.Table]]:
    """Rows grouped by what they have (which modalities' files, a caption or not): one inference pass per
    group, so a manifest whose rows all have everything takes one pass, a folder of files one per type."""
    def present(column: str) -> np.ndarray:
        return np.asarray(pc.is_valid(rows.column(column)).to_numpy(zero_copy_only=False), bool)

    # audio may come from a video's track: what matters is the file the modality decodes from
    has = {m: present(m if m in rows.column_names else "video") for m in modalities}
    caption = present(TEXT) if with_text else np.zeros(rows.num_rows, bool)
    keys = [_group_key([has[m][i] for m in modalities], modalities, bool(caption[i])) for i in range(rows.num_rows)]
    out = []
    for key in sorted(set(keys)):
        if key[0] or key[1]:
            mask = pa.array([k == key for k in keys])
            out.append((list(key[0]), key[1], rows.filter(mask)))
    return out


def _row_group(row: dict[str, Any], modalities: Sequence[str], with_text: bool, base_dir: str,
               columns: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """What a read row (a manifest row or a WebDataset sample) has, as `_groups` keys it. A sample that cannot
    become a row claims everything, so decoding quarantines it with its reason instead of it vanishing."""
    if webdataset.KEY in row:
        try:
            row = webdataset.manifest_row(row, base_dir)
        except webdataset.SampleError:
            return tuple(modalities), with_text
    # audio may come from a video's track: what matters is the column the modality decodes from
    has = [field_value(row, m if m in columns else "video") is not None for m in modalities]
    return _group_key(has, modalities, with_text and field_value(row, TEXT) is not None)


def _encode_group(key: tuple[tuple[str, ...], bool]) -> str:
    return ",".join(key[0]) + ("|text" if key[1] else "")


def _batch_groups(batch: dict[str, np.ndarray], **kwargs: Any) -> dict[str, np.ndarray]:
    """The distinct (file, group) pairs of a batch of read rows."""
    names = list(batch)
    size = len(batch[names[0]]) if names else 0
    where = webdataset.URL if webdataset.KEY in names else SOURCE_PATH
    pairs = {(str(batch[where][i]), _encode_group(_row_group({n: batch[n][i] for n in names}, **kwargs)))
             for i in range(size)}
    return {"file": np.array([f for f, _ in sorted(pairs)], dtype=object),
            "group": np.array([g for _, g in sorted(pairs)], dtype=object)}


def _in_group(row: dict[str, Any], group: str, **kwargs: Any) -> bool:
    return _encode_group(_row_group(row, **kwargs)) == group


def _sharded_groups(source: ManifestFiles, modalities: Sequence[str], with_text: bool, columns: Sequence[str],
                    read_args: dict) -> dict[str, list[tuple[list[str], bool, Any]]]:
    """`_groups` for each file of a sharded manifest, rows read by tasks: one pass over the files finds each
    file's groups (only their names reach the driver); a file's group is its rows (filtered when the file has
    several groups), each feeding its own inference pass."""
    kwargs = {"modalities": tuple(modalities), "with_text": with_text, "base_dir": source.base_dir,
              "columns": tuple(columns)}
    found = read_rows(source, None, read_args, with_paths=True).map_batches(
        partial(_batch_groups, **kwargs), batch_format="numpy").take_all()
    by_path = {read_path(uri): uri for uri in source.files}
    named: dict[str, set[str]] = {uri: set() for uri in source.files}
    for pair in found:
        named[by_path.get(str(pair["file"]), str(pair["file"]))].add(str(pair["group"]))
    out: dict[str, list[tuple[list[str], bool, Any]]] = {}
    for uri, groups in named.items():
        rows = read_rows(source.subset([uri]), None, read_args, with_paths=True)
        out[uri] = []
        for group in sorted(groups):
            names, _, text = group.partition("|")
            if names or text:
                subset = rows if len(groups) == 1 else rows.filter(partial(_in_group, group=group, **kwargs))
                out[uri].append(([n for n in names.split(",") if n], bool(text), subset))
    return out


def _output_name(uri: str, base_dir: str) -> str:
    """An input file's output shard: its path under the manifest folder, extension off, `/` as `__`."""
    path, base = storage.resolve(uri)[1], storage.resolve(base_dir)[1].rstrip("/")
    relative = path[len(base) + 1:] if path.startswith(base + "/") else path.rsplit("/", 1)[-1]
    return relative.rsplit(".", 1)[0].replace("/", "__") + ".parquet"


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
    """Embed every row of a manifest (or a media folder, or WebDataset shards) into Parquet shards under
    `output`; resumable."""
    checkpoint = resolve_checkpoint(checkpoint)
    output = storage.durable_output(output, "--output")
    model, ckpt_meta = read_checkpoint(checkpoint)
    rows, manifest_uri = _load_rows(data)
    names = rows.columns() if isinstance(rows, ManifestFiles) else rows.column_names
    media_columns = [c for c in MODALITIES if c in names]
    modalities = available_modalities(model.modalities, media_columns, {}, synthesize=False)
    with_text = TEXT in names
    if not modalities and not with_text:
        raise InputError(f"{storage.redact(data)} has no text and no media for the checkpoint's towers "
                         f"{model.modalities} (its columns: {names})")
    cfg = checkpoint_inference_config(ckpt_meta, modalities or model.modalities, overrides,
                                      synthesize=False, media_columns=media_columns)
    init_ray(cfg)
    quarantine_uri = storage.join(output, quarantine.QUARANTINE_DIR)

    def embed(groups: list[tuple[list[str], bool, Any]], manifest_dir: str | None) -> pa.Table:
        pieces = []
        for group, with_captions, subset in groups:
            columns = run(embedding_stream(cfg, model.config, checkpoint, subset, manifest_uri, quarantine_uri,
                                           group, with_text=with_captions, columns=names, manifest_dir=manifest_dir))
            if not len(columns.get(ID, [])):
                continue
            for name in group:
                pieces.append((columns[ID], name, columns[embedding_column(name)]))
            if with_captions:
                pieces.append((columns[ID], "text", columns[TEXT_EMBEDDING]))
        return _shard_table(pieces)

    if isinstance(rows, ManifestFiles):   # one output shard per input file, read by tasks
        source = rows
        rows_in = manifest_rows(cfg, source, [], shuffle=False, required=(ID,)).rows_in
        outputs = {f: storage.join(output, VECTORS_DIR, _output_name(f, source.base_dir)) for f in source.files}
        pending = [f for f in source.files if not storage.exists(outputs[f])]
        groups = _sharded_groups(source.subset(pending), modalities, with_text, names,
                                 placement_args(cfg, "data")) if pending else {}
        shards = [(outputs[f], partial(groups.get, f, []), source.base_dir) for f in source.files]
    else:
        rows_in = rows.num_rows
        shards = [(storage.join(output, VECTORS_DIR, f"part-{shard:05d}.parquet"),
                   partial(_groups, rows.slice(start, shard_rows), modalities, with_text), None)
                  for shard, start in enumerate(range(0, max(rows.num_rows, 1), shard_rows))]
    written, resumed = 0, 0
    for number, (uri, groups, manifest_dir) in enumerate(shards):
        if storage.exists(uri):
            resumed += 1
            continue
        table = embed(groups(), manifest_dir)
        fs, path = storage.resolve(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path + ".tmp", filesystem=fs)
        fs.move(path + ".tmp", path)  # a shard appears whole or not at all
        written += 1
        print(f"shard {number + 1}/{len(shards)} written", file=sys.stderr, flush=True)
    bad = quarantine.collect(quarantine_uri, storage.join(output, quarantine.QUARANTINE_FILE))
    fs, path = storage.resolve(storage.join(output, VECTORS_DIR))
    embedded = pq.read_table(path, filesystem=fs, columns=["modality"]).column("modality").to_pylist()
    counts = {m: embedded.count(m) for m in sorted(set(embedded))}
    summary = {"checkpoint": storage.redact(checkpoint), "data": storage.redact(data), "output": storage.redact(output),
               "rows_in": rows_in, "embedded": counts, "rows_quarantined": len(bad),
               "shards": len(shards), "shards_written": written, "shards_resumed": resumed, "embed_dim": model.embed_dim}
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

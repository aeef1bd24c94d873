"""Offline builds: decode, synthesize and tokenize a manifest once into Parquet shards (`build_dataset`), or
pack its media as they are into WebDataset shards (`pack_webdataset`).

Training and sweeps read a built folder directly (`raybind.data.pipeline.build_stream` recognises it by its
`dataset.json`), so many runs over the same data decode it once; packed shards are read like any sharded
manifest (`raybind.data.webdataset`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from functools import partial
from typing import Any

import numpy as np
import ray.data

from encoders.modalities import MODALITIES, REGISTRY
from raybind import storage
from raybind.config import DecodeSettings, RayBindConfig
from raybind.data import quarantine, webdataset
from raybind.data.batch_format import ID, PASSTHROUGH, TEXT
from raybind.data.decode import RowFailed, guarded, media_uri, read_media
from raybind.data.pipeline import (
    BUILT_DATA,
    BUILT_MARKER,
    build_stream,
    check_counts,
    manifest_rows,
    placement_args,
)
from raybind.data.sources import ManifestError, manifest_files, manifest_name


def build_dataset(cfg: RayBindConfig, input_uri: str, output_uri: str) -> dict:
    """Decode, synthesize and tokenize a manifest once into Parquet shards that training reads directly."""
    output_uri = storage.durable_output(output_uri, "--output")
    quarantine_uri = storage.join(output_uri, "_quarantine")
    for stale in (quarantine_uri, storage.join(output_uri, BUILT_DATA)):
        storage.delete_dir(stale)
    stream = build_stream(cfg, input_uri, quarantine_uri)
    fs, data_path = storage.resolve(storage.join(output_uri, BUILT_DATA))
    stream.dataset.write_parquet(data_path, filesystem=fs)
    written = ray.data.read_parquet(data_path, filesystem=fs) if storage.list_files(
        storage.join(output_uri, BUILT_DATA)) else None
    rows_out = written.count() if written is not None else 0
    bad = quarantine.collect(quarantine_uri, storage.join(output_uri, quarantine.QUARANTINE_FILE))
    summary = {"output": storage.redact(output_uri), "input": storage.redact(input_uri),
               "rows_in": stream.rows_in, "rows_out": rows_out, "rows_quarantined": len(bad),
               "columns": sorted(written.schema().names) if written is not None else [],
               "quarantine": storage.redact(storage.join(output_uri, quarantine.QUARANTINE_FILE))}
    check_counts(summary)
    storage.write_text(storage.join(output_uri, BUILT_MARKER), json.dumps(summary, indent=2))
    return summary


def pack_webdataset(cfg: RayBindConfig, input_uri: str | list[str], output_uri: str,
                    shard_samples: int) -> dict:
    """Convert a manifest (one file or sharded) into WebDataset shards: each row's media files as they are
    (not decoded) plus a `<key>.json` with its id, caption and label, `shard_samples` rows per shard, written
    by Ray tasks that stream one file at a time into the shard (a task's memory holds one media file). A row
    whose media cannot be fetched is quarantined; media that will not decode is found when training reads it.
    Writes `shardindex.json` (wids' index: samples per shard) last."""
    output_uri = storage.durable_output(output_uri, "--output")
    quarantine_uri = storage.join(output_uri, "_quarantine")
    storage.delete_dir(quarantine_uri)
    _delete_indexed_shards(output_uri)
    source = manifest_files(input_uri)
    rows = manifest_rows(cfg, source, [], shuffle=False)
    if not rows.media_columns:
        raise ManifestError(f"manifest {manifest_name(source.entries)} has no media column (one of {list(MODALITIES)})")
    packed = rows.dataset.map_batches(
        partial(_pack_shard, output_uri=output_uri, base_dir=source.base_dir, media_columns=tuple(rows.media_columns),
                quarantine_uri=quarantine_uri, decode=cfg.data.decode),
        batch_size=shard_samples, batch_format="numpy", **placement_args(cfg, "data"))
    shards = [(str(row["shard"]), int(row["samples"])) for row in packed.iter_rows()]   # one small row per shard
    bad = quarantine.collect(quarantine_uri, storage.join(output_uri, quarantine.QUARANTINE_FILE))
    summary = {"output": storage.redact(output_uri), "input": manifest_name(source.entries), "format": "webdataset",
               "rows_in": rows.rows_in, "rows_out": sum(count for _, count in shards), "rows_quarantined": len(bad),
               "shards": len(shards), "media": rows.media_columns,
               "quarantine": storage.redact(storage.join(output_uri, quarantine.QUARANTINE_FILE))}
    check_counts(summary)
    webdataset.write_index(output_uri, shards, summary)
    return summary


def _delete_indexed_shards(output_uri: str) -> None:
    """A re-run replaces the shards an earlier pack listed in its index (and nothing else in the folder)."""
    index_uri = storage.join(output_uri, webdataset.SHARD_INDEX)
    if not storage.exists(index_uri):
        return
    for entry in json.loads(storage.read_text(index_uri)).get("shardlist", []):
        storage.delete(storage.join(output_uri, str(entry["url"])))
    storage.delete(index_uri)


def _json_value(value: Any) -> Any:
    """A manifest value as JSON: Arrow map columns arrive as [(key, value), ...], arrays as numpy."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return {str(k): _json_value(v) for k, v in value}
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _sample_members(row: dict[str, Any], base_dir: str, media_columns: tuple[str, ...]) -> list[tuple[str, str]]:
    """(member name, media URI) of one row's files; raises `RowFailed` for a file that is not there."""
    key = webdataset.sample_key(str(row[ID]))
    members = []
    for modality in media_columns:
        value = _json_value(row.get(modality))
        if value is None or not str(value).strip():
            continue
        uri = media_uri(str(value), base_dir)
        extension = posixpath.splitext(uri.split("?")[0])[1] or (*REGISTRY[modality].extensions, ".bin")[0]
        members.append((f"{key}.{webdataset.member_suffix(modality, extension)}", uri))
    if not members:
        raise RowFailed("", f"no media file in columns {list(media_columns)}")
    return members


def _pack_shard(batch: dict[str, np.ndarray], output_uri: str, base_dir: str, media_columns: tuple[str, ...],
                quarantine_uri: str, decode: DecodeSettings) -> dict[str, np.ndarray]:
    """One shard from one batch of manifest rows, streamed row by row (memory: one row's files, each within
    `decode.max_file_mb`; time: `decode.row_timeout_s` per row); its name comes from the ids of the batch,
    so a retried task rewrites the same file."""
    names = list(batch)
    rows = [{name: batch[name][i] for name in names} for i in range(len(batch[names[0]]) if names else 0)]
    digest = hashlib.sha1("\0".join(str(row.get(ID)) for row in rows).encode()).hexdigest()[:16]
    name = f"shard-{digest}.tar"
    written = 0
    with webdataset.ShardWriter(storage.join(output_uri, name)) as shard:
        for row in rows:
            def read(row: dict[str, Any] = row) -> list[tuple[str, bytes]]:
                return [(member, read_media(uri, decode.max_file_mb, (decode.read_attempts, decode.read_backoff_s)))
                        for member, uri in _sample_members(row, base_dir, media_columns)]

            try:
                files = guarded(read, str(row.get(ID)), decode.row_timeout_s)
            except RowFailed as failure:
                quarantine.record(quarantine_uri, quarantine.QuarantinedRow(
                    id=str(row.get(ID)), uri=failure.uri, stage="pack", reason=failure.reason))
                continue
            fields = {field: _json_value(row[field]) for field in (ID, TEXT, *PASSTHROUGH) if field in row}
            meta = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
            shard.add([(f"{webdataset.sample_key(str(row[ID]))}.json", meta), *files])
            written += 1
    if not written:   # every row of the batch was quarantined: no empty shard
        storage.delete(storage.join(output_uri, name))
        return {"shard": np.array([], dtype=object), "samples": np.array([], dtype=np.int64)}
    return {"shard": np.array([name], dtype=object), "samples": np.array([written], dtype=np.int64)}


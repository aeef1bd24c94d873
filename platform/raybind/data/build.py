"""The offline build: decode, synthesize and tokenize a manifest once into Parquet shards.

Training and sweeps read a built folder directly (`raybind.data.pipeline.build_stream` recognises it by its
`dataset.json`), so many runs over the same data decode it once.
"""

from __future__ import annotations

import json

import ray.data

from raybind import storage
from raybind.config import RayBindConfig
from raybind.data import quarantine
from raybind.data.pipeline import BUILT_DATA, BUILT_MARKER, build_stream, check_counts


def build_dataset(cfg: RayBindConfig, input_uri: str, output_uri: str) -> dict:
    """Decode, synthesize and tokenize a manifest once into Parquet shards that training reads directly."""
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

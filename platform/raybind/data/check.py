"""Check a manifest (or WebDataset shards) before training on it, as a distributed job: columns, ids unique,
media present.

Training reads sharded manifests where they are and never gathers their ids, so duplicate ids are found
here instead, by Ray Data tasks (a group-by on `id`): no row passes through the driver, which receives
only the duplicates, the per-modality counts and a small sample of rows whose media URIs it checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from encoders.modalities import MODALITIES
from raybind import storage
from raybind.data import webdataset
from raybind.data.manifest import REQUIRED_COLUMNS
from raybind.data.sources import ManifestError, manifest_files, manifest_name, read_rows

SAMPLE_ROWS = 20          # rows whose media URIs are checked for existence
DUPLICATES_SHOWN = 10     # duplicate ids named in the report


def _present_counts(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per media column: rows in this batch whose URI is set (one row of partial sums per batch)."""
    counts = {}
    for name in MODALITIES:
        if name in batch:
            values = batch[name]
            counts[name] = np.array([sum(1 for v in values if v is not None and str(v).strip() not in ("", "nan"))])
    counts["rows"] = np.array([len(next(iter(batch.values())))])
    return counts


def _sample_rows(batch: dict[str, np.ndarray], base_dir: str) -> dict[str, np.ndarray]:
    """WebDataset samples -> their ids and which media they hold (member names; bytes dropped here); a
    sample that cannot become a row keeps its key and counts under `unusable`."""
    keys = batch[webdataset.KEY]
    out: dict[str, list] = {"id": [], "unusable": [], **{m: [] for m in MODALITIES}}
    for i in range(len(keys)):
        try:
            row = webdataset.manifest_row({name: batch[name][i] for name in batch}, base_dir)
            out["unusable"].append(0)
        except webdataset.SampleError:
            row = {"id": str(keys[i])}
            out["unusable"].append(1)
        out["id"].append(row["id"])
        for m in MODALITIES:
            out[m].append(row[m].name if m in row else None)
    return {name: np.array(values, dtype=np.int64 if name == "unusable" else object) for name, values in out.items()}


def _repeated(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ids of a group-by count batch that occur more than once."""
    return {"id": counts["id"][counts["count()"] > 1]}


def check_manifest(uri: str | list[str], required: tuple[str, ...] = REQUIRED_COLUMNS,
                   sample_rows: int = SAMPLE_ROWS) -> dict[str, Any]:
    """Problems of a manifest (empty list: none) plus its counts; raises `ManifestError` only when the
    manifest cannot be read at all."""
    source = manifest_files(uri)
    names = source.columns()
    problems: list[str] = []
    missing = [c for c in required if c not in names]
    media = [c for c in MODALITIES if c in names]
    if missing:
        problems.append(f"missing column(s) {missing}; it has {names}")
    if not media:
        problems.append(f"no media column: name one of {list(MODALITIES)}")
    ds = read_rows(source, None)
    shards = source.format == "webdataset"
    if shards:   # samples carry their media: ids and member names only from here on
        ds = ds.map_batches(_sample_rows, fn_kwargs={"base_dir": source.base_dir}, batch_format="numpy").materialize()
    totals = ds.map_batches(_present_counts, batch_format="numpy").sum(["rows", *media])
    totals = totals if isinstance(totals, dict) else {"sum(rows)": totals}
    rows = int(totals.get("sum(rows)") or 0)
    per_modality = {m: int(totals.get(f"sum({m})") or 0) for m in media}
    if shards and (unusable := int(ds.sum("unusable") or 0)):
        problems.append(f"{unusable} sample(s) cannot become rows (see `raybind.data.webdataset`)")
    duplicates: list[str] = []
    if "id" in names:
        repeated = ds.select_columns(["id"]).map_batches(
            lambda b: {"id": np.array([str(v) for v in b["id"]], dtype=object)}, batch_format="numpy"
        ).groupby("id").count().map_batches(_repeated, batch_format="numpy")
        duplicates = sorted(str(row["id"]) for row in repeated.take(DUPLICATES_SHOWN))
        if duplicates:
            problems.append(f"duplicate ids, e.g. {duplicates}: quarantine records and resumes are keyed by id")
    missing_media = []
    for row in ds.limit(sample_rows).take(sample_rows) if media and not shards else []:
        for column in media:
            value = row.get(column)
            if value is None or not str(value).strip():
                continue
            target = storage.resolve_relative(str(value), source.base_dir)
            try:
                found = storage.exists(target)
            except OSError as error:
                found, target = False, f"{target} ({error})"
            if not found:
                missing_media.append(f"{row.get('id')}: {column} {storage.redact(target)}")
    if missing_media:
        problems.append(f"media not found in the first {sample_rows} rows: {missing_media[:DUPLICATES_SHOWN]}")
    return {"manifest": manifest_name(source.entries), "files": len(source.files), "format": source.format,
            "sharded": source.sharded, "rows": rows, "columns": names, "rows_with": per_modality,
            "duplicate_ids": duplicates, "problems": problems}


__all__ = ["ManifestError", "check_manifest"]

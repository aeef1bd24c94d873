"""Reading manifests (Parquet, JSONL, CSV; local or s3://) into Ray Datasets, with their schema checked."""

from __future__ import annotations

import ray.data
from ray.data import Dataset

from raybind import storage

REQUIRED_COLUMNS = ("id", "text")
MEDIA_COLUMNS = ("video", "audio", "depth", "thermal", "image")


class ManifestError(ValueError):
    """The manifest cannot be used at all (unreadable, wrong format, missing columns)."""


def _format(uri: str) -> str:
    path = uri.split("?")[0].lower()
    for suffix, kind in ((".parquet", "parquet"), (".jsonl", "json"), (".json", "json"), (".csv", "csv")):
        if path.endswith(suffix):
            return kind
    return "parquet_dir"


def read_manifest(uri: str) -> Dataset:
    """A lazy Dataset of manifest rows. Raises ManifestError when the file is missing or unreadable."""
    fs, path = storage.resolve(uri)
    try:
        found = storage.exists(uri)
    except OSError as error:
        raise ManifestError(f"cannot reach manifest {storage.redact(uri)}: {error}") from None
    if not found:
        raise ManifestError(f"manifest not found: {storage.redact(uri)}")
    kind = _format(uri)
    try:
        if kind == "json":
            ds = ray.data.read_json(path, filesystem=fs)  # newline-delimited JSON
        elif kind == "csv":
            ds = ray.data.read_csv(path, filesystem=fs)
        else:
            ds = ray.data.read_parquet(path, filesystem=fs)
        ds.schema()  # fail here, not deep inside training, when the file is not what its name says
    except Exception as error:  # noqa: BLE001 - any reader failure means an unreadable manifest
        raise ManifestError(f"cannot read manifest {storage.redact(uri)} as {kind}: {error}") from None
    return ds


def check_columns(ds: Dataset, uri: str, needed: list[str]) -> list[str]:
    """Fail fast when a required column is absent; return the media columns that are present."""
    names = list(ds.schema().names)
    missing = [c for c in (*REQUIRED_COLUMNS, *needed) if c not in names]
    if missing:
        raise ManifestError(f"manifest {storage.redact(uri)} lacks column(s) {missing}; it has {names}")
    return [c for c in MEDIA_COLUMNS if c in names]


def manifest_stats(ds: Dataset, uri: str) -> int:
    """Row count; also refuses duplicate ids (quarantine records and resumes are keyed by id)."""
    ids = ds.select_columns(["id"]).to_pandas()["id"].astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ManifestError(f"manifest {storage.redact(uri)} has duplicate ids, e.g. {duplicated.iloc[0]!r}")
    return len(ids)

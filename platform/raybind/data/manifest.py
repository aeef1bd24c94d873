"""Reading manifests (Parquet, JSONL, CSV; local or s3://) on the driver, with their columns and ids checked."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from encoders.modalities import MODALITIES
from raybind import storage
from raybind.errors import InputError

REQUIRED_COLUMNS = ("id", "text")


class ManifestError(InputError):
    """The manifest cannot be used at all (unreadable, wrong format, missing columns)."""


def _format(uri: str) -> str:
    path = uri.split("?")[0].lower()
    for suffix, kind in ((".parquet", "parquet"), (".jsonl", "json"), (".json", "json"), (".csv", "csv")):
        if path.endswith(suffix):
            return kind
    return "parquet_dir"


@dataclass
class Manifest:
    """A manifest read once on the driver: rows are metadata (ids, captions, URIs), small next to the media."""

    table: pa.Table
    media_columns: list[str]   # media columns the manifest has

    @property
    def rows(self) -> int:
        """The manifest's row count: the `rows_in` that every row accounting starts from."""
        return self.table.num_rows


def _read_table(uri: str) -> pa.Table:
    fs, path = storage.resolve(uri)
    try:
        found = storage.exists(uri)
    except OSError as error:
        raise ManifestError(f"cannot reach manifest {storage.redact(uri)}: {error}") from None
    if not found:
        raise ManifestError(f"manifest not found: {storage.redact(uri)}")
    kind = _format(uri)
    try:
        if kind == "parquet_dir" or kind == "parquet":
            return pq.read_table(path, filesystem=fs)
        with fs.open_input_stream(path) as stream:
            if kind == "json":
                return pajson.read_json(stream)  # newline-delimited JSON
            return pacsv.read_csv(stream)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ManifestError(f"cannot read manifest {storage.redact(uri)} as {kind}: {error}") from None


def load_manifest(uri: str, needed: list[str], required: tuple[str, ...] = REQUIRED_COLUMNS) -> Manifest:
    """Read and check a manifest: fails fast when it is missing, unreadable, lacks a column or repeats an id.
    Training requires captions (`required` = id, text); inference over media alone only ids."""
    table = _read_table(uri)
    names = list(table.column_names)
    missing = [c for c in (*required, *needed) if c not in names]
    if missing:
        raise ManifestError(f"manifest {storage.redact(uri)} lacks column(s) {missing}; it has {names}")
    ids = table.column("id").to_pandas().astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):  # quarantine records and resumes are keyed by id
        raise ManifestError(f"manifest {storage.redact(uri)} has duplicate ids, e.g. {duplicated.iloc[0]!r}")
    return Manifest(table, [c for c in MODALITIES if c in names])

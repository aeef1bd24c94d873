"""Reading a manifest whole on the driver (one small file, or evaluation sets), with its columns and ids checked.

The sources a manifest may be (file, folder, glob, list) and the cluster-side reader of sharded ones:
`raybind.data.sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from encoders.modalities import MODALITIES
from raybind import storage
from raybind.data.sources import ManifestError, manifest_files, manifest_name

REQUIRED_COLUMNS = ("id", "text")




@dataclass
class Manifest:
    """A manifest read once on the driver: rows are metadata (ids, captions, URIs), small next to the media."""

    table: pa.Table
    media_columns: list[str]   # media columns the manifest has

    @property
    def rows(self) -> int:
        """The manifest's row count: the `rows_in` that every row accounting starts from."""
        return self.table.num_rows


def _read_file(uri: str, kind: str) -> pa.Table:
    if kind == "webdataset":   # rows that carry their media: never gathered on the driver
        raise ManifestError(f"{storage.redact(uri)}: WebDataset shards are read by Ray Data's tasks (training, "
                            "evaluation, check), not whole on the driver; give this command a manifest")
    fs, path = storage.resolve(uri)
    try:
        if kind == "parquet":
            return pq.read_table(path, filesystem=fs)
        with fs.open_input_stream(path) as stream:
            if kind == "json":
                return pajson.read_json(stream)  # newline-delimited JSON
            return pacsv.read_csv(stream)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ManifestError(f"cannot read manifest {storage.redact(uri)} as {kind}: {error}") from None


def _read_table(uri: str | Sequence[str]) -> pa.Table:
    source = manifest_files(uri)
    tables = [_read_file(file, source.format) for file in source.files]
    try:
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as error:
        raise ManifestError(f"manifest {storage.redact(source.entries[0])}: its files do not share columns: "
                            f"{error}") from None


def load_manifest(uri: str | Sequence[str], needed: list[str], required: tuple[str, ...] = REQUIRED_COLUMNS) -> Manifest:
    """Read a manifest whole on the driver and check it: fails fast when it is missing, unreadable, lacks a
    column or repeats an id. Training requires captions (`required` = id, text); inference over media alone
    only ids. Training reads sharded manifests on the cluster instead (`raybind.data.sources`)."""
    table = _read_table(uri)
    names = list(table.column_names)
    missing = [c for c in (*required, *needed) if c not in names]
    if missing:
        raise ManifestError(f"manifest {manifest_name(uri)} lacks column(s) {missing}; it has {names}")
    ids = table.column("id").to_pandas().astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):  # quarantine records and resumes are keyed by id
        raise ManifestError(f"manifest {manifest_name(uri)} has duplicate ids, e.g. {duplicated.iloc[0]!r}")
    return Manifest(table, [c for c in MODALITIES if c in names])

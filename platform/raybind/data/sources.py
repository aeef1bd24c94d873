"""Where a manifest's rows are, and how Ray Data reads them where the data is.

A manifest is one file, a folder, a glob (`s3://bucket/vidal/part-*.parquet`) or a list of such entries,
in Parquet, JSONL or CSV, or WebDataset shards (`.tar`: `raybind.data.webdataset`), local or `s3://`.
Two ways to read it:

- **One small file** (at most `DRIVER_MANIFEST_MB`) is read whole on the driver (`manifest.load_manifest`):
  ids are checked for duplicates before anything starts and rows are permuted with the run's seed, exactly
  the same order on every machine. A small file costs the driver little.
- **Anything else** (and WebDataset shards always) is *sharded*: Ray Data's read tasks list and read the files on the cluster, streamed
  under backpressure, never collected on the driver. The driver holds file names and Parquet footers only
  (row counts come from footers; JSONL/CSV rows are counted by tasks). Per pass the files are visited in a
  new seeded order (the same seed repeats it), and rows are shuffled within `data.shuffle_buffer` on the
  consumer. Duplicate ids are not looked for at training start (that would need every id in one place):
  `raybind check` finds them with a distributed job.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq
import ray
from ray.data import Dataset, FileShuffleConfig

from raybind import storage
from raybind.data import webdataset
from raybind.data.quarantine import QUARANTINE_FILE
from raybind.errors import InputError

DRIVER_MANIFEST_MB = 64   # a single manifest file up to this size is read on the driver (exact seeded order)
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".tar": "webdataset"}
SIDECARS = (webdataset.SHARD_INDEX, QUARANTINE_FILE)   # files in a manifest folder that are not rows
_WILDCARDS = ("*", "?", "[")


class ManifestError(InputError):
    """The manifest cannot be used at all (unreadable, wrong format, missing columns)."""


def manifest_name(spec: str | Sequence[str]) -> str:
    """A manifest as messages name it (credentials redacted; a list by its first entry)."""
    if isinstance(spec, str):
        return storage.redact(spec)
    return storage.redact(spec[0]) + (f" (and {len(spec) - 1} more)" if len(spec) > 1 else "")


def manifest_format(uri: str) -> str | None:
    """parquet, json (newline-delimited), csv or webdataset (`.tar` shards) by the file's suffix; None for
    anything else."""
    path = uri.split("?")[0].lower()
    return next((kind for suffix, kind in FORMATS.items() if path.endswith(suffix)), None)


@dataclass(frozen=True)
class ManifestFiles:
    """A manifest's files, their one format, and the folder relative media URIs resolve against."""

    entries: tuple[str, ...]   # as configured
    files: tuple[str, ...]     # every file, in listing order
    format: str                # parquet | json | csv
    base_dir: str

    @property
    def sharded(self) -> bool:
        """Read by Ray Data's tasks on the cluster (several files, one too large for the driver, or WebDataset
        shards, whose rows carry their media)."""
        return self.format == "webdataset" or len(self.files) > 1 or storage.size(self.files[0]) > DRIVER_MANIFEST_MB * 2**20

    def columns(self) -> list[str]:
        """Column names from the first file's Parquet footer, JSONL first line or CSV header (no rows read)."""
        first = self.files[0]
        if self.format == "webdataset":   # the first sample's members (a few MiB of the first shard)
            try:
                return webdataset.first_sample_columns(first)
            except webdataset.SampleError as error:
                raise ManifestError(f"{storage.redact(first)}: {error.reason}") from None
        fs, path = storage.resolve(first)
        try:
            if self.format == "parquet":
                return list(pq.read_schema(path, filesystem=fs).names)
            head = _head_lines(first, 1)[0]
            return list(json.loads(head)) if self.format == "json" else _csv_fields(head)
        except (OSError, ValueError) as error:
            raise ManifestError(f"cannot read manifest {storage.redact(first)} as {self.format}: {error}") from None

    def first_row(self, columns: Sequence[str]) -> dict[str, object]:
        """`columns` of the first file's first row (one Parquet batch of those columns, a JSONL line, two CSV
        lines; {} for WebDataset shards, whose media are members): what a start-up probe of the media's
        storage looks at."""
        first = self.files[0]
        if self.format == "webdataset" or not columns:
            return {}
        fs, path = storage.resolve(first)
        try:
            if self.format == "parquet":
                parquet = pq.ParquetFile(fs.open_input_file(path))   # one footer read: schema and first batch
                names = [c for c in columns if c in parquet.schema_arrow.names]
                batch = next(parquet.iter_batches(batch_size=1, columns=names), None)
                return batch.to_pylist()[0] if batch is not None and batch.num_rows else {}
            lines = _head_lines(first, 2)
            if self.format == "json":
                row = json.loads(lines[0])
                return {c: row.get(c) for c in columns} if isinstance(row, dict) else {}
            if len(lines) < 2:
                return {}
            return {c: v for c, v in zip(_csv_fields(lines[0]), _csv_fields(lines[1])) if c in columns}
        except (OSError, ValueError, StopIteration):
            return {}   # unreadable rows are the readers' to report

    def file_rows(self) -> list[int] | None:
        """Rows of each file from Parquet footers or a WebDataset shard index (metadata only); None for
        JSONL, CSV and shards without an index."""
        if self.format == "webdataset":
            return webdataset.index_counts(self.files, self.base_dir)
        if self.format != "parquet":
            return None
        counts = []
        for uri in self.files:
            fs, path = storage.resolve(uri)
            try:
                counts.append(pq.ParquetFile(fs.open_input_file(path)).metadata.num_rows)
            except (OSError, ValueError) as error:
                raise ManifestError(f"cannot read the Parquet footer of {storage.redact(uri)}: {error}") from None
        return counts

    def footer_rows(self) -> int | None:
        """All the files' rows from their metadata (`file_rows`); None where only reading can count them."""
        counts = self.file_rows()
        return None if counts is None else sum(counts)

    def subset(self, files: Sequence[str]) -> ManifestFiles:
        """The same manifest restricted to `files` (a resumed pass reads only the files it had not finished)."""
        return ManifestFiles(self.entries, tuple(files), self.format, self.base_dir)


def _head_lines(uri: str, count: int) -> list[str]:
    """The first `count` lines of a text manifest (from at most its first MiB)."""
    fs, path = storage.resolve(uri)
    with fs.open_input_stream(path) as stream:
        return [line.decode("utf-8") for line in stream.read(1 << 20).split(b"\n", count)[:count]]


def _csv_fields(line: str) -> list[str]:
    """A CSV header's or row's fields, unquoted (what the start-up checks need; Ray Data parses the rows)."""
    return [field.strip().strip('"') for field in line.split(",")]


def _glob(pattern: str) -> list[str]:
    """Files matching a glob (`*`, `?`, `[...]` in any path component below the first fixed folders)."""
    path, _, query = pattern.partition("?") if storage.is_remote(pattern) else (pattern, "", "")
    parts = path.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(w in part for w in _WILDCARDS))
    base = "/".join(parts[:fixed]) + (f"?{query}" if query else "")
    wanted = storage.resolve(path)[1]
    return [uri for uri in storage.list_files(base) if fnmatch.fnmatchcase(storage.resolve(uri)[1], wanted)]


def _is_row_file(uri: str, folder: str) -> bool:
    """A file under a manifest folder that holds rows: not a sidecar (shard index, quarantine), and not under
    a name starting with `_` or `.` (`_SUCCESS`, `_quarantine/`, `.cache/`), as Spark and Hadoop write them."""
    relative = storage.resolve(uri)[1][len(storage.resolve(folder)[1].rstrip("/")) + 1:]
    parts = relative.split("/")
    return parts[-1] not in SIDECARS and not any(part.startswith(("_", ".")) for part in parts)


def _is_glob(entry: str) -> bool:
    path = entry.split("?", 1)[0] if storage.is_remote(entry) else entry
    return any(w in path for w in _WILDCARDS)   # the same wildcards `_glob` expands


def manifest_files(spec: str | Sequence[str]) -> ManifestFiles:
    """Resolve a manifest (file, folder, glob or list of them) to its files; fails naming what is wrong."""
    entries = (spec,) if isinstance(spec, str) else tuple(spec)
    if not entries:
        raise ManifestError("the manifest lists no files")
    files: list[str] = []
    for entry in entries:
        try:
            if _is_glob(entry):
                found = _glob(entry)
            elif storage.is_dir(entry):
                found = [uri for uri in storage.list_files(entry) if manifest_format(uri) and _is_row_file(uri, entry)]
            elif storage.exists(entry):
                found = [entry]
            else:
                raise ManifestError(f"manifest not found: {storage.redact(entry)}")
        except OSError as error:
            raise ManifestError(f"cannot reach manifest {storage.redact(entry)}: {error}") from None
        if not found:
            raise ManifestError(f"no manifest files (.parquet, .jsonl, .json, .csv, .tar) at {storage.redact(entry)}")
        files += found
    formats = {manifest_format(uri) for uri in files}
    if None in formats:
        odd = next(uri for uri in files if manifest_format(uri) is None)
        raise ManifestError(f"{storage.redact(odd)}: a manifest file must end in .parquet, .jsonl, .json, .csv "
                            "or .tar (WebDataset shards)")
    if len(formats) > 1:
        raise ManifestError(f"manifest {storage.redact(entries[0])} mixes formats {sorted(formats)}: use one")
    first = entries[0]
    base_dir = first if not _is_glob(first) and storage.is_dir(first) else storage.parent(files[0])
    return ManifestFiles(entries, tuple(files), formats.pop(), base_dir)


def read_path(uri: str) -> str:
    """A manifest file as Ray Data's readers name it in a row's `path` (the filesystem path: no scheme)."""
    return storage.resolve(uri)[1]


def read_rows(source: ManifestFiles, shuffle_seed: int | None, read_args: dict | None = None,
              with_paths: bool = False) -> Dataset:
    """The manifest's rows as a Ray dataset read by tasks on the cluster. With a seed, every execution (pass)
    visits the files in a new order derived from it (Ray's `FileShuffleConfig`), the same one for the same
    seed; without, in listing order. `read_args`: the read tasks' Ray options (`resources` for data nodes).
    `with_paths`: each row names its file (`path`; WebDataset samples always do, as `__url__`)."""
    fs, _ = storage.resolve(source.files[0])
    paths = [read_path(uri) for uri in source.files]
    kwargs = {"filesystem": fs, "shuffle": FileShuffleConfig(seed=shuffle_seed) if shuffle_seed is not None else None,
              **(read_args or {})}
    if source.format == "webdataset":   # samples with their members' bytes, undecoded (no pickle, ever)
        return ray.data.read_webdataset(paths, decoder=None, file_extensions=None, **kwargs)
    kwargs["include_paths"] = with_paths
    if source.format == "parquet":
        return ray.data.read_parquet(paths, **kwargs)
    if source.format == "json":   # Arrow's JSON reader takes newline-delimited JSON (and a filesystem: S3)
        return ray.data.read_json(paths, file_extensions=None, **kwargs)
    return ray.data.read_csv(paths, file_extensions=None, **kwargs)


def count_rows(source: ManifestFiles, read_args: dict | None = None) -> int:
    """Rows of a sharded manifest: Parquet footers or a shard index, or a count by read tasks (the driver gets
    one integer; for shards without an index that is one read of them before training)."""
    rows = source.footer_rows()
    return rows if rows is not None else read_rows(source, None, read_args).count()

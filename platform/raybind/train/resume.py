"""Resuming inside a pass over a sharded manifest without reading its finished files again.

Training workers count the rows they receive per manifest file (`source_key`, a stable key of the file
path) and every checkpoint keeps the counts of the pass in progress (`progress["pass_rows"]`). A file is
*finished* in that pass when the rows trained from it plus its rows in the quarantine equal its row count
(Parquet footers, or a WebDataset shard index). A run started again over the same `storage/name` reads,
for the rest of that pass, only the files that were not finished, then goes on with whole passes.

What a resumed run reads again: every file that was being read when the run stopped, whole (rows of it
that were already trained are trained again in that pass), and nothing else. What it skips: the finished
files, whose every row was trained or quarantined in that pass. Rows a worker had received but not yet
trained when the run stopped (at most one batch per worker) count as received. Manifests whose files
have no row counts in their metadata (JSONL, CSV, shards without an index) and one-file manifests read
on the driver start the pass over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from raybind import storage
from raybind.data.batch_format import stable_key
from raybind.data.quarantine import QuarantinedRow
from raybind.data.sources import ManifestFiles, read_path

PROGRESS_FILE = "progress.json"
CHECKPOINT_PREFIX = "checkpoint_"


@dataclass(frozen=True)
class RestOfPass:
    """The part of an interrupted pass a resumed run still has to read."""

    epoch: int                 # the pass (0-based) that was interrupted
    files: tuple[str, ...]     # its files not finished, in listing order
    finished: dict[str, int]   # source key -> rows trained, of the finished files (the workers' counts go on)

    @property
    def rows_done(self) -> int:
        """Rows of the pass already trained from the finished files."""
        return sum(self.finished.values())

    def loop_config(self) -> dict:
        """What the training workers need (JSON): the pass and the counts they continue from."""
        return {"epoch": self.epoch, "finished": self.finished, "files": len(self.files)}


def latest_progress(run_uri: str) -> dict | None:
    """The progress of the newest checkpoint under a run folder (the highest step), or None."""
    try:
        names = [uri for uri in storage.list_files(run_uri) if uri.split("?")[0].endswith("/" + PROGRESS_FILE)]
    except FileNotFoundError:
        return None
    progresses = []
    for uri in names:
        if storage.parent(uri).split("?")[0].rsplit("/", 1)[-1].startswith(CHECKPOINT_PREFIX):
            try:
                progresses.append(json.loads(storage.read_text(uri)))
            except (OSError, ValueError):
                continue   # a checkpoint Ray did not finish registering: resume ignores it too
    return max(progresses, key=lambda p: p.get("step", 0), default=None)


def rest_of_pass(files: ManifestFiles, file_rows: Sequence[int], progress: dict | None,
                 quarantined: Sequence[QuarantinedRow]) -> RestOfPass | None:
    """The unfinished files of the pass a checkpoint stopped in; None when it stopped between passes (or
    kept no counts: a run from before this bookkeeping, or a manifest without per-file counts)."""
    passed = (progress or {}).get("pass_rows")
    if not passed or not passed.get("by_source"):
        return None
    delivered = {int(key): int(count) for key, count in passed["by_source"].items()}
    bad: dict[str, int] = {}
    for row in quarantined:
        if row.source:
            bad[row.source] = bad.get(row.source, 0) + 1
    finished, rest = {}, []
    for uri, rows in zip(files.files, file_rows):
        path = read_path(uri)
        key = stable_key(path)
        if delivered.get(key, 0) + bad.get(path, 0) >= rows:
            finished[str(key)] = delivered.get(key, 0)
        else:
            rest.append(uri)
    return RestOfPass(int(passed["epoch"]), tuple(rest), finished)

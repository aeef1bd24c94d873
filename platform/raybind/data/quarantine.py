"""Bad rows leave the stream here, with their reason, so nothing is dropped silently.

Each bad row becomes one small JSON object named by a hash of (stage, id): writing it again (a retried
task, a second epoch) overwrites the same object, so counts stay exact. `collect` merges them into
`quarantine.jsonl` beside the run's output.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from raybind import storage

QUARANTINE_DIR = "quarantine"
QUARANTINE_FILE = "quarantine.jsonl"


@dataclass(frozen=True)
class QuarantinedRow:
    """One row that left the stream: its id, media URI, the stage that failed it and why, and the manifest
    file (or shard) it came from when the stream tracks that (a resumed run counts a file's rows with it)."""

    id: str
    uri: str
    stage: str
    reason: str
    source: str = ""


def record(quarantine_uri: str, row: QuarantinedRow) -> None:
    """Write one bad row (URI redacted) as its own object keyed by (stage, id, uri, source): a retried task or
    a second pass overwrites it instead of counting it twice, and rows that share an id (a sharded manifest
    is not checked for duplicates when training starts) keep a record each unless they are the same media
    from the same file."""
    key = hashlib.sha1(f"{row.stage}\0{row.id}\0{row.uri}\0{row.source}".encode()).hexdigest()[:20]
    storage.write_text(storage.join(quarantine_uri, f"{key}.json"),
                       json.dumps({**asdict(row), "uri": storage.redact(row.uri)}))


def read_all(quarantine_uri: str) -> list[QuarantinedRow]:
    """Every bad row recorded under `quarantine_uri`, sorted by stage, then id."""
    rows = [QuarantinedRow(**json.loads(storage.read_text(uri))) for uri in storage.list_files(quarantine_uri)
            if uri.split("?")[0].endswith(".json")]
    return sorted(rows, key=lambda r: (r.stage, r.id))


def collect(quarantine_uri: str, output_uri: str) -> list[QuarantinedRow]:
    """Merge the per-row records into one JSONL file at `output_uri`; returns the rows."""
    rows = read_all(quarantine_uri)
    storage.write_text(output_uri, "".join(json.dumps(asdict(r)) + "\n" for r in rows))
    return rows

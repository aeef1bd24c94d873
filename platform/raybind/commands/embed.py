"""Embed a corpus with a trained checkpoint: Parquet shards of (id, modality, vector), resumable.

    raybind embed --checkpoint runs/quickstart --data data/demo/val.jsonl --output runs/embeddings/demo
    raybind embed --checkpoint s3://bucket/runs/l14 --data /media/my-folder --output s3://bucket/emb/folder

`--data` is a manifest (one file, or a folder/glob of Parquet/JSONL/CSV files or WebDataset .tar shards, read
where they are) or a folder of media files (modality by extension). Re-running with the same --output skips
the shards already written. Query the result with `raybind query`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raybind.cli import add_set_argument

SUMMARY = "embed a manifest or a media folder into Parquet shards (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind embed`."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run folder, local or s3://")
    parser.add_argument("--data", required=True, help="manifest or media folder, local or s3://")
    parser.add_argument("--output", required=True, help="folder for vectors/ and index.json, local or s3://")
    parser.add_argument("--shard-rows", type=int, default=1024,
                        help="manifest rows per output shard (one-file manifests and media folders; a sharded "
                             "manifest writes one output shard per input file)")
    add_set_argument(parser, "override an inference setting, e.g. inference.max_actors=4")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Embed the corpus and print the counts on stderr; the summary becomes the JSON line."""
    from raybind.evaluate.corpus import embed_corpus

    summary = embed_corpus(args.checkpoint, args.data, args.output, args.shard_rows, args.overrides)
    counts = ", ".join(f"{m} {n}" for m, n in summary["embedded"].items())
    print(f"\nembedded {counts}; {summary['rows_quarantined']} quarantined; shards written "
          f"{summary['shards_written']}, already there {summary['shards_resumed']}", file=sys.stderr)
    return summary

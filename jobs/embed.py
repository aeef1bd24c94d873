"""Embed a corpus with a trained checkpoint: Parquet shards of (id, modality, vector), resumable.

    python jobs/embed.py --checkpoint runs/quickstart --data data/demo/val.jsonl --output runs/embeddings/demo
    python jobs/embed.py --checkpoint s3://bucket/runs/l14 --data /media/my-folder --output s3://bucket/emb/folder

`--data` is a manifest (parquet/jsonl/csv) or a folder of media files (modality by extension). Re-running
with the same --output skips the shards already written. Query the result with jobs/query.py.
"""

from __future__ import annotations

import argparse
import sys

from raybind.cli import run_command
from raybind.corpus import embed_corpus


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run folder, local or s3://")
    parser.add_argument("--data", required=True, help="manifest or media folder, local or s3://")
    parser.add_argument("--output", required=True, help="folder for vectors/ and index.json, local or s3://")
    parser.add_argument("--shard-rows", type=int, default=1024, help="manifest rows per output shard")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.path=value",
                        help="override an inference setting, e.g. inference.max_actors=4")

    def body(args):
        summary = embed_corpus(args.checkpoint, args.data, args.output, args.shard_rows, args.overrides)
        counts = ", ".join(f"{m} {n}" for m, n in summary["embedded"].items())
        print(f"\nembedded {counts}; {summary['rows_quarantined']} quarantined; shards written "
              f"{summary['shards_written']}, already there {summary['shards_resumed']}", file=sys.stderr)
        return summary

    return run_command(parser, body, argv)


if __name__ == "__main__":
    main()

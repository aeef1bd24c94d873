"""Check a manifest before training: columns, unique ids, media present, rows per modality.

    raybind check --data s3://bucket/vidal/manifest/            # a folder, glob or file of Parquet/JSONL/CSV
    ray job submit --working-dir . -- python jobs/check_manifest.py --data s3://bucket/vidal/manifest/

Runs as Ray Data tasks where the files are (ids are grouped there, not on the driver). Exits 2 when the
manifest has a problem (duplicate ids, a missing column, media not found in a sample), naming each.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raybind.cli import EXIT_BAD_INPUT, add_set_argument
from raybind.errors import InputError

SUMMARY = "check a (sharded) manifest: columns, duplicate ids, media present, rows per modality"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind check`."""
    parser.add_argument("--data", required=True, nargs="+",
                        help="manifest: file(s), folder or glob of Parquet/JSONL/CSV, local or s3://")
    parser.add_argument("--inference", action="store_true", help="media only: no `text` column required")
    add_set_argument(parser, "Ray settings, e.g. ray.address=auto, ray.num_cpus=2")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start or join Ray, check, print a short report; problems exit 2 after the summary is printed."""
    from raybind.config import RaySettings, parse_override
    from raybind.data.check import check_manifest
    from raybind.runtime import start_ray

    ray_fields: dict[str, Any] = {}
    for item in args.overrides:
        key, value = parse_override(item)
        if not key.startswith("ray."):
            raise InputError(f"--set {item}: `raybind check` takes only ray.* settings")
        ray_fields[key.removeprefix("ray.")] = value
    ray_settings = RaySettings(**ray_fields)
    start_ray(ray_settings.address, ray_settings.num_cpus, ray_settings.object_store_memory_mb,
              verbose=ray_settings.verbose, hub_offline=ray_settings.hub_offline)
    data = args.data[0] if len(args.data) == 1 else args.data
    report = check_manifest(data, required=("id",) if args.inference else ("id", "text"))
    counts = ", ".join(f"{m} {n}" for m, n in report["rows_with"].items())
    print(f"\n{report['manifest']}: {report['rows']} rows in {report['files']} {report['format']} file(s); "
          f"with media: {counts or 'none'}", file=sys.stderr)
    for problem in report["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    if not report["problems"]:
        print("no problems found", file=sys.stderr)
    args.exit_code = EXIT_BAD_INPUT if report["problems"] else 0
    return report

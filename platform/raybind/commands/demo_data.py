"""Generate the procedural demo dataset (captioned mp4 clips with audio, train/val JSONL manifests).

    raybind demo-data --output data/demo --train 256 --val 64 --seed 0 [--synthesizers]

`--synthesizers` also fits the demo's depth and thermal synthesizers to its ground truth
(`<output>/synthesizers/`; see raybind.data.demo_synthesizers).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

SUMMARY = "generate the demo clips and manifests (and fit its depth/thermal synthesizers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind demo-data`."""
    parser.add_argument("--output", default="data/demo", help="folder for clips and manifests (default data/demo)")
    parser.add_argument("--train", type=int, default=256, help="training clips (default 256)")
    parser.add_argument("--val", type=int, default=64, help="validation clips (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed renders the same clips")
    parser.add_argument("--synthesizers", action="store_true", help="fit the demo depth/thermal synthesizers too")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Write the demo clips and manifests (with --synthesizers, fit those too); the paths become the JSON line."""
    from raybind.data.demo_data import generate
    from raybind.data.demo_synthesizers import fit_demo_synthesizers

    start = time.perf_counter()
    manifests = generate(args.output, args.train, args.val, args.seed)
    if args.synthesizers:
        manifests.update(fit_demo_synthesizers(args.output, args.seed))
    return {**manifests, "clips": args.train + args.val, "seconds": round(time.perf_counter() - start, 1)}

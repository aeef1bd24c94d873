"""Generate the procedural demo dataset (captioned mp4 clips with audio, train/val JSONL manifests).

    python jobs/make_demo_data.py --output data/demo --train 256 --val 64 --seed 0 [--synthesizers]

`--synthesizers` also fits the demo's depth and thermal synthesizers to its ground truth
(`<output>/synthesizers/`; see raybind.demo_synthesizers).
"""

from __future__ import annotations

import argparse
import json
import time

from raybind.demo_data import generate
from raybind.demo_synthesizers import fit_demo_synthesizers


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="data/demo")
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthesizers", action="store_true", help="fit the demo depth/thermal synthesizers too")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifests = generate(args.output, args.train, args.val, args.seed)
    if args.synthesizers:
        manifests.update(fit_demo_synthesizers(args.output, args.seed))
    summary = {**manifests, "clips": args.train + args.val, "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary, sort_keys=True))
    return summary


if __name__ == "__main__":
    main()

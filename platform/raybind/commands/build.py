"""Build a training-ready dataset once: decode, synthesize depth/thermal, compute mel, tokenize -> Parquet.

    raybind build --config configs/quickstart.yaml --input data/demo/train.jsonl --output data/built/train

Training reads the output folder as `data.train`, so sweeps and repeated runs do not decode twice.
"""

from __future__ import annotations

import argparse
from typing import Any

from raybind.cli import add_config_arguments, config_from_args

SUMMARY = "decode and synthesize a manifest once into Parquet shards that training reads"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind build`: the config, the manifest and the output folder."""
    add_config_arguments(parser)
    parser.add_argument("--input", required=True, help="manifest (parquet/jsonl/csv), local or s3://")
    parser.add_argument("--output", required=True, help="output folder, local or s3://")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start Ray and build the dataset; the build summary (row counts) becomes the JSON line."""
    from raybind.data.build import build_dataset
    from raybind.runtime import init_ray

    cfg = config_from_args(args)
    init_ray(cfg)
    return build_dataset(cfg, args.input, args.output)

"""Build a dataset once: decoded and synthesized Parquet for training, or WebDataset shards of the raw media.

    raybind build --config configs/quickstart.yaml --input data/demo/train.jsonl --output data/built/train
    raybind build --config C --format webdataset --input s3://bucket/vidal/ --output s3://bucket/wds/

Training reads either output folder as `data.train`: a Parquet build skips decoding (sweeps and repeated
runs decode once); WebDataset shards keep each sample's files together, as video-text corpora ship.
"""

from __future__ import annotations

import argparse
from typing import Any

from raybind.cli import add_config_arguments, config_from_args

SUMMARY = "decode a manifest once into Parquet, or pack its media into WebDataset shards"
SHARD_SAMPLES = 1000   # rows per WebDataset shard by default (a packing task holds one row's files at a time)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind build`: the config, the manifest, the output folder and its format."""
    add_config_arguments(parser)
    parser.add_argument("--input", required=True, help="manifest (parquet/jsonl/csv: a file, folder or glob), "
                                                       "local or s3://")
    parser.add_argument("--output", required=True, help="output folder, local or s3://")
    parser.add_argument("--format", choices=("parquet", "webdataset"), default="parquet",
                        help="parquet: decoded, synthesized and tokenized rows (default); webdataset: each row's "
                             "media files as they are plus a <key>.json caption, in .tar shards")
    parser.add_argument("--shard-samples", type=int, default=SHARD_SAMPLES, metavar="N",
                        help=f"rows per WebDataset shard (default {SHARD_SAMPLES})")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start Ray and build the dataset; the build summary (row counts) becomes the JSON line."""
    from raybind import storage
    from raybind.data.build import build_dataset, pack_webdataset
    from raybind.errors import InputError
    from raybind.runtime import init_ray

    cfg = config_from_args(args)
    if args.shard_samples < 1:
        raise InputError(f"--shard-samples must be at least 1, got {args.shard_samples}")
    storage.durable_output(args.output, "--output")   # before Ray starts: a submitted job fails in a second
    init_ray(cfg)
    if args.format == "webdataset":
        return pack_webdataset(cfg, args.input, args.output, args.shard_samples)
    return build_dataset(cfg, args.input, args.output)

"""Build a training-ready dataset once: decode, synthesize depth/thermal, compute mel, tokenize -> Parquet.

    python jobs/build_dataset.py --config configs/quickstart.yaml --input data/demo/train.jsonl --output data/built/train
"""

from __future__ import annotations

from raybind.cli import job_parser, run_job
from raybind.build import build_dataset
from raybind.runtime import init_ray


def main(argv: list[str] | None = None) -> dict:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="manifest (parquet/jsonl/csv), local or s3://")
    parser.add_argument("--output", required=True, help="output folder, local or s3://")

    def body(cfg, args):
        init_ray(cfg)
        return build_dataset(cfg, args.input, args.output)

    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()

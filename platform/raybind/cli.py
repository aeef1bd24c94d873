"""What every job shares: `--config` and `--set`, error handling with exit codes, the final JSON line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from raybind.config import RayBindConfig, load_config
from raybind.errors import InputError

EXIT_BAD_INPUT = 2


def job_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML experiment config (configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.path=value",
                        help="override any config field, e.g. --set train.steps=50 (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs too (per-report dumps, dataset plans, worker output)")
    return parser


def _disconnect_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_command(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], dict[str, Any]],
                argv: list[str] | None = None) -> dict[str, Any]:
    """Parse, run `body`, print its summary as the last stdout line.

    Bad input of any kind (`raybind.errors.InputError`: config, manifest, storage, resources, checkpoint,
    benchmark layout) exits with code 2 and a message naming what is wrong.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = parser.parse_args(argv)
    try:
        summary = body(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    _disconnect_ray()  # Ray's daemons print asynchronously: nothing of theirs may follow the JSON line
    print(json.dumps(summary, sort_keys=True), flush=True)
    return summary


def run_job(parser: argparse.ArgumentParser, body: Callable[[RayBindConfig, argparse.Namespace], dict[str, Any]],
            argv: list[str] | None = None) -> dict[str, Any]:
    """`run_command` for jobs driven by a config: validated (before any Ray work) from `--config`/`--set`."""

    def with_config(args: argparse.Namespace) -> dict[str, Any]:
        cfg = load_config(args.config, [*args.overrides, *(["ray.verbose=true"] if args.verbose else [])])
        return body(cfg, args)

    return run_command(parser, with_config, argv)

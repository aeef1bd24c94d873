"""The `raybind` command: one parser, a subcommand per job (`raybind.commands`), one way to end.

Every subcommand prints its human-readable result on stderr and one JSON object as the last stdout line.
Bad input of any kind (`raybind.errors.InputError`: config, manifest, storage, resources, checkpoint,
benchmark layout) exits with code 2 and a message naming what is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from raybind.commands import COMMANDS, command_module
from raybind.config import RayBindConfig, load_config
from raybind.errors import InputError

EXIT_BAD_INPUT = 2

EPILOG = """examples:
  raybind pretrain --config configs/quickstart.yaml          train the quickstart's four tiny towers
  raybind pretrain --config configs/languagebind_video_l14.yaml --dry-run
  raybind evaluate --checkpoint runs/quickstart --data data/demo/val.jsonl
  ray job submit --working-dir . -- python jobs/pretrain.py --config configs/quickstart.yaml

every config field can be overridden: --set train.steps=50 --set model.towers.video.mask_ratio=0.5"""


def add_set_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--set dotted.path=value`, repeatable: the one override syntax of every subcommand."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="dotted.path=value",
                        help=help_text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config`, `--set` and `--verbose`, shared by the subcommands that run from an experiment config."""
    parser.add_argument("--config", required=True, help="YAML experiment config (configs/*.yaml)")
    add_set_argument(parser, "override any config field, e.g. --set train.steps=50 (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own logs too (per-report dumps, dataset plans, worker output)")


def config_from_args(args: argparse.Namespace) -> RayBindConfig:
    """The validated config of `--config`/`--set` (before any Ray work starts)."""
    return load_config(args.config, [*args.overrides, *(["ray.verbose=true"] if args.verbose else [])])


def _disconnect_ray() -> None:
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()


def execute(args: argparse.Namespace) -> dict[str, Any]:
    """Run the parsed subcommand; print its summary as the last stdout line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        summary = args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    _disconnect_ray()  # Ray's daemons print asynchronously: nothing of theirs may follow the JSON line
    print(json.dumps(summary, sort_keys=True), flush=True)
    if getattr(args, "exit_code", 0):   # a check that found problems: the summary names them, the code says so
        raise SystemExit(args.exit_code)
    return summary


def _command_parser(name: str, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    module = command_module(name)
    module.add_arguments(parser)
    parser.set_defaults(run=module.run)
    return parser


def _description(name: str) -> str:
    return command_module(name).__doc__


def build_parser() -> argparse.ArgumentParser:
    """The `raybind` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="raybind", description="Pretrain LanguageBind's multimodal encoders on Ray: one embedding space for "
        "video, audio, depth, thermal and images.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = command_module(name)
        sub = commands.add_parser(name, help=module.SUMMARY, description=_description(name),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _command_parser(name, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`raybind COMMAND ...` (the console script: its return value is the exit code)."""
    execute(build_parser().parse_args(argv))
    return 0


def job_main(name: str, argv: list[str] | None = None) -> dict[str, Any]:
    """`python jobs/<name>.py ...`: the same subcommand on its own (what `ray job submit` runs)."""
    parser = argparse.ArgumentParser(description=_description(name),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return execute(_command_parser(name, parser).parse_args(argv))

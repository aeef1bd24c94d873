"""Sweep training settings with Ray Tune: one Ray Train run per trial, ASHA early stopping, table + plot.

    raybind sweep --config configs/sweep_quickstart.yaml [--set sweep.num_samples=2 ...]
    ray job submit --working-dir . -- python jobs/sweep.py --config configs/sweep_quickstart.yaml

The search space is the config's `sweep.space`, keyed by the dotted paths `--set` takes. Re-running with
the same storage and name resumes the sweep: finished trials are kept, unfinished ones resume.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raybind.cli import add_config_arguments, config_from_args

SUMMARY = "search mask ratio, temperature or any field with Ray Tune (ASHA)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind sweep` (the search space is the config's `sweep.space`)."""
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sweep and print the best trial and where its table and plot are; the summary becomes the JSON line."""
    from raybind.train.sweep import sweep

    summary = sweep(config_from_args(args))
    _print_result(summary)
    return summary


def _print_result(summary: dict) -> None:
    print(f"\nsweep {summary['sweep_dir']}: {summary['trials']} trials, {summary['stopped_early']} stopped early, "
          f"{summary['errored']} errored", file=sys.stderr)
    if summary["best"]:
        best = summary["best"]
        print(f"best trial {best['trial']}: {best['metric']} = {best['value']:.3f} with {best['params']}",
              file=sys.stderr)
        print(f"train it:      raybind pretrain --config {summary['best_config']}", file=sys.stderr)
    print(f"table:         {summary['table']}\nplot:          {summary['plot']}\n"
          f"dashboards:    tensorboard --logdir {summary['tensorboard']}", file=sys.stderr)

"""Sweep training settings with Ray Tune: one Ray Train run per trial, ASHA early stopping, table + plot.

    python jobs/sweep.py --config configs/sweep_quickstart.yaml [--set sweep.num_samples=2 ...]
    ray job submit --working-dir . -- python jobs/sweep.py --config configs/sweep_quickstart.yaml

The search space is the config's `sweep.space`, keyed by the dotted paths `--set` takes. Re-running with
the same storage and name resumes the sweep: finished trials are kept, unfinished ones resume.
"""

from __future__ import annotations

import sys

from raybind.cli import job_parser, run_job
from raybind.sweep import sweep


def _print_result(summary: dict) -> None:
    print(f"\nsweep {summary['sweep_dir']}: {summary['trials']} trials, {summary['stopped_early']} stopped early, "
          f"{summary['errored']} errored", file=sys.stderr)
    if summary["best"]:
        best = summary["best"]
        print(f"best trial {best['trial']}: {best['metric']} = {best['value']:.3f} with {best['params']}",
              file=sys.stderr)
        print(f"train it:      python jobs/pretrain.py --config {summary['best_config']}", file=sys.stderr)
    print(f"table:         {summary['table']}\nplot:          {summary['plot']}\n"
          f"dashboards:    tensorboard --logdir {summary['tensorboard']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = job_parser(__doc__.splitlines()[0])

    def body(cfg, args):
        summary = sweep(cfg)
        _print_result(summary)
        return summary

    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()

"""Pretrain LanguageBind-style towers: streaming ingest on Ray Data, LoRA contrastive training on Ray Train.

    python jobs/pretrain.py --config configs/quickstart.yaml [--set train.steps=50 ...]
    ray job submit --working-dir . -- python jobs/pretrain.py --config configs/quickstart.yaml

Re-running with the same storage and name resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import sys

from raybind.cli import EXIT_BAD_INPUT, job_parser, run_job
from raybind.trainer import StorageError, pretrain


def _print_table(summary: dict) -> None:
    """Human-readable result on stderr (stdout's last line stays the JSON summary)."""
    print(f"\nrun {summary['run_dir']}: {summary['steps']} steps, rows in/out/quarantined "
          f"{summary['rows_in']}/{summary['rows_out']}/{summary['rows_quarantined']}", file=sys.stderr)
    print(f"{'tower':8s} {'val R@1 before':>15s} {'after':>8s} {'chance':>8s} {'x chance':>9s}", file=sys.stderr)
    for modality, row in summary["metrics"].items():
        if "val_r1_after" in row:
            ratio = row["val_r1_after"] / row["chance"] if row.get("chance") else float("nan")
            print(f"{modality:8s} {row['val_r1_before']:15.3f} {row['val_r1_after']:8.3f} {row['chance']:8.3f} "
                  f"{ratio:9.1f}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    parser = job_parser(__doc__.splitlines()[0])

    def body(cfg, args):
        try:
            summary = pretrain(cfg)
        except StorageError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None
        _print_table(summary)
        return summary

    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()

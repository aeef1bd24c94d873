"""Pretrain towers: streaming ingest on Ray Data, LoRA contrastive training on Ray Train.

    raybind pretrain --config configs/quickstart.yaml [--set train.steps=50 ...] [--dry-run]
    ray job submit --working-dir . -- python jobs/pretrain.py --config configs/quickstart.yaml

Re-running with the same storage and name resumes from the newest complete checkpoint. `--dry-run`
validates the config, resolves its resources and prints the plan without starting Ray or training.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from raybind.cli import add_config_arguments, config_from_args

SUMMARY = "pretrain towers on Ray Train (resumes a run of the same name)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind pretrain`."""
    add_config_arguments(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="validate, resolve resources and print the plan; start nothing")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, or print the plan with --dry-run; the summary (or the plan) becomes the JSON line."""
    cfg = config_from_args(args)
    if args.dry_run:
        from raybind.train.plan import training_plan

        plan = training_plan(cfg)
        _print_plan(plan)
        return plan
    from raybind.train.trainer import pretrain

    summary = pretrain(cfg)
    _print_table(summary)
    return summary


def _print_table(summary: dict) -> None:
    """Human-readable result on stderr (stdout's last line stays the JSON summary)."""
    print(f"\nrun {summary['run_dir']}: {summary['steps']} steps, rows in/out/quarantined "
          f"{summary['rows_in']}/{summary['rows_out']}/{summary['rows_quarantined']}", file=sys.stderr)
    if summary.get("stages"):
        print("stages: " + ", ".join(f"{name} {steps} steps" for name, steps in summary["stages"].items()), file=sys.stderr)
    if summary.get("caption_views"):
        print("caption views drawn: " + ", ".join(f"{v} {n}" for v, n in summary["caption_views"].items()),
              file=sys.stderr)
    print(f"{'tower':8s} {'val R@1 before':>15s} {'after':>8s} {'chance':>8s} {'x chance':>9s}", file=sys.stderr)
    for modality, row in summary["metrics"].items():
        if "val_r1_after" in row:
            ratio = row["val_r1_after"] / row["chance"] if row.get("chance") else float("nan")
            print(f"{modality:8s} {row['val_r1_before']:15.3f} {row['val_r1_after']:8.3f} {row['chance']:8.3f} "
                  f"{ratio:9.1f}", file=sys.stderr)


def _print_plan(plan: dict) -> None:
    print(f"\nplan {plan['name']}: preset {plan['preset']}, global batch {plan['global_batch']} "
          f"({plan['batch']['per_worker']} x accum {plan['batch']['grad_accum']} x {plan['batch']['workers']} workers,"
          f" {plan['batch']['accumulation']}), {plan['negatives_per_step']} negatives per sample", file=sys.stderr)
    print(f"{'tower':8s} {'trainable':>12s} {'total':>14s} {'mask':>5s} {'lora':>5s} {'ckpt':>5s}", file=sys.stderr)
    for modality, tower in plan["towers"].items():
        print(f"{modality:8s} {tower['trainable_params']:12,d} {tower['total_params']:14,d} {tower['mask_ratio']:5.2f} "
              f"{str(tower['lora_rank']):>5s} {str(tower['grad_checkpointing']):>5s}", file=sys.stderr)
    total = plan["resources"]["total"]
    print(f"asks the cluster for {total['CPU']:g} CPUs and {total['GPU']:g} GPUs; fits: {plan['fits']}",
          file=sys.stderr)
    memory = plan["memory"]
    device = f" of this GPU's {memory['gpu_gib']:g} GiB" if "gpu_gib" in memory else ""
    print(f"memory per worker ({memory['layout']}): ~{memory['peak_gib']:g} GiB estimated peak, "
          f"{memory['with_margin_gib']:g} GiB with margin{device}", file=sys.stderr)

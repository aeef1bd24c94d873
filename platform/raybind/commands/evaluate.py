"""Evaluate a checkpoint zero-shot: retrieval, classification, emergent retrieval, embedding arithmetic.

    raybind evaluate --checkpoint runs/quickstart --data data/demo/val.jsonl
    raybind evaluate --checkpoint s3://bucket/runs/l14/checkpoint_000010 --benchmark esc50 --root /data/ESC-50
    ray job submit --working-dir . -- python jobs/evaluate.py --checkpoint ... --benchmark msrvtt --root ...

`--checkpoint` is a checkpoint folder or a run folder (its final checkpoint), local or s3://. Writes
metrics.json, report.md, plots/ and quarantine.jsonl under --output; the last stdout line is the
summary as JSON (rows_in, rows_out, rows_quarantined, report, metrics.<task>.<modality>).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from raybind.cli import add_set_argument
from raybind.errors import InputError
from raybind.evaluate import TASKS

SUMMARY = "zero-shot retrieval and classification of a checkpoint, with a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind evaluate`: a --data manifest or a --benchmark layout, not both."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run folder, local or s3://")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="manifest (parquet/jsonl/csv), local or s3://")
    source.add_argument("--benchmark", choices=["msrvtt", "esc50", "folders"], help="a benchmark layout (see --root)")
    parser.add_argument("--root", help="folder that holds the --benchmark layout")
    parser.add_argument("--task", action="append", choices=list(TASKS), help="run only these tasks (repeatable)")
    parser.add_argument("--output", default="runs/eval", help="where metrics.json, report.md and plots go")
    parser.add_argument("--templates", help="YAML: modality -> list of prompt templates with one {} (classification)")
    add_set_argument(parser, "override an inference setting, e.g. data.depth.model=..., inference.max_actors=4")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate and print the headline table on stderr; the summary becomes the JSON line."""
    from raybind.evaluate.tasks import evaluate

    summary = evaluate(args.checkpoint, args.output, data=args.data, benchmark=args.benchmark, root=args.root,
                       tasks=args.task, overrides=args.overrides, templates=_templates(args.templates))
    _print_table(summary)
    return summary


def _print_table(summary: dict) -> None:
    """The headline numbers on stderr (the report has them all)."""
    print(f"\n{summary['rows_out']} of {summary['rows_in']} rows evaluated, {summary['rows_quarantined']} "
          f"quarantined; report: {summary['report']}", file=sys.stderr)
    if summary.get("anchor") == "image":
        print("trained with the image anchor: text retrieval and classification are emergent", file=sys.stderr)
    print(f"{'task':15s} {'query -> items':24s} {'R@1/top1':>9s} {'R@5/top5':>9s} {'R@10':>6s}", file=sys.stderr)
    for task, rows in summary["metrics"].items():
        for name, m in rows.items():
            label = {"retrieval": f"text -> {name}", "anchor": f"image -> {name}"}.get(task, name)
            first, fifth = (m["top1"], m["top5"]) if "top1" in m else (m["r1"], m["r5"])
            tenth = f"{100 * m['r10']:6.1f}" if "r10" in m else f"{'':6s}"
            print(f"{task:15s} {label:24s} {100 * first:9.1f} {100 * fifth:9.1f} {tenth}", file=sys.stderr)


def _templates(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        with open(path) as handle:
            templates = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"--templates {path}: {error}") from None
    if not isinstance(templates, dict):
        raise InputError(f"--templates {path}: expected a mapping modality -> list of templates")
    return templates

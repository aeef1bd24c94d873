"""Benchmarks: ingest, masking, LoRA, Ray Train overhead, streaming memory and the driver's cost at scale,
each a ratio against a baseline measured in the same run.

    raybind bench --suite ingest,masking,lora,train_overhead,streaming_memory,scale
    raybind bench --suite gpu,gpu_train   # accelerator machine: every L/14 recipe's step; Ray Train loop vs it
    raybind bench --suite ingest --synthesis gpu --synthesizers full   # accelerator machine

Prints a Markdown table, then one JSON object (last line) with every figure and ratio. `--markdown FILE`
also writes the docs' tables (machine and date once, a table per suite); `--from-json FILE` renders them
again from a saved report without running anything:

    raybind bench --suite masking,lora --markdown docs/performance-tables.md > runs/bench.json
    raybind bench --from-json runs/bench.json --markdown docs/performance-tables.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from raybind.bench import SYNTHESIS, SYNTHESIZERS
from raybind.bench.report import markdown, table
from raybind.errors import InputError

SUITES = ("ingest", "masking", "lora", "train_overhead", "streaming_memory", "scale", "gpu", "gpu_train")
SUMMARY = "measure ingest, masking, LoRA, Ray Train overhead, scale, GPU steps as ratios to baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `raybind bench`."""
    parser.add_argument("--suite", default="ingest,masking,lora,train_overhead,streaming_memory,scale")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--markdown", metavar="FILE", help="also write the docs' Markdown tables of the report here")
    parser.add_argument("--from-json", metavar="FILE",
                        help="render a saved report (a JSON line of an earlier run, or its file) instead of running")
    parser.add_argument("--workdir", default="runs/bench")
    parser.add_argument("--preset", default="vit-b-16", help="tower preset for masking and lora")
    parser.add_argument("--batch", type=int, default=4, help="batch for masking and lora")
    parser.add_argument("--steps", type=int, default=6, help="timed steps for masking and lora")
    parser.add_argument("--clips-per-resolution", type=int, default=3)
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=40, help="ingest rows per clip file")
    parser.add_argument("--synthesis", default="cpu", choices=SYNTHESIS,
                        help="ingest: depth/thermal synthesis in the CPU loaders, or in one GPU actor")
    parser.add_argument("--synthesizers", default="tiny", choices=SYNTHESIZERS,
                        help="ingest: tiny random synthesizers, or random ones of GLPN's and MUNIT's real sizes")
    parser.add_argument("--memory-rows", type=int, default=12, help="N for streaming_memory (10N is the other run)")
    parser.add_argument("--overhead-steps", type=int, default=40, help="training steps for train_overhead")
    parser.add_argument("--scale-rows", type=int, default=20_000,
                        help="N for scale: manifests of N and 10N metadata rows")
    parser.add_argument("--scale-rows-per-file", type=int, default=2_000,
                        help="rows per Parquet file of the scale manifests (10N has 10x the files)")


def run(args: argparse.Namespace) -> dict:
    """Run the chosen suites and print the goal table unless --json; the report (machine and every figure)
    becomes the JSON line."""
    if args.from_json:
        report = _saved_report(args.from_json)
        _write_markdown(report, args.markdown)
        print(table(report["suites"]))
        return report
    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise InputError(f"--suite: unknown suite(s) {unknown}; valid: {list(SUITES)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    workers = max(1, os.cpu_count() or 1)

    from raybind.bench import machine  # imports torch: after argument parsing

    results: dict = {}
    if any(s in suites for s in ("ingest", "train_overhead", "streaming_memory", "scale")):
        from ray.data import DataContext

        from raybind.runtime import start_ray

        start_ray(num_cpus=workers, dashboard="train_overhead" in suites)  # only Ray Train needs it
        DataContext.get_current().enable_progress_bars = sys.stdout.isatty()
    for suite in suites:
        started = time.perf_counter()
        if suite == "ingest":
            from raybind.bench.ingest import ingest_suite

            results[suite] = ingest_suite(workdir, workers, args.clips_per_resolution, args.clip_seconds, args.repeats,
                                          args.synthesis, args.synthesizers)
        elif suite == "streaming_memory":
            from raybind.bench.ingest import streaming_memory_suite

            results[suite] = streaming_memory_suite(workdir, workers, args.memory_rows)
        elif suite == "scale":
            from raybind.bench.scale import scale_suite

            results[suite] = scale_suite(workdir, args.scale_rows, args.scale_rows_per_file)
        elif suite == "masking":
            from raybind.bench.model_suites import masking_suite

            results[suite] = masking_suite(args.preset, args.batch, args.steps)
        elif suite == "lora":
            from raybind.bench.model_suites import lora_suite

            results[suite] = lora_suite(args.preset, args.batch, args.steps)
        elif suite == "train_overhead":
            from raybind.bench.train_overhead import train_overhead_suite

            results[suite] = train_overhead_suite(workdir, steps=args.overhead_steps, batch=8)
        elif suite == "gpu":
            from raybind.bench.gpu_suites import gpu_suite

            results[suite] = gpu_suite(steps=max(args.steps, 3))
        elif suite == "gpu_train":
            from raybind.bench.gpu_suites import gpu_train_suite

            results[suite] = gpu_train_suite(workdir)
        results[suite]["suite_seconds"] = round(time.perf_counter() - started, 1)
    report = {"machine": machine.describe(), "date": datetime.date.today().isoformat(), "suites": results}
    if not args.json:
        print(table(results))
    _write_markdown(report, args.markdown)
    return report


def _saved_report(path: str) -> dict:
    """The last JSON line of a file that an earlier `raybind bench` printed (or the bare JSON)."""
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.startswith("{")]
        report = json.loads(lines[-1])
    except (OSError, IndexError, json.JSONDecodeError) as error:
        raise InputError(f"--from-json {path}: no benchmark report there ({error or 'no JSON line'})") from None
    if not isinstance(report, dict) or "suites" not in report:
        raise InputError(f"--from-json {path}: a JSON object without 'suites' is not a benchmark report")
    return report


def _write_markdown(report: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(markdown(report) + "\n")
        print(f"tables written to {path}", file=sys.stderr)

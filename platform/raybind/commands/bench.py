"""Benchmarks: ingest, masking, LoRA, Ray Train overhead and streaming memory, each a ratio against a
baseline measured in the same run.

    raybind bench --suite ingest,masking,lora,train_overhead,streaming_memory
    raybind bench --suite gpu,gpu_train   # accelerator machine: every L/14 recipe's step; Ray Train loop vs it
    raybind bench --suite ingest --synthesis gpu --synthesizers full   # accelerator machine

Prints a Markdown table, then one JSON object (last line) with every figure and ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from raybind.bench import GPU_RECIPE_MODALITIES, SYNTHESIS, SYNTHESIZERS
from raybind.errors import InputError

SUITES = ("ingest", "masking", "lora", "train_overhead", "streaming_memory", "gpu", "gpu_train")
GOALS = {"ingest": [("ratio_vs_dataloader", ">=", 1.25), ("ratio_vs_decode_bound", ">=", 0.85),
                    ("steady_ratio_vs_dataloader", ">=", 1.25), ("steady_ratio_vs_decode_bound", ">=", 0.85)],
         "masking": [("speedup", ">=", 1.9)], "lora": [("step_time_ratio", "<=", 0.8)],
         "train_overhead": [("ratio", ">=", 0.9)], "streaming_memory": [("ratio", "<=", 1.2)],
         "gpu": [*[(f"towers.{m}.mfu", ">=", 0.35 if m == "video" else 0.45) for m in GPU_RECIPE_MODALITIES],
                 *[(f"towers.{m}.peak_memory_gib", "<=", 80) for m in GPU_RECIPE_MODALITIES]],
         "gpu_train": [("ratio", ">=", 0.9)]}


def _flatten(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _table(results: dict) -> str:
    lines = ["| suite | figure | value | goal | met |", "| --- | --- | --- | --- | --- |"]
    for suite, result in results.items():
        if "skipped" in result:
            lines.append(f"| {suite} | skipped | {result['skipped']} | | |")
            continue
        figures = dict(_flatten(result))  # goals may name nested figures: towers.video.mfu
        for key, op, goal in GOALS.get(suite, []):
            value = figures.get(key)
            if value is None:  # e.g. MFU on a device whose peak FLOP/s is not known
                lines.append(f"| {suite} | {key} | not measured | {op} {goal} | |")
                continue
            met = value >= goal if op == ">=" else value <= goal
            lines.append(f"| {suite} | {key} | {value} | {op} {goal} | {'yes' if met else 'NO'} |")
        goal_keys = {k for k, _, _ in GOALS.get(suite, [])}
        for key, value in figures.items():
            if isinstance(value, (int, float)) and key not in goal_keys:
                lines.append(f"| {suite} | {key} | {value} | | |")
    return "\n".join(lines)


SUMMARY = "measure ingest, masking, LoRA, Ray Train overhead, GPU steps as ratios to baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="ingest,masking,lora,train_overhead,streaming_memory")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
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


def run(args: argparse.Namespace) -> dict:
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
    if any(s in suites for s in ("ingest", "train_overhead", "streaming_memory")):
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
    report = {"machine": machine.describe(), "suites": results}
    if not args.json:
        print(_table(results))
    return report

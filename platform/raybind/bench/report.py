"""The benchmark's tables: each figure against its goal, and the Markdown that docs/performance.md includes.

Kept torch- and Ray-free so `raybind bench --from-json` re-renders saved results instantly, anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from raybind.bench import GPU_RECIPE_MODALITIES

# suite -> (figure, comparison, goal): what each suite claims, as ratios to a baseline of the same run
GOALS: dict[str, list[tuple[str, str, float]]] = {
    "ingest": [("ratio_vs_dataloader", ">=", 1.25), ("ratio_vs_decode_bound", ">=", 0.85),
               ("steady_ratio_vs_dataloader", ">=", 1.25), ("steady_ratio_vs_decode_bound", ">=", 0.85)],
    "masking": [("speedup", ">=", 1.9)], "lora": [("step_time_ratio", "<=", 0.8)],
    "train_overhead": [("ratio", ">=", 0.9)], "streaming_memory": [("ratio", "<=", 1.2)],
    "scale": [("driver_rss_ratio", "<=", 1.1), ("object_refs_ratio", "<=", 1.1), ("first_batch_ratio", "<=", 1.3)],
    "gpu": [*[(f"towers.{m}.mfu", ">=", 0.35 if m == "video" else 0.45) for m in GPU_RECIPE_MODALITIES],
            *[(f"towers.{m}.peak_memory_gib", "<=", 80) for m in GPU_RECIPE_MODALITIES]],
    "gpu_train": [("ratio", ">=", 0.9)],
}


def flatten(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested figures as dotted names (`towers.video.mfu`), the way goals name them."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _rows(suite: str, result: dict[str, Any]) -> Iterator[tuple[str, Any, str, str]]:
    """(figure, value, goal, met) for a suite: its goals first, then every other number it measured."""
    if "skipped" in result:
        yield "skipped", result["skipped"], "", ""
        return
    figures = dict(flatten(result))
    for key, op, goal in GOALS.get(suite, []):
        value = figures.get(key)
        if value is None:  # e.g. MFU on a device whose peak FLOP/s is not known
            yield key, "not measured", f"{op} {goal}", ""
            continue
        met = value >= goal if op == ">=" else value <= goal
        yield key, value, f"{op} {goal}", "yes" if met else "NO"
    goal_keys = {k for k, _, _ in GOALS.get(suite, [])}
    for key, value in figures.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in goal_keys:
            yield key, value, "", ""


def _line(*cells: Any) -> str:
    return "|" + "|".join(f" {cell} " if cell != "" else " " for cell in cells) + "|"


def table(results: dict[str, dict[str, Any]]) -> str:
    """One Markdown table of every suite's figures (the console's view of a run)."""
    lines = ["| suite | figure | value | goal | met |", "| --- | --- | --- | --- | --- |"]
    for suite, result in results.items():
        lines += [_line(suite, *row) for row in _rows(suite, result)]
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The docs' tables for a whole report: the machine and date once, then one table per suite."""
    machine = report.get("machine", {})
    gpu = machine.get("gpu") or "no GPU"
    lines = ["<!-- written by `raybind bench --markdown`; edit the benchmark, not this file -->",
             f"Measured {report.get('date', 'on an unrecorded date')} on {machine.get('cpu', '?')} "
             f"({machine.get('logical_cpus', '?')} logical CPUs, {machine.get('memory_gib', '?')} GiB, {gpu}; "
             f"torch {machine.get('torch', '?')}, Ray {machine.get('ray', '?')}) by "
             f"`raybind bench --suite {','.join(report.get('suites', {}))}`.", ""]
    for suite, result in report.get("suites", {}).items():
        lines += [f"#### {suite}", "", "| figure | value | goal | met |", "| --- | --- | --- | --- |"]
        lines += [_line(*row) for row in _rows(suite, result)]
        lines.append("")
    return "\n".join(lines)

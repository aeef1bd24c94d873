"""The evaluation report: a Markdown page of tables (the metric names of training's summary: R@1, R@5,
R@10) with PNG plots beside it: recall at k per task, a confusion matrix per classified modality, and a
sample of a text x modality similarity matrix."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from raybind import storage

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _retrieval_rows(metrics: dict[str, dict[str, Any]], first: str) -> list[str]:
    lines = [f"| {first} | R@1 | R@5 | R@10 | MdR | MnR | queries |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {_pct(m['r1'])} | {_pct(m['r5'])} | {_pct(m['r10'])} | {m['median_rank']:.0f} | "
                     f"{m['mean_rank']:.1f} | {m['queries']} |")
    return lines


def markdown(summary: dict[str, Any], images: list[str]) -> str:
    """The report page: the run's counts, a table per task that ran (recall in percent), links to the plots."""
    metrics = summary["metrics"]
    lines = [f"# Evaluation of {summary['checkpoint']}", "",
             f"Data: {summary['benchmark'] or summary['data']}; rows in / evaluated / quarantined: "
             f"{summary['rows_in']} / {summary['rows_out']} / {summary['rows_quarantined']}. "
             f"Recall values in percent.", ""]
    emergent = summary.get("anchor") == "image"
    if emergent:
        lines += ["Trained with the **image anchor** (ImageBind's recipe): every tower was bound to a frozen image "
                  "tower, never to text, so text retrieval and zero-shot classification below are *emergent*.", ""]
    if "anchor" in metrics:
        lines += ["## Image-anchor retrieval (the pairs it trained on)", "", "Anchor frame to X:", ""]
        lines += _retrieval_rows(metrics["anchor"], "image ->") + [""]
    if "retrieval" in metrics:
        lines += [f"## Zero-shot retrieval{' (emergent)' if emergent else ''}", "", "Text to X:", ""]
        lines += _retrieval_rows({m: v for m, v in metrics["retrieval"].items()}, "text ->")
        lines += ["", "X to text:", ""]
        lines += _retrieval_rows({m: v["x2t"] for m, v in metrics["retrieval"].items()}, "-> text")
        lines.append("")
    if "classification" in metrics:
        lines += [f"## Zero-shot classification{' (emergent)' if emergent else ''}", "",
                  "| modality | top-1 | top-5 | classes | samples | folds |",
                  "|---|---:|---:|---:|---:|---|"]
        for modality, m in metrics["classification"].items():
            folds = ", ".join(f"{k}: {_pct(v['top1'])}" for k, v in m.get("folds", {}).items()) or "-"
            lines.append(f"| {modality} | {_pct(m['top1'])} | {_pct(m['top5'])} | {m['classes']} | {m['samples']} | "
                         f"{folds} |")
        lines.append("")
    if "emergent" in metrics:
        lines += ["## Emergent retrieval (modalities never trained together)", ""]
        lines += _retrieval_rows(metrics["emergent"], "query -> items") + [""]
    if "arithmetic" in metrics:
        lines += ["## Embedding arithmetic", "", "| query -> items | R@1 | R@5 | best single R@1 |", "|---|---:|---:|---:|"]
        for name, m in metrics["arithmetic"].items():
            lines.append(f"| {name} | {_pct(m['r1'])} | {_pct(m['r5'])} | {_pct(m['best_single_r1'])} |")
        lines.append("")
    if images:
        lines += ["## Plots", ""] + [f"![{name}]({PLOTS_DIR}/{name})" for name in images] + [""]
    return "\n".join(lines)


def _save(figure, output: str, name: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    storage.write_bytes(storage.join(output, PLOTS_DIR, name), buffer.getvalue())
    return name


def plot(output: str, plots: dict[str, Any]) -> list[str]:
    """Write recall-at-k curves, a confusion matrix per classified modality and one similarity sample as PNGs
    under `<output>/plots/`; returns their file names. Agg backend: no display needed on cluster nodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = []
    if plots.get("recall"):
        figure, axis = plt.subplots(figsize=(6, 4))
        for name, curve in plots["recall"].items():
            axis.plot(range(1, len(curve) + 1), [100 * v for v in curve], marker="o", label=name)
        axis.set(xlabel="k", ylabel="recall at k (%)", title="Recall at k", ylim=(0, 100))
        axis.legend(fontsize=7)
        images.append(_save(figure, output, "recall_at_k.png"))
        plt.close(figure)
    for modality, (matrix, classes) in plots.get("confusion", {}).items():
        figure, axis = plt.subplots(figsize=(5, 5))
        axis.imshow(matrix, cmap="Blues")
        if len(classes) <= 20:
            axis.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
            axis.set_yticks(range(len(classes)), classes, fontsize=6)
        axis.set(xlabel="predicted", ylabel="true", title=f"{modality}: confusion")
        images.append(_save(figure, output, f"confusion_{modality}.png"))
        plt.close(figure)
    for name, matrix in list(plots.get("similarity", {}).items())[:1]:
        figure, axis = plt.subplots(figsize=(5, 4))
        shown = axis.imshow(np.asarray(matrix), cmap="viridis")
        figure.colorbar(shown)
        axis.set(xlabel="items", ylabel="text queries", title=f"similarity sample: {name}")
        images.append(_save(figure, output, "similarity_sample.png"))
        plt.close(figure)
    return images


def write_report(output: str, summary: dict[str, Any], plots: dict[str, Any]) -> str:
    """Write plots and `report.md` under `output`; returns the report's URI."""
    uri = storage.join(output, REPORT_FILE)
    storage.write_text(uri, markdown(summary, plot(output, plots)))
    return storage.redact(uri)

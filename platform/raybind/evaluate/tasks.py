"""Zero-shot evaluation of a checkpoint, the way papers measure it, over manifests of any size.

Rows stream through `raybind.evaluate.inference` (the training decode stages, then model actors); the driver
holds only ids, labels and embeddings, and scores the tasks (each per modality present):

- retrieval: text-to-X (the papers' number) and X-to-text R@1/5/10, median and mean rank;
- classification: top-1/top-5 against class embeddings from prompt templates (`raybind.evaluate.prompts`),
  per fold when the manifest has folds;
- emergent: retrieval between two non-language modalities that never trained together (X -> Y);
- arithmetic: two modalities' embeddings summed and renormalised retrieve the row's third (ImageBind's
  composition), beside the better single modality as its baseline;
- anchor (image-anchored checkpoints): image-to-X retrieval, each row's anchor frame through the frozen
  image anchor querying the modality it was trained to meet. Retrieval and classification then go through
  the language tower no tower trained against: they are emergent, and the report says so.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from encoders.config import ModelConfig
from encoders.modalities import MODALITIES
from raybind import storage
from raybind.config import saved_media_settings
from raybind.data import quarantine
from raybind.data.batch_format import (
    ANCHOR,
    ANCHOR_EMBEDDING,
    ANCHOR_SOURCES,
    FOLD,
    ID,
    LABEL,
    TEXT,
    TEXT_EMBEDDING,
    embedding_column,
)
from raybind.data.pipeline import check_counts, check_synthesizer_paths, manifest_rows
from raybind.data.sources import manifest_files
from raybind.errors import InputError
from raybind.evaluate import TASKS
from raybind.evaluate.datasets import build
from raybind.evaluate.embed import Embedder, checkpoint_metadata, read_checkpoint, resolve_checkpoint
from raybind.evaluate.inference import collect, embedding_stream
from raybind.evaluate.prompts import class_embeddings, templates_for
from raybind.evaluate.report import write_report
from raybind.evaluate.settings import available_modalities, checkpoint_inference_config
from raybind.ranking import classification_scores, confusion_matrix, recall_curve, retrieval_scores
from raybind.runtime import init_ray

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


Embeddings = dict[str, torch.Tensor]   # modality (and "text") -> [rows, D], one row order for all


def embeddings_of(columns: dict[str, np.ndarray], modalities: Sequence[str]) -> Embeddings:
    """The collected embedding columns as tensors, converted once for every task."""
    names = {m: embedding_column(m) for m in modalities}
    if TEXT_EMBEDDING in columns:
        names["text"] = TEXT_EMBEDDING
    if ANCHOR_EMBEDDING in columns:
        names[ANCHOR] = ANCHOR_EMBEDDING
    return {m: torch.from_numpy(np.ascontiguousarray(columns[name], dtype=np.float32)) for m, name in names.items()}


def retrieval(embeddings: Embeddings, modalities: Sequence[str], plots: dict, query: str = "text") -> dict[str, Any]:
    """Query-to-X and X-to-query retrieval per modality (row i's caption, or anchor frame, matches row i's
    media); adds recall curves and a 16 x 16 similarity sample to `plots`."""
    out = {}
    for modality in modalities:
        similarity = embeddings[query] @ embeddings[modality].T
        out[modality] = {**retrieval_scores(similarity), "x2t": retrieval_scores(similarity.T)}
        plots.setdefault("recall", {})[f"{query}->{modality}"] = recall_curve(similarity)
        plots.setdefault("similarity", {}).setdefault(f"{query} x {modality}", similarity[:16, :16].numpy())
    return out


def classification(embeddings: Embeddings, columns: dict[str, np.ndarray], modalities: Sequence[str],
                   classes: Sequence[str], embed_text: Callable[[list[str]], torch.Tensor],
                   templates: Mapping[str, Sequence[str]] | None, plots: dict) -> dict[str, Any]:
    """Zero-shot top-1/top-5 per modality against class embeddings from prompt templates, per fold when
    the rows have folds; labels must be among `classes`. Adds a confusion matrix per modality to `plots`."""
    labels = [str(v) for v in columns[LABEL]]
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise InputError(f"classification: labels {unknown[:5]} are not among the classes {list(classes)[:10]}")
    targets = torch.tensor([index[label] for label in labels])
    folds = [str(v) for v in columns[FOLD]] if FOLD in columns else None
    out = {}
    for modality in modalities:
        logits = embeddings[modality] @ class_embeddings(classes, templates_for(modality, templates), embed_text).T
        scores = classification_scores(logits, targets)
        if folds is not None:
            scores["folds"] = {}
            for fold in sorted(set(folds), key=lambda f: (len(f), f)):
                rows = torch.tensor([f == fold for f in folds])
                scores["folds"][fold] = classification_scores(logits[rows], targets[rows])
        out[modality] = scores
        plots.setdefault("confusion", {})[modality] = (confusion_matrix(logits, targets).numpy(), list(classes))
    return out


def emergent(embeddings: Embeddings, modalities: Sequence[str], plots: dict) -> dict[str, Any]:
    """Retrieval for every ordered pair of non-language modalities (X -> Y, row i matches row i): pairs that
    never trained together, aligned only through the text space."""
    out = {}
    for a, b in itertools.permutations(modalities, 2):
        similarity = embeddings[a] @ embeddings[b].T
        out[f"{a}->{b}"] = retrieval_scores(similarity)
        plots.setdefault("recall", {})[f"{a}->{b}"] = recall_curve(similarity)
    return out


def arithmetic(embeddings: Embeddings, modalities: Sequence[str], plots: dict) -> dict[str, Any]:
    """Two modalities' embeddings summed and renormalised retrieve the third, reported beside the better
    single modality's R@1 (the baseline a composed query has to beat)."""
    # R@1 of each single modality against each target: the baseline every composed query is read against
    single = {(a, c): retrieval_scores(embeddings[a] @ embeddings[c].T)["r1"]
              for a, c in itertools.permutations(modalities, 2)}
    out = {}
    for target in modalities:
        for a, b in itertools.combinations([m for m in modalities if m != target], 2):
            similarity = F.normalize(embeddings[a] + embeddings[b], dim=-1) @ embeddings[target].T
            out[f"{a}+{b}->{target}"] = {**retrieval_scores(similarity),
                                         "best_single_r1": max(single[(a, target)], single[(b, target)])}
            plots.setdefault("recall", {})[f"{a}+{b}->{target}"] = recall_curve(similarity)
    return out


def applicable_tasks(columns: Sequence[str], modalities: Sequence[str], anchor: str = "language") -> dict[str, str | None]:
    """Each task -> None when it can run on this manifest and model (its `anchor`), else why not."""
    frames = set(ANCHOR_SOURCES) & set(columns)
    return {
        "anchor": "the checkpoint binds to language (anchor tasks need model.anchor: image)" if anchor != "image"
        else None if frames else f"the manifest has none of {list(ANCHOR_SOURCES)} to take anchor frames from",
        "retrieval": None if TEXT in columns else "the manifest has no 'text' column",
        "classification": None if LABEL in columns else "the manifest has no 'label' column",
        "emergent": None if len(modalities) >= 2 else f"needs two non-language modalities per row, has {list(modalities)}",
        "arithmetic": None if len(modalities) >= 3 else f"needs three non-language modalities per row, has {list(modalities)}",
    }


def choose_tasks(requested: Sequence[str] | None, defaults: Sequence[str] | None,
                 why_not: dict[str, str | None]) -> list[str]:
    """The requested tasks (each must apply, else `InputError` says why), or else those of `defaults` (all
    tasks when None) that apply to this manifest."""
    unknown = [t for t in requested or () if t not in TASKS]
    if unknown:
        raise InputError(f"unknown task(s) {unknown}; valid: {list(TASKS)}")
    if requested:
        blocked = {t: why_not[t] for t in requested if why_not[t]}
        if blocked:
            raise InputError("cannot run " + "; ".join(f"{t}: {why}" for t, why in blocked.items()))
        return list(requested)
    tasks = [t for t in (defaults or TASKS) if why_not[t] is None]
    if not tasks:
        raise InputError("no task applies to this manifest: " + "; ".join(f"{t}: {w}" for t, w in why_not.items()))
    return tasks


def _progress(batches, total: int, out=sys.stderr):
    """Pass batches through, printing rows embedded at most every 5 seconds (long evaluations show progress)."""
    done, last = 0, time.perf_counter()
    for batch in batches:
        done += len(batch[ID])
        if time.perf_counter() - last > 5:
            print(f"embedded {done}/{total} rows", file=out, flush=True)
            last = time.perf_counter()
        yield batch


def evaluate(checkpoint: str, output: str, data: str | None = None, benchmark: str | None = None,
             root: str | None = None, tasks: Sequence[str] | None = None, overrides: Sequence[str] = (),
             templates: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a manifest or a benchmark layout; writes `metrics.json`, `report.md`,
    plots and `quarantine.jsonl` under `output` and returns the summary (the job's last stdout line)."""
    if (data is None) == (benchmark is None):
        raise InputError("give either a manifest (--data) or a benchmark (--benchmark with --root)")
    started = time.perf_counter()
    checkpoint = resolve_checkpoint(checkpoint)
    ckpt_meta = checkpoint_metadata(checkpoint)
    output = storage.durable_output(output, "--output")
    classes, defaults, table, source = None, None, None, None
    if benchmark is not None:
        if root is None:
            raise InputError("--benchmark needs --root, the folder that holds the benchmark")
        built = build(benchmark, root)
        table, classes, defaults = built.table, built.classes, built.tasks
        manifest_uri = storage.join(output, "manifest.parquet")
        fs, path = storage.resolve(manifest_uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path, filesystem=fs)   # the exact rows evaluated, for the record
        names = table.column_names
    else:   # a manifest of any size or WebDataset shards: read where they are, like training's
        manifest_uri = data
        source = manifest_files(data)
        names = source.columns()
    media_columns = [c for c in MODALITIES if c in names]
    towers = [t["modality"] for t in ckpt_meta["model"]["towers"]]
    modalities = available_modalities(towers, media_columns, saved_media_settings(ckpt_meta), synthesize=True)
    if not modalities:
        raise InputError(f"the manifest's media columns {media_columns} feed none of the checkpoint's towers {towers}")
    anchor = ModelConfig.from_dict(ckpt_meta["model"]).anchor
    chosen = choose_tasks(tasks, defaults, applicable_tasks(names, modalities, anchor))
    cfg = checkpoint_inference_config(ckpt_meta, modalities, overrides, media_columns=media_columns)
    check_synthesizer_paths(cfg)
    init_ray(cfg)
    quarantine_uri = storage.join(output, quarantine.QUARANTINE_DIR)
    storage.delete_dir(quarantine_uri)  # a re-run counts afresh
    if source is not None:
        found = manifest_rows(cfg, source, [], shuffle=False, required=(ID,))
        rows, rows_in, manifest_dir = found.dataset, found.rows_in, source.base_dir
    else:
        rows, rows_in, manifest_dir = table, table.num_rows, None
    model, _ = read_checkpoint(checkpoint)
    text_embedder = Embedder(model, None, torch.device("cpu"))  # class prompts on the driver
    ds = embedding_stream(cfg, model.config, checkpoint, rows, manifest_uri, quarantine_uri, modalities,
                          with_text="retrieval" in chosen, columns=names, manifest_dir=manifest_dir,
                          with_anchor="anchor" in chosen)
    print(f"evaluating {rows_in} rows ({', '.join(modalities)}): {', '.join(chosen)}", file=sys.stderr)
    columns = collect(_progress(ds.iter_batches(batch_size=None, batch_format="numpy"), rows_in))
    bad = quarantine.collect(quarantine_uri, storage.join(output, quarantine.QUARANTINE_FILE))
    counts = {"rows_in": rows_in, "rows_out": int(len(columns.get(ID, []))), "rows_quarantined": len(bad)}
    check_counts(counts)
    if counts["rows_out"] == 0:
        raise InputError(f"every row was quarantined (see {storage.join(output, quarantine.QUARANTINE_FILE)})")
    if classes is None and LABEL in names:   # the labels of the rows evaluated ("": a row without one)
        classes = tuple(sorted({str(v) for v in columns.get(LABEL, ()) if str(v)}))
    embeddings = embeddings_of(columns, modalities)
    plots: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for task in chosen:
        if task == "retrieval":
            metrics[task] = retrieval(embeddings, modalities, plots)
        elif task == "classification":
            metrics[task] = classification(embeddings, columns, modalities, classes, text_embedder.embed_text,
                                           templates, plots)
        elif task == "anchor":
            metrics[task] = retrieval(embeddings, modalities, plots, query=ANCHOR)
        elif task == "emergent":
            metrics[task] = emergent(embeddings, modalities, plots)
        else:
            metrics[task] = arithmetic(embeddings, modalities, plots)
    summary = {**counts, "checkpoint": storage.redact(checkpoint), "data": storage.redact(manifest_uri),
               "benchmark": benchmark, "modalities": modalities, "anchor": anchor, "tasks": chosen, "metrics": metrics,
               "output": storage.redact(output), "wall_s": round(time.perf_counter() - started, 1)}
    summary["report"] = write_report(output, summary, plots)
    storage.write_text(storage.join(output, METRICS_FILE), json.dumps(summary, indent=2, sort_keys=True))
    return summary

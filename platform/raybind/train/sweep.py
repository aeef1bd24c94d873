"""Ray Tune sweeps over any training setting (mask ratio, temperature, learning rate, ...).

One trial = one Ray Train run: a Tune function trainable calls `raybind.train.trainer.pretrain` with the
trial's config and `TuneReportCallback`, so every trial is exactly the pretrain job (its own run folder,
checkpoints, summary) and reports its metrics to Tune at every log step; ASHA stops weak trials early on
the validation metric. Data is prepared once per sweep: a manifest is built into Parquet shards
(decode, synthesis, tokenization) in the sweep folder, and every trial streams those shards.

    <storage>/<sweep name>/            Tune's experiment folder
        <trial id>/                    Tune's per-trial files: TensorBoard events, progress.csv, params
        data/{train,val}/              the built datasets every trial reads
        runs/<trial id>/               each trial's Ray Train run (checkpoints, summary.json)
        trials.csv, trials.md          one row per trial
        tradeoff.png                   val R@1 and samples/s over mask ratio, coloured by temperature
        best.yaml                      the best trial's full config (jobs/pretrain.py --config best.yaml)
        sweep.json                     the job summary
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
import sys
from typing import Any

import yaml
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from raybind import metrics as M
from raybind import storage
from raybind.config import ConfigError, RayBindConfig, SearchDomain, set_dotted, validate
from raybind.data.build import build_dataset
from raybind.data.pipeline import is_built_dataset
from raybind.runtime import init_ray
from raybind.train.trainer import check_storage, ensure_demo_data, pretrain

log = logging.getLogger(__name__)

RUNS, DATA = "runs", "data"


def _domain(spec: SearchDomain):
    if spec.grid is not None:
        return tune.grid_search(list(spec.grid))
    if spec.choice is not None:
        return tune.choice(list(spec.choice))
    if spec.uniform is not None:
        return tune.uniform(*spec.uniform)
    return tune.loguniform(*spec.loguniform)


def trial_tree(base: dict[str, Any], params: dict[str, Any], name: str, runs_uri: str) -> dict[str, Any]:
    """The full config tree of one trial: the sweep's config, its parameters applied, no `sweep` section."""
    tree = copy.deepcopy(base)
    tree.pop("sweep", None)
    for path, value in params.items():
        set_dotted(tree, path, value)
    tree["name"], tree["storage"] = name, runs_uri
    return tree


def _run_trial(params: dict[str, Any], base: dict[str, Any], runs_uri: str) -> None:
    """The Tune function trainable: one Ray Train run of this trial's config, metrics forwarded to Tune."""
    cfg = validate(trial_tree(base, params, tune.get_context().get_trial_id(), runs_uri))
    pretrain(cfg, callbacks=[TuneReportCallback()], progress=False)  # the sweep prints one line per trial


def _built(cfg: RayBindConfig, split_uri: str | None, target: str) -> str | None:
    """`split_uri` as a built dataset in the sweep folder (built now unless it already is one)."""
    if split_uri is None or is_built_dataset(split_uri):
        return split_uri
    if not is_built_dataset(target):
        log.info("building %s into %s once for every trial", storage.redact(split_uri), storage.redact(target))
        build_dataset(cfg, split_uri, target)
    return target


def prepare_sweep_data(cfg: RayBindConfig, sweep_uri: str) -> dict[str, Any]:
    """Demo data, then every manifest built once into `<sweep>/data/`; returns the trials' base tree."""
    ensure_demo_data(cfg)
    tree = cfg.model_dump(mode="json")
    tree["data"]["train"] = _built(cfg, cfg.data.train, storage.join(sweep_uri, DATA, "train"))
    tree["data"]["val"] = _built(cfg, cfg.data.val, storage.join(sweep_uri, DATA, "val"))
    return tree


class _Progress(tune.Callback):
    """One readable line per finished trial on stderr (Tune's own status tables stay off)."""

    def __init__(self, metric: str, steps: int) -> None:
        self.metric, self.steps = metric, steps

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        early = (result.get(M.STEP) or 0) < self.steps
        print(f"trial {trial.trial_id} {'stopped early' if early else 'finished'} at step {result.get(M.STEP)}: "
              f"{self.metric} {result.get(self.metric)}  {trial.config}", file=sys.stderr, flush=True)


def _trial_folder(trial) -> str:
    """`<sweep>/<trial id>/` holds Tune's files for the trial (TensorBoard events), beside `runs/<trial id>/`."""
    return trial.trial_id


def _tuner(cfg: RayBindConfig, sweep_uri: str, base: dict[str, Any], stop=None) -> tune.Tuner:
    settings = cfg.sweep
    fs, path = storage.resolve(sweep_uri)
    parent, name = path.rsplit("/", 1)
    trainable = tune.with_resources(
        tune.with_parameters(_run_trial, base=base, runs_uri=storage.join(sweep_uri, RUNS)),
        {"CPU": 0.01})  # the trial's driver only waits (Tune refuses 0); its Ray Train workers hold the resources
    remote = fs if storage.is_remote(sweep_uri) else None
    if tune.Tuner.can_restore(path, storage_filesystem=remote):
        log.info("resuming sweep %s: finished trials are kept, unfinished ones resume", storage.redact(sweep_uri))
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=remote)
    scheduler = FIFOScheduler()
    if settings.scheduler == "asha":
        grace = settings.grace_period or cfg.train.val_every or cfg.train.log_every
        scheduler = ASHAScheduler(time_attr=M.STEP, max_t=cfg.train.steps, grace_period=grace,
                                  reduction_factor=settings.reduction_factor)
    return tune.Tuner(
        trainable, param_space={p: _domain(d) for p, d in settings.space.items()},
        tune_config=tune.TuneConfig(metric=settings.metric, mode=settings.mode, scheduler=scheduler,
                                    num_samples=settings.num_samples,
                                    max_concurrent_trials=settings.max_concurrent_trials,
                                    trial_dirname_creator=_trial_folder),
        run_config=tune.RunConfig(name=name, storage_path=parent, storage_filesystem=remote, stop=stop, verbose=0,
                                  callbacks=[_Progress(settings.metric, cfg.train.steps)]))


def _trial_row(cfg: RayBindConfig, result) -> dict[str, Any]:
    history = result.metrics_dataframe
    last = dict(result.metrics or {})
    row: dict[str, Any] = {"trial": last.get("trial_id"), **{p: result.config.get(p) for p in cfg.sweep.space}}
    for modality in cfg.data.modalities:
        key = M.tower_key(M.VAL_R1, modality)
        row[f"final {key}"] = last.get(key)
        row[f"best {key}"] = float(history[key].max()) if history is not None and key in history else None
    row[cfg.sweep.metric] = last.get(cfg.sweep.metric)
    row[M.SAMPLES_PER_S] = last.get(M.SAMPLES_PER_S)
    row[M.STEP] = last.get(M.STEP)
    row["status"] = "error" if result.error else "terminated"
    row["stopped_early"] = not result.error and (last.get(M.STEP) or 0) < cfg.train.steps
    return row


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(r[k]) for k in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _param(cfg: RayBindConfig, word: str) -> str | None:
    return next((p for p in cfg.sweep.space if p.rsplit(".", 1)[-1].startswith(word)), None)


def tradeoff_plot(cfg: RayBindConfig, rows: list[dict[str, Any]]) -> bytes:
    """PNG: the sweep metric and samples/s over the mask ratio (or the first parameter), coloured by temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_param = _param(cfg, "mask_ratio") or next(iter(cfg.sweep.space))
    colour_param = _param(cfg, "temperature")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    colours = [r[colour_param] if colour_param else 0.0 for r in rows]
    for axis, key, title in ((axes[0], cfg.sweep.metric, f"{cfg.sweep.metric} (final)"),
                             (axes[1], M.SAMPLES_PER_S, "training samples/s")):
        xs = [_number(r[x_param]) for r in rows]
        ys = [_number(r[key]) for r in rows]
        points = axis.scatter(xs, ys, c=colours, cmap="viridis", s=60, edgecolors="black")
        for r, x, y in zip(rows, xs, ys):
            if r["stopped_early"]:
                axis.annotate("stopped", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        axis.set_xlabel(x_param)
        axis.set_title(title)
        axis.grid(alpha=0.3)
    if colour_param:
        fig.colorbar(points, ax=axes, label=colour_param)
    fig.suptitle(f"sweep {cfg.name}: quality vs speed")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def sweep(cfg: RayBindConfig, stop=None) -> dict[str, Any]:
    """Run (or resume) the sweep `cfg.sweep` describes and return its summary (also `sweep.json`).

    `stop`: an extra Tune stopper (a `tune.Stopper`, or a dict of metric thresholds) for every trial.
    """
    if cfg.sweep is None:
        raise ConfigError(f"config {cfg.name!r} has no `sweep:` section: nothing to search")
    sweep_uri = storage.join(storage.durable_output(cfg.storage, "storage"), cfg.name)
    check_storage(sweep_uri)
    init_ray(cfg)
    base = prepare_sweep_data(cfg, sweep_uri)
    if not cfg.ray.verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own status boxes and tables: off unless --verbose
    grid = _tuner(cfg, sweep_uri, base, stop).fit()
    results = [grid[i] for i in range(len(grid))]
    rows = sorted((_trial_row(cfg, r) for r in results), key=lambda r: str(r["trial"]))
    if not rows:
        raise RuntimeError(f"sweep {cfg.name} produced no trials")
    sign = 1 if cfg.sweep.mode == "max" else -1
    scored = [r for r in rows if isinstance(r[cfg.sweep.metric], (int, float)) and not math.isnan(r[cfg.sweep.metric])]
    best = max(scored, key=lambda r: sign * r[cfg.sweep.metric]) if scored else None
    outputs = {name: storage.join(sweep_uri, name) for name in ("trials.csv", "trials.md", "tradeoff.png",
                                                                 "best.yaml", "sweep.json")}
    storage.write_text(outputs["trials.csv"], _csv(rows))
    storage.write_text(outputs["trials.md"], _markdown(rows))
    storage.write_bytes(outputs["tradeoff.png"], tradeoff_plot(cfg, rows))
    summary: dict[str, Any] = {
        "sweep_dir": storage.redact(sweep_uri), "trials": len(rows),
        "stopped_early": sum(bool(r["stopped_early"]) for r in rows),
        "errored": sum(r["status"] == "error" for r in rows),
        "table": storage.redact(outputs["trials.md"]), "table_csv": storage.redact(outputs["trials.csv"]),
        "plot": storage.redact(outputs["tradeoff.png"]), "tensorboard": storage.redact(sweep_uri),
        "best": None, "best_config": None,
    }
    if best is not None:
        params = {p: best[p] for p in cfg.sweep.space}
        tree = trial_tree(cfg.model_dump(mode="json"), params, f"{cfg.name}-best", cfg.storage)
        validate(tree)  # what jobs/pretrain.py will accept
        storage.write_text(outputs["best.yaml"], f"# best trial {best['trial']} of sweep {cfg.name}\n"
                           + yaml.safe_dump(tree, sort_keys=False))
        summary["best"] = {"trial": best["trial"], "params": params, "metric": cfg.sweep.metric,
                           "value": best[cfg.sweep.metric]}
        summary["best_config"] = storage.redact(outputs["best.yaml"])
    storage.write_text(outputs["sweep.json"], json.dumps({**summary, "rows": rows}, indent=2, default=str))
    return summary

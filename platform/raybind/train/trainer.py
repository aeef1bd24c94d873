"""Driver side of pretraining, in three steps that pretraining, sweeps and cluster jobs share:

- `prepare(cfg)`: storage probe, demo data, Ray, the resource check, the lazy train/val streams;
- `fit(prepared, cfg)`: one Ray Train run (`TorchTrainer`) over those streams;
- `summarize(prepared, cfg, result)`: counts that account for every row, metrics per tower, `summary.json`.

`pretrain(cfg)` is the three in a row.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import ray
import ray.train
from ray.data import Dataset
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback

from encoders.checkpoint import METADATA_FILE, init_problem
from encoders.config import ModelConfig
from raybind import metrics as M
from raybind import storage
from raybind.config import ConfigError, RayBindConfig
from raybind.console import ProgressPrinter
from raybind.data import quarantine
from raybind.data.batch_format import training_columns
from raybind.data.demo_data import generate
from raybind.data.demo_synthesizers import fit_demo_synthesizers
from raybind.data.pipeline import Stream, build_stream, check_counts, decoded_split_mb, synthesis_settings
from raybind.errors import ResourceError, StorageError
from raybind.evaluate.embed import checkpoint_metadata
from raybind.runtime import init_ray
from raybind.train.loop import train_loop_per_worker
from raybind.train.plan import check_fits, is_local, worker_resources
from raybind.train.resume import RestOfPass, latest_progress, rest_of_pass
from raybind.train.stages import steps_per_stage

log = logging.getLogger(__name__)


TRAIN_SPLITS = ("train", "train_rest")   # split across workers: the passes, and the rest of an interrupted one


class UnevenSplitDataConfig(DataConfig):
    """Split the training stream across workers without dropping rows (Ray's default `equal=True` may drop
    up to world_size - 1 rows, which would break the row accounting). The loop keeps ranks in step itself."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        """Ray Train's hook: each worker gets its share of `train` and `train_rest` (split unevenly, no row
        dropped) and an iterator over the whole of every other dataset (validation)."""
        output = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            if name in TRAIN_SPLITS:
                for i, split in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=worker_node_ids)):
                    output[i][name] = split
            else:
                for i in range(world_size):
                    output[i][name] = ds.iterator()
        return output


def ensure_demo_data(cfg: RayBindConfig) -> None:
    """Generate the demo dataset where the config asks for it and the manifests are missing; with
    `data.demo.synthesizers: true` also fit its depth/thermal synthesizers when they are missing."""
    if cfg.data.demo is None or storage.is_remote(cfg.data.train):
        return
    folder = storage.parent(cfg.data.train)
    seed = int(cfg.data.demo.get("seed", 0))
    if not (storage.exists(cfg.data.train) and (cfg.data.val is None or storage.exists(cfg.data.val))):
        log.info("demo data missing: generating it in %s", folder)
        generate(folder, train_clips=int(cfg.data.demo.get("train", 256)),
                 val_clips=int(cfg.data.demo.get("val", 64)), seed=seed)
    wanted = [settings.model for settings in synthesis_settings(cfg).values() if settings.model]
    if cfg.data.demo.get("synthesizers") and not all(storage.exists(p) for p in wanted):
        log.info("fitting the demo's depth and thermal synthesizers to its ground truth (once)")
        fit_demo_synthesizers(folder, seed)


def check_init_from(cfg: RayBindConfig) -> None:
    """`model.init_from` names a checkpoint this model can start from, and `model.anchor_from` a local one:
    checked on the driver before anything starts (the workers load them), so a wrong path or another
    architecture is one line and exit 2."""
    anchor_from = cfg.model.anchor_from   # a local checkpoint's absolute path once validated
    if anchor_from is not None and not os.path.isfile(os.path.join(anchor_from, METADATA_FILE)):
        raise ConfigError(f"model.anchor_from: {anchor_from} is neither a checkpoint folder nor a run folder with "
                          "one on this machine")
    if not cfg.model.init_from:
        return
    saved = ModelConfig.from_dict(checkpoint_metadata(cfg.model.init_from)["model"])
    problem = init_problem(saved, cfg.encoder_config())
    if problem is not None:
        raise ConfigError(f"model.init_from: cannot start from {storage.redact(cfg.model.init_from)}: {problem}")


def check_storage(run_uri: str) -> None:
    """Write and delete a probe so an unreachable or read-only storage fails now, not after training."""
    probe = storage.join(run_uri, ".raybind-probe")
    try:
        storage.write_text(probe, "ok")
        fs, path = storage.resolve(probe)
        fs.delete_file(path)
    except OSError as error:
        raise StorageError(f"cannot write to storage {storage.redact(run_uri)}: {error}") from None


def process_group_backend(use_gpu: bool) -> str:
    """GPU workers get NCCL for the tensors on the GPU and gloo for the host-side agreement the loop
    all-reduces on the CPU (an NCCL-only group raises "No backend type associated with device type cpu")."""
    return "cpu:gloo,cuda:nccl" if use_gpu else "gloo"


def _run_config(cfg: RayBindConfig, callbacks: Sequence[UserCallback]) -> RunConfig:
    fs, path = storage.resolve(cfg.storage)
    return RunConfig(
        name=cfg.name, storage_path=path, storage_filesystem=fs if storage.is_remote(cfg.storage) else None,
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        failure_config=FailureConfig(max_failures=cfg.train.max_failures), callbacks=list(callbacks))


def build_trainer(cfg: RayBindConfig, train: Dataset, val: Dataset | None,
                  callbacks: Sequence[UserCallback] = (), rest: tuple[RestOfPass, Dataset | None] | None = None
                  ) -> TorchTrainer:
    """The `TorchTrainer` of a run: the worker loop with the config as JSON, per-worker resources, the
    gloo/NCCL backend and the uneven data split. `rest`: an interrupted pass and the files it has left."""
    resources = {kind: amount for kind, amount in worker_resources(cfg).items() if amount > 0}
    datasets = {"train": train}
    if val is not None:
        datasets["val"] = val
    loop_config: dict[str, Any] = {"cfg": cfg.model_dump(mode="json")}
    if rest is not None:
        loop_config["rest"] = rest[0].loop_config()
        if rest[1] is not None:
            datasets["train_rest"] = rest[1]
    return TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend=process_group_backend(cfg.train.use_gpu)),
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker=resources),
        run_config=_run_config(cfg, callbacks), datasets=datasets, dataset_config=UnevenSplitDataConfig())


@dataclass
class Prepared:
    """Everything a Ray Train run needs that does not depend on training settings: built once, fitted
    once (pretrain) or many times (a sweep's trials)."""

    run_uri: str
    train: Stream
    val: Stream | None
    started: float = field(default_factory=time.perf_counter)
    rest: tuple[RestOfPass, Stream | None] | None = None   # pretrain's resume inside a sharded pass


def check_cluster(cfg: RayBindConfig) -> None:
    """Fail fast when a local cluster cannot hold the run (joined clusters may autoscale: only logged)."""
    available = {k: float(v) for k, v in ray.cluster_resources().items()}
    if is_local(cfg):
        check_fits(cfg, available, "the local Ray cluster")
        return
    try:
        check_fits(cfg, available, "the cluster as it is now")
    except ResourceError as error:
        log.warning("%s; waiting for the autoscaler to add nodes", error)


def worker_columns(cfg: RayBindConfig) -> list[str]:
    """The columns a training worker reads in this run (and the decode cache holds)."""
    return training_columns(cfg.data.modalities, cfg.data.caption_views is not None, cfg.video_takes_images(),
                            anchor_image=cfg.model.anchor == "image")


def prepare(cfg: RayBindConfig, run_uri: str | None = None) -> Prepared:
    """Storage probe, demo data, Ray, resource check, and the lazy streams (nothing decodes yet)."""
    run_uri = run_uri or storage.join(storage.durable_output(cfg.storage, "storage"), cfg.name)
    check_storage(run_uri)
    check_init_from(cfg)
    ensure_demo_data(cfg)
    init_ray(cfg)
    check_cluster(cfg)
    columns = worker_columns(cfg)
    train = build_stream(cfg, cfg.data.train, storage.join(run_uri, "quarantine", "train"), shuffle=True,
                         columns=columns, track_sources=True)
    cached = cache_decoded_rows(cfg, train, columns)
    val = build_stream(cfg, cfg.data.val, storage.join(run_uri, "quarantine", "val"),
                       columns=columns) if cfg.data.val else None
    return Prepared(run_uri, train, val, rest=None if cached else rest_of_interrupted_pass(cfg, run_uri, train, columns))


def rest_of_interrupted_pass(cfg: RayBindConfig, run_uri: str, train: Stream,
                             columns: list[str]) -> tuple[RestOfPass, Stream | None] | None:
    """When the run's newest checkpoint stopped inside a pass over a sharded manifest: that pass's unfinished
    files as their own stream (`raybind.train.resume`); None otherwise."""
    if train.files is None or train.file_rows is None:
        return None
    plan = rest_of_pass(train.files, train.file_rows, latest_progress(run_uri), _quarantined(train))
    if plan is None:
        return None
    log.info("resuming inside pass %d: %d of %d files finished, reading the other %d", plan.epoch + 1,
             len(train.files.files) - len(plan.files), len(train.files.files), len(plan.files))
    if not plan.files:
        return plan, None
    rest = build_stream(cfg, train.files.subset(plan.files), train.quarantine_uri, shuffle=True, columns=columns,
                        track_sources=True)
    return plan, rest


def cache_decoded_rows(cfg: RayBindConfig, train: Stream, columns: list[str]) -> bool:
    """Decode the training split once into the object store when it fits `data.cache_mb`; every pass
    then reads the cached blocks in a fresh random order instead of restarting the decode stages. True
    when it did (a cached split is small: a resume starts its pass over)."""
    if cfg.data.cache_mb is None:
        return False
    size_mb = decoded_split_mb(cfg, train.rows_in, columns)
    if size_mb > cfg.data.cache_mb:
        log.info("training split (~%.0f MiB decoded) exceeds data.cache_mb=%d: streaming every pass",
                 size_mb, cfg.data.cache_mb)
        return False
    log.info("decoding the training split once (~%.0f MiB, within data.cache_mb=%d); passes read it from the "
             "object store", size_mb, cfg.data.cache_mb)
    train.dataset = train.dataset.materialize().randomize_block_order()
    return True


def fit(prepared: Prepared, cfg: RayBindConfig, callbacks: Sequence[UserCallback] = ()) -> ray.train.Result:
    """One Ray Train run of `cfg` over the prepared streams (resumes from `<storage>/<name>` if it exists)."""
    rest = None
    if prepared.rest is not None:
        plan, stream = prepared.rest
        rest = (plan, stream.dataset if stream is not None else None)
    return build_trainer(cfg, prepared.train.dataset, prepared.val.dataset if prepared.val else None,
                         callbacks, rest).fit()


def _checkpoint_uri(cfg: RayBindConfig, checkpoint: ray.train.Checkpoint | None) -> str | None:
    if checkpoint is None:
        return None
    if not storage.is_remote(cfg.storage):
        return checkpoint.path
    scheme = cfg.storage.split("://")[0]
    query = cfg.storage.split("?", 1)[1] if "?" in cfg.storage else ""
    return storage.redact(f"{scheme}://{checkpoint.path}" + (f"?{query}" if query else ""))


def _quarantined(stream: Stream | None) -> list[quarantine.QuarantinedRow]:
    return quarantine.read_all(stream.quarantine_uri) if stream is not None and stream.quarantine_uri else []


def _ingest_counts(stream: Stream, quarantined: int, rows_out: int | None) -> dict[str, Any]:
    counts: dict[str, Any] = {"rows_in": stream.rows_in, "rows_quarantined": quarantined}
    if rows_out is None:  # training stopped before one full pass: some rows were never reached
        counts["rows_out"] = stream.rows_in - quarantined
        counts["first_pass_complete"] = False
    else:
        counts["rows_out"] = rows_out
        counts["first_pass_complete"] = True
        check_counts(counts)
    return counts


def summarize(prepared: Prepared, cfg: RayBindConfig, result: ray.train.Result) -> dict[str, Any]:
    """The job summary (also `<run_dir>/summary.json`) and `quarantine.jsonl` beside it."""
    metrics = dict(result.metrics or {})
    bad = {"train": _quarantined(prepared.train), "val": _quarantined(prepared.val)}
    summary: dict[str, Any] = {
        "run_dir": storage.redact(prepared.run_uri),
        "checkpoint": _checkpoint_uri(cfg, result.checkpoint),
        "steps": metrics.get(M.STEP),
        "epochs_completed": metrics.get(M.EPOCH),
        "resumed_from": metrics.get(M.RESUMED_FROM, []),
        **_ingest_counts(prepared.train, len(bad["train"]), metrics.get(M.ROWS_FIRST_PASS)),
        "metrics": M.per_tower(metrics, cfg.data.modalities),
        "samples_per_s": metrics.get(M.SAMPLES_PER_S),
        "data_wait_frac": metrics.get(M.DATA_WAIT_FRAC),
        "wall_s": round(time.perf_counter() - prepared.started, 1),
        "config_hash": cfg.hash(),
    }
    if cfg.data.caption_views is not None:
        summary["caption_views"] = metrics.get(M.CAPTION_VIEWS, {})    # view -> times drawn
    if cfg.train.stages is not None:
        summary["stages"] = steps_per_stage(cfg.train.stages, metrics.get(M.STEP) or 0)  # stage -> steps run
        summary["stage_skipped_rows"] = metrics.get(M.STAGE_SKIPPED_ROWS, 0)
    if prepared.val is not None:
        summary["val_ingest"] = _ingest_counts(prepared.val, len(bad["val"]), metrics.get(M.VAL_ROWS))
    lines = [json.dumps({**r.__dict__, "split": split}) + "\n" for split, rows in bad.items() for r in rows]
    storage.write_text(storage.join(prepared.run_uri, quarantine.QUARANTINE_FILE), "".join(lines))
    storage.write_text(storage.join(prepared.run_uri, "summary.json"), json.dumps(summary, indent=2, sort_keys=True))
    return summary


def pretrain(cfg: RayBindConfig, callbacks: Sequence[UserCallback] = (), progress: bool = True) -> dict[str, Any]:
    """Run (or resume) pretraining and return the job summary; also written to `<run_dir>/summary.json`.

    `callbacks` are Ray Train user callbacks (run on the controller), e.g. for sweeps or alerts;
    `progress` prints a line per log step and a table per validation on stderr.
    """
    prepared = prepare(cfg)
    if not progress:
        return summarize(prepared, cfg, fit(prepared, cfg, callbacks))
    with ProgressPrinter(cfg.train.steps, cfg.data.modalities) as printer:
        result = fit(prepared, cfg, [*callbacks, printer.callback])
    return summarize(prepared, cfg, result)

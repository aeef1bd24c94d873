"""Driver side of pretraining: streams in, a TorchTrainer out, and a summary that accounts for every row."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Sequence

import ray.train
from ray.data import Dataset
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import UserCallback

from raybind import quarantine, storage
from raybind.config import RayBindConfig
from raybind.demo_data import generate
from raybind.pipeline import Stream, build_stream, check_counts
from raybind.runtime import init_ray
from raybind.train_loop import train_loop_per_worker

log = logging.getLogger(__name__)


class StorageError(ValueError):
    """The run's storage cannot be written (fails before any training starts)."""


class UnevenSplitDataConfig(DataConfig):
    """Split the training stream across workers without dropping rows (Ray's default `equal=True` may drop
    up to world_size - 1 rows, which would break the row accounting). The loop keeps ranks in step itself."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            if name == "train":
                for i, split in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=worker_node_ids)):
                    output[i][name] = split
            else:
                for i in range(world_size):
                    output[i][name] = ds.iterator()
        return output


def ensure_demo_data(cfg: RayBindConfig) -> None:
    """Generate the demo dataset where the config asks for it and the manifests are missing."""
    if cfg.data.demo is None or storage.is_remote(cfg.data.train):
        return
    if storage.exists(cfg.data.train) and (cfg.data.val is None or storage.exists(cfg.data.val)):
        return
    folder = storage.parent(cfg.data.train)
    log.info("demo data missing: generating it in %s", folder)
    generate(folder, train_clips=int(cfg.data.demo.get("train", 256)), val_clips=int(cfg.data.demo.get("val", 64)),
             seed=int(cfg.data.demo.get("seed", 0)))


def check_storage(run_uri: str) -> None:
    """Write and delete a probe so an unreachable or read-only storage fails now, not after training."""
    probe = storage.join(run_uri, ".raybind-probe")
    try:
        storage.write_text(probe, "ok")
        fs, path = storage.resolve(probe)
        fs.delete_file(path)
    except OSError as error:
        raise StorageError(f"cannot write to storage {storage.redact(run_uri)}: {error}") from None


def _columns(cfg: RayBindConfig) -> list[str]:
    return [*cfg.data.modalities, "tokens"]


def _run_config(cfg: RayBindConfig, callbacks: Sequence[UserCallback]) -> RunConfig:
    fs, path = storage.resolve(cfg.storage)
    return RunConfig(
        name=cfg.name, storage_path=path, storage_filesystem=fs if storage.is_remote(cfg.storage) else None,
        checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        failure_config=FailureConfig(max_failures=cfg.train.max_failures), callbacks=list(callbacks))


def build_trainer(cfg: RayBindConfig, train: Dataset, val: Dataset | None,
                  callbacks: Sequence[UserCallback] = ()) -> TorchTrainer:
    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.use_gpu:
        resources["GPU"] = 1
    datasets = {"train": train}
    if val is not None:
        datasets["val"] = val
    return TorchTrainer(
        train_loop_per_worker, train_loop_config={"cfg": cfg.model_dump(mode="json")},
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker=resources),
        run_config=_run_config(cfg, callbacks), datasets=datasets, dataset_config=UnevenSplitDataConfig())


def _checkpoint_uri(cfg: RayBindConfig, checkpoint: ray.train.Checkpoint | None) -> str | None:
    if checkpoint is None:
        return None
    if not storage.is_remote(cfg.storage):
        return checkpoint.path
    scheme = cfg.storage.split("://")[0]
    query = cfg.storage.split("?", 1)[1] if "?" in cfg.storage else ""
    return storage.redact(f"{scheme}://{checkpoint.path}" + (f"?{query}" if query else ""))


def _quarantined(stream: Stream) -> list[quarantine.QuarantinedRow]:
    return quarantine.read_all(stream.quarantine_uri) if stream.quarantine_uri else []


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


def _per_modality(cfg: RayBindConfig, metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for modality in cfg.data.modalities:
        row = {}
        for key, name in (("val_r1_before", "val_r1_before"), ("val_r1_after", "val_r1_after"),
                          ("val_loss_before", "val_loss_before"), ("val_loss_after", "val_loss_after"),
                          ("chance", "chance"), ("loss", "train_loss"), ("logit_scale", "logit_scale")):
            if f"{key}/{modality}" in metrics:
                row[name] = metrics[f"{key}/{modality}"]
        out[modality] = row
    return out


def pretrain(cfg: RayBindConfig, callbacks: Sequence[UserCallback] = ()) -> dict[str, Any]:
    """Run (or resume) pretraining and return the job summary; also written to `<run_dir>/summary.json`.

    `callbacks` are Ray Train user callbacks (run on the controller), e.g. for sweeps or alerts.
    """
    started = time.perf_counter()
    run_uri = storage.join(storage.absolute(cfg.storage), cfg.name)
    check_storage(run_uri)
    ensure_demo_data(cfg)
    init_ray(cfg)
    columns = _columns(cfg)
    train = build_stream(cfg, cfg.data.train, storage.join(run_uri, "quarantine", "train"), shuffle=True,
                         columns=columns)
    val = build_stream(cfg, cfg.data.val, storage.join(run_uri, "quarantine", "val"),
                       columns=columns) if cfg.data.val else None
    result = build_trainer(cfg, train.dataset, val.dataset if val else None, callbacks).fit()
    metrics = dict(result.metrics or {})
    bad = {"train": _quarantined(train), "val": _quarantined(val) if val is not None else []}
    ingest = _ingest_counts(train, len(bad["train"]), metrics.get("rows_first_pass"))
    summary: dict[str, Any] = {
        "run_dir": storage.redact(run_uri),
        "checkpoint": _checkpoint_uri(cfg, result.checkpoint),
        "steps": metrics.get("step"),
        "epochs_completed": metrics.get("epoch"),
        "resumed_from": metrics.get("resumed_from", []),
        **ingest,
        "metrics": _per_modality(cfg, metrics),
        "samples_per_s": metrics.get("samples_per_s"),
        "data_wait_frac": metrics.get("data_wait_frac"),
        "wall_s": round(time.perf_counter() - started, 1),
        "config_hash": cfg.hash(),
    }
    if val is not None:
        summary["val_ingest"] = _ingest_counts(val, len(bad["val"]), metrics.get("val_rows"))
    lines = [json.dumps({**r.__dict__, "split": split}) + "\n" for split, rows in bad.items() for r in rows]
    storage.write_text(storage.join(run_uri, quarantine.QUARANTINE_FILE), "".join(lines))
    storage.write_text(storage.join(run_uri, "summary.json"), json.dumps(summary, indent=2, sort_keys=True))
    return summary

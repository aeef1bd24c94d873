"""Ingest suites: the Ray Data pipeline vs a torch DataLoader doing the same work vs bare decoding, and
peak memory of a streaming run at N and 10N rows.

Synthesis runs on the CPU (every loader process decodes and synthesizes) or, with `synthesis="gpu"`, in
one GPU actor fed by CPU decode tasks; the DataLoader's workers then still do every transform on the
CPU (CUDA does not work in forked workers), and a second DataLoader run synthesizes each batch on the
GPU in the consuming process instead, the other way a DataLoader user would set it up.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from raybind.bench import SYNTHESIS, SYNTHESIZERS
from raybind.bench.clips import make_clips, write_manifest
from raybind.config import RayBindConfig, validate
from raybind.data import media
from raybind.data.batch_format import rows_in, training_columns
from raybind.data.decode import decode_batch
from raybind.data.pipeline import build_stream, decode_spec, synthesis_settings
from raybind.data.synthesis import load_synthesizer, synthesize_batch

RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720)}


def full_size_synthesizers(folder: Path) -> dict[str, str]:
    """Randomly initialised synthesizers of the real sizes (GLPN as glpn-nyu, MUNIT as sRGB-TIR), saved as
    checkpoints are: the compute of LanguageBind's synthesis without downloadable weights."""
    from transformers import GLPNForDepthEstimation, GLPNImageProcessor

    from encoders.synthesis import MunitGenerator, glpn_nyu_config

    depth, thermal = folder / "glpn-nyu", folder / "munit.pt"
    if not (depth / "config.json").exists():
        GLPNForDepthEstimation(glpn_nyu_config()).save_pretrained(depth)
        GLPNImageProcessor().save_pretrained(depth)
    if not thermal.exists():
        torch.save({"a": MunitGenerator().state_dict(), "b": MunitGenerator().state_dict()}, thermal)
    return {"depth": str(depth), "thermal": str(thermal)}


def ingest_config(manifest: Path, workers: int, synthesis: str = "cpu", models: dict[str, str] | None = None,
                  image_size: int = 224) -> RayBindConfig:
    """All four modalities, as a LanguageBind video row yields them, on `workers` CPUs.

    CPU synthesis: `workers` one-CPU actors each decode, synthesize and tokenize their batches. GPU
    synthesis: one actor (one CPU, the GPU) synthesizes batches that one-CPU decode tasks feed it.
    `models`: synthesizer checkpoints per modality (None: the tiny random ones).
    """
    if synthesis not in SYNTHESIS:
        raise ValueError(f"synthesis must be one of {SYNTHESIS}, got {synthesis!r}")
    pool = ({"actors": workers, "num_cpus": 1} if synthesis == "cpu"
            else {"actors": 1, "num_cpus": 1, "num_gpus": 1, "batch_size": 64})
    data = {"train": str(manifest), "modalities": ["video", "audio", "depth", "thermal"], "num_frames": 8,
            "decode": {"batch_size": 4, "threads": 1, "num_cpus": 1}, "synthesis": pool}
    for modality, model in (models or {}).items():
        data[modality] = {"model": model}
    return validate({"name": "bench", "data": data,
                     "model": {"preset": "tiny", "towers": {m: {"preprocess": {"image_size": image_size}}
                                                            for m in ("video", "depth", "thermal")}}})


def _timed(batches) -> dict:
    """End-to-end rate, plus start-up (time to the first batch) and the steady rate after it."""
    start = time.perf_counter()
    rows, first_rows, first_at = 0, 0, None
    for batch in batches:
        rows += rows_in(batch)
        if first_at is None:
            first_at, first_rows = time.perf_counter() - start, rows
    seconds = time.perf_counter() - start
    steady = (rows - first_rows) / (seconds - first_at) if first_at is not None and seconds > first_at else 0.0
    return {"rows": rows, "seconds": round(seconds, 2), "clips_per_s": round(rows / seconds, 3),
            "startup_s": round(first_at or 0.0, 2), "steady_clips_per_s": round(steady, 3)}


# What a training worker reads from every row.
SHIPPED_COLUMNS = tuple(training_columns(("video", "audio", "depth", "thermal")))


def _manifest_rows(cfg: RayBindConfig) -> list[dict]:
    return [json.loads(line) for line in Path(cfg.data.train).read_text().splitlines()]


def _ray_batches(cfg: RayBindConfig, quarantine_dir: Path, batch_size: int):
    stream = build_stream(cfg, cfg.data.train, str(quarantine_dir), columns=list(SHIPPED_COLUMNS))
    yield from stream.dataset.iter_torch_batches(batch_size=batch_size)


def run_ray(cfg: RayBindConfig, quarantine_dir: Path, batch_size: int = 8) -> dict:
    """Pipeline into a consumer that iterates batches like a training worker (manifest checks included)."""
    return _timed(_ray_batches(cfg, quarantine_dir, batch_size))


class _SameWorkDataset(torch.utils.data.Dataset):
    """What LanguageBind's loaders do, one sample at a time, through the pipeline's own per-row code
    (decode, mel, tokenize, then depth and thermal synthesis), so both loaders do exactly the same work.
    With `synthesize=False` the workers stop after decoding and ship the row id for the consumer."""

    def __init__(self, cfg: RayBindConfig, quarantine_dir: Path, synthesize: bool = True) -> None:
        self.rows = _manifest_rows(cfg)
        self.spec = decode_spec(cfg, cfg.data.train, str(quarantine_dir), ["video"])
        self.synthesized = synthesis_settings(cfg) if synthesize else {}
        self.columns = SHIPPED_COLUMNS if synthesize else ("id", *(c for c in SHIPPED_COLUMNS
                                                                    if c not in self.spec.synthesize))
        self._synthesizers = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        if self._synthesizers is None:  # once per worker process, as once per pipeline actor
            torch.set_num_threads(1)  # as the pipeline's one-CPU actors
            self._synthesizers = {m: load_synthesizer(m, s, "cpu") for m, s in self.synthesized.items()}
        row = {name: np.array([value], dtype=object) for name, value in self.rows[index].items()}
        out = synthesize_batch(decode_batch(row, self.spec), self._synthesizers, self.synthesized, "video",
                               self.columns)
        return {name: value[0] if name == "id" else torch.from_numpy(value[0]) for name, value in out.items()}


def run_dataloader(cfg: RayBindConfig, workers: int, quarantine_dir: Path, batch_size: int = 8) -> dict:
    """Workers decode and synthesize every row (on the CPU)."""
    gc.collect()
    loader = torch.utils.data.DataLoader(_SameWorkDataset(cfg, quarantine_dir), batch_size=batch_size,
                                         num_workers=workers, persistent_workers=False)
    return _timed(iter(loader))


def consumer_synthesis_batches(cfg: RayBindConfig, workers: int, quarantine_dir: Path, batch_size: int = 8,
                               device: str = "cuda"):
    """Workers decode; the consuming process synthesizes each batch on `device` before handing it on."""
    dataset = _SameWorkDataset(cfg, quarantine_dir, synthesize=False)
    settings = synthesis_settings(cfg)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers))
    synthesizers = {m: load_synthesizer(m, s, device) for m, s in settings.items()}  # after the fork
    for batch in loader:
        decoded = {"video": batch["video"].numpy(), "id": np.array(batch.pop("id"), dtype=object)}
        made = synthesize_batch(decoded, synthesizers, settings, "video", tuple(settings))
        yield {**batch, **{modality: torch.from_numpy(value) for modality, value in made.items()}}


def run_dataloader_consumer_synthesis(cfg: RayBindConfig, workers: int, quarantine_dir: Path,
                                      batch_size: int = 8) -> dict:
    """The DataLoader set up the other way a GPU user would: workers decode, the consuming process synthesizes
    each batch on the GPU (timed as the other loaders)."""
    gc.collect()
    return _timed(consumer_synthesis_batches(cfg, workers, quarantine_dir, batch_size))


def run_decode_bound(cfg: RayBindConfig, max_rows: int = 240) -> dict:
    """Sequential OpenCV decoding of the same frames, nothing else: the floor any loader pays. A rate, so
    the first `max_rows` rows (which cycle over every clip file) measure it."""
    rows = _manifest_rows(cfg)[:max_rows]
    size = cfg.encoder_config().tower("video").preprocess.image_size
    start = time.perf_counter()
    for row in rows:
        media.decode_video(row["video"], cfg.data.num_frames, size)
    seconds = time.perf_counter() - start
    return {"rows": len(rows), "seconds": round(seconds, 2), "clips_per_s": round(len(rows) / seconds, 3)}


def ingest_suite(workdir: Path, workers: int, per_resolution: int, seconds: float, repeats: int,
                 synthesis: str = "cpu", synthesizers: str = "tiny") -> dict:
    """Ray Data against the same-work DataLoader(s) and the bare-decode floor on one set of real clips: each
    rate, and Ray's overall and steady-state ratios to each baseline (the `ratio_vs_*` goals)."""
    if synthesizers not in SYNTHESIZERS:
        raise ValueError(f"synthesizers must be one of {SYNTHESIZERS}, got {synthesizers!r}")
    if synthesis == "gpu" and not torch.cuda.is_available():
        return {"skipped": "--synthesis gpu needs a CUDA device"}  # the GPU actor could never be scheduled
    clips = make_clips(workdir / "clips", RESOLUTIONS, per_resolution, seconds)
    manifest = write_manifest(workdir / "ingest.jsonl", clips, len(clips) * repeats)
    models = full_size_synthesizers(workdir / "synthesizers") if synthesizers == "full" else None
    cfg = ingest_config(manifest, workers, synthesis, models)
    # The DataLoader forks this process: it goes first, while no Ray dataset objects exist here whose
    # finalisers a forked child could run (they deadlock outside the process that owns them).
    loader = run_dataloader(cfg, workers, workdir / "q-dataloader")
    consumer = (run_dataloader_consumer_synthesis(cfg, workers, workdir / "q-dataloader-gpu")
                if synthesis == "gpu" else None)
    bound = run_decode_bound(cfg)
    ray_result = run_ray(cfg, workdir / "q-ingest")
    result = {"clips": len(clips), "rows": ray_result["rows"], "seconds_per_clip": seconds,
              "resolutions": list(RESOLUTIONS), "workers": workers, "synthesis": synthesis,
              "synthesizers": synthesizers, "ray_data": ray_result, "dataloader": loader, "decode_bound": bound}
    # The decode bound has no start-up to speak of (one process, files cached): its rate is its steady rate.
    baselines = {"dataloader": (loader["clips_per_s"], loader["steady_clips_per_s"]),
                 "decode_bound": (bound["clips_per_s"], bound["clips_per_s"])}
    if consumer is not None:
        result["dataloader_gpu_in_consumer"] = consumer
        baselines["dataloader_gpu_in_consumer"] = (consumer["clips_per_s"], consumer["steady_clips_per_s"])
    for name, (rate, steady) in baselines.items():
        result[f"ratio_vs_{name}"] = round(ray_result["clips_per_s"] / max(1e-9, rate), 3)
        result[f"steady_ratio_vs_{name}"] = round(ray_result["steady_clips_per_s"] / max(1e-9, steady), 3)
    return result


class _PeakMemory:
    """Samples the proportional set size (shared pages counted once) of this process and all Ray workers."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        total = 0
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if proc.pid == psutil.Process().pid or (cmd and (cmd[0].startswith("ray::") or "raylet" in cmd[0]
                                                              or "gcs_server" in cmd[0])):
                try:
                    total += proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(self.interval)

    def __enter__(self) -> "_PeakMemory":
        self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def streaming_memory_suite(workdir: Path, workers: int, rows: int) -> dict:
    """Peak PSS of streaming runs over N and 10N rows of the same clips: a `ratio` near 1 shows that memory
    does not grow with the dataset."""
    clips = make_clips(workdir / "clips", {"360p": RESOLUTIONS["360p"]}, 2, 5.0)
    results = {}
    for label, count in (("n", rows), ("10n", rows * 10)):
        manifest = write_manifest(workdir / f"memory-{label}.jsonl", clips, count)
        cfg = ingest_config(manifest, workers)
        with _PeakMemory() as memory:
            run = run_ray(cfg, workdir / f"q-memory-{label}")
        results[label] = {"rows": run["rows"], "peak_pss_mib": round(memory.peak / 2**20, 1),
                          "seconds": run["seconds"]}
    return {**results, "ratio": round(results["10n"]["peak_pss_mib"] / results["n"]["peak_pss_mib"], 3)}

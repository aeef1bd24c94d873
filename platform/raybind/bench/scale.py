"""The `scale` suite: does the driver's cost stay flat as the manifest grows 10x?

Two manifests of metadata only (ids, VIDAL-10M-shaped captions: four views plus eight per-frame captions,
URIs cycling over a few real clips), N and 10N rows, sharded into Parquet files of a fixed row count (the
large one has 10x the files, as a growing corpus does). Each size is probed by its own driver process
joined to the running Ray, which builds the training stream and takes its first decoded batch; it reports
its peak RSS, the objects it holds references to once the stream is built (what it put: a driver-read
manifest puts one per block), and the seconds to the first batch. The suite's figures are large/small ratios.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raybind.bench.clips import make_clips

VIEWS = ("raw", "mplug", "polish_mplug", "ofa")   # VIDAL-10M's caption views (ofa: eight per-frame captions)
FRAME_CAPTIONS = 8


def write_sharded_manifest(folder: Path, clips: list[Path], rows: int, rows_per_file: int) -> Path:
    """`rows` metadata rows over Parquet files of `rows_per_file` rows; every row has the four caption views."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.parquet"):
        stale.unlink()
    uris = [str(clip.resolve()) for clip in clips]
    for part, start in enumerate(range(0, rows, rows_per_file)):
        ids = range(start, min(rows, start + rows_per_file))
        text = [{"raw": f"clip {i} title #tag", "mplug": f"a clip numbered {i}", "polish_mplug": f"clip {i}, polished",
                 "ofa": [f"frame {f} of clip {i}" for f in range(FRAME_CAPTIONS)]} for i in ids]
        table = pa.table({"id": [f"row-{i:09d}" for i in ids], "text": text,
                          "video": [uris[i % len(uris)] for i in ids]})
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=min(rows_per_file, 4096))
    return folder


def probe(manifest: str, address: str) -> dict:
    """In a fresh driver process: build the training stream over `manifest`, take one batch; the driver's figures."""
    from raybind.config import validate
    from raybind.data.pipeline import build_stream
    from raybind.runtime import start_ray
    from raybind.train.trainer import worker_columns

    start_ray(address=address, verbose=False)
    import ray

    cfg = validate({"name": "scale", "seed": 0, "data": {
        "train": manifest, "modalities": ["video"], "num_frames": 4, "caption_views": {view: 1.0 for view in VIEWS},
        "decode": {"batch_size": 8, "threads": 1, "num_cpus": 1}}, "model": {"preset": "tiny"}})
    started = time.perf_counter()
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stream = build_stream(cfg, manifest, str(Path(manifest) / "_quarantine"), shuffle=True,
                          columns=worker_columns(cfg))
    built_s = time.perf_counter() - started
    held = len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())
    batch = next(iter(stream.dataset.iter_batches(batch_size=8, batch_format="numpy")))
    first_batch_s = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": stream.rows_in, "files": len(list(Path(manifest).glob("*.parquet"))),
            "driver_peak_rss_mib": round(peak_kib / 1024, 1),
            "driver_rss_growth_mib": round((peak_kib - baseline_kib) / 1024, 1),
            "driver_object_refs": held, "build_stream_s": round(built_s, 2),
            "first_batch_s": round(first_batch_s, 2), "first_batch_rows": len(batch["view_tokens"])}


def scale_suite(workdir: Path, rows: int, rows_per_file: int) -> dict:
    """Probe N and 10N rows; ratios large/small of the driver's peak RSS, object refs and time to first batch."""
    import ray

    clips = make_clips(workdir / "clips", {"small": (96, 64)}, 3, 1.0)
    address = ray.get_runtime_context().gcs_address
    results = {}
    for label, count in (("n", rows), ("10n", rows * 10)):
        manifest = write_sharded_manifest(workdir / f"scale-{label}", clips, count, rows_per_file)
        done = subprocess.run([sys.executable, "-m", "raybind.bench.scale", str(manifest), address],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"scale probe over {count} rows failed:\n{done.stderr[-3000:]}")
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    small, large = results["n"], results["10n"]
    return {**results,
            "driver_rss_ratio": round(large["driver_peak_rss_mib"] / small["driver_peak_rss_mib"], 3),
            # plus one on both sides: a driver that holds none at either size reads 1.0
            "object_refs_ratio": round((large["driver_object_refs"] + 1) / (small["driver_object_refs"] + 1), 3),
            "first_batch_ratio": round(large["first_batch_s"] / small["first_batch_s"], 3)}


if __name__ == "__main__":   # one probe: python -m raybind.bench.scale MANIFEST_DIR RAY_ADDRESS
    print(json.dumps(probe(sys.argv[1], sys.argv[2])))

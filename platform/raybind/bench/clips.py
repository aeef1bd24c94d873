"""Benchmark media: real H.264/AAC clips at given resolutions, and manifests that reuse them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raybind.data.media_encode import write_video


def synthetic_clip(width: int, height: int, frames: int, seed: int) -> np.ndarray:
    """A gradient background with a moving block: cheap to render at 720p, non-trivial to encode."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    base = (0.5 * x + 0.5 * y + rng.uniform(0, 60, 3)).clip(0, 255).astype(np.uint8)
    video = np.repeat(base[None], frames, axis=0)
    side = height // 5
    for t in range(frames):
        left = int((width - side) * t / max(1, frames - 1))
        video[t, height // 3: height // 3 + side, left:left + side] = rng.integers(0, 255, 3, dtype=np.uint8)
    return video


def tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    """A 440 Hz tone rising in pitch, float32 mono at `rate` Hz: the sound track every benchmark clip carries."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.1 * t))).astype(np.float32)


def make_clips(folder: Path, resolutions: dict[str, tuple[int, int]], per_resolution: int, seconds: float,
               fps: int = 30) -> list[Path]:
    """Encode `per_resolution` clips of `seconds` per named resolution as `<name>-<i>.mp4`; files already there
    are reused, so repeated benchmark runs skip the encoding."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (width, height) in resolutions.items():
        for i in range(per_resolution):
            path = folder / f"{name}-{i}.mp4"
            if not path.exists():
                write_video(path, synthetic_clip(width, height, int(seconds * fps), seed=i), fps, tone(seconds))
            paths.append(path)
    return paths


def write_manifest(path: Path, clips: list[Path], rows: int) -> Path:
    """`rows` manifest rows cycling over `clips` (unique ids, same files): size the dataset without new media."""
    lines = [json.dumps({"id": f"row-{i:06d}", "text": f"a clip number {i % len(clips)}",
                         "video": str(clips[i % len(clips)].resolve())}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path

"""Real components for the platform tests: one local Ray cluster, one moto S3 server, real media files."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from raybind.data.media_encode import write_audio, write_video
from raybind.runtime import worker_env


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session: 4 logical CPUs, and one declared GPU so the GPU synthesis
    pool's placement is exercised (without CUDA its actors run on the CPU)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                 runtime_env={"env_vars": worker_env("on")})   # the env a job's workers get
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real HTTP S3 endpoint on localhost (moto), as Ray's own storage tests use."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh bucket; returns (boto3 client, bucket name, URI suffix with the endpoint)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    name = "rb-" + request.node.name.lower().replace("_", "-")[:40]
    client.create_bucket(Bucket=name)
    return client, name, f"?endpoint_override={s3_server}&region=us-east-1&scheme=http"


def tone(seconds: float, rate: int = 16_000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def moving_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.repeat(rng.integers(0, 80, (1, height, width, 3), dtype=np.uint8), count, axis=0)
    for t in range(count):  # a red block moving right through the centre third
        x = width // 3 + t * (width // 3 - 8) // max(1, count - 1)
        frames[t, height // 2 - 4: height // 2 + 4, x:x + 8] = (250, 20, 20)
    return frames


class MediaFactory:
    """Writes real encoded clips into a folder and builds manifests that reference them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def video(self, name: str, frames: int = 20, height: int = 48, width: int = 64, audio: bool = True,
              seconds: float = 2.0) -> Path:
        return write_video(self.root / name, moving_frames(frames, height, width), fps=frames / seconds,
                           audio=tone(seconds) if audio else None)

    def audio(self, name: str, seconds: float = 1.5) -> Path:
        return write_audio(self.root / name, tone(seconds))

    def file(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def manifest(self, name: str, rows: list[dict]) -> Path:
        path = self.root / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path


@pytest.fixture()
def media(tmp_path) -> MediaFactory:
    return MediaFactory(tmp_path / "media")

"""The ingest benchmark's configurations and baselines (in-process, no Ray): both DataLoader baselines
must do the pipeline's work exactly, or the ratios compare different things."""

import numpy as np
import pytest
import torch

from raybind.bench.clips import make_clips, write_manifest
from raybind.bench.ingest import (
    SHIPPED_COLUMNS,
    _SameWorkDataset,
    consumer_synthesis_batches,
    full_size_synthesizers,
    ingest_config,
    ingest_suite,
)
from raybind.data.synthesis import load_synthesizer


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingest-bench")
    clips = make_clips(folder / "clips", {"small": (96, 64)}, 2, 0.5)
    return write_manifest(folder / "rows.jsonl", clips, 3)


def test_cpu_and_gpu_layouts_budget_the_same_cpus(manifest):
    cpu = ingest_config(manifest, 6, "cpu")
    assert (cpu.data.synthesis.actors, cpu.data.synthesis.num_cpus, cpu.data.synthesis.num_gpus) == (6, 1, 0)
    gpu = ingest_config(manifest, 6, "gpu", {"depth": "/models/glpn", "thermal": "/models/munit.pt"})
    assert (gpu.data.synthesis.actors, gpu.data.synthesis.num_cpus, gpu.data.synthesis.num_gpus) == (1, 1, 1)
    assert gpu.data.decode.num_cpus == 1  # one-CPU decode tasks fill the other workers - 1 CPUs
    assert (gpu.data.depth.model, gpu.data.thermal.model) == ("/models/glpn", "/models/munit.pt")
    with pytest.raises(ValueError, match="synthesis must be one of"):
        ingest_config(manifest, 2, "tpu")


def test_gpu_synthesis_without_cuda_is_reported_not_hung(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the suite would run for real")
    assert ingest_suite(tmp_path, 2, 1, 0.5, 1, synthesis="gpu") == {"skipped": "--synthesis gpu needs a CUDA device"}
    with pytest.raises(ValueError, match="synthesizers must be one of"):
        ingest_suite(tmp_path, 2, 1, 0.5, 1, synthesizers="huge")


def test_consumer_synthesis_baseline_yields_what_worker_synthesis_yields(manifest, tmp_path):
    cfg = ingest_config(manifest, 1, "gpu")
    in_workers = list(torch.utils.data.DataLoader(_SameWorkDataset(cfg, tmp_path / "q1"), batch_size=2))
    in_consumer = list(consumer_synthesis_batches(cfg, 0, tmp_path / "q2", batch_size=2, device="cpu"))
    assert [len(b["tokens"]) for b in in_consumer] == [len(b["tokens"]) for b in in_workers] == [2, 1]
    for ours, theirs in zip(in_consumer, in_workers):
        assert set(ours) == set(theirs) == set(SHIPPED_COLUMNS)
        # one thread and one-row batches (worker) vs the default thread count and two-row batches (consumer)
        for column in ("video", "audio", "tokens", "depth", "thermal"):
            assert torch.equal(ours[column], theirs[column]), column
        assert ours["depth"].shape == (len(ours["tokens"]), 1, 224, 224)


def test_full_size_synthesizers_load_as_checkpoints_do(tmp_path):
    paths = full_size_synthesizers(tmp_path)
    cfg = ingest_config(tmp_path / "unused.jsonl", 1, "cpu", paths)
    depth = load_synthesizer("depth", cfg.data.depth, "cpu")
    thermal = load_synthesizer("thermal", cfg.data.thermal, "cpu")
    assert sum(p.numel() for p in depth.model.parameters()) > 55e6  # glpn-nyu sized
    assert thermal.translate.rgb_gen.params.dim == 64  # sRGB-TIR's MUNIT width
    frames = np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    assert depth(frames).shape == (1, 64, 64) and thermal(frames).shape == (1, 64, 64, 3)

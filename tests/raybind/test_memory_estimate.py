"""A worker's peak GPU memory, estimated on the CPU: the counter, the estimate against H100 measurements, and
every L/14 recipe within one 80 GB GPU (the GPU-marked test measures the real peak on a device)."""

from __future__ import annotations

import pytest
import torch

from raybind.bench.gpu_suites import RECIPES, recipe
from raybind.errors import ResourceError
from raybind.train.memory_estimate import ALLOCATOR_MARGIN, LiveStorageBytes, estimate_worker_memory
from raybind.train.plan import check_memory_fits

pytestmark = pytest.mark.timeout(300)
TINY = ["model.preset=tiny", "model.text={kind: hf, name: all-minilm-l6-v2}"]


def test_the_counter_counts_each_storage_once_and_releases_it_when_freed():
    counter = LiveStorageBytes()
    with counter:
        a = torch.zeros(1000)               # 4,000 bytes
        view = a.view(10, 100)              # the same storage
        b = a * 2                           # 4,000 more
        assert counter.live == 8000
        del b
        c = view[:5].clone()                # 2,000
    assert (counter.live, counter.peak) == (6000, 8000)
    del a, view, c
    assert counter.live == 0


@pytest.mark.slow
def test_the_estimate_reproduces_the_h100_measurements_of_the_l14_video_tower():
    """Measured on one H100 80GB (docs/gpus.md): 8 frames, LoRA r=16, mask 0.3, bf16: 16 clips per step take ~27 GiB; 64
    clips do not fit without activation checkpointing."""
    sixteen = estimate_worker_memory(recipe("video", ["train.batch_size=16", "train.grad_accum=1"]))
    assert sixteen["layout"] == "gpu bf16"
    assert sixteen["peak_gib"] <= 27 <= sixteen["with_margin_gib"], sixteen
    assert 27 / sixteen["peak_gib"] < ALLOCATOR_MARGIN
    sixty_four = estimate_worker_memory(recipe("video", ["train.batch_size=64", "train.grad_accum=1"]))
    assert sixty_four["peak_gib"] > 80, sixty_four
    checkpointed = estimate_worker_memory(recipe("video", ["train.batch_size=64", "train.grad_accum=1",
                                                           "model.towers.video.grad_checkpointing=true"]))
    assert checkpointed["with_margin_gib"] < 80, checkpointed


@pytest.mark.parametrize("modality", sorted(RECIPES))
def test_each_l14_recipe_is_estimated_to_fit_one_80gb_gpu_with_its_configured_batch(modality):
    estimate = estimate_worker_memory(recipe(modality))
    assert estimate["with_margin_gib"] < 78, estimate
    assert estimate["peak_gib"] > estimate["weights_gib"] > 0.5   # an L/14 tower and its language tower


def test_the_estimate_follows_the_settings_that_trade_memory():
    def peak(*overrides: str, gpu: bool = True) -> int:
        cfg = recipe("depth", ["train.batch_size=8", "train.grad_accum=1", *TINY, *overrides])
        return estimate_worker_memory(cfg, gpu=gpu)["peak_bytes"]

    eight, sixteen, thirty_two = peak(), peak("train.batch_size=16"), peak("train.batch_size=32")
    assert thirty_two - sixteen == pytest.approx(2 * (sixteen - eight), rel=0.1)   # activations grow with rows
    assert peak("train.batch_size=2", "train.grad_accum=4") < eight                # cached: one micro at a time
    assert peak("model.towers.depth.grad_checkpointing=true") < eight
    assert peak("model.towers.depth.mask_ratio=0.75") < peak("model.towers.depth.mask_ratio=0.25")
    assert peak(gpu=False) > 1.5 * eight                                           # fp32 weights and activations


def test_a_config_whose_estimate_exceeds_the_gpu_is_refused_naming_the_fixes():
    estimate = estimate_worker_memory(recipe("video", ["train.batch_size=64", "train.grad_accum=1"]))
    check_memory_fits(estimate, 141.0, "an H200")  # fits
    with pytest.raises(ResourceError) as refused:
        check_memory_fits(estimate, 79.6, "this machine's GPU")
    message = str(refused.value)
    assert f"estimated peak is {estimate['peak_gib']:g} GiB" in message and "79.6 GiB" in message
    assert "train.grad_accum" in message and "grad_checkpointing" in message

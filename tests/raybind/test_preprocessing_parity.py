"""Preprocessing parity with LanguageBind (`raybind.bench.preprocessing_parity`): the tower inputs RayBind makes
from real photographs stay within documented distances of LanguageBind's processors' (docs/models.md,
"Preprocessing parity"). The computation is deterministic; the bounds sit well above the measured values
(1.5-3x, room for another FFmpeg or OpenCV build) and well below what a changed normalisation constant, a
crop moved by a pixel or another resize size would give."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from encoders.config import PreprocessConfig
from encoders.constants import CLIP_MEAN
from raybind.bench import preprocessing_parity as parity

# row -> (mean |diff| bound, max |diff| bound), normalised units; measured 2026-12-02 in the comments.
BOUNDS = {
    "image": (0.08, 2.0),                                               # 0.0523, 1.345
    "image, same decoded pixels": (0.08, 2.0),                          # 0.0523, 1.345
    "image, torchvision >= 0.17 (antialiased bicubic)": (0.025, 0.6),   # 0.0157, 0.327
    "thermal": (0.08, 2.0),                                             # 0.0524, 1.354
    "depth, 0.5-8 m": (0.012, 0.1),                                     # 0.0078, 0.046
    "depth, 1-20 m (clamped at 10 m)": (0.025, 0.25),                   # 0.0148, 0.115
    "video, same frames": (0.09, 4.5),                                  # 0.0592, 3.182
    "video, same frames, long side floored (what-if)": (0.02, 1.0),     # 0.0134, 0.585
    "video, each side's frame choice": (0.4, 5.0),                      # 0.2595, 3.769
    "audio, 44.1 kHz WAV": (0.006, 0.35),                               # 0.0029, 0.169
    "audio, same 16 kHz waveform": (1e-5, 1e-4),                        # 0, 0
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return parity.measure(tmp_path_factory.mktemp("parity"))


def test_every_row_within_its_documented_bound(result):
    assert set(result["rows"]) == set(BOUNDS)
    for name, (mean_bound, max_bound) in BOUNDS.items():
        row = result["rows"][name]
        assert row["mean_abs"] <= mean_bound, (name, row)
        assert row["max_abs"] <= max_bound, (name, row)


def test_the_mel_pipeline_is_languagebinds_exactly(result):
    # Same waveform: fbank settings, tiling and the (x - mean) / (2 std) statistics all agree.
    assert result["rows"]["audio, same 16 kHz waveform"]["psnr_db"] is None


def test_the_known_differences_are_the_documented_ones(result):
    facts = result["facts"]
    # LanguageBind floors the uniform frame positions, RayBind rounds them: 4 of 8 ids differ on 16 frames.
    assert facts["video_frames"]["languagebind_ids"] == [0, 2, 4, 6, 8, 10, 12, 15]
    assert facts["video_frames"]["raybind_ids"] == [0, 2, 4, 6, 9, 11, 13, 15]
    # PIL and OpenCV decode this JPEG alike (both libjpeg-turbo here).
    assert facts["jpeg_decoders_mean_abs_levels"] <= 0.5
    # The frame-choice row is the largest video difference; flooring the long side removes most of the other.
    rows = result["rows"]
    assert rows["video, each side's frame choice"]["mean_abs"] > rows["video, same frames"]["mean_abs"]
    assert rows["video, same frames, long side floored (what-if)"]["mean_abs"] < \
        0.5 * rows["video, same frames"]["mean_abs"]


def test_the_bounds_catch_a_moved_crop_or_changed_constants():
    rgb = parity.photo_rgb()
    reference = parity.lb_image(rgb, antialias=True)
    moved = parity.lb_image(np.ascontiguousarray(rgb[:, 2:]), antialias=True)   # crop 1 px to the right
    assert parity.compare(reference, moved)["mean_abs"] > BOUNDS["image, torchvision >= 0.17 (antialiased bicubic)"][0]
    png = parity.depth_png_mm(0.5, 8.0)
    languagebind = parity.lb_depth(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED))
    mean_bound = BOUNDS["depth, 0.5-8 m"][0]
    for channel in range(3):   # RayBind's CLIP mean off by 0.01 in any one channel
        mean = list(CLIP_MEAN)
        mean[channel] += 0.01
        ours = parity._raybind_depth(png, PreprocessConfig(mean=tuple(mean)))
        assert parity.compare(languagebind, ours)["mean_abs"] > mean_bound, channel
    ours = parity._raybind_depth(png, PreprocessConfig(depth_max_m=9.5))   # another depth scale
    assert parity.compare(languagebind, ours)["mean_abs"] > mean_bound

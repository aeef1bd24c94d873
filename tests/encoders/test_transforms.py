import math

import numpy as np
import pytest
import torch

from encoders import PreprocessConfig, transforms
from encoders.constants import CLIP_MEAN, CLIP_STD


def _tone(seconds: float, rate: int, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * math.pi * hz * t * (1 + t)).astype(np.float32)  # a chirp: chunks differ over time
    return np.stack([wave] * channels) if channels > 1 else wave


def test_audio_mel_default_is_languagebind_shape():
    mel = transforms.audio_mel(_tone(12.0, 16_000), 16_000)
    assert mel.shape == (3, 126, 1036) and mel.dtype == torch.float32
    assert not torch.allclose(mel[0], mel[2]), "a long clip gives distinct front/back chunks"


def test_audio_mel_resamples_and_mixes_to_mono():
    stereo_44k = transforms.audio_mel(_tone(3.0, 44_100, channels=2), 44_100)
    mono_16k = transforms.audio_mel(_tone(3.0, 16_000), 16_000)
    assert stereo_44k.shape == mono_16k.shape == (3, 126, 1036)
    assert torch.corrcoef(torch.stack([stereo_44k.flatten(), mono_16k.flatten()]))[0, 1] > 0.95


def test_short_audio_is_tiled_into_three_identical_channels():
    mel = transforms.audio_mel(_tone(1.0, 16_000), 16_000)
    assert torch.equal(mel[0], mel[1]) and torch.equal(mel[1], mel[2])
    frames = 1 + (16_000 - 400) // 160
    torch.testing.assert_close(mel[0][:, :frames], mel[0][:, frames:2 * frames])


def test_audio_eval_is_deterministic_and_training_random():
    wave = _tone(15.0, 16_000)
    assert torch.equal(transforms.audio_mel(wave, 16_000), transforms.audio_mel(wave, 16_000))
    a = transforms.audio_mel(wave, 16_000, train=True, generator=torch.Generator().manual_seed(1))
    b = transforms.audio_mel(wave, 16_000, train=True, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


def test_audio_normalisation_constants():
    cfg = PreprocessConfig()
    mel = transforms.audio_mel(_tone(2.0, 16_000), 16_000, cfg)
    raw = transforms.fbank(torch.from_numpy(_tone(2.0, 16_000))[None] - float(_tone(2.0, 16_000).mean()), cfg)
    torch.testing.assert_close(mel[0, :, 0], (raw[0] + 4.2677393) / (4.5689974 * 2), atol=1e-3, rtol=1e-3)


def test_audio_mel_follows_config():
    cfg = PreprocessConfig(mel_bins=64, target_length=256)
    assert transforms.audio_mel(_tone(1.0, 8_000), 8_000, cfg).shape == (3, 64, 256)


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.zeros((2, 2, 10), np.float32)])
def test_audio_mel_rejects_bad_waveforms(bad):
    with pytest.raises(ValueError, match="waveform"):
        transforms.audio_mel(bad, 16_000)


def test_video_frames_eval_resizes_centre_crops_and_normalises():
    frames = np.zeros((8, 120, 160, 3), np.uint8)
    frames[..., 0] = 255
    out = transforms.video_frames(frames, PreprocessConfig(image_size=64))
    assert out.shape == (8, 3, 64, 64)
    torch.testing.assert_close(out[:, 0].mean(), torch.tensor((1 - CLIP_MEAN[0]) / CLIP_STD[0]))
    torch.testing.assert_close(out[:, 1].mean(), torch.tensor((0 - CLIP_MEAN[1]) / CLIP_STD[1]))
    assert torch.equal(out, transforms.video_frames(frames, PreprocessConfig(image_size=64)))


def test_video_frames_never_flips_at_eval_but_may_in_training():
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[:, :, :32] = 255  # left half white
    cfg = PreprocessConfig(image_size=64)
    assert transforms.video_frames(frames, cfg)[0, 0, 0, 0] > 0  # left stays white at eval
    flipped = [bool(transforms.video_frames(frames, cfg, train=True, generator=torch.Generator().manual_seed(s))
                    [0, 0, 0, 0] < 0) for s in range(16)]
    assert any(flipped) and not all(flipped)


def test_random_flip_off_keeps_sides_in_training():
    """Captions that say "moving left" need frames that are never mirrored; crops still vary."""
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    frames[:, :, :32] = 255
    depth = np.full((64, 64), 9.0, np.float32)
    depth[:, :32] = 1.0                             # near on the left
    cfg = PreprocessConfig(image_size=64, random_flip=False)
    for seed in range(16):
        video = transforms.video_frames(frames, cfg, train=True, generator=torch.Generator().manual_seed(seed))
        near = transforms.depth_image(depth, cfg, train=True, generator=torch.Generator().manual_seed(seed))
        assert video[0, 0, 0, 0] > 0 and near[0, 0, 0] < near[0, 0, -1]
    assert PreprocessConfig.from_dict(cfg.to_dict()).random_flip is False   # kept with the checkpoint


def test_video_frames_share_one_crop_per_clip_and_accept_batches():
    clip = np.random.default_rng(0).integers(0, 255, (2, 4, 80, 80, 3), dtype=np.uint8)
    clip[:, :] = clip[:, :1]  # identical frames within a clip
    out = transforms.video_frames(clip, PreprocessConfig(image_size=64), train=True,
                                  generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 3, 64, 64)
    assert all(torch.equal(out[c, t], out[c, 0]) for c in range(2) for t in range(4))


def test_depth_image_clips_scales_and_normalises():
    depth = np.full((2, 50, 70), 25.0, np.float32)  # beyond 10 m: clipped to 10 -> 1.0
    out = transforms.depth_image(depth, PreprocessConfig(image_size=32))
    assert out.shape == (2, 3, 32, 32)
    expected = torch.tensor([(1 - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)])
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), expected)
    with pytest.raises(ValueError, match="metres"):
        transforms.depth_image(np.zeros((4, 4), np.uint8))


def test_image_and_thermal_reject_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\[\.\.\., H, W, 3\]"):
        transforms.image(np.zeros((32, 32, 4), np.uint8))
    assert transforms.thermal_image(np.zeros((32, 48, 3), np.uint8), PreprocessConfig(image_size=32)).shape == (3, 32, 32)

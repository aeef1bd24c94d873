"""Public preprocessing, shared by the data pipeline, training and inference.

Inputs are raw decoded data (uint8 RGB frames channels-last, waveforms, depth in metres); outputs are
normalised float tensors in the layout the towers take. Every function accepts leading batch
dimensions, runs on whatever device its input lives on, and is deterministic unless `train=True`
(random crop and flip, random audio chunks); at eval it centre-crops and uses evenly spaced chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from encoders.config import PreprocessConfig

DEFAULT = PreprocessConfig()


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


def resize_short_side(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic (antialiased) resize of float [N, C, H, W] so the shorter side is `size`."""
    h, w = images.shape[-2:]
    if min(h, w) == size:
        return images
    scale = size / min(h, w)
    new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    return F.interpolate(images, size=new_hw, mode="bicubic", align_corners=False, antialias=True)


def _crop_flip(images: torch.Tensor, cfg: PreprocessConfig, train: bool,
               generator: torch.Generator | None) -> torch.Tensor:
    """Crop [N, C, H, W] to size x size (random or centre) and, in training, maybe flip (where
    `cfg.random_flip`). One choice for all N."""
    size = cfg.image_size
    h, w = images.shape[-2:]
    if train:
        top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    images = images[..., top:top + size, left:left + size]
    if train and cfg.random_flip and bool(torch.rand(1, generator=generator) < 0.5):
        images = images.flip(-1)
    return images


def _normalize(images: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    mean = torch.tensor(cfg.mean, device=images.device, dtype=images.dtype).view(3, 1, 1)
    std = torch.tensor(cfg.std, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images - mean) / std


def _rgb_group(frames: torch.Tensor, cfg: PreprocessConfig, train: bool, generator) -> torch.Tensor:
    """uint8 [N, H, W, 3] of one sample (frames share crop and flip) -> float [N, 3, S, S]."""
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    x = resize_short_side(x, cfg.image_size)
    x = _crop_flip(x, cfg, train, generator)
    return _normalize(x.clamp(0.0, 1.0), cfg)


def _check_rgb(x: torch.Tensor, what: str, min_dims: int) -> None:
    if x.ndim < min_dims or x.shape[-1] != 3:
        raise ValueError(f"{what} expects uint8 RGB [..., H, W, 3] with at least {min_dims} dims, got {list(x.shape)}")


def video_frames(frames: np.ndarray | torch.Tensor, cfg: PreprocessConfig = DEFAULT, train: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [..., T, H, W, 3] -> float [..., T, 3, S, S]; one crop/flip per clip."""
    x = _as_tensor(frames)
    _check_rgb(x, "video_frames", 4)
    lead = x.shape[:-4]
    clips = x.reshape(-1, *x.shape[-4:])
    out = torch.stack([_rgb_group(clip, cfg, train, generator) for clip in clips])
    return out.reshape(*lead, *out.shape[1:])


def image(images: np.ndarray | torch.Tensor, cfg: PreprocessConfig = DEFAULT, train: bool = False,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, S, S]; one crop/flip per image."""
    x = _as_tensor(images)
    _check_rgb(x, "image", 3)
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    out = torch.cat([_rgb_group(img[None], cfg, train, generator) for img in flat])
    return out.reshape(*lead, *out.shape[1:])


def thermal_image(images: np.ndarray | torch.Tensor, cfg: PreprocessConfig = DEFAULT, train: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Thermal frames are 3-channel uint8 images (as the sRGB-TIR generator emits them): CLIP image transform."""
    return image(images, cfg, train, generator)


def depth_image(depth_m: np.ndarray | torch.Tensor, cfg: PreprocessConfig = DEFAULT, train: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Depth in metres [..., H, W] -> float [..., 3, S, S]: clip to [min, max], / max, 3 channels, CLIP norm."""
    x = _as_tensor(depth_m)
    if x.ndim < 2 or not torch.is_floating_point(x):
        raise ValueError(f"depth_image expects float depth in metres [..., H, W], got {list(x.shape)} {x.dtype}")
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:]).float()
    flat = flat.clamp(cfg.depth_min_m, cfg.depth_max_m) / cfg.depth_max_m
    out = []
    for d in flat:
        d = resize_short_side(d[None].expand(1, 3, -1, -1), cfg.image_size)
        d = _crop_flip(d, cfg, train, generator)
        out.append(_normalize(d.clamp(0.0, 1.0), cfg))
    out_t = torch.cat(out)
    return out_t.reshape(*lead, *out_t.shape[1:])


def fbank(waveform: torch.Tensor, cfg: PreprocessConfig = DEFAULT) -> torch.Tensor:
    """Kaldi log-mel filterbank [frames, mel_bins] of a 16 kHz mono waveform (LanguageBind's settings)."""
    window = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    if waveform.shape[-1] < window:  # fbank needs one full window: zero-pad very short clips
        waveform = F.pad(waveform, (0, window - waveform.shape[-1]))
    return torchaudio.compliance.kaldi.fbank(
        waveform, htk_compat=True, sample_frequency=cfg.sample_rate, use_energy=False,
        window_type="hanning", num_mel_bins=cfg.mel_bins, dither=0.0,
        frame_length=cfg.frame_length_ms, frame_shift=cfg.frame_shift_ms)


def _chunk_starts(total: int, length: int, train: bool, generator: torch.Generator | None) -> list[int]:
    """Front/middle/back chunk starts: random within each third when training, evenly spaced at eval."""
    last = total - length
    if not train:
        return [0, last // 2, last]
    bounds = np.array_split(np.arange(last + 1), 3)
    return [int(b[int(torch.randint(0, len(b), (1,), generator=generator))]) if len(b) else last for b in bounds]


def audio_mel(waveform: np.ndarray | torch.Tensor, sample_rate: int, cfg: PreprocessConfig = DEFAULT,
              train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Waveform [samples] or [channels, samples] at any rate -> float [3, mel_bins, target_length].

    Mono mix, resample to cfg.sample_rate, remove DC, Kaldi fbank; clips longer than target_length give
    three chunks (front/middle/back) as channels, shorter ones are tile-repeated into all three.
    """
    x = _as_tensor(waveform).float()
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[-1] == 0:
        raise ValueError(f"audio_mel expects a non-empty waveform [samples] or [channels, samples], got {list(x.shape)}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x = x.mean(dim=0, keepdim=True)
    if sample_rate != cfg.sample_rate:
        x = torchaudio.functional.resample(x, sample_rate, cfg.sample_rate)
    x = x - x.mean()
    mel = fbank(x, cfg)                                        # [frames, mel_bins]
    frames, length = mel.shape[0], cfg.target_length
    if frames <= length:
        mel = mel.repeat(math.ceil(length / frames), 1)[:length]
        chunks = torch.stack([mel, mel, mel])
    else:
        chunks = torch.stack([mel[s:s + length] for s in _chunk_starts(frames, length, train, generator)])
    return _normalized(chunks, cfg)


def _normalized(chunks: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    chunks = chunks.transpose(1, 2)                            # [3, mel_bins, target_length]
    return (chunks - cfg.audio_norm_mean) / (cfg.audio_norm_std * 2)


def audio_windows(total_samples: int, cfg: PreprocessConfig = DEFAULT) -> list[tuple[int, int]] | None:
    """The (start, count) sample ranges at `cfg.sample_rate` whose fbank frames are exactly the evaluation
    chunks (front/middle/back) of a `total_samples` waveform; None when the clip is used whole (it is not
    longer than target_length frames). A decoder reads only these, so memory does not grow with duration."""
    hop = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
    window = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
    frames = 1 + (total_samples - window) // hop if total_samples >= window else 1
    if frames <= cfg.target_length:
        return None
    span = (cfg.target_length - 1) * hop + window
    return [(start * hop, span) for start in _chunk_starts(frames, cfg.target_length, False, None)]


def audio_mel_windows(windows: Sequence[np.ndarray | torch.Tensor], cfg: PreprocessConfig = DEFAULT) -> torch.Tensor:
    """`audio_mel` of a long clip from only its `audio_windows` (mono, at cfg.sample_rate): the same
    [3, mel_bins, target_length]. Kaldi's fbank removes each frame's DC offset, so the whole-clip mean that
    `audio_mel` subtracts changes nothing here."""
    chunks = []
    for window in windows:
        x = _as_tensor(window).float().reshape(1, -1)
        chunks.append(fbank(x - x.mean(), cfg)[:cfg.target_length])
    return _normalized(torch.stack(chunks), cfg)

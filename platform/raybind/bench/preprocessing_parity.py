"""Preprocessing parity with LanguageBind: RayBind's decode and tower-input path against LanguageBind's
processors on real photographs, per modality, in the tower's normalised input units.

Not a speed benchmark (nothing here is timed): it says how far the tensors a tower sees are from the ones
LanguageBind's own processors would give it, and why. Everything is deterministic and offline: the inputs
are matplotlib's sample data (`grace_hopper.jpg`, a photograph; `jacksboro_fault_dem.npz`, a measured
elevation map used as a depth map), a clip RayBind's own writer encodes from pans across the photograph,
and a chirp in noise.

LanguageBind's chains (PKU-YuanGroup/LanguageBind, `languagebind/{image,thermal,depth,video,audio}/
processing_*.py`, with the torch 1.13.1 / torchvision 0.14.1 its README pins) are re-expressed with torch,
torchvision functional ops, PIL and OpenCV:

- image, thermal: PIL decode, `ToTensor`, `Resize(224, bicubic)` (torchvision 0.14 does not antialias
  tensors; 0.17 and later do: both are measured), `CenterCrop(224)` (offset `round((h - 224) / 2)`),
  `Normalize` with OpenAI CLIP's mean and std.
- depth: `cv2.imread(IMREAD_UNCHANGED)` as float32, / 1000 (millimetres, NYU), clip to >= 0.01 m, clip to
  <= max_depth (10 m in its training scripts), / max_depth, 3 channels, then the image resize, crop, norm.
- video: frame ids `np.linspace(0, n - 1, T, dtype=int)` (floored), / 255, `NormalizeVideo`,
  pytorchvideo's `ShortSideScale(224)` (bilinear, `align_corners=False`, no antialias, long side floored),
  `CenterCropVideo(224)`. Its inference processor also has `RandomHorizontalFlipVideo(p=0.5)`: left out
  (it would flip half the clips at random).
- audio: torchaudio load, `torchaudio.functional.resample` to 16 kHz, subtract the mean, Kaldi fbank (hanning,
  25 ms / 10 ms, htk_compat, no dither, no energy), tile a short clip to target_length, chunks as channels,
  (x - mean) / (2 std).

The frames are decoded once and handed to both chains (decord, LanguageBind's video decoder, is not
installed here: the video decoder is OpenCV's for both, LanguageBind's own `opencv` backend). The image
decoders are each side's own (PIL for LanguageBind, OpenCV for RayBind), and are also compared alone.

    python -m raybind.bench.preprocessing_parity [--json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import types
import wave
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from encoders import transforms
from encoders.config import PreprocessConfig
from raybind.data import decode, media
from raybind.data.media_encode import write_audio, write_video
from raybind.data.tower_input import tower_input

# LanguageBind's numbers, written out from its processors (not imported from encoders.constants, so a change
# there shows up here as a difference).
LB_MEAN = (0.48145466, 0.4578275, 0.40821073)
LB_STD = (0.26862954, 0.26130258, 0.27577711)
LB_SIZE = 224
LB_DEPTH_SCALE = 1000.0
LB_DEPTH_MIN = 0.01
LB_MAX_DEPTH = 10.0
LB_AUDIO_MEAN = -4.2677393
LB_AUDIO_STD = 4.5689974
LB_AUDIO_RATE = 16_000
LB_FRAME_LENGTH_MS = 25
LB_FRAME_SHIFT_MS = 10

VIDEO_SOURCE_FRAMES = 16
AUDIO_SECONDS = 5.0       # shorter than target_length frames: tiled, so LanguageBind's random chunks play no part
AUDIO_FILE_RATE = 44_100


def sample_data(name: str) -> Path:
    """A file of matplotlib's sample data (shipped with matplotlib, so available offline)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


# ---------------------------------------------------------------- LanguageBind's chains


def lb_image(rgb: np.ndarray, antialias: bool = False) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> [3, 224, 224] as LanguageBind's image (and thermal) processor makes it."""
    x = TF.to_tensor(rgb)
    return _lb_resize_crop_normalize(x, antialias)


def _lb_resize_crop_normalize(x: torch.Tensor, antialias: bool) -> torch.Tensor:
    x = TF.resize(x, LB_SIZE, interpolation=InterpolationMode.BICUBIC, antialias=antialias)
    x = TF.center_crop(x, LB_SIZE)
    return TF.normalize(x, LB_MEAN, LB_STD)


def lb_depth(raw: np.ndarray, max_depth: float = LB_MAX_DEPTH, antialias: bool = False) -> torch.Tensor:
    """A depth PNG's values (millimetres) [H, W] -> [3, 224, 224] as LanguageBind's depth processor makes it."""
    d = raw.astype(np.float32) / LB_DEPTH_SCALE
    d = d.clip(min=LB_DEPTH_MIN)
    d = d.clip(max=max_depth) / max_depth
    x = torch.from_numpy(d)[None].repeat(3, 1, 1)
    return _lb_resize_crop_normalize(x, antialias)


def lb_frame_ids(total: int, count: int) -> np.ndarray:
    """LanguageBind's frame choice: uniform, floored."""
    return np.linspace(0, total - 1, count, dtype=int)


def lb_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] (already sampled) -> [T, 3, 224, 224] as LanguageBind's video processor makes
    it (without its random flip)."""
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0          # [C, T, H, W]
    mean = torch.tensor(LB_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(LB_STD).view(3, 1, 1, 1)
    x = (x - mean) / std
    h, w = x.shape[-2:]
    if w < h:
        size = (int(math.floor(h / w * LB_SIZE)), LB_SIZE)
    else:
        size = (LB_SIZE, int(math.floor(w / h * LB_SIZE)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    top, left = int(round((size[0] - LB_SIZE) / 2.0)), int(round((size[1] - LB_SIZE) / 2.0))
    x = x[..., top:top + LB_SIZE, left:left + LB_SIZE]
    return x.permute(1, 0, 2, 3)


def lb_audio(waveform: torch.Tensor, rate: int, mel_bins: int, target_length: int) -> torch.Tensor:
    """[channels, samples] at `rate` -> [3, mel_bins, target_length] as LanguageBind's audio processor
    makes it, for a clip no longer than target_length frames (longer ones take random chunks there)."""
    x = waveform.float()
    if rate != LB_AUDIO_RATE:
        x = torchaudio.functional.resample(x, orig_freq=rate, new_freq=LB_AUDIO_RATE)
    x = x - x.mean()
    mel = torchaudio.compliance.kaldi.fbank(
        x, htk_compat=True, sample_frequency=LB_AUDIO_RATE, use_energy=False, window_type="hanning",
        num_mel_bins=mel_bins, dither=0.0, frame_length=LB_FRAME_LENGTH_MS, frame_shift=LB_FRAME_SHIFT_MS)
    if mel.shape[0] > target_length:
        raise ValueError("lb_audio: clips longer than target_length take random chunks in LanguageBind")
    mel = mel.repeat(target_length // mel.shape[0] + 1, 1)[:target_length]
    fused = torch.stack([mel, mel, mel]).transpose(1, 2)
    return (fused - LB_AUDIO_MEAN) / (LB_AUDIO_STD * 2)


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """16-bit PCM WAV -> float [channels, samples] in [-1, 1) and its rate (what soundfile gives torchaudio)."""
    with wave.open(str(path)) as f:
        rate, channels = f.getframerate(), f.getnchannels()
        data = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, channels).T
    return torch.from_numpy(data.astype(np.float32) / 32768.0), rate


# ---------------------------------------------------------------- inputs from real data


def photo_rgb() -> np.ndarray:
    """grace_hopper.jpg decoded by OpenCV, as RGB [600, 512, 3]."""
    return cv2.cvtColor(cv2.imread(str(sample_data("grace_hopper.jpg")), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def pan_frames(rgb: np.ndarray, count: int = VIDEO_SOURCE_FRAMES) -> np.ndarray:
    """A camera pan with a slow zoom across the photograph: [count, 336, 448, 3] (landscape, like most video)."""
    h, w = rgb.shape[:2]
    out = []
    for t in range(count):
        crop_w = int(w * (1.0 - 0.15 * t / max(count - 1, 1))) // 4 * 4
        crop_h = crop_w * 3 // 4
        left = (w - crop_w) * t // max(count - 1, 1)
        top = (h - crop_h) * (count - 1 - t) // max(count - 1, 1)
        crop = rgb[top:top + crop_h, left:left + crop_w]
        out.append(cv2.resize(crop, (448, 336), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def depth_png_mm(near_m: float, far_m: float) -> bytes:
    """The measured elevation map scaled to depths from `near_m` to `far_m`, as a 16-bit millimetre PNG."""
    with np.load(sample_data("jacksboro_fault_dem.npz")) as data:
        elevation = data["elevation"].astype(np.float64)
    unit = (elevation - elevation.min()) / (elevation.max() - elevation.min())
    millimetres = np.round((near_m + unit * (far_m - near_m)) * 1000.0).astype(np.uint16)
    ok, png = cv2.imencode(".png", millimetres)
    assert ok
    return png.tobytes()


def chirp_in_noise(seconds: float, rate: int) -> np.ndarray:
    """A 200 Hz -> 6 kHz chirp with a 440 Hz tone and white noise (fixed seed), peak about 0.5."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * (200 * t + (6000 - 200) / (2 * seconds) * t ** 2)
    noise = np.random.default_rng(0).normal(0.0, 0.05, t.shape)
    return (0.3 * np.sin(phase) + 0.1 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32)


# ---------------------------------------------------------------- comparison


def compare(reference: torch.Tensor, ours: torch.Tensor) -> dict[str, float | None]:
    """mean and max |ours - reference| (normalised units) and PSNR in dB against the reference's range
    (None: identical)."""
    if reference.shape != ours.shape:
        raise ValueError(f"shapes differ: LanguageBind {list(reference.shape)}, RayBind {list(ours.shape)}")
    diff = (ours.double() - reference.double()).abs()
    mse = float(diff.pow(2).mean())
    peak = float(reference.max() - reference.min())
    return {"mean_abs": round(float(diff.mean()), 5), "max_abs": round(float(diff.max()), 4),
            "psnr_db": None if mse == 0 else round(10 * math.log10(peak ** 2 / mse), 1)}


def _raybind_image(data: bytes, pre: PreprocessConfig, modality: str) -> torch.Tensor:
    column = decode.as_column(modality, media.decode_image(data, pre.image_size))
    return tower_input(modality, torch.from_numpy(column)[None], pre, train=False)[0]


def _raybind_depth(png: bytes, pre: PreprocessConfig) -> torch.Tensor:
    spec = types.SimpleNamespace(frame_size=pre.image_size)   # all depth_map reads of the decode spec
    column = decode.as_column("depth", decode.depth_map(media.decode_depth(png, "depth.png"), spec))
    return tower_input("depth", torch.from_numpy(column)[None], pre, train=False)[0]


def _opencv_frames(path: Path) -> np.ndarray:
    """Every frame of a clip, RGB, at full size, as OpenCV decodes it (LanguageBind's `opencv` backend)."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


def _area_floored(frames: np.ndarray, size: int) -> np.ndarray:
    """RayBind's decode-time resize (area, uint8) but to LanguageBind's floored long side and centre crop:
    what the video row would be if `media.square_crop` floored instead of rounding."""
    h, w = frames.shape[1:3]
    new_h, new_w = (size, int(w * size / h)) if h <= w else (int(h * size / w), size)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA)[top:top + size, left:left + size]
                     for f in frames])


def measure(workdir: Path, pre: PreprocessConfig | None = None) -> dict:
    """Every row of the parity table: {row: {mean_abs, max_abs, psnr_db, cause}}, plus the inputs' facts."""
    pre = pre or PreprocessConfig()
    workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    facts: dict[str, object] = {}

    # Image: each side's own decoder, then the decoders alone, then the same pixels through both chains.
    jpeg = sample_data("grace_hopper.jpg").read_bytes()
    pil_rgb = np.array(Image.open(sample_data("grace_hopper.jpg")))
    cv_rgb = photo_rgb()
    ours = _raybind_image(jpeg, pre, "image")
    rows["image"] = {**compare(lb_image(pil_rgb), ours),
                     "cause": "decoder (PIL vs OpenCV: same pixels here) + resize kernel (bicubic without antialias vs area)"}
    rows["image, same decoded pixels"] = {**compare(lb_image(cv_rgb), ours),
                                          "cause": "resize kernel: bicubic without antialias vs area"}
    rows["image, torchvision >= 0.17 (antialiased bicubic)"] = {
        **compare(lb_image(cv_rgb, antialias=True), ours), "cause": "resize kernel: antialiased bicubic vs area"}
    decoded = np.abs(pil_rgb.astype(np.int16) - cv_rgb.astype(np.int16))
    facts["jpeg_decoders_mean_abs_levels"] = round(float(decoded.mean()), 3)
    facts["jpeg_decoders_max_abs_levels"] = int(decoded.max())
    facts["image_size"] = list(cv_rgb.shape[:2])

    # Thermal: the photograph as a greyscale 3-channel JPEG (the form LLVIP's thermal frames take).
    grey = cv2.cvtColor(cv2.cvtColor(cv_rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2BGR)
    ok, thermal_jpeg = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    thermal_path = workdir / "thermal.jpg"
    thermal_path.write_bytes(thermal_jpeg.tobytes())
    rows["thermal"] = {**compare(lb_image(np.array(Image.open(thermal_path))),
                                 _raybind_image(thermal_jpeg.tobytes(), pre, "thermal")),
                       "cause": "as image (greyscale JPEG)"}

    # Depth: the same 16-bit PNG read by both; one indoor range, one with far values beyond the 10 m clamp.
    for label, near, far in (("depth, 0.5-8 m", 0.5, 8.0), ("depth, 1-20 m (clamped at 10 m)", 1.0, 20.0)):
        png = depth_png_mm(near, far)
        raw = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        rows[label] = {**compare(lb_depth(raw), _raybind_depth(png, pre)),
                       "cause": "resize (bicubic vs area, on metres before the clamp), float16 shipping"}
    facts["depth_size"] = list(raw.shape)

    # Video: a clip of pans across the photograph, written and decoded by RayBind's own code.
    clip = workdir / "pan.mp4"
    write_video(clip, pan_frames(cv_rgb), fps=8)
    ours_video = tower_input("video", torch.from_numpy(media.decode_video(str(clip), pre.num_frames,
                                                                          pre.image_size))[None], pre, train=False)[0]
    full = _opencv_frames(clip)
    ours_ids = media.sample_indices(len(full), pre.num_frames)
    lb_ids = lb_frame_ids(len(full), pre.num_frames)
    rows["video, same frames"] = {**compare(lb_video(full[ours_ids]), ours_video),
                                  "cause": "long side 299 px (rounded) vs 298 (floored): 0.3% scale; kernel bilinear vs area"}
    floored = tower_input("video", torch.from_numpy(_area_floored(full[ours_ids], pre.image_size))[None], pre,
                          train=False)[0]
    rows["video, same frames, long side floored (what-if)"] = {
        **compare(lb_video(full[ours_ids]), floored),
        "cause": "resize kernel alone: RayBind's area resize to LanguageBind's floored long side"}
    rows["video, each side's frame choice"] = {**compare(lb_video(full[lb_ids]), ours_video),
                                               "cause": "frame ids floored (LanguageBind) vs rounded (RayBind)"}
    facts["video_frames"] = {"source": len(full), "size": list(full.shape[1:3]),
                             "languagebind_ids": lb_ids.tolist(), "raybind_ids": ours_ids.tolist()}

    # Audio: a 44.1 kHz WAV (PyAV's resampler vs torchaudio's), then the same 16 kHz waveform (the mel alone).
    wav = write_audio(workdir / "chirp.wav", chirp_in_noise(AUDIO_SECONDS, AUDIO_FILE_RATE), AUDIO_FILE_RATE)
    lb_wave, lb_rate = read_wav(wav)
    ours_wave = media.decode_audio(str(wav), pre.sample_rate)
    rows["audio, 44.1 kHz WAV"] = {
        **compare(lb_audio(lb_wave, lb_rate, pre.mel_bins, pre.target_length),
                  transforms.audio_mel(ours_wave, pre.sample_rate, pre)),
        "cause": "resampler: FFmpeg swresample (PyAV) vs torchaudio sinc"}
    same = torch.from_numpy(np.asarray(ours_wave))[None]
    rows["audio, same 16 kHz waveform"] = {
        **compare(lb_audio(same, pre.sample_rate, pre.mel_bins, pre.target_length),
                  transforms.audio_mel(same, pre.sample_rate, pre)),
        "cause": "none expected (same fbank, tiling and statistics)"}
    return {"rows": rows, "facts": facts}


def markdown_table(result: dict) -> str:
    """The parity rows as the Markdown table docs/models.md shows."""
    lines = ["| input | mean abs diff | max abs diff | PSNR (dB) | cause |", "|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        psnr = "identical" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
        lines.append(f"| {name} | {row['mean_abs']:.4f} | {row['max_abs']:.3f} | {psnr} | {row['cause']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--workdir", help="where the clip, WAV and JPEG go (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(Path(args.workdir or tmp))
    if not args.json:
        print(markdown_table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

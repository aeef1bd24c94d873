"""Writing real encoded media (H.264/AAC mp4, MPEG-4 avi, wav/flac/ogg/mp3) with PyAV's bundled FFmpeg.

Used by the demo-data generator, the tests and the benchmark: every clip they use is a real file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".mkv": "libx264", ".mov": "libx264"}
AUDIO_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".ogg": "libopus", ".mp3": "libmp3lame", ".m4a": "aac"}
_CONTAINER_AUDIO = {".mp4": "aac", ".avi": "mp3", ".mkv": "aac", ".mov": "aac"}


def _encode_audio(container, stream, wave: np.ndarray, rate: int) -> None:
    frame_size = stream.codec_context.frame_size or 1024
    samples = np.clip(wave, -1, 1).astype(np.float32)
    for start in range(0, len(samples), frame_size):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + frame_size], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_video(path: str | Path, frames: np.ndarray, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16_000, rotate: int = 0, gop: int | None = None) -> Path:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even) and an optional mono waveform into one file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_CODECS:
        raise ValueError(f"unsupported video container {suffix!r}; valid: {sorted(VIDEO_CODECS)}")
    frames = np.asarray(frames, np.uint8)
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(VIDEO_CODECS[suffix], rate=Fraction(fps).limit_denominator(1000))
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        if gop:
            vstream.codec_context.gop_size = gop
        if suffix != ".avi":
            vstream.codec_context.options = {"preset": "veryfast"}
        if rotate:
            vstream.metadata["rotate"] = str(rotate)
        astream = None
        if audio is not None:
            astream = container.add_stream(_CONTAINER_AUDIO[suffix], rate=sample_rate)
            astream.layout = "mono"
        for image in frames:
            for packet in vstream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None:
            _encode_audio(container, astream, audio, sample_rate)
    return path


def write_audio(path: str | Path, wave: np.ndarray, sample_rate: int = 16_000) -> Path:
    """Encode a mono float waveform; the codec follows the extension (.wav, .flac, .ogg, .mp3, .m4a)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_CODECS:
        raise ValueError(f"unsupported audio format {suffix!r}; valid: {sorted(AUDIO_CODECS)}")
    rate = 48_000 if suffix == ".ogg" and sample_rate not in (8000, 12000, 16000, 24000, 48000) else sample_rate
    with av.open(str(path), "w") as container:
        stream = container.add_stream(AUDIO_CODECS[suffix], rate=rate)
        stream.layout = "mono"
        _encode_audio(container, stream, wave, rate)
    return path

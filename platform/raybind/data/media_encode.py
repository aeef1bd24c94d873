"""Writing real encoded media (H.264/AAC mp4, MPEG-4 avi, wav/flac/ogg/mp3) with PyAV's bundled FFmpeg.

Used by the demo-data generator, the tests and the benchmark: every clip they use is a real file.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_CODECS = {".mp4": "libx264", ".avi": "mpeg4", ".mkv": "libx264", ".mov": "libx264"}
AUDIO_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".ogg": "libopus", ".mp3": "libmp3lame", ".m4a": "aac"}
_CONTAINER_AUDIO = {".mp4": "aac", ".avi": "mp3", ".mkv": "aac", ".mov": "aac"}
_MILLISECOND = Fraction(1, 1000)


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
                sample_rate: int = 16_000, rotate: int = 0, gop: int | None = None,
                frame_times: list[float] | None = None) -> Path:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even) and an optional mono waveform into one file.

    `rotate` (90, 180, 270; mp4/mov only) tags the track to be shown rotated clockwise, as phones do.
    `frame_times` (seconds, increasing, one per frame) makes a variable-frame-rate clip; `fps` then
    only names the nominal rate.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_CODECS:
        raise ValueError(f"unsupported video container {suffix!r}; valid: {sorted(VIDEO_CODECS)}")
    if rotate and (suffix not in (".mp4", ".mov") or rotate % 360 not in (90, 180, 270)):
        raise ValueError(f"rotate={rotate} needs an mp4/mov file and one of 90, 180, 270")
    frames = np.asarray(frames, np.uint8)
    if frame_times is not None and (len(frame_times) != len(frames) or np.any(np.diff(frame_times) <= 0)):
        raise ValueError("frame_times needs one strictly increasing time per frame")
    with av.open(str(path), "w") as container:
        vstream = container.add_stream(VIDEO_CODECS[suffix], rate=Fraction(fps).limit_denominator(1000))
        vstream.width, vstream.height = frames.shape[2], frames.shape[1]
        vstream.pix_fmt = "yuv420p"
        if gop:
            vstream.codec_context.gop_size = gop
        if frame_times is not None:
            vstream.time_base = vstream.codec_context.time_base = _MILLISECOND
        if suffix != ".avi":
            vstream.codec_context.options = {"preset": "veryfast"}
        astream = None
        if audio is not None:
            astream = container.add_stream(_CONTAINER_AUDIO[suffix], rate=sample_rate)
            astream.layout = "mono"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if frame_times is not None:
                frame.pts, frame.time_base = round(frame_times[i] * 1000), _MILLISECOND
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None:
            _encode_audio(container, astream, audio, sample_rate)
    if rotate:
        set_mp4_rotation(path, rotate)
    return path


_FIXED_16_16, _FIXED_2_30 = 1 << 16, 1 << 30


def _boxes(data: bytes | bytearray, start: int, end: int):
    """(type, payload start, box end) of the ISO-BMFF boxes in data[start:end]."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:
            size = end - start
        yield kind, start + header, start + size
        start += size


def set_mp4_rotation(path: str | Path, degrees: int) -> None:
    """Write a clockwise display rotation into the video track header (tkhd matrix) of an mp4/mov file.

    This is the transform phones record for portrait clips; FFmpeg and OpenCV read it as the display
    matrix. PyAV cannot set it when writing, so the finished file is patched in place.
    """
    path = Path(path)
    data = bytearray(path.read_bytes())
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees % 360]
    matrix = (cos * _FIXED_16_16, sin * _FIXED_16_16, 0, -sin * _FIXED_16_16, cos * _FIXED_16_16, 0, 0, 0, _FIXED_2_30)
    for kind, body, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for trak_kind, trak_body, trak_end in _boxes(data, body, end):
            if trak_kind != b"trak":
                continue
            children = {k: (b, e) for k, b, e in _boxes(data, trak_body, trak_end)}
            tkhd = children.get(b"tkhd")
            if tkhd is None:
                continue
            version = data[tkhd[0]]
            matrix_at = tkhd[0] + (4 + 8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4 + 4) + 8 + 8
            width = struct.unpack_from(">I", data, matrix_at + 36)[0]
            if width == 0:  # audio tracks have no width
                continue
            struct.pack_into(">9i", data, matrix_at, *matrix)
            path.write_bytes(bytes(data))
            return
    raise ValueError(f"{path} has no video track header to rotate")


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

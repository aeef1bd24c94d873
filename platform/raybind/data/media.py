"""Decoding media files into arrays: video frames (OpenCV), audio (PyAV/FFmpeg), images and depth maps.

No Ray here: these are the per-row functions the pipeline's decode stage runs, and what a torch
DataLoader baseline runs in the benchmark. Every failure raises `MediaError` with a reason that ends up
in the quarantine.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import cv2
import numpy as np

# OpenCV's own threads fight Ray's one-CPU tasks for cores.
cv2.setNumThreads(1)

# A container may misreport its frame count by a little; decoding less than this share of what it
# claims means the file was cut short.
MIN_DECODABLE_FRACTION = 0.5

# Frames larger than 8K UHD are refused before one is decoded: a single 16K frame is ~800 MB of BGR.
MAX_FRAME_PIXELS = 7680 * 4320


class MediaError(Exception):
    """A media file that cannot be used; `str(error)` is the quarantine reason."""


def sample_indices(total: int, count: int) -> np.ndarray:
    """`count` frame indices spread uniformly over `total` frames (repeats when the clip is shorter)."""
    if total <= 0:
        raise MediaError("video has no frames")
    return np.linspace(0, total - 1, count).round().astype(np.int64)


def square_crop(image: np.ndarray, size: int, interpolation: int | None = None) -> np.ndarray:
    """Resize so the short side is `size`, then centre-crop the long side: [size, size, ...], any dtype.

    Default interpolation: area when shrinking, bicubic when enlarging.
    """
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if interpolation is None:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top:top + size, left:left + size]


def fit_square(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR frame -> RGB uint8 [size, size, 3]: short side resized to `size`, long side centre-cropped."""
    return cv2.cvtColor(square_crop(frame_bgr, size), cv2.COLOR_BGR2RGB)


def time_uniform_indices(times: np.ndarray, count: int) -> np.ndarray:
    """`count` frame indices whose timestamps are nearest to times spread uniformly over the clip."""
    wanted = np.linspace(times[0], times[-1], count)
    right = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1)
    left = right - 1
    return np.where(wanted - times[left] <= times[right] - wanted, left, right).astype(np.int64)


@dataclass
class _Pass:
    frames: dict[int, np.ndarray]
    decodable: int        # frames grabbed before the stream ended (== index reached)
    ended_early: bool
    times_ms: list[float]  # presentation time of every frame grabbed


def open_video(path: str, threads: int = 0) -> cv2.VideoCapture:
    """An FFmpeg-backed capture; `threads` FFmpeg decoding threads (0: FFmpeg's default, one per core).

    Several decoders running side by side (Ray tasks, DataLoader workers) should use one thread each:
    per-core threads in every process oversubscribe the CPUs and cost more CPU time per frame.
    """
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
    return cv2.VideoCapture(path, cv2.CAP_FFMPEG, params)


@contextlib.contextmanager
def readable_path(source: str | bytes) -> Iterator[str]:
    """A path OpenCV can open for a file, or for bytes already in memory (a WebDataset member): an
    anonymous in-memory file (Linux `memfd`), so nothing is written to disk; elsewhere a temporary file.
    (OpenCV's in-memory stream capture crashes the process on undecodable input, so it is not used.)"""
    if isinstance(source, str):
        yield source
        return
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("raybind-media", os.MFD_CLOEXEC)
        try:
            view = memoryview(source)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(source)
        tmp.flush()
        yield tmp.name


def _read_pass(cap: cv2.VideoCapture, targets: np.ndarray, size: int) -> _Pass:
    """One sequential pass: grab every frame up to the last target, retrieve only the targets.

    Sequential grab/retrieve avoids per-frame seeking, which re-decodes from the previous keyframe each time.
    """
    wanted = set(int(i) for i in targets)
    last = int(targets.max())
    frames: dict[int, np.ndarray] = {}
    times: list[float] = []
    index = 0
    while index <= last:
        if not cap.grab():
            return _Pass(frames, index, True, times)
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC))
        if index in wanted:
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                return _Pass(frames, index, True, times)
            frames[index] = fit_square(frame, size)
        index += 1
    return _Pass(frames, index, False, times)


def _variable_rate_targets(result: _Pass, targets: np.ndarray) -> np.ndarray | None:
    """Time-uniform targets when the clip's frame rate varies enough that index-uniform ones are off by
    more than a frame (a burst of frames would otherwise get most of the samples); else None.

    `result` is a complete pass, so it holds the time of every frame up to the last target.
    """
    times = np.asarray(result.times_ms, np.float64)
    if len(times) < 2 or not np.all(np.diff(times) > 0):
        return None  # no usable timestamps (some containers have none): keep index-uniform sampling
    by_time = time_uniform_indices(times, len(targets))
    return by_time if np.abs(by_time - targets).max() > 1 else None


def decode_video(source: str | bytes, num_frames: int, size: int, threads: int = 0) -> np.ndarray:
    """uint8 RGB [num_frames, size, size, 3] sampled uniformly over the whole clip.

    Handles rotated/portrait video (OpenCV applies the rotation tag; the square crop is centred), a
    frame count the container gets wrong (a second pass over the true count), variable frame rate
    (frames uniform in time, not in index: a second pass only when the two differ by over a frame), and
    clips shorter than `num_frames` (frames repeat). One pass over the file in the common case. `source`:
    a path, or the file's bytes.
    """
    with readable_path(source) as path:
        return _decode_video(path, num_frames, size, threads)


def _decode_video(path: str, num_frames: int, size: int, threads: int) -> np.ndarray:
    cap = open_video(path, threads)
    try:
        if not cap.isOpened():
            raise MediaError("cannot open as video (not a video container, unsupported codec, or truncated header)")
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > MAX_FRAME_PIXELS:
            raise MediaError(f"frames of {width}x{height} exceed the {MAX_FRAME_PIXELS / 1e6:.0f} MP limit (8K UHD)")
        reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        total = reported
        if reported <= 0:  # no count in the container: count by decoding, then read again
            total = 0
            while cap.grab():
                total += 1
            cap.release()
            cap = open_video(path, threads)
        targets = sample_indices(total, num_frames)
        result = _read_pass(cap, targets, size)
    finally:
        cap.release()
    if result.ended_early:
        actual = result.decodable
        if actual == 0:
            raise MediaError("video has no decodable frames")
        if reported > 0 and actual < MIN_DECODABLE_FRACTION * reported:
            raise MediaError(f"truncated video: container reports {reported} frames, only {actual} decodable")
        targets = sample_indices(actual, num_frames)
        result = _read_again(path, threads, targets, size)
    else:
        by_time = _variable_rate_targets(result, targets)
        if by_time is not None:  # variable frame rate: read again for frames spread uniformly in time
            targets = by_time
            result = _read_again(path, threads, targets, size)
    return np.stack([result.frames[int(i)] for i in targets])


def _read_again(path: str, threads: int, targets: np.ndarray, size: int) -> _Pass:
    """A second pass for corrected targets; a stream that now ends early again cannot be trusted."""
    cap = open_video(path, threads)
    try:
        result = _read_pass(cap, targets, size)
    finally:
        cap.release()
    if result.ended_early:
        raise MediaError(f"video stream is unstable: decoding stopped at frame {result.decodable} "
                         f"of {int(targets.max()) + 1}")
    return result


# Audio longer than this is never held whole: only the windows the transform uses are decoded (seconds of
# 16 kHz float32 held at most while finding out: ~4 MB).
WHOLE_AUDIO_S = 60.0

# Which sample ranges (start, count) of a clip of N samples the transform uses; None: all of it.
AudioWindows = Callable[[int], "list[tuple[int, int]] | None"]


def decode_audio(source: str | bytes, sample_rate: int,
                 windows_for: AudioWindows | None = None) -> np.ndarray | list[np.ndarray]:
    """Mono float32 waveform at `sample_rate` from an audio file or a video's audio track (any FFmpeg codec).

    With `windows_for`, memory does not grow with duration: a clip longer than `WHOLE_AUDIO_S` (declared by
    its container, or found while decoding) comes back as the list of windows `windows_for(total_samples)`
    asks for, each decoded after a seek; a clip that declares no duration or lies about it is counted by
    decoding without keeping samples first."""
    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise MediaError(f"cannot open as audio: {error}") from None
    with container:
        if not container.streams.audio:
            raise MediaError("no audio track")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        cap = int(WHOLE_AUDIO_S * sample_rate) if windows_for is not None else None
        if cap is not None and declared is not None and declared * sample_rate > cap:
            total = int(declared * sample_rate)
        else:
            wave, total = _decode_whole(container, stream, sample_rate, cap)
            if wave is not None:
                return wave
        windows = windows_for(total) if windows_for is not None else None
        if not windows:
            raise MediaError(f"audio of {total / sample_rate:.0f} s needs windows, but the transform asked for none")
        return [_decode_window(container, stream, sample_rate, start, count, total) for start, count in windows]


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def _decode_whole(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, sample_rate: int,
                  cap: int | None) -> tuple[np.ndarray | None, int]:
    """(waveform, samples); past `cap` samples it stops keeping them and only counts (waveform None)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    total, keeping = 0, True

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total, keeping
        for out in frames:
            samples = out.to_ndarray().reshape(-1)
            total += len(samples)
            if keeping and cap is not None and total > cap:
                keeping = False
                chunks.clear()
            if keeping:
                chunks.append(samples)

    try:
        for frame in container.decode(stream):
            take(resampler.resample(frame))
        take(resampler.resample(None))
    except av.FFmpegError as error:
        if total == 0:
            raise MediaError(f"undecodable audio: {error}") from None
    if total == 0:
        raise MediaError("audio track has no samples")
    return (np.concatenate(chunks).astype(np.float32) if keeping else None), total


def _decode_window(container: av.container.InputContainer, stream: av.audio.stream.AudioStream, sample_rate: int,
                   start: int, count: int, total: int) -> np.ndarray:
    """`count` samples at `sample_rate` from sample `start`: seek to the packet at or before it, decode
    forward, keep only the window."""
    container.seek(int(start / sample_rate / stream.time_base), stream=stream, backward=True)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    out = np.zeros(count, np.float32)
    filled, position = 0, None
    try:
        for frame in container.decode(stream):
            if position is None:
                if frame.pts is None:
                    raise MediaError("long audio without timestamps: its windows cannot be found")
                position = round(float(frame.pts * frame.time_base) * sample_rate)
            for chunk in resampler.resample(frame):
                samples = chunk.to_ndarray().reshape(-1)
                lo, hi = max(start - position, 0), min(start + count - position, len(samples))
                if hi > lo:
                    out[position + lo - start:position + hi - start] = samples[lo:hi]
                    filled = position + hi - start
                position += len(samples)
            if filled >= count:
                return out
    except av.FFmpegError as error:
        raise MediaError(f"undecodable audio at {start / sample_rate:.1f} s: {error}") from None
    raise MediaError(f"audio ends before {(start + count) / sample_rate:.1f} s, though it has "
                     f"{total / sample_rate:.1f} s")


def decode_image(data: bytes, size: int) -> np.ndarray:
    """uint8 RGB [size, size, 3] from encoded image bytes (PNG, JPEG, ...)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError("cannot decode as image")
    return fit_square(image, size)


def decode_depth(data: bytes, name: str) -> np.ndarray:
    """Depth in metres float32 [H, W] from `.npy` (metres) or a 16-bit PNG (millimetres, NYU convention)."""
    if name.endswith(".npy"):
        try:
            depth = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as error:
            raise MediaError(f"cannot read depth .npy: {error}") from None
    else:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise MediaError("cannot decode depth image")
        if raw.ndim == 3:
            raw = raw[..., 0]
        depth = raw.astype(np.float32) / (1000.0 if raw.dtype == np.uint16 else 25.5)
    if depth.ndim != 2:
        raise MediaError(f"depth map must be 2-D [H, W], got shape {depth.shape}")
    return depth.astype(np.float32)

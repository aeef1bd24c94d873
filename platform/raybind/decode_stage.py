"""The decode stage: a manifest batch -> frames, spectrograms, images, depth columns and text tokens.

Runs as CPU tasks (feeding GPU synthesis actors), or inside the CPU synthesis actors
(`raybind.synthesis_stage`), so decoding and synthesis never compete for the same cores.

Takes and returns numpy batches. Rows that fail go to the quarantine with the stage name and reason; the
batch carries on without them. Frames ship as uint8 and spectrograms/depth as float16: normalisation and
augmentation happen on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from encoders import transforms
from encoders.config import PreprocessConfig, TextConfig
from encoders.text import Tokenizer
from raybind import media, quarantine, storage

FRAMES = "frames"  # internal column: decoded frames that synthesis reads when video itself is not trained


@dataclass(frozen=True)
class DecodeSpec:
    """Everything a decode task needs (picklable, shipped to every task)."""

    modalities: tuple[str, ...]
    manifest_dir: str
    quarantine_uri: str
    text: TextConfig
    num_frames: int
    frame_size: int
    audio: PreprocessConfig
    threads: int = 1                      # FFmpeg threads per video (DecodeSettings.threads)
    audio_source: str = "auto"            # auto | column | video
    depth_from_column: bool = False
    thermal_from_column: bool = False
    media_columns: tuple[str, ...] = ()   # media columns the manifest has
    synthesize: tuple[str, ...] = field(default=())  # depth/thermal to synthesize from frames

    @property
    def needs_frames(self) -> bool:
        return "video" in self.modalities or bool(self.synthesize)

    def audio_column(self) -> str:
        if self.audio_source == "auto":
            return "audio" if "audio" in self.media_columns else "video"
        return "audio" if self.audio_source == "column" else "video"


@lru_cache(maxsize=4)
def _tokenizer(text: TextConfig) -> Tokenizer:
    return Tokenizer(text)  # loaded once per worker process, reused by every task it runs


def _value(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value)
    return value if value.strip() else None


class _RowFailed(Exception):
    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.uri, self.reason = uri, reason


def _media_uri(row: dict[str, Any], column: str, spec: DecodeSpec) -> str:
    value = _value(row, column)
    if value is None:
        raise _RowFailed("", f"missing field '{column}'")
    return storage.resolve_relative(value, spec.manifest_dir)


def _decode_path(uri: str, decode):
    """Run `decode(local_path)` on a media URI (fetched to a temp file when remote); failures become row failures."""
    try:
        if storage.size(uri) == 0:
            raise _RowFailed(uri, "empty file (0 bytes)")
    except FileNotFoundError:
        raise _RowFailed(uri, "file not found") from None
    with storage.local_path(uri) as path:
        try:
            return decode(path)
        except media.MediaError as error:
            raise _RowFailed(uri, str(error)) from None


def _decode_row(row: dict[str, Any], spec: DecodeSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"id": str(row["id"])}
    text = _value(row, "text")
    if text is None:
        raise _RowFailed("", "missing field 'text'")
    out["text"] = text
    if "label" in row:
        out["label"] = "" if _value(row, "label") is None else str(row["label"])
    audio_column = spec.audio_column() if "audio" in spec.modalities else None
    wave = None
    if spec.needs_frames:
        with_audio = audio_column == "video"

        def frames_and_audio(path: str):  # one fetch of a remote file serves both
            frames = media.decode_video(path, spec.num_frames, spec.frame_size, spec.threads)
            return frames, media.decode_audio(path, spec.audio.sample_rate) if with_audio else None

        out["video" if "video" in spec.modalities else FRAMES], wave = _decode_path(
            _media_uri(row, "video", spec), frames_and_audio)
    if audio_column is not None:
        if wave is None:
            wave = _decode_path(_media_uri(row, audio_column, spec),
                                lambda path: media.decode_audio(path, spec.audio.sample_rate))
        out["audio"] = transforms.audio_mel(wave, spec.audio.sample_rate, spec.audio).numpy().astype(np.float16)
    if "image" in spec.modalities:
        uri = _media_uri(row, "image", spec)
        out["image"] = _decode_bytes(uri, lambda data: media.decode_image(data, spec.frame_size))
    if "depth" in spec.modalities and spec.depth_from_column:
        uri = _media_uri(row, "depth", spec)
        depth = _decode_bytes(uri, lambda data: media.decode_depth(data, uri.split("?")[0]))
        out["depth"] = media.square_crop(depth, spec.frame_size, cv2.INTER_AREA)[None].astype(np.float16)
    if "thermal" in spec.modalities and spec.thermal_from_column:
        uri = _media_uri(row, "thermal", spec)
        out["thermal"] = _decode_bytes(uri, lambda data: media.decode_image(data, spec.frame_size))[None]
    return out


def _decode_bytes(uri: str, decode):
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise _RowFailed(uri, "file not found") from None
    if not data:
        raise _RowFailed(uri, "empty file (0 bytes)")
    try:
        return decode(data)
    except media.MediaError as error:
        raise _RowFailed(uri, str(error)) from None


def _stack(rows: list[dict[str, Any]], template: dict[str, tuple[tuple[int, ...], Any]]) -> dict[str, np.ndarray]:
    """Rows -> columns; an all-bad batch still returns every column (empty) so the schema never wavers."""
    columns = {}
    for name, (shape, dtype) in template.items():
        if dtype is object:
            columns[name] = np.array([r[name] for r in rows], dtype=object)
        else:
            columns[name] = np.stack([r[name] for r in rows]).astype(dtype) if rows else np.zeros((0, *shape), dtype)
    return columns


def output_template(spec: DecodeSpec, has_label: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
    s, n, a = spec.frame_size, spec.num_frames, spec.audio
    template: dict[str, tuple[tuple[int, ...], Any]] = {"id": ((), object), "text": ((), object)}
    if has_label:
        template["label"] = ((), object)
    template["tokens"] = ((spec.text.context_length,), np.int32)
    if spec.needs_frames:
        template["video" if "video" in spec.modalities else FRAMES] = ((n, s, s, 3), np.uint8)
    if "audio" in spec.modalities:
        template["audio"] = ((3, a.mel_bins, a.target_length), np.float16)
    if "image" in spec.modalities:
        template["image"] = ((s, s, 3), np.uint8)
    if "depth" in spec.modalities and spec.depth_from_column:
        template["depth"] = ((1, s, s), np.float16)
    if "thermal" in spec.modalities and spec.thermal_from_column:
        template["thermal"] = ((1, s, s, 3), np.uint8)
    return template


def keep_columns(batch: dict[str, np.ndarray], columns: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    """Only what the consumer reads leaves the last stage (no separate projection task after an actor pool)."""
    return batch if columns is None else {name: batch[name] for name in columns}


def decode_batch(batch: dict[str, np.ndarray], spec: DecodeSpec,
                 columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Decode every row of a manifest batch; failures go to the quarantine, the rest are tokenized."""
    names = list(batch.keys())
    size = len(batch[names[0]]) if names else 0
    rows = []
    for i in range(size):
        row = {name: batch[name][i] for name in names}
        try:
            rows.append(_decode_row(row, spec))
        except _RowFailed as failure:
            quarantine.record(spec.quarantine_uri, quarantine.QuarantinedRow(
                id=str(row.get("id")), uri=failure.uri, stage="decode", reason=failure.reason))
    if rows:
        tokens = _tokenizer(spec.text)([r["text"] for r in rows]).numpy().astype(np.int32)
        for row, ids in zip(rows, tokens):
            row["tokens"] = ids
    return keep_columns(_stack(rows, output_template(spec, "label" in names)), columns)

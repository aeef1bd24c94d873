"""The decode stage: a manifest batch -> frames, spectrograms, images, depth columns and text tokens.

Runs as CPU tasks (feeding GPU synthesis actors), or inside the CPU synthesis actors
(`raybind.data.synthesis`), so decoding and synthesis never compete for the same cores.

Takes and returns numpy batches. Rows that fail go to the quarantine with the stage name and reason; the
batch carries on without them. Frames ship as uint8 and spectrograms/depth as float16: normalisation and
augmentation happen on the training device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any, TypeVar

import cv2
import numpy as np

from encoders import transforms
from encoders.config import TextConfig
from encoders.modalities import REGISTRY
from encoders.modalities import modality as modality_spec
from encoders.text import Tokenizer
from raybind import storage
from raybind.data import captions, media, quarantine, webdataset
from raybind.data.batch_format import (
    ANCHOR,
    ANCHOR_SOURCES,
    FRAMES,
    ID,
    PASSTHROUGH,
    ROW_KEY,
    SHIPPED_DTYPE,
    SOURCE_KEY,
    SOURCE_PATH,
    SYNTH_FRAME,
    TEXT,
    TOKENS,
    VIDEO_FRAMES,
    VIEW_FRAMES,
    VIEW_PRESENT,
    VIEW_TOKENS,
    DecodeSpec,
    Template,
    decoded_template,
    frame_choice,
    stable_key,
)
from raybind.data.webdataset import Member, SampleError

T = TypeVar("T")

VIEW_TEXTS = "_view_texts"  # per-row only, between decoding and tokenizing


@lru_cache(maxsize=4)
def _tokenizer(text: TextConfig) -> Tokenizer:
    return Tokenizer(text)  # loaded once per worker process, reused by every task it runs


def field_value(row: dict[str, Any], column: str) -> str | None:
    """A manifest field as a string, or None when it is absent, null, NaN or blank."""
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value)
    return value if value.strip() else None


class RowFailed(Exception):
    """One row's media cannot be used; `reason` goes to the quarantine (or into the API's error)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(reason)
        self.uri, self.reason = uri, reason


# A row's media: a URI (manifests), or a WebDataset member's bytes (`Member`, decoded from memory).
MediaSource = str | Member


def _media(row: dict[str, Any], column: str, spec: DecodeSpec) -> MediaSource:
    if isinstance(row.get(column), Member):
        return row[column]
    value = field_value(row, column)
    if value is None:
        raise RowFailed("", f"missing field '{column}'")
    return media_uri(value, spec.manifest_dir)


def media_uri(value: str, manifest_dir: str) -> str:
    """A manifest's media value as a URI to read (relative to the manifest's folder); `RowFailed` for a
    scheme that cannot be read (http, ftp, ...)."""
    uri = storage.resolve_relative(value, manifest_dir)
    scheme = storage.unsupported_scheme(uri)
    if scheme is not None:
        raise RowFailed(uri, f"unsupported scheme '{scheme}://' (media are read from local paths, file:// and "
                             f"{', '.join(s + '://' for s in storage.READ_SCHEMES)})")
    return uri


def guarded(work: Callable[[], T], where: str, timeout_s: float) -> T:
    """`work()` for one row, bounded in time and contained: any exception becomes `RowFailed` (an
    `unexpected <type>` reason unless it is already a row failure), and a row still running after
    `timeout_s` is abandoned as timed out (its thread is left blocked, a daemon, so the batch goes on)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as error:   # noqa: BLE001 -- handed back to the caller's thread
            result["error"] = error

    thread = threading.Thread(target=run, name="raybind-row", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RowFailed(where, f"timed out after {timeout_s:g} s (data.decode.row_timeout_s)")
    error = result.get("error")
    if error is None:
        return result["value"]
    if isinstance(error, (RowFailed, SampleError)):
        raise error
    if not isinstance(error, Exception):   # KeyboardInterrupt, SystemExit: not about the row
        raise error
    raise RowFailed(where, f"unexpected {type(error).__name__}: {error}") from error


def _check_file(uri: str, max_file_mb: float | None, retry: tuple[int, float] = (1, 0.0)) -> None:
    """A regular, readable, non-empty file, and (when it is read whole) within the byte cap; else `RowFailed`
    saying what is there instead. `retry`: (tries, first backoff) for a remote lookup."""
    try:
        size = storage.with_retries(lambda: storage.file_size(uri), uri, *retry)
    except FileNotFoundError:
        raise RowFailed(uri, "file not found") from None
    except (storage.NotReadable, storage.Unreadable) as error:
        raise RowFailed(uri, error.reason) from None
    if size == 0:
        raise RowFailed(uri, "empty file (0 bytes)")
    if max_file_mb is not None and size > max_file_mb * 2**20:
        raise RowFailed(uri, f"too large to read whole: {size / 2**20:.0f} MiB (data.decode.max_file_mb is "
                             f"{max_file_mb:g})")


def _fetch(uri: str, max_file_mb: float | None, retry: tuple[int, float]) -> bytes:
    """A file's bytes, checked first; remote reads retried on transient storage errors."""
    _check_file(uri, max_file_mb, retry)
    try:
        return storage.with_retries(lambda: storage.read_bytes(uri), uri, *retry)
    except FileNotFoundError:
        raise RowFailed(uri, "file not found") from None
    except storage.Unreadable as error:
        raise RowFailed(uri, error.reason) from None


def _decode_path(uri: MediaSource, decode, spec: DecodeSpec):
    """Run `decode(local_path or bytes)` on a media URI (a local file streams from disk; a remote one is
    fetched whole, within the byte cap, retried, and decoded from memory) or a member's bytes; failures
    become row failures."""
    if isinstance(uri, Member):
        return _decode_bytes(uri, decode, spec)
    if storage.is_remote(uri):   # fetched once, whole (within the cap, retried), decoded from memory
        data = _fetch(uri, spec.max_file_mb, (spec.read_attempts, spec.read_backoff_s))
        try:
            return decode(data)
        except media.MediaError as error:
            raise RowFailed(uri, str(error)) from None
    _check_file(uri, None)   # local files stream from disk
    with storage.local_path(uri) as path:
        try:
            return decode(path)
        except media.MediaError as error:
            raise RowFailed(uri, str(error)) from None


def _captions(row: dict[str, Any], spec: DecodeSpec) -> dict[str, Any]:
    """The row's caption(s): every configured view (training with caption views), or one text."""
    views = captions.parse_views(row.get(TEXT))
    if spec.all_views:
        texts, present, per_frame = captions.view_slots(spec.caption_views, views, spec.num_frames)
        if not present.any():
            raise RowFailed("", f"none of the caption views {list(spec.caption_views)} (the row has {sorted(views)})")
        first = texts[int(np.argmax(present)) * spec.num_frames]
        return {TEXT: first, VIEW_TEXTS: texts, VIEW_PRESENT: present, VIEW_FRAMES: per_frame,
                ROW_KEY: captions.row_key(str(row[ID])),
                SYNTH_FRAME: frame_choice(str(row[ID]), spec.num_frames, spec.synth_seed)}
    if spec.text_view is None and set(views) - {captions.SINGLE_VIEW}:
        raise RowFailed("", f"'{TEXT}' holds caption views {sorted(views)}; name them in data.caption_views")
    text = captions.single_text(views, spec.text_view, spec.num_frames)
    if text is None:
        raise RowFailed("", f"missing field '{TEXT}'" if spec.text_view is None else
                        f"missing caption view '{spec.text_view}'")
    return {TEXT: text}


def decode_media(modality: str, uri: MediaSource, spec: DecodeSpec) -> np.ndarray:
    """One media file as its batch-format column value (see `raybind.data.batch_format`); raises `RowFailed`.

    The embedding API calls this for single files, so a file embeds the same in both.
    """
    kind = modality_spec("video" if modality == FRAMES else modality)
    return as_column(kind.name, _READERS[kind.reads](uri, spec))


def as_column(modality: str, value: np.ndarray) -> np.ndarray:
    """A decoded file as its column value: synthesizable modalities ship a stack of K maps (one per frame
    used), and a file read from a column is a stack of one."""
    return value[None] if REGISTRY[modality].synthesized else value


def mel(wave: np.ndarray | list[np.ndarray], spec: DecodeSpec) -> np.ndarray:
    """Waveform at the tower's rate (or a long clip's windows, `decode_audio`) -> the shipped float16
    spectrogram column value."""
    if isinstance(wave, list):
        return transforms.audio_mel_windows(wave, spec.audio).numpy().astype(np.float16)
    return transforms.audio_mel(wave, spec.audio.sample_rate, spec.audio).numpy().astype(np.float16)


def decode_audio(source: str | bytes, spec: DecodeSpec) -> np.ndarray | list[np.ndarray]:
    """A file's (or a video's) audio as the transform needs it: whole, or a long clip's windows only."""
    return media.decode_audio(source, spec.audio.sample_rate, partial(transforms.audio_windows, cfg=spec.audio))


def depth_map(depth_m: np.ndarray, spec: DecodeSpec) -> np.ndarray:
    """Depth in metres [H, W] -> one shipped [S, S] float16 map."""
    return media.square_crop(depth_m, spec.frame_size, cv2.INTER_AREA).astype(SHIPPED_DTYPE["depth"])


# How each kind of file is read (the registry's `reads`): a new modality with a new kind of file adds its
# reader here.
_READERS = {
    "video": lambda uri, spec: _decode_path(
        uri, lambda path: media.decode_video(path, spec.num_frames, spec.frame_size, spec.threads), spec),
    "audio": lambda uri, spec: mel(_decode_path(uri, lambda path: decode_audio(path, spec), spec), spec),
    "image": lambda uri, spec: _decode_bytes(uri, lambda data: media.decode_image(data, spec.frame_size), spec),
    "depth": lambda uri, spec: depth_map(_decode_bytes(uri, lambda data: media.decode_depth(data, _name(uri)), spec),
                                         spec),
}


def _decode_row(row: dict[str, Any], spec: DecodeSpec) -> dict[str, Any]:
    out: dict[str, Any] = {ID: str(row[ID])}
    if spec.with_text:
        out.update(_captions(row, spec))
    for name in PASSTHROUGH:
        if name in row:
            out[name] = "" if field_value(row, name) is None else str(row[name])
    if spec.anchor_image and all(field_value(row, column) is None for column in ANCHOR_SOURCES):
        raise RowFailed("", "no anchor frame: the row has neither a 'video' nor an 'image'")
    audio_column = spec.audio_column() if "audio" in spec.modalities else None
    frames_column = "video" if "video" in spec.modalities else FRAMES
    if spec.needs_frames and audio_column == "video":
        def frames_and_audio(path: str):  # one fetch of a remote file serves both
            return (media.decode_video(path, spec.num_frames, spec.frame_size, spec.threads),
                    decode_audio(path, spec))

        out[frames_column], wave = _decode_path(_media(row, "video", spec), frames_and_audio, spec)
        out["audio"] = mel(wave, spec)
    elif spec.needs_frames and (spec.video_images or spec.anchor_image) and field_value(row, "video") is None \
            and field_value(row, "image") is not None:
        image = decode_media("image", _media(row, "image", spec), spec)   # a still: a 1-frame clip
        out[frames_column] = np.repeat(image[None], spec.num_frames, axis=0)
        out[VIDEO_FRAMES] = 1
    elif spec.needs_frames:
        out[frames_column] = decode_media("video", _media(row, "video", spec), spec)
    if spec.video_images:
        out.setdefault(VIDEO_FRAMES, spec.num_frames)
    if spec.anchor_image:
        out[ANCHOR] = _anchor_frame(row, out.get(frames_column), spec)
    if audio_column is not None and "audio" not in out:
        out["audio"] = decode_media("audio", _media(row, audio_column, spec), spec)
    for modality in spec.modalities:
        kind = REGISTRY[modality]
        if modality in out or kind.temporal or (kind.synthesized and modality not in spec.from_column):
            continue  # decoded above (frames and a track share one fetch), or synthesized from frames later
        out[modality] = decode_media(modality, _media(row, modality, spec), spec)
    return out


def _anchor_frame(row: dict[str, Any], frames: np.ndarray | None, spec: DecodeSpec) -> np.ndarray:
    """The image a row binds to under the image anchor: its clip's `frame_choice` frame (the frame one-frame
    depth/thermal synthesis uses, so the maps bind to the very frame they were made from), or its image."""
    if frames is not None:
        return frames[frame_choice(str(row[ID]), len(frames), spec.synth_seed)]
    return decode_media("image", _media(row, "image", spec), spec)


def _name(source: MediaSource) -> str:
    """What messages and format checks call a media source (a URI without its query, or `<shard>#<member>`)."""
    return source.name if isinstance(source, Member) else source.split("?")[0]


def read_media(source: MediaSource, max_file_mb: float | None = None, retry: tuple[int, float] = (1, 0.0)) -> bytes:
    """A media source's bytes (a member's, or the file's, fetched whole); `RowFailed` when it is missing,
    not a readable file, empty, over `max_file_mb`, or still unreadable after `retry` (tries, backoff)."""
    uri = source.name if isinstance(source, Member) else source
    if isinstance(source, Member):
        data = source.data
        if max_file_mb is not None and len(data) > max_file_mb * 2**20:
            raise RowFailed(uri, f"too large to read whole: {len(data) / 2**20:.0f} MiB (data.decode.max_file_mb "
                                 f"is {max_file_mb:g})")
    else:
        data = _fetch(uri, max_file_mb, retry)
    if not data:
        raise RowFailed(uri, "empty file (0 bytes)")
    return data


def _decode_bytes(source: MediaSource, decode, spec: DecodeSpec):
    data = read_media(source, spec.max_file_mb, (spec.read_attempts, spec.read_backoff_s))
    try:
        return decode(data)
    except media.MediaError as error:
        raise RowFailed(source.name if isinstance(source, Member) else source, str(error)) from None


def _stack(rows: list[dict[str, Any]], template: Template) -> dict[str, np.ndarray]:
    """Rows -> columns; an all-bad batch still returns every column (empty) so the schema never wavers."""
    columns = {}
    for name, (shape, dtype) in template.items():
        if dtype is object:
            columns[name] = np.array([r.get(name, "") for r in rows], dtype=object)   # "": a field the row lacks
        else:
            columns[name] = np.stack([r[name] for r in rows]).astype(dtype) if rows else np.zeros((0, *shape), dtype)
    return columns


def keep_columns(batch: dict[str, np.ndarray], columns: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    """Only what the consumer reads leaves the last stage (no separate projection task after an actor pool)."""
    return batch if columns is None else {name: batch[name] for name in columns}


def _tokenize_views(rows: list[dict[str, Any]], spec: DecodeSpec) -> None:
    """Every view slot of every row -> view_tokens [V, N, L]; each distinct text is tokenized once."""
    distinct = sorted({t for r in rows for t in r[VIEW_TEXTS]})
    tokens = _tokenizer(spec.text)(distinct).numpy().astype(np.int32)
    index = {text: i for i, text in enumerate(distinct)}
    shape = (len(spec.caption_views), spec.num_frames, spec.text.context_length)
    for row in rows:
        row[VIEW_TOKENS] = tokens[[index[t] for t in row.pop(VIEW_TEXTS)]].reshape(shape)


def decode_batch(batch: dict[str, np.ndarray], spec: DecodeSpec,
                 columns: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Decode every row of a manifest batch; failures go to the quarantine, the rest are tokenized. No
    exception of one row leaves this function, and no row runs longer than `spec.row_timeout_s`."""
    names = list(batch.keys())
    size = len(batch[names[0]]) if names else 0
    shards = webdataset.KEY in names   # WebDataset samples: each becomes a manifest row first
    source_column = webdataset.URL if shards else SOURCE_PATH
    rows, sources = [], []
    for i in range(size):
        row = {name: batch[name][i] for name in names}
        source = str(row.get(source_column) or "")
        try:
            decoded = guarded(partial(_decode_any, row, spec, shards), _where(row), spec.row_timeout_s)
        except (RowFailed, SampleError) as failure:
            _quarantine(spec, row, failure.uri, "decode", failure.reason, source)
            continue
        if spec.track_sources:
            decoded[SOURCE_KEY] = stable_key(source)
        rows.append(decoded)
        sources.append(source)
    rows = _tokenized(rows, spec, sources)
    passthrough = PASSTHROUGH if shards else tuple(name for name in PASSTHROUGH if name in names)
    return keep_columns(_stack(rows, decoded_template(spec, passthrough)), columns)


def _decode_any(row: dict[str, Any], spec: DecodeSpec, sample: bool) -> dict[str, Any]:
    return _decode_row(webdataset.manifest_row(row, spec.manifest_dir) if sample else row, spec)


def _where(row: dict[str, Any]) -> str:
    """What a failure that names no file of its own is reported against: the row's first media value."""
    for name in (*REGISTRY, webdataset.KEY):
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _quarantine(spec: DecodeSpec, row: dict[str, Any], uri: str, stage: str, reason: str, source: str) -> None:
    quarantine.record(spec.quarantine_uri, quarantine.QuarantinedRow(
        id=str(row.get(ID, row.get(webdataset.KEY))), uri=uri, stage=stage, reason=reason, source=source))


def _tokenized(rows: list[dict[str, Any]], spec: DecodeSpec, sources: list[str]) -> list[dict[str, Any]]:
    """Captions tokenized for the whole batch at once; if that fails, row by row, and the rows whose
    caption the tokenizer cannot take are quarantined (stage `tokenize`)."""
    if not rows or not (spec.all_views or spec.with_text):
        return rows
    try:
        _tokenize(rows, spec)
        return rows
    except Exception:   # noqa: BLE001 -- find the row(s) responsible below
        pass
    kept = []
    for row, source in zip(rows, sources):
        try:
            _tokenize([row], spec)
            kept.append(row)
        except Exception as error:   # noqa: BLE001 -- one caption must not end the run
            _quarantine(spec, row, "", "tokenize", f"unexpected {type(error).__name__}: {error}", source)
    return kept


def _tokenize(rows: list[dict[str, Any]], spec: DecodeSpec) -> None:
    if spec.all_views:
        _tokenize_views(rows, spec)
    else:
        tokens = _tokenizer(spec.text)([r[TEXT] for r in rows]).numpy().astype(np.int32)
        for row, ids in zip(rows, tokens):
            row[TOKENS] = ids

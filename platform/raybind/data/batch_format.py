"""The batch format: the columns that decoding produces and training, evaluation and embedding read.

One place for column names, dtypes and per-row shapes, so the decode stage, the synthesis stage, the
trainer, the inference actors and the benchmarks agree by construction:

    id        object  ()                  the manifest's id (str)
    text      object  ()                  the caption (absent when the consumer needs no text)
    tokens    int32   (context_length,)   the caption tokenized for the language tower
    label     object  ()                  carried from the manifest when present (classification)
    fold      object  ()                  carried from the manifest when present (per-fold results)
    video     uint8   (N, S, S, 3)        N frames, RGB, S = image size + crop margin
    frames    uint8   (N, S, S, 3)        decoded only to synthesize depth/thermal from; never shipped
    audio     float16 (3, mel_bins, T)    three mel chunks (LanguageBind's audio input)
    image     uint8   (S, S, 3)
    depth     float16 (K, S, S)           metres; K = 1 (one frame per clip) or N (all frames)
    thermal   uint8   (K, S, S, 3)
    emb_<m>   float32 (D,)                inference output: L2-normalised embedding of modality m (or text)

With `data.caption_views` the training split carries every view instead of `tokens` (raybind.data.captions):

    view_tokens   int32 (V, N, L)   each configured view's tokens, one slot per decoded frame
    view_present  uint8 (V,)        the row has this view
    view_frames   uint8 (V,)        the view is per-frame (one caption per key frame)
    row_key       int64 ()          a stable integer of the id (the worker's draw is keyed by it)
    synth_frame   int64 ()          the frame one-frame depth/thermal synthesis used (frame_choice)

With an image anchor (`model.anchor: image`, ImageBind's recipe) instead of `text` and `tokens`:

    anchor    uint8   (S, S, 3)           the frame the towers bind to: the clip's `frame_choice` frame (the
                                          one one-frame depth/thermal synthesis uses), or the row's image

With a video tower that takes images (`model.towers.video.images`):

    video_frames  int64 ()          N for a clip, 1 for an image (repeated in every frame slot)

A training stream over a sharded manifest with per-file row counts (`DecodeSpec.track_sources`):

    source_key    int64 ()          stable_key of the manifest file or shard the row came from: the worker
                                    counts rows per file, so a resumed run skips the files it finished

Normalisation and augmentation happen on the consuming device (`raybind.data.tower_input.tower_input`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.config import PreprocessConfig, TextConfig
from encoders.modalities import REGISTRY, SYNTHESIZABLE

ID, TEXT, TOKENS, LABEL, FOLD, FRAMES = "id", "text", "tokens", "label", "fold", "frames"
VIEW_TOKENS, VIEW_PRESENT, VIEW_FRAMES, ROW_KEY, SYNTH_FRAME = (
    "view_tokens", "view_present", "view_frames", "row_key", "synth_frame")
VIDEO_FRAMES = "video_frames"
ANCHOR = "anchor"
ANCHOR_SOURCES = ("video", "image")   # the columns an anchor frame is taken from, in this order
SOURCE_KEY = "source_key"
SOURCE_PATH = "path"   # the column Ray Data's readers add with `include_paths` (WebDataset samples: `__url__`)
CAPTION_COLUMNS = (VIEW_TOKENS, VIEW_PRESENT, VIEW_FRAMES, ROW_KEY, SYNTH_FRAME)
PASSTHROUGH = (LABEL, FOLD)   # manifest columns carried through decoding unchanged, as strings
EMBEDDING_PREFIX = "emb_"
TEXT_EMBEDDING = EMBEDDING_PREFIX + "text"
ANCHOR_EMBEDDING = EMBEDDING_PREFIX + ANCHOR   # the image anchor's embedding of the row's anchor frame

# What each synthesized modality ships through the object store (the registry's dtype).
SHIPPED_DTYPE = {m: np.dtype(REGISTRY[m].shipped_dtype).type for m in SYNTHESIZABLE}

Template = dict[str, tuple[tuple[int, ...], Any]]


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
    from_column: tuple[str, ...] = ()     # synthesizable modalities read from their own manifest column
    media_columns: tuple[str, ...] = ()   # media columns the manifest has
    synthesize: tuple[str, ...] = field(default=())  # depth/thermal to synthesize from frames
    with_text: bool = True                # captions required and tokenized (inference on media alone: False)
    caption_views: tuple[str, ...] = ()   # data.caption_views: keep every view (training) ...
    text_view: str | None = None          # ... or tokenize only this one (validation)
    video_images: bool = False            # rows with an image and no video become 1-frame clips
    synth_seed: int = 0                   # one-frame synthesis's frame choice (per-frame captions bind to it)
    track_sources: bool = False           # rows carry `source_key` (their manifest file) for resume bookkeeping
    max_file_mb: float = 1024.0           # files read whole above this are quarantined (DecodeSettings)
    row_timeout_s: float = 120.0          # a row still decoding after this is quarantined (DecodeSettings)
    read_attempts: int = 4                # tries of a remote read on transient storage errors (DecodeSettings)
    read_backoff_s: float = 0.5           # first wait between them, doubling (DecodeSettings)
    anchor_image: bool = False            # rows carry their anchor frame (`model.anchor: image`)

    @property
    def all_views(self) -> bool:
        """Rows keep every caption view's tokens (training with caption views), not one tokenized caption."""
        return bool(self.caption_views) and self.text_view is None

    @property
    def needs_frames(self) -> bool:
        """Frames must be decoded: for the video tower, or as the source of synthesized depth/thermal."""
        return "video" in self.modalities or bool(self.synthesize) or (
            self.anchor_image and (not self.media_columns or "video" in self.media_columns))

    def audio_column(self) -> str:
        """The manifest column audio is decoded from: `audio`, or `video` (its sound track); auto prefers `audio`."""
        if self.audio_source == "auto":
            return "audio" if "audio" in self.media_columns else "video"
        return "audio" if self.audio_source == "column" else "video"


def stable_key(text: str) -> int:
    """A stable 63-bit integer for a string (an id, a file path): tensors cannot carry strings to workers."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") & (2**63 - 1)


def frame_choice(row_id: str, num_frames: int, seed: int) -> int:
    """The one frame per clip that one-frame synthesis uses: random per clip (as LanguageBind), reproducible."""
    digest = hashlib.sha1(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % num_frames


def embedding_column(modality: str) -> str:
    """The inference output column of `modality` (or "text"): `emb_<modality>`."""
    return EMBEDDING_PREFIX + modality


def synthesized_shape(modality: str, count: int, side: int) -> tuple[int, ...]:
    """Per-row shape of a synthesized depth or thermal column (count: 1 frame or all N)."""
    channels = REGISTRY[modality].channels
    return (count, side, side) if channels == 1 else (count, side, side, channels)


def decoded_template(spec: DecodeSpec, passthrough: tuple[str, ...] = ()) -> Template:
    """{column: (per-row shape, dtype)} of a decoded batch; object dtype for strings."""
    s, n, a = spec.frame_size, spec.num_frames, spec.audio
    template: Template = {ID: ((), object)}
    if spec.with_text:
        template[TEXT] = ((), object)
    for name in passthrough:
        template[name] = ((), object)
    if spec.with_text and spec.all_views:
        template[VIEW_TOKENS] = ((len(spec.caption_views), n, spec.text.context_length), np.int32)
        template[VIEW_PRESENT] = ((len(spec.caption_views),), np.uint8)
        template[VIEW_FRAMES] = ((len(spec.caption_views),), np.uint8)
        template[ROW_KEY] = ((), np.int64)
        template[SYNTH_FRAME] = ((), np.int64)
    elif spec.with_text:
        template[TOKENS] = ((spec.text.context_length,), np.int32)
    if spec.needs_frames:
        template["video" if "video" in spec.modalities else FRAMES] = ((n, s, s, 3), np.uint8)
    if spec.video_images:
        template[VIDEO_FRAMES] = ((), np.int64)
    if spec.anchor_image:
        template[ANCHOR] = ((s, s, 3), np.uint8)
    if spec.track_sources:
        template[SOURCE_KEY] = ((), np.int64)
    for modality in spec.modalities:
        kind = REGISTRY[modality]
        if kind.tower_input == "spectrogram":
            template[modality] = ((kind.channels, a.mel_bins, a.target_length), np.dtype(kind.shipped_dtype).type)
        elif kind.synthesized and modality in spec.from_column:
            template[modality] = (synthesized_shape(modality, 1, s), SHIPPED_DTYPE[modality])
        elif not kind.synthesized and not kind.temporal:
            template[modality] = ((s, s, kind.channels), np.dtype(kind.shipped_dtype).type)
    return template


def training_columns(modalities: tuple[str, ...] | list[str], caption_views: bool = False,
                     video_images: bool = False, anchor_image: bool = False) -> list[str]:
    """What a training worker reads: each tower's input and what it binds to: the caption tokens (or every
    caption view), or the anchor frame."""
    anchor = (ANCHOR,) if anchor_image else CAPTION_COLUMNS if caption_views else (TOKENS,)
    return [*modalities, *anchor, *((VIDEO_FRAMES,) if video_images else ())]


def rows_in(batch: dict[str, Any]) -> int:
    """Rows in a batch of this format (every batch has ids; training batches may keep only tokens)."""
    for name in (ID, TOKENS, ROW_KEY, ANCHOR):
        if name in batch:
            return len(batch[name])
    return len(next(iter(batch.values()))) if batch else 0

"""Multi-view captions (VIDAL-10M's: title and tags, a video caption, a polished one, one per key frame).

A manifest's `text` is one string (view `text`), a list of strings (views `0`, `1`, ...) or a mapping
view -> string, where a list value is a per-frame view (one caption per key frame). Decoding keeps every
configured view tokenized (`raybind.data.batch_format`: view_tokens [V, N, L], one slot per decoded frame);
the training worker draws one view per row and pass (`draw`), reproducibly from the seed, the pass and
the row id; a row missing a view draws among the views it has. A drawn per-frame caption binds to its
frame: the row's depth/thermal input comes from that frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raybind.data.batch_format import stable_key

SINGLE_VIEW = "text"


def row_key(row_id: str) -> int:
    """A stable 63-bit integer for a row id (tensors cannot carry strings to the training worker)."""
    return stable_key(row_id)


def _clean(value: Any) -> str | list[str] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, (list, tuple, np.ndarray)):
        items = [str(v) for v in value if v is not None and str(v).strip()]
        return items or None
    return str(value)


def _is_map_entries(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0 and all(
        isinstance(item, tuple) and len(item) == 2 for item in value)


def parse_views(value: Any) -> dict[str, str | list[str]]:
    """A manifest `text` value -> {view: caption, or [caption per frame]}; absent or empty views left out."""
    if _is_map_entries(value):   # a Parquet map column arrives as [(key, value), ...]
        value = dict(value)
    if isinstance(value, Mapping):
        views = {str(k): _clean(v) for k, v in value.items()}
    elif isinstance(value, (list, tuple, np.ndarray)):
        views = {str(i): _clean(v) for i, v in enumerate(value)}
    else:
        views = {SINGLE_VIEW: _clean(value)}
    return {k: v for k, v in views.items() if v is not None}


def frame_caption(captions: Sequence[str], frame: int, num_frames: int) -> str:
    """The caption of decoded frame `frame` (of `num_frames`) from M key-frame captions spread over the clip."""
    if len(captions) == 1 or num_frames == 1:
        return captions[0]
    return captions[round(frame * (len(captions) - 1) / (num_frames - 1))]


def view_slots(names: Sequence[str], views: Mapping[str, str | list[str]],
               num_frames: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Texts [V * N] (view-major; a whole-clip view repeats in every frame slot), present [V], per_frame [V]."""
    texts, present, per_frame = [], np.zeros(len(names), np.uint8), np.zeros(len(names), np.uint8)
    for index, name in enumerate(names):
        value = views.get(name)
        if value is None:
            texts += [""] * num_frames
            continue
        present[index] = 1
        if isinstance(value, list):
            per_frame[index] = 1
            texts += [frame_caption(value, n, num_frames) for n in range(num_frames)]
        else:
            texts += [value] * num_frames
    return texts, present, per_frame


def single_text(views: Mapping[str, str | list[str]], view: str | None, num_frames: int) -> str | None:
    """The one caption validation (or a single-caption run) uses: `view`, or the plain `text`. A per-frame
    view gives its middle frame's caption (the frame evaluation takes)."""
    value = views.get(view or SINGLE_VIEW)
    if isinstance(value, list):
        return frame_caption(value, num_frames // 2, num_frames)
    return value


def draw(keys: np.ndarray, present: np.ndarray, per_frame: np.ndarray, weights: np.ndarray, seed: int, epoch: int,
         num_frames: int, bound_frames: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(view index [B], frame index [B]) drawn per row from (seed, pass, row key): a view among those the row
    has, by weight; for a per-frame view a frame (the row's synthesized frame when `bound_frames` gives
    one, so caption and depth/thermal show the same moment), else -1."""
    views = np.zeros(len(keys), np.int64)
    frames = np.full(len(keys), -1, np.int64)
    for row, key in enumerate(keys):
        rng = np.random.default_rng([seed, epoch, int(key)])
        p = weights * present[row]
        views[row] = rng.choice(len(p), p=p / p.sum())
        if per_frame[row, views[row]]:
            frames[row] = bound_frames[row] if bound_frames is not None else rng.integers(num_frames)
    return views, frames

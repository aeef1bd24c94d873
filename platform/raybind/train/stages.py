"""The seeds' data recipes on the training worker: one caption view drawn per row and pass (VIDAL-10M),
and training stages that decide what feeds the video tower (OmniVL: images first, then images and
clips mixed).

Both act on a training batch in the `raybind.data.batch_format` layout after it leaves the stream and before
the towers see it; the decode side is in `raybind.data.captions` and `raybind.data.decode`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from raybind.config import RayBindConfig, StageSettings
from raybind.data import captions
from raybind.data.batch_format import ROW_KEY, SYNTH_FRAME, TOKENS, VIDEO_FRAMES, VIEW_FRAMES, VIEW_PRESENT, VIEW_TOKENS

FRAME_PICK = "frame_pick"   # worker-side column: the frame a drawn per-frame caption describes (-1: none)
IMAGE, VIDEO = "image", "video"

Batch = dict[str, torch.Tensor]


class CaptionViews:
    """Draws one view per row and pass; counts how often each view was drawn."""

    def __init__(self, cfg: RayBindConfig) -> None:
        weights = cfg.data.caption_views or {}
        self.names = list(weights)
        self.weights = np.array([weights[n] for n in self.names], np.float64)
        self.seed, self.num_frames = cfg.seed, cfg.data.num_frames
        self.val_index = self.names.index(cfg.data.validation_view()) if weights else 0
        synthesized_once = [cfg.data.depth, cfg.data.thermal]
        self.bind_to_synthesized = any(s.source == "synthesize" and s.frames == "one" for s in synthesized_once)
        self.counts = np.zeros(len(self.names), np.int64)

    def apply(self, batch: Batch, epoch: int) -> Batch:
        """Set `tokens` to each row's drawn view (and `frame_pick` for per-frame views)."""
        if VIEW_TOKENS not in batch:
            return batch
        keys = batch[ROW_KEY].cpu().numpy()
        bound = batch[SYNTH_FRAME].cpu().numpy() if self.bind_to_synthesized else None
        views, frames = captions.draw(keys, batch[VIEW_PRESENT].cpu().numpy(), batch[VIEW_FRAMES].cpu().numpy(),
                                      self.weights, self.seed, epoch, self.num_frames, bound)
        self.counts += np.bincount(views, minlength=len(self.names))
        rows = torch.arange(len(views))
        slot = torch.from_numpy(np.maximum(frames, 0))
        tokens = batch[VIEW_TOKENS][rows, torch.from_numpy(views), slot]
        return {**batch, TOKENS: tokens, FRAME_PICK: torch.from_numpy(frames).to(tokens.device)}

    def validation(self, batch: Batch) -> Batch:
        """Validation always reads the one named view (a per-frame view: its middle frame)."""
        if VIEW_TOKENS not in batch:
            return batch
        return {**batch, TOKENS: batch[VIEW_TOKENS][:, self.val_index, self.num_frames // 2]}

    def drawn(self) -> dict[str, int]:
        """Draws per view on this rank so far (on rank 0 including the totals a resumed run restored)."""
        return {name: int(count) for name, count in zip(self.names, self.counts)}


def stage_at(stages: list[StageSettings] | None, step: int) -> int:
    """Index of the stage that step `step` (0-based) belongs to (0 without stages)."""
    if not stages:
        return 0
    start = 0
    for index, stage in enumerate(stages):
        start += stage.steps
        if step < start:
            return index
    return len(stages) - 1


def steps_per_stage(stages: list[StageSettings] | None, steps_done: int) -> dict[str, int]:
    """{stage name: steps run in it} after `steps_done` steps (the summary's `stages`)."""
    out, start = {}, 0
    for stage in stages or []:
        out[stage.name] = int(min(max(0, steps_done - start), stage.steps))
        start += stage.steps
    return out


def video_shares(stage: StageSettings | None) -> dict[str, float] | None:
    """The stage's image/clip shares of the video tower's rows (None: rows as they come)."""
    if stage is None or "video" not in stage.feeds:
        return None
    shares = stage.feeds["video"]
    total = sum(shares.values())
    return {IMAGE: shares.get(IMAGE, 0.0) / total, VIDEO: shares.get(VIDEO, 0.0) / total}


class StageComposer:
    """Builds each step's batch with a stage's share of images and clips from the stream's rows.

    Pulls batches from `pull` (every rank pulls as often as the neediest, so collectives inside `pull`
    stay in step) and keeps rows per kind; rows of a kind the stage does not feed are counted as skipped,
    and each kind keeps at most two batches of rows waiting.
    """

    def __init__(self, pull: Callable[[], Batch | None], size: int,
                 any_rank_short: Callable[[bool], bool]) -> None:
        self.pull, self.size, self.any_rank_short = pull, size, any_rank_short
        self.waiting: dict[str, list[Batch]] = {IMAGE: [], VIDEO: []}
        self.skipped = 0

    def _count(self, kind: str) -> int:
        return sum(len(b[VIDEO_FRAMES]) for b in self.waiting[kind])

    def _store(self, batch: Batch, shares: dict[str, float]) -> None:
        still = batch[VIDEO_FRAMES] == 1
        for kind, rows in ((IMAGE, still), (VIDEO, ~still)):
            count = int(rows.sum())
            if count == 0:
                continue
            if shares[kind] == 0 or self._count(kind) >= 2 * self.size:
                self.skipped += count
                continue
            self.waiting[kind].append({name: column[rows] for name, column in batch.items()})

    def _take(self, kind: str, count: int) -> list[Batch]:
        merged = {name: torch.cat([b[name] for b in self.waiting[kind]]) for name in self.waiting[kind][0]} \
            if self.waiting[kind] else {}
        if count == 0 or not merged:
            self.waiting[kind] = [merged] if merged else []
            return []
        taken = {name: column[:count] for name, column in merged.items()}
        rest = {name: column[count:] for name, column in merged.items()}
        self.waiting[kind] = [rest] if len(rest[VIDEO_FRAMES]) else []
        return [taken]

    def next(self, shares: dict[str, float] | None) -> Batch | None:
        """The next batch of `size` rows: as the stream gives it without `shares`, else with those shares of
        images and clips. None when `pull` ends the pass."""
        if shares is None:
            return self.pull()
        images = round(shares[IMAGE] * self.size)
        want = {IMAGE: images, VIDEO: self.size - images}
        while self.any_rank_short(any(self._count(k) < want[k] for k in want)):
            batch = self.pull()
            if batch is None:
                return None
            self._store(batch, shares)
        parts = self._take(IMAGE, want[IMAGE]) + self._take(VIDEO, want[VIDEO])
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

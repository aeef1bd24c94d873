"""The synthesis stage: depth and thermal made from decoded frames, in one actor pool.

Each actor loads every synthesizer once, then runs batches of frames (GPU actors after CPU decode tasks;
CPU actors decode their own batches, see `DecodeAndSynthesisStage`). One pool for all synthesized
modalities: one process start-up, one hand-off of the frames and, on a GPU, one CUDA context per actor.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from raybind import storage
from raybind.config import SynthesisPoolSettings, SynthesisSettings
from raybind.data.batch_format import FRAMES, ID, SHIPPED_DTYPE, DecodeSpec, frame_choice, synthesized_shape
from raybind.data.decode import decode_batch, keep_columns

log = logging.getLogger(__name__)


def load_synthesizer(modality: str, settings: SynthesisSettings, device: str):
    """The depth or thermal synthesizer `settings` names, or a tiny random one (with a warning) when none is."""
    from encoders.synthesis import DepthSynthesizer, ThermalSynthesizer, random_depth_model, random_thermal_generator

    if modality == "depth":
        if settings.model:
            return DepthSynthesizer(settings.model, device=device)
        log.warning("depth synthesis: no model configured, using a randomly initialised tiny GLPN (not metric depth)")
        return DepthSynthesizer.from_model(*random_depth_model(settings.seed), device=device)
    if settings.model:
        with storage.local_path(settings.model) as path:
            return ThermalSynthesizer.load(path, device=device)
    log.warning("thermal synthesis: no model configured, using a randomly initialised tiny MUNIT generator")
    return ThermalSynthesizer.from_munit(*random_thermal_generator(settings.seed), device=device)


def synthesize(synthesizer, settings: SynthesisSettings, frames: np.ndarray, ids: np.ndarray,
               modality: str) -> np.ndarray:
    """[B, N, S, S, 3] uint8 -> [B, 1 or N, ...]: one reproducible random frame per clip, or all N."""
    clips, count = frames.shape[:2]
    if settings.frames == "one":
        picks = [frame_choice(str(i), count, settings.seed) for i in ids]
        chosen = frames[np.arange(clips), picks][:, None]  # [B, 1, S, S, 3]
    else:
        chosen = frames
    flat = chosen.reshape(-1, *chosen.shape[2:])
    if len(flat):
        produced = synthesizer(flat)
    else:  # an all-quarantined batch: keep the column and its per-row shape
        produced = np.zeros(synthesized_shape(modality, 0, chosen.shape[2]))
    produced = produced.astype(SHIPPED_DTYPE[modality])
    return produced.reshape(clips, chosen.shape[1], *produced.shape[1:])


def synthesize_batch(batch: dict[str, np.ndarray], synthesizers: dict, settings: dict[str, SynthesisSettings],
                     frames_column: str, columns: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    """Add every synthesized modality to a decoded batch, then keep only what is shipped on."""
    for modality, synthesizer in synthesizers.items():
        batch[modality] = synthesize(synthesizer, settings[modality], batch[frames_column], batch[ID], modality)
    batch.pop(FRAMES, None)  # decoded only to synthesize from: not shipped on
    return keep_columns(batch, columns)


class SynthesisStage:
    """Actor-pool stage: every synthesizer (depth, thermal) loads once per actor, then runs batches of frames."""

    def __init__(self, modalities: dict[str, SynthesisSettings], pool: SynthesisPoolSettings,
                 frames_column: str, columns: tuple[str, ...] | None = None) -> None:
        self.modalities, self.frames_column, self.columns = modalities, frames_column, columns
        device = "cuda" if pool.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        torch.set_num_threads(max(1, int(pool.num_cpus)))
        self.synthesizers = {m: load_synthesizer(m, settings, device) for m, settings in modalities.items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return synthesize_batch(batch, self.synthesizers, self.modalities, self.frames_column, self.columns)


class DecodeAndSynthesisStage(SynthesisStage):
    """CPU synthesis: one actor decodes, tokenizes and synthesizes its batch (no hand-off between processes)."""

    def __init__(self, spec: DecodeSpec, modalities: dict[str, SynthesisSettings], pool: SynthesisPoolSettings,
                 frames_column: str, columns: tuple[str, ...] | None = None) -> None:
        super().__init__(modalities, pool, frames_column, columns)
        self.spec = spec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return super().__call__(decode_batch(batch, self.spec))

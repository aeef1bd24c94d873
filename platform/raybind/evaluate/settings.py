"""How a checkpoint's media decode at inference: its saved data settings (frames, synthesizers, decoding)
applied to a manifest, so evaluation, corpus embedding and the embedding API decode as training did.

Kept apart from `raybind.evaluate.inference` (the Ray pipeline) so the in-process embedding API
(`raybind.evaluate.embed`) can use it without importing the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from encoders import constants as C
from encoders.config import ModelConfig
from encoders.modalities import REGISTRY, SYNTHESIZABLE
from raybind.config import InferenceConfig, MediaSettings, inference_config, saved_media_settings
from raybind.data.batch_format import DecodeSpec
from raybind.data.pipeline import decode_spec


def available_modalities(towers: Sequence[str], media_columns: Sequence[str], media: MediaSettings | None,
                         synthesize: bool) -> list[str]:
    """The checkpoint's towers that rows of this manifest can feed: from their own column, audio from a
    video's track, depth/thermal synthesized from video frames as in training (when `synthesize`)."""
    columns = set(media_columns)
    out = []
    for modality in towers:
        kind = REGISTRY[modality]
        if modality in columns:
            out.append(modality)
        elif kind.from_video == "track" and "video" in columns:
            out.append(modality)
        elif kind.synthesized and synthesize and "video" in columns and \
                (media is None or getattr(media, modality).source == "synthesize"):
            out.append(modality)
    return out


def checkpoint_inference_config(checkpoint_meta: dict[str, Any], modalities: Sequence[str],
                                overrides: Sequence[str] = (), synthesize: bool = True,
                                media_columns: Sequence[str] = ()) -> InferenceConfig:
    """The inference config of a checkpoint: its media settings (frames, synthesizers, decoding), these
    modalities; depth/thermal read from their column when the manifest has one. `overrides` are `--set`
    strings (e.g. `data.depth.model=...`, `inference.max_actors=4`, `ray.num_cpus=2`)."""
    model = ModelConfig.from_dict(checkpoint_meta["model"])
    media = saved_media_settings(checkpoint_meta)
    if media is not None:
        data = media.model_dump(mode="json")
    else:  # written without media settings: the frames the video tower was built for
        video = next((t for t in model.towers if REGISTRY[t.modality].temporal), None)
        data = {"num_frames": video.preprocess.num_frames if video else C.VIDEO_NUM_FRAMES}
    data.update(modalities=list(modalities) or [t.modality for t in model.towers], audio_source="auto")
    for modality in SYNTHESIZABLE:
        if modality in media_columns or not synthesize:
            data[modality] = {**data.get(modality, {}), "source": "column"}
    return inference_config(data, tuple(overrides))


def inference_spec(cfg: InferenceConfig, model: ModelConfig, manifest_uri: str, quarantine_uri: str = "",
                   media_columns: Sequence[str] = (), with_text: bool = True,
                   manifest_dir: str | None = None) -> DecodeSpec:
    """How a manifest's rows decode for a checkpoint's model and its inference config."""
    spec = decode_spec(cfg, manifest_uri, quarantine_uri, list(media_columns), model, manifest_dir)
    # one caption per row: the run's validation view when it trained on caption views
    return replace(spec, with_text=with_text, text_view=cfg.data.validation_view())

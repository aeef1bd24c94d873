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
from raybind.config import RayBindConfig, parse_override, set_dotted, validate
from raybind.data.batch_format import DecodeSpec
from raybind.data.pipeline import decode_spec
from raybind.train.state import saved_data_settings


def available_modalities(towers: Sequence[str], media_columns: Sequence[str], data: dict[str, Any],
                         synthesize: bool) -> list[str]:
    """The checkpoint's towers that rows of this manifest can feed: from their own column, audio from a
    video's track, depth/thermal synthesized from video frames as in training (when `synthesize`)."""
    columns = set(media_columns)
    out = []
    for modality in towers:
        if modality in columns:
            out.append(modality)
        elif REGISTRY[modality].from_video == "track" and "video" in columns:
            out.append(modality)
        elif REGISTRY[modality].synthesized and synthesize and "video" in columns and \
                data.get(modality, {}).get("source", "synthesize") == "synthesize":
            out.append(modality)
    return out


def inference_config(checkpoint_manifest: dict[str, Any], manifest_uri: str, modalities: Sequence[str],
                     overrides: Sequence[str] = (), synthesize: bool = True,
                     media_columns: Sequence[str] = ()) -> RayBindConfig:
    """A run config for inference: the checkpoint's data settings (frames, synthesizers, decoding), this
    manifest, these modalities; depth/thermal read from their column when the manifest has one.
    `overrides` are `--set` strings (e.g. `data.depth.model=...`, `inference.max_actors=4`, `ray.num_cpus=2`)."""
    model = ModelConfig.from_dict(checkpoint_manifest["model"])
    data = saved_data_settings(checkpoint_manifest)
    if not data:  # written without data settings: the frames the video tower was built for
        video = next((t for t in model.towers if t.modality == "video"), None)
        data = {"num_frames": video.preprocess.num_frames if video else C.VIDEO_NUM_FRAMES}
    data.update(train=manifest_uri or "-", modalities=list(modalities) or [t.modality for t in model.towers],
                audio_source="auto")
    for modality in SYNTHESIZABLE:
        if modality in media_columns or not synthesize:
            data[modality] = {**data.get(modality, {}), "source": "column"}
    tree: dict[str, Any] = {"name": "inference", "data": data, "model": {"preset": model.preset}}
    for item in overrides:
        set_dotted(tree, *parse_override(item))
    return validate(tree)


def inference_spec(cfg: RayBindConfig, model: ModelConfig, manifest_uri: str, quarantine_uri: str = "",
                   media_columns: Sequence[str] = (), with_text: bool = True) -> DecodeSpec:
    spec = decode_spec(cfg, manifest_uri, quarantine_uri, list(media_columns), model)
    # one caption per row: the run's validation view when it trained on caption views
    return replace(spec, with_text=with_text, text_view=cfg.data.validation_view())

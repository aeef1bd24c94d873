"""The modality registry: one entry per modality holding every rule that differs between modalities.

Towers, transforms, the data pipeline, evaluation and the config all ask this registry instead of
comparing modality names, so adding a modality is one entry here plus its decoder in
`raybind.data.decode` (keyed by `reads`). The LanguageBind figures (mask ratio, LoRA rank, learning rate)
are the paper's recipe; prompt templates word zero-shot classes as LanguageBind does per modality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TowerInput = Literal["clip", "spectrogram", "image"]


@dataclass(frozen=True)
class Modality:
    """What a modality is to RayBind, from file to tower."""

    name: str
    # Tower input: "clip" [B, T, 3, S, S] (per-frame CLS averaged over time), "spectrogram" [B, 3, mel, T]
    # (position embeddings interpolated to the mel grid), "image" [B, 3, S, S].
    tower_input: TowerInput
    # The decoder that reads this modality's own file (raybind.data.decode keys its decoders by this).
    reads: Literal["video", "audio", "image", "depth"]
    # Where a tower of this kind can also get its input from a video row: its audio track ("track"), or a
    # synthesizer run on decoded frames ("frames"); None: only from its own column.
    from_video: Literal["track", "frames"] | None
    # The public transform (`encoders.transforms.<name>`) that turns an image-like column into tower input.
    transform: str
    # dtype of the decoded column shipped through the object store (normalised on the training device),
    # and channels of one decoded frame, map or spectrogram (3 for RGB and LanguageBind's 3 mel chunks; 1
    # for depth in metres, repeated to 3 by its transform).
    shipped_dtype: Literal["uint8", "float16"]
    channels: int
    extensions: tuple[str, ...]          # file suffixes of a media folder (embedding a folder corpus)
    mask_ratio: float                    # LanguageBind's token mask ratio
    lora_rank: int                       # LanguageBind's LoRA rank
    learning_rate: float                 # LanguageBind's learning rate
    prompts: tuple[str, ...]             # zero-shot classification templates, one `{}` each

    @property
    def synthesized(self) -> bool:
        """Made from video frames by a synthesizer (depth, thermal) when the manifest has no column for it."""
        return self.from_video == "frames"

    @property
    def temporal(self) -> bool:
        """Its tower sees a time axis (frames) and may have temporal attention."""
        return self.tower_input == "clip"


_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

REGISTRY: dict[str, Modality] = {m.name: m for m in (
    Modality("video", "clip", reads="video", from_video=None, transform="video_frames", shipped_dtype="uint8", channels=3,
             extensions=(".mp4", ".avi", ".mkv", ".mov", ".webm"), mask_ratio=0.3, lora_rank=16, learning_rate=1e-4,
             prompts=("a video of {}.", "a video of a {}.", "a clip showing {}.", "footage of {}.")),
    Modality("audio", "spectrogram", reads="audio", from_video="track", transform="audio_mel", shipped_dtype="float16", channels=3,
             extensions=(".wav", ".flac", ".ogg", ".mp3", ".m4a"), mask_ratio=0.1, lora_rank=16, learning_rate=1e-3,
             prompts=("a sound of {}.", "the sound of a {}.", "a recording of {}.", "this is the sound of {}.")),
    Modality("depth", "image", reads="depth", from_video="frames", transform="depth_image", shipped_dtype="float16", channels=1,
             extensions=(".npy",), mask_ratio=0.5, lora_rank=2, learning_rate=5e-4,
             prompts=("a depth photo of {}.", "a depth photo of a {}.", "a depth map of the {}.",
                      "a depth image of {}.")),
    Modality("thermal", "image", reads="image", from_video="frames", transform="thermal_image", shipped_dtype="uint8", channels=3,
             extensions=(), mask_ratio=0.5, lora_rank=2, learning_rate=1e-4,
             prompts=("a thermal photo of {}.", "a thermal image of a {}.", "an infrared photo of the {}.",
                      "a heat map of {}.")),
    Modality("image", "image", reads="image", from_video=None, transform="image", shipped_dtype="uint8", channels=3,
             extensions=_IMAGE_EXTENSIONS, mask_ratio=0.0, lora_rank=16, learning_rate=1e-4,
             prompts=("a photo of {}.", "a photo of a {}.", "a picture of {}.", "an image of the {}.")),
)}

# Every modality name, in the registry's order (also the order of a manifest's media columns).
MODALITIES: tuple[str, ...] = tuple(REGISTRY)
# The modalities a synthesizer can make from video frames.
SYNTHESIZABLE: tuple[str, ...] = tuple(m for m, spec in REGISTRY.items() if spec.synthesized)


def modality(name: str) -> Modality:
    """The registry entry of `name`; an unknown name raises with the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; valid: {list(MODALITIES)}") from None

"""Procedural demo data: short captioned clips whose captions follow from what is seen and heard.

A coloured shape (circle, square, triangle, cross) moves in one of four directions over a noisy
background, while a tone (deep/low/high/shrill pitch; steady, pulsing or beeping) plays. Every clip is a real
H.264/AAC mp4; captions are composed from the attributes ("a red circle moving left with a high
beeping tone"), so the alignment is learnable. The validation split covers every
colour x shape x direction once, so text-to-video retrieval has a unique right answer per caption.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raybind.data.media_encode import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle", "cross")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PITCHES = {"deep": 150.0, "low": 300.0, "high": 800.0, "shrill": 2000.0}
# Each shape sounds at its own pitch, so sight and sound share meaning without words: what a tower bound to
# an image anchor (ImageBind's recipe) can learn from uncaptioned clips. Rhythm stays random.
SHAPE_PITCH = dict(zip(SHAPES, PITCHES))
RHYTHMS = {"steady": 0.0, "pulsing": 2.0, "beeping": 8.0}  # on/off rate in Hz


@dataclass(frozen=True)
class ClipSpec:
    """What one demo clip shows and plays; its caption and label follow from these attributes."""

    colour: str
    shape: str
    direction: str
    pitch: str
    rhythm: str

    @property
    def caption(self) -> str:
        """The one-sentence caption naming every attribute, so the text-to-clip alignment is learnable."""
        return f"a {self.colour} {self.shape} moving {self.direction} with a {self.pitch} {self.rhythm} tone"

    @property
    def label(self) -> str:
        """The classification label: colour and shape (16 classes; direction and sound are left out)."""
        return f"{self.colour} {self.shape}"


def _shape_mask(shape: str, size: int, radius: float, cx: float, cy: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= radius ** 2
    if shape == "square":
        return (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    if shape == "triangle":
        return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    if shape == "cross":
        arm = radius * 0.3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    raise ValueError(f"unknown shape {shape!r}; valid: {list(SHAPES)}")


# Ground truth that the demo synthesizers learn (raybind.data.demo_synthesizers): the object stands at a
# distance and glows with a heat set by its colour, in front of a far, cold background. So a depth or
# thermal map shows the object's shape and (through distance or heat) its colour: caption content.
BACKGROUND_DEPTH_M = 8.0
OBJECT_DEPTH_M = {"red": 1.0, "green": 2.5, "blue": 4.0, "yellow": 5.5}
BACKGROUND_HEAT = 30
OBJECT_HEAT = {"red": 250, "green": 120, "blue": 70, "yellow": 185}


def render_frames(spec: ClipSpec, rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """RGB frames [T, S, S, 3] uint8 of the clip (`render_scene` without the depth and heat maps)."""
    return render_scene(spec, rng, size, frames)[0]


def render_scene(spec: ClipSpec, rng: np.random.Generator, size: int,
                 frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB frames [T, S, S, 3] uint8, ground-truth depth [T, S, S] metres and heat [T, S, S] uint8."""
    background = rng.integers(20, 70, (1, size, size, 3)).astype(np.uint8)
    video = np.repeat(background, frames, axis=0)
    depth = np.full((frames, size, size), BACKGROUND_DEPTH_M, np.float32)
    heat = np.full((frames, size, size), BACKGROUND_HEAT, np.uint8)
    radius = size * rng.uniform(0.14, 0.2)
    dx, dy = DIRECTIONS[spec.direction]
    travel = size * 0.5
    start_x = size / 2 - dx * travel / 2 + rng.uniform(-0.08, 0.08) * size * (dx == 0)
    start_y = size / 2 - dy * travel / 2 + rng.uniform(-0.08, 0.08) * size * (dy == 0)
    colour = np.array(COLOURS[spec.colour], np.uint8)
    for t in range(frames):
        progress = t / max(1, frames - 1)
        mask = _shape_mask(spec.shape, size, radius, start_x + dx * travel * progress, start_y + dy * travel * progress)
        video[t][mask] = colour
        depth[t][mask] = OBJECT_DEPTH_M[spec.colour]
        heat[t][mask] = OBJECT_HEAT[spec.colour]
    return video, depth, heat


def render_tone(spec: ClipSpec, seconds: float, rate: int) -> np.ndarray:
    """The clip's sound: its pitch, gated on and off at its rhythm's rate, float32 mono at `rate` Hz."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * math.pi * PITCHES[spec.pitch] * t)
    if RHYTHMS[spec.rhythm]:
        wave *= (np.sin(2 * math.pi * RHYTHMS[spec.rhythm] * t) > 0).astype(np.float64)
    return wave.astype(np.float32)


def random_specs(count: int, rng: np.random.Generator, cover_all_visuals: bool = False) -> list[ClipSpec]:
    """`count` clip specs: the pitch of their shape and a random rhythm. Visuals are random, or with
    `cover_all_visuals` every colour x shape x direction in turn (64 clips cover each once: the validation split)."""
    visuals = list(itertools.product(COLOURS, SHAPES, DIRECTIONS))
    if cover_all_visuals:
        order = [visuals[i % len(visuals)] for i in range(count)]
    else:
        order = [visuals[int(i)] for i in rng.integers(0, len(visuals), count)]
    return [ClipSpec(c, s, d, SHAPE_PITCH[s], str(rng.choice(list(RHYTHMS)))) for c, s, d in order]


# Where the object is in a frame, by how far along its path it is (it starts on the side it moves away from).
_SIDES = {"left": ("on the right", "on the left"), "right": ("on the left", "on the right"),
          "up": ("at the bottom", "at the top"), "down": ("at the top", "at the bottom")}
KEY_FRAMES = 8        # per-frame captions, one per key frame spread over the clip (VIDAL-10M: OFA on frames 0-7)
STILL_EVERY = 4       # one training clip in this many also gives a still frame as an image row


def caption_views(spec: ClipSpec) -> dict[str, object]:
    """Several captions of one clip (VIDAL-10M's views): a terse title with tags, the full sentence, and
    one caption per key frame saying where the object is then."""
    start, end = _SIDES[spec.direction]
    frames = [f"a {spec.colour} {spec.shape} " + (start if p < 1 / 3 else "in the centre" if p < 2 / 3 else end)
              for p in np.linspace(0, 1, KEY_FRAMES)]
    return {"title": f"{spec.colour} {spec.shape} #{spec.direction} #{spec.pitch}", "sentence": spec.caption,
            "frames": frames}


def generate(output_dir: str | Path, train_clips: int = 256, val_clips: int = 64, seed: int = 0, size: int = 96,
             fps: int = 10, seconds: float = 2.0, sample_rate: int = 16_000) -> dict[str, str]:
    """Write `clips/*.mp4` plus `train.jsonl` and `val.jsonl` manifests (one caption per clip), the
    recipes' `train_recipes.jsonl` / `val_recipes.jsonl` (caption views per clip; the training one adds
    still frames from `stills/*.png` as image rows), and for ImageBind's recipe `<split>_stills.jsonl` (a
    clip's middle frame with its caption: fits the demo's image anchor) and `<split>_uncaptioned.jsonl` (clips
    without captions), in training the first and the second half of the clips. Deterministic for a seed."""
    import cv2

    output_dir = Path(output_dir)
    (output_dir / "clips").mkdir(parents=True, exist_ok=True)
    (output_dir / "stills").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    manifests = {}
    for split, count, cover in (("train", train_clips, False), ("val", val_clips, True)):
        rows, recipe_rows, still_rows, uncaptioned = [], [], [], []
        for index, spec in enumerate(random_specs(count, rng, cover)):
            clip_id = f"{split}-{index:05d}"
            relative = f"clips/{clip_id}.mp4"
            frames = render_frames(spec, rng, size, max(2, int(fps * seconds)))
            write_video(output_dir / relative, frames, fps, render_tone(spec, seconds, sample_rate), sample_rate)
            rows.append({"id": clip_id, "text": spec.caption, "label": spec.label, "video": relative})
            views = caption_views(spec)
            recipe_rows.append({"id": clip_id, "text": views, "label": spec.label, "video": relative})
            still = f"stills/{clip_id}.png"
            cv2.imwrite(str(output_dir / still), cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR))
            # training: the image anchor is fitted on one half of the clips and binds the other half (on the
            # same clips a tiny image tower memorises their captions, sound words included)
            if split != "train" or index < count // 2:
                still_rows.append({"id": f"{clip_id}-still", "text": spec.caption, "label": spec.label, "image": still})
            if split != "train" or index >= count // 2:
                uncaptioned.append({"id": clip_id, "label": spec.label, "video": relative})
            if split == "train" and index % STILL_EVERY == 0:  # a still: no per-frame captions, no video
                recipe_rows.append({"id": f"{clip_id}-still", "label": spec.label, "image": still,
                                    "text": {"title": views["title"], "sentence": f"a {spec.colour} {spec.shape}"}})
        for name, content in ((split, rows), (f"{split}_recipes", recipe_rows), (f"{split}_stills", still_rows),
                              (f"{split}_uncaptioned", uncaptioned)):
            path = output_dir / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in content))
            manifests[name] = str(path)
    return manifests

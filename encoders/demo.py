"""Demo: build a bind model, encode one generated clip per modality, print shapes and trainable counts.

    python -m encoders.demo                      # tiny towers, open_clip text tower, seconds on a CPU
    python -m encoders.demo --preset vit-l-14    # the LanguageBind towers (random init), LoRA fractions
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from encoders import languagebind_config, transforms
from encoders.model import BindModel
from encoders.synthesis import DepthSynthesizer, ThermalSynthesizer, random_depth_model, random_thermal_generator


def generated_clip(frames: int, size: int, seconds: float = 2.0, rate: int = 16_000) -> tuple[np.ndarray, np.ndarray]:
    """A red square sliding right over grey, and a 440 Hz tone: uint8 [T, H, W, 3] and float [samples]."""
    video = np.full((frames, size, size, 3), 96, np.uint8)
    side = max(2, size // 4)
    for t in range(frames):
        x = int(t * (size - side) / max(1, frames - 1))
        video[t, size // 2 - side // 2: size // 2 + side // 2, x:x + side] = (220, 30, 30)
    samples = np.arange(int(seconds * rate)) / rate
    return video, np.sin(2 * math.pi * 440 * samples).astype(np.float32)


def tower_report(model: BindModel) -> dict[str, dict]:
    """Per tower: total and trainable parameters and the trainable share in percent (what LoRA leaves to train)."""
    report = {}
    for modality, tower in model.towers.items():
        total = sum(p.numel() for p in tower.parameters())
        trainable = sum(p.numel() for p in tower.parameters() if p.requires_grad)
        report[modality] = {"parameters": total, "trainable": trainable,
                            "trainable_percent": round(100 * trainable / total, 3)}
    return report


def main(argv: list[str] | None = None) -> dict:
    """`python -m encoders.demo`: print each tower's trainable share (tiny preset: also encode a generated
    clip per modality and its cosine to a caption); returns the summary it prints as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--modalities", default="video,audio,depth,thermal")
    args = parser.parse_args(argv)
    modalities = args.modalities.split(",")
    model = BindModel(languagebind_config(args.preset, modalities)).eval()
    summary: dict = {"preset": args.preset, "embed_dim": model.embed_dim, "towers": tower_report(model)}
    if args.preset == "tiny":
        pre = model.tower_config("video").preprocess if "video" in modalities else None
        video, wave = generated_clip(pre.num_frames if pre else 8, 96)
        depth = DepthSynthesizer.from_model(*random_depth_model())(video[:1])
        thermal = ThermalSynthesizer.from_munit(*random_thermal_generator())(video[:1])
        inputs = {
            "video": lambda c: transforms.video_frames(video, c)[None],
            "audio": lambda c: transforms.audio_mel(wave, 16_000, c)[None],
            "depth": lambda c: transforms.depth_image(depth, c),
            "thermal": lambda c: transforms.thermal_image(thermal, c),
            "image": lambda c: transforms.image(video[:1], c),
        }
        with torch.no_grad():
            text = model.encode_text(model.tokenizer()(["a red square moving right"]))
            for modality in modalities:
                batch = inputs[modality](model.tower_config(modality).preprocess)
                emb = model.encode(modality, batch)
                summary["towers"][modality].update(input_shape=list(batch.shape), embedding_shape=list(emb.shape),
                                                   cosine_to_caption=round(float(emb @ text.T), 4))
    for modality, row in summary["towers"].items():
        print(f"{modality:8s} trainable {row['trainable']:>10,d} / {row['parameters']:>12,d} "
              f"({row['trainable_percent']:.3f}%)  " + (f"in {row.get('input_shape')} -> out {row.get('embedding_shape')}"
                                                          if "input_shape" in row else ""))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()

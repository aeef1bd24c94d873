"""The modality registry is the one place per-modality rules live: every consumer reads it."""

from __future__ import annotations

import pytest
import torch

from encoders import TowerConfig, transforms
from encoders.modalities import MODALITIES, REGISTRY, SYNTHESIZABLE, modality


def test_languagebind_recipe_per_modality_comes_from_the_registry():
    """LanguageBind's recipe: video 0.3 / r16, audio 0.1 / r16, depth and thermal 0.5 / r2."""
    expected = {"video": (0.3, 16, 1e-4), "audio": (0.1, 16, 1e-3), "depth": (0.5, 2, 5e-4), "thermal": (0.5, 2, 1e-4)}
    for name, (mask, rank, lr) in expected.items():
        kind = REGISTRY[name]
        assert (kind.mask_ratio, kind.lora_rank, kind.learning_rate) == (mask, rank, lr)
        tower = TowerConfig.languagebind(name)
        assert (tower.mask_ratio, tower.lora.r) == (mask, rank)


def test_every_entry_names_a_transform_that_exists_and_prompts_with_one_slot():
    for kind in REGISTRY.values():
        if kind.tower_input != "spectrogram":
            assert callable(getattr(transforms, kind.transform)), kind.name
        assert kind.prompts and all(p.count("{}") == 1 for p in kind.prompts), kind.name
        assert kind.channels in (1, 3) and kind.shipped_dtype in ("uint8", "float16")


def test_unknown_modality_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown modality 'smell'; valid: \['video', 'audio', 'depth'"):
        modality("smell")
    assert set(SYNTHESIZABLE) == {"depth", "thermal"} and MODALITIES[0] == "video"


def test_towers_take_the_input_shape_their_entry_names(tiny_config):
    """A clip tower takes [B, T, 3, S, S], a spectrogram tower the mel grid, image towers [B, 3, S, S]."""
    from encoders import BindModel

    model = BindModel(tiny_config).eval()
    for tower in tiny_config.towers:
        pre, kind = tower.preprocess, REGISTRY[tower.modality]
        shape = {"clip": (2, pre.num_frames, 3, pre.image_size, pre.image_size),
                 "spectrogram": (2, 3, pre.mel_bins, pre.target_length),
                 "image": (2, 3, pre.image_size, pre.image_size)}[kind.tower_input]
        with torch.no_grad():
            assert model.encode(tower.modality, torch.randn(shape)).shape == (2, model.embed_dim)

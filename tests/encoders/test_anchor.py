"""The image anchor (ImageBind's recipe) in the model library: a frozen image tower the others bind to."""

from __future__ import annotations

import json

import pytest
import torch

from encoders.checkpoint import METADATA_FILE, config_hash, load_model, save_model
from encoders.config import ModelConfig, TextConfig, TowerConfig
from encoders.model import BindModel
from encoders.presets import get_preset
from encoders.step import training_step


def _tower(modality: str, **kwargs) -> TowerConfig:
    return TowerConfig(modality, preprocess=get_preset("tiny").preprocess(modality), **kwargs)


def _image_anchored(**kwargs) -> ModelConfig:
    return ModelConfig(towers=(_tower("audio", mask_ratio=0.5), _tower("depth")), anchor="image", **kwargs)


def test_the_anchor_stays_frozen_and_unchanged_while_a_tower_trains_against_it():
    torch.manual_seed(0)
    model = BindModel(_image_anchored()).train()
    before = {name: p.detach().clone() for name, p in model.anchor_tower.named_parameters()}
    assert not any(p.requires_grad for p in model.anchor_tower.parameters())
    assert not model.anchor_tower.training   # train() leaves the anchor in eval mode: no masking, no dropout
    images = torch.randn(6, 3, 64, 64)
    anchor = model.encode_anchor_images(images)
    assert anchor.shape == (6, model.embed_dim) and torch.allclose(anchor.norm(dim=-1), torch.ones(6))
    optimizer = torch.optim.AdamW([p for p in model.tower("depth").parameters() if p.requires_grad], lr=1e-2)
    depth_before = model.encode("depth", torch.randn(6, 3, 64, 64)).detach()
    for _ in range(3):
        training_step(model, "depth", torch.randn(6, 3, 64, 64), model.encode_anchor_images(images), optimizer)
    for name, param in model.anchor_tower.named_parameters():
        assert torch.equal(param, before[name]), name
    assert torch.equal(model.encode_anchor_images(images), anchor)   # the same anchor embedding every time
    assert not torch.equal(model.encode("depth", torch.randn(6, 3, 64, 64)).detach(), depth_before)


def test_the_anchor_is_part_of_the_models_identity_and_old_configs_keep_their_hash():
    config = _image_anchored()
    assert config.to_dict()["anchor"] == "image"
    assert ModelConfig.from_dict(config.to_dict()) == config
    language = ModelConfig(towers=(_tower("audio"),))
    assert "anchor" not in language.to_dict()   # checkpoints written before the image anchor still match
    assert config_hash(language) != config_hash(ModelConfig(towers=(_tower("audio"),), anchor="image"))


@pytest.mark.parametrize("kwargs, message", [
    ({"anchor": "video"}, "anchor must be one of"),
    ({"anchor_from": "somewhere"}, "set anchor: image"),
    ({"anchor": "image", "towers": (_tower("image"),)}, "cannot also be trained"),
    ({"anchor": "image", "text": TextConfig(kind="hf", name="all-minilm-l6-v2")}, "use text.kind open_clip"),
])
def test_impossible_anchors_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{"towers": (_tower("audio"),), **kwargs})


def test_a_checkpoint_records_its_anchor_and_reloads_the_same_embeddings(tmp_path):
    model = BindModel(_image_anchored()).eval()
    save_model(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / METADATA_FILE).read_text())["model"]["anchor"] == "image"
    again = load_model(tmp_path / "ckpt").eval()
    images, spectrograms = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 256)
    assert torch.equal(again.encode_anchor_images(images), model.encode_anchor_images(images))
    assert torch.allclose(again.encode("audio", spectrograms), model.encode("audio", spectrograms))


def test_anchor_from_a_checkpoint_takes_its_image_tower_and_its_language_tower(tmp_path):
    text = TextConfig(kind="hf", name="all-minilm-l6-v2")
    source = BindModel(ModelConfig(text=text, towers=(_tower("image"),), init_seed=7)).eval()   # LoRA
    with torch.no_grad():   # a trained image tower: adapters and projection moved from their initial weights
        for name, param in source.tower("image").named_parameters():
            if "lora_B" in name or name.endswith("proj"):
                param.add_(0.05 * torch.randn_like(param))
    save_model(source, tmp_path / "anchor")
    config = ModelConfig(text=text, towers=(_tower("audio"),), anchor="image", anchor_from=str(tmp_path / "anchor"))
    model = BindModel(config).eval()
    images = torch.randn(3, 3, 64, 64)   # the anchor is the source's tower with its LoRA merged
    assert torch.allclose(model.encode_anchor_images(images), source.encode("image", images), atol=1e-5)
    tokens = model.tokenizer()(["a red circle", "a blue cross"])
    assert torch.allclose(model.encode_text(tokens), source.encode_text(tokens), atol=1e-6)

    save_model(model, tmp_path / "bound")   # carries the anchor: loads with the source folder gone
    (tmp_path / "anchor").rename(tmp_path / "moved")
    with pytest.raises(ValueError, match="image anchor's weights were not loaded"):
        BindModel(config).encode_anchor_images(images)
    again = load_model(tmp_path / "bound").eval()
    assert torch.equal(again.encode_anchor_images(images), model.encode_anchor_images(images))
    assert torch.equal(again.encode_text(tokens), model.encode_text(tokens))
    (tmp_path / "moved").rename(tmp_path / "anchor")
    save_model(BindModel(ModelConfig(text=text, towers=(_tower("audio"),))), tmp_path / "no-image")
    with pytest.raises(ValueError, match="has no image tower"):
        BindModel(ModelConfig(text=text, towers=(_tower("depth"),), anchor="image",
                              anchor_from=str(tmp_path / "no-image")))
    with pytest.raises(ValueError, match="this model's must be the same"):
        BindModel(ModelConfig(towers=(_tower("audio"),), anchor="image", anchor_from=str(tmp_path / "anchor")))

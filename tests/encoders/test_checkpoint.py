import json

import pytest
import torch
from peft import PeftModel

from encoders import BindModel, contrastive_loss, languagebind_config, load_model, save_model
from encoders.optim import build_optimizer, parameter_groups


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randn(2, 8, 3, 64, 64, generator=g), "audio": torch.randn(2, 3, 64, 256, generator=g),
            "depth": torch.randn(2, 3, 64, 64, generator=g), "thermal": torch.randn(2, 3, 64, 64, generator=g)}


def _trained(config):
    model = BindModel(config).train()
    optimizer = build_optimizer(parameter_groups(model.towers, {m: 1e-2 for m in model.modalities}))
    tokens = model.tokenizer()(["a", "b"])
    for modality in model.modalities:
        batch = _inputs()[modality]
        loss = contrastive_loss(model.encode(modality, batch), model.encode_text(tokens), model.logit_scale(modality))
        loss.backward()
    optimizer.step()
    return model.eval()


def test_round_trip_gives_identical_embeddings(tmp_path, tiny_config):
    model = _trained(tiny_config)
    save_model(model, tmp_path / "ckpt", extra={"step": 1})
    fresh = load_model(tmp_path / "ckpt").eval()
    untrained = BindModel(tiny_config).eval()
    with torch.no_grad():
        for modality, batch in _inputs().items():
            assert torch.equal(model.encode(modality, batch), fresh.encode(modality, batch)), modality
            assert not torch.allclose(model.encode(modality, batch), untrained.encode(modality, batch))
            assert torch.equal(model.logit_scale(modality), fresh.logit_scale(modality))


def test_layout_is_peft_adapters_plus_safetensors(tmp_path, tiny_config):
    model = _trained(tiny_config)
    directory = save_model(model, tmp_path / "ckpt")
    manifest = json.loads((directory / "raybind.json").read_text())
    assert manifest["model"]["preset"] == "tiny" and len(manifest["config_hash"]) == 16
    for modality in model.modalities:
        names = sorted(p.name for p in (directory / modality).iterdir())
        assert names == ["adapter_config.json", "adapter_model.safetensors", "trained.safetensors"]
    assert not list(directory.rglob("*.pt")) and not list(directory.rglob("*.bin"))


def test_peft_from_pretrained_loads_adapters_onto_the_same_backbone(tmp_path, tiny_config):
    from safetensors.torch import load_file

    from encoders.model import bare_backbone

    model = _trained(tiny_config)
    directory = save_model(model, tmp_path / "ckpt")
    for modality in ("depth", "video"):
        backbone = bare_backbone(tiny_config, modality)
        assert not any("lora_" in name for name, _ in backbone.named_parameters())
        trained = load_file(str(directory / modality / "trained.safetensors"))
        backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in trained.items()
                                  if k.startswith("backbone.")}, strict=False)
        peft_model = PeftModel.from_pretrained(backbone, str(directory / modality)).eval()
        x = _inputs()[modality]
        frames = x.shape[1] if modality == "video" else 1
        x = x.flatten(0, 1) if modality == "video" else x
        with torch.no_grad():
            expected = model.tower(modality).backbone(x, num_frames=frames)
            torch.testing.assert_close(peft_model(x, num_frames=frames), expected)
            assert not torch.allclose(bare_backbone(tiny_config, modality)(x, num_frames=frames), expected)


def test_loading_into_a_different_config_is_refused(tmp_path, tiny_config):
    save_model(_trained(tiny_config), tmp_path / "ckpt")
    other = BindModel(languagebind_config("tiny", ["video", "audio", "depth", "thermal"], init_seed=7))
    from encoders.checkpoint import load_into

    with pytest.raises(ValueError, match="different model config"):
        load_into(other, tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="raybind.json"):
        load_model(tmp_path)


def test_mask_ratio_and_temperature_are_training_settings_outside_the_model_identity(tmp_path):
    """A sweep over mask ratio and temperature trains one model identity: same config hash, and a
    checkpoint of one setting loads into a model built with another."""
    import dataclasses

    from encoders.checkpoint import config_hash, load_into, read_metadata

    config = languagebind_config("tiny", ["depth"])
    swept = dataclasses.replace(config, towers=(dataclasses.replace(
        config.towers[0], mask_ratio=0.1, temperature=0.2, learn_temperature=False),))
    assert config_hash(swept) == config_hash(config) and swept == config
    model = BindModel(swept)
    tower = model.tower("depth")
    assert float(model.logit_scale("depth").detach()) == pytest.approx(5.0)  # 1 / 0.2
    assert not tower.log_logit_scale.requires_grad
    groups = parameter_groups(model.towers, {"depth": 1e-3})
    assert all(p is not tower.log_logit_scale for g in groups for p in g["params"])  # fixed: never optimised
    save_model(model, tmp_path / "ckpt")
    manifest = read_metadata(tmp_path / "ckpt")
    assert "mask_ratio" not in json.dumps(manifest["model"]) and "temperature" not in json.dumps(manifest["model"])
    other = BindModel(config)  # paper defaults: mask 0.5, temperature 0.07, learned
    load_into(other, tmp_path / "ckpt")
    assert float(other.logit_scale("depth").detach()) == pytest.approx(5.0)  # the fixed temperature travels as a tensor


def test_init_from_loads_the_towers_it_shares_and_leaves_new_ones_fresh(tmp_path):
    from encoders.checkpoint import init_from

    source = _trained(languagebind_config("tiny", ["audio", "depth"]))
    save_model(source, tmp_path / "ckpt")
    target_config = languagebind_config("tiny", ["audio", "thermal"])
    model = init_from(BindModel(target_config), tmp_path / "ckpt").eval()
    fresh = BindModel(target_config).eval()
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model.encode("audio", inputs["audio"]), source.encode("audio", inputs["audio"]))
        assert torch.equal(model.logit_scale("audio"), source.logit_scale("audio"))
        assert not torch.allclose(model.encode("audio", inputs["audio"]), fresh.encode("audio", inputs["audio"]))
        assert torch.equal(model.encode("thermal", inputs["thermal"]), fresh.encode("thermal", inputs["thermal"]))


@pytest.mark.parametrize("change, message", [
    ({"lora_rank": 4}, r"its audio tower differs in \['lora'\]"),
    ({"init_seed": 1}, "its frozen weights come from pretrained None seed 0, this model's from None seed 1"),
    ({"preset": "vit-b-32"}, "it holds preset 'tiny'"),
])
def test_init_from_refuses_another_architecture_by_name(tmp_path, change, message):
    from dataclasses import replace

    from encoders.checkpoint import init_from
    from encoders.config import LoraSettings

    save_model(BindModel(languagebind_config("tiny", ["audio"])), tmp_path / "ckpt")
    config = languagebind_config("tiny", ["audio"], init_seed=change.get("init_seed", 0))
    if "lora_rank" in change:
        config = replace(config, towers=(replace(config.towers[0], lora=LoraSettings(r=change["lora_rank"])),))
    if "preset" in change:   # checked from the configs alone: nothing of the other preset is built
        from encoders.checkpoint import ModelConfig, init_problem, read_metadata

        saved = ModelConfig.from_dict(read_metadata(tmp_path / "ckpt")["model"])
        assert message in init_problem(saved, replace(config, preset=change["preset"]))
        return
    with pytest.raises(ValueError, match=message):
        init_from(BindModel(config), tmp_path / "ckpt")


def test_a_format_1_checkpoint_of_openai_weights_reloads_with_the_activation_it_was_built_with(tmp_path, monkeypatch):
    """Before the activation followed the weights, `vit-l-14` + `openai` built open_clip's GELU: checkpoints of
    that format (1) reload with it; new ones (2) with the QuickGELU the weights need."""
    import open_clip

    from encoders.backbone import build_clip
    from encoders.checkpoint import METADATA_FILE
    from encoders.presets import get_preset

    forced = []
    monkeypatch.setattr(open_clip, "create_model", lambda name, pretrained, force_quick_gelu: forced.append(
        force_quick_gelu) or open_clip.model.CLIP(**get_preset("tiny").clip_config))
    for legacy in (False, True):   # the tag needs QuickGELU; format 1 built GELU (nothing is downloaded)
        build_clip(get_preset("vit-l-14"), "openai", None, 0, legacy_activation=legacy)
    assert forced == [True, False]
    monkeypatch.undo()

    save_model(BindModel(languagebind_config("tiny", ["audio"])), tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / METADATA_FILE).read_text())
    assert meta["format_version"] == 2 and not load_model(tmp_path / "ckpt").config.legacy_activation
    (tmp_path / "ckpt" / METADATA_FILE).write_text(json.dumps({**meta, "format_version": 1}))
    assert load_model(tmp_path / "ckpt").config.legacy_activation


def test_the_config_hash_of_existing_checkpoints_does_not_move():
    """Pinned digests of configs written before V1.5, the image anchor and the activation rule: fields added
    since stay out of `to_dict` at their defaults, so old checkpoints still load onto the same identity."""
    from encoders import TextConfig
    from encoders.checkpoint import config_hash

    assert config_hash(languagebind_config("tiny", ["video", "audio", "depth", "thermal", "image"])) == "00ffd74a226607af"
    assert config_hash(languagebind_config("vit-l-14", ["video"], pretrained="openai",
                                           text=TextConfig(kind="hf", name="all-minilm-l6-v2"))) == "e6ae77271cf3608b"

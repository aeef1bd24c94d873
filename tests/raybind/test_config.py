import pytest

from raybind.config import ConfigError, load_config, validate

BASE = {"name": "x", "data": {"train": "m.jsonl", "modalities": ["video", "audio"]}}


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_invalid_fields_are_named_by_dotted_path(tmp_path):
    path = _write(tmp_path, "name: x\ndata: {train: m.jsonl, modalities: [video, smell]}\ntrain: {batch_size: 1}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "data.modalities: Value error, unknown modalities ['smell']" in message
    assert "train.batch_size: Input should be greater than or equal to 2" in message


def test_unknown_field_and_unknown_preset_are_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.stepz: Extra inputs are not permitted"):
        validate({**BASE, "train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"model\.preset: .*unknown preset 'huge'.*vit-l-14"):
        validate({**BASE, "model": {"preset": "huge"}})
    with pytest.raises(ConfigError, match=r"data: Field required"):
        validate({"name": "x"})


def test_set_overrides_any_dotted_field(tmp_path):
    path = _write(tmp_path, "name: x\ndata: {train: m.jsonl}\n")
    cfg = load_config(path, ["train.steps=7", "model.towers.video.mask_ratio=0.6", "data.depth.model=/w/glpn",
                             "ray.num_cpus=3"])
    assert cfg.train.steps == 7 and cfg.data.depth.model == "/w/glpn" and cfg.ray.num_cpus == 3
    assert cfg.model_config_for_encoders().tower("video").mask_ratio == 0.6
    with pytest.raises(ConfigError, match="dotted.path=value"):
        load_config(path, ["train.steps"])
    with pytest.raises(ConfigError, match=r"train\.steps: Input should be a valid integer"):
        load_config(path, ["train.steps=many"])


def test_paper_defaults_fill_unset_tower_fields():
    cfg = validate({**BASE, "data": {**BASE["data"], "modalities": ["video", "audio", "depth", "thermal"]}})
    model = cfg.model_config_for_encoders()
    assert {t.modality: t.mask_ratio for t in model.towers} == {"video": 0.3, "audio": 0.1, "depth": 0.5, "thermal": 0.5}
    assert {t.modality: t.lora.r for t in model.towers} == {"video": 16, "audio": 16, "depth": 2, "thermal": 2}
    assert cfg.learning_rates() == {"video": 1e-4, "audio": 1e-3, "depth": 5e-4, "thermal": 1e-4}
    assert model.tower("audio").preprocess.mel_bins == 64  # the tiny preset's spectrogram


def test_towers_must_be_listed_modalities():
    with pytest.raises(ConfigError, match=r"model.towers has \['depth'\]"):
        validate({**BASE, "model": {"towers": {"depth": {"mask_ratio": 0.5}}}})


def test_shipped_configs_validate():
    from pathlib import Path

    for path in sorted(Path("configs").glob("*.yaml")):
        load_config(path)

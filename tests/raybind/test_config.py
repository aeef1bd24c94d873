from pathlib import Path

import pytest
import yaml

from raybind.config import ConfigError, SynthesisSettings, load_config, validate

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
    assert cfg.encoder_config().tower("video").mask_ratio == 0.6
    with pytest.raises(ConfigError, match="dotted.path=value"):
        load_config(path, ["train.steps"])
    with pytest.raises(ConfigError, match=r"train\.steps: Input should be a valid integer"):
        load_config(path, ["train.steps=many"])


def test_on_off_settings_take_yaml_booleans_as_the_words_written(tmp_path):
    """YAML reads an unquoted on/off as a boolean, in a file and in `--set` alike."""
    path = _write(tmp_path, "name: x\ndata: {train: m.jsonl, modalities: [video]}\ntrain: {compile: off}\n"
                            "ray: {hub_offline: on}\n")
    cfg = load_config(path)
    assert (cfg.train.compile, cfg.ray.hub_offline) == ("off", "on")
    cfg = load_config(path, ["train.compile=on", "ray.hub_offline=off", "ray.progress_bars=off"])
    assert (cfg.train.compile, cfg.ray.hub_offline, cfg.ray.progress_bars) == ("on", "off", "off")
    assert cfg.compile_enabled()
    with pytest.raises(ConfigError, match=r"train\.compile: Input should be 'auto', 'on' or 'off'"):
        load_config(path, ["train.compile=sometimes"])


def test_paper_defaults_fill_unset_tower_fields():
    cfg = validate({**BASE, "data": {**BASE["data"], "modalities": ["video", "audio", "depth", "thermal"]}})
    model = cfg.encoder_config()
    assert {t.modality: t.mask_ratio for t in model.towers} == {"video": 0.3, "audio": 0.1, "depth": 0.5, "thermal": 0.5}
    assert {t.modality: t.lora.r for t in model.towers} == {"video": 16, "audio": 16, "depth": 2, "thermal": 2}
    assert cfg.learning_rates() == {"video": 1e-4, "audio": 1e-3, "depth": 5e-4, "thermal": 1e-4}
    assert model.tower("audio").preprocess.mel_bins == 64  # the tiny preset's spectrogram


def test_towers_must_be_listed_modalities():
    with pytest.raises(ConfigError, match=r"model.towers has \['depth'\]"):
        validate({**BASE, "model": {"towers": {"depth": {"mask_ratio": 0.5}}}})


def test_shipped_configs_validate():
    """Every config a user launches (it has a `name`) validates; a pure base (no `name`) is validated
    through the configs that extend it."""
    trees = {p.name: yaml.safe_load(p.read_text()) for p in sorted(Path("configs").glob("*.yaml"))}
    extended = {tree.get("extends") for tree in trees.values()} - {None}
    assert {name for name, tree in trees.items() if "name" not in tree} == {"languagebind_l14.yaml"} <= extended
    for name, tree in trees.items():
        if "name" in tree:
            load_config(Path("configs") / name)


def test_l14_recipes_overlay_one_base_with_only_their_own_settings():
    recipes = {m: load_config(f"configs/languagebind_{m}_l14.yaml") for m in ("video", "audio", "depth", "thermal")}
    # LanguageBind's training scripts: per-GPU batch x accum-freq x GPUs
    layouts = {"video": (10, 4, 16), "audio": (16, 4, 16), "depth": (128, 1, 8), "thermal": (128, 1, 8)}
    for modality, cfg in recipes.items():
        assert cfg.data.modalities == (modality,) and cfg.model.preset == "vit-l-14"
        assert set(cfg.model.towers) == {modality} and not cfg.model.towers[modality].grad_checkpointing
        assert cfg.train.use_gpu and cfg.train.accumulation == "cached"
        assert (cfg.train.batch_size, cfg.train.grad_accum, cfg.train.num_workers) == layouts[modality]
    video = recipes["video"]
    assert video.data.depth == SynthesisSettings() and video.data.thermal == SynthesisSettings()
    assert recipes["depth"].data.depth.model == "vinvino02/glpn-nyu"


def test_extends_merges_mappings_and_reports_a_missing_or_looping_base(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\nseed: 3\ndata: {train: m.jsonl, modalities: [video]}\n"
                                        "train: {steps: 9, batch_size: 4}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: c\ntrain: {steps: 2}\n"
                                         "data: {modalities: [audio]}\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.batch_size=6"])
    assert (cfg.name, cfg.seed, cfg.train.steps, cfg.train.batch_size) == ("c", 3, 2, 6)
    assert cfg.data.train == "m.jsonl" and cfg.data.modalities == ("audio",)
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\nname: o\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere.yaml \(extended by .*orphan.yaml\)"):
        load_config(tmp_path / "orphan.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_training_settings_validate():
    with pytest.raises(ConfigError, match=r"train\.accumulation: Input should be 'cached' or 'plain'"):
        validate({**BASE, "train": {"accumulation": "sum"}})
    with pytest.raises(ConfigError, match=r"train\.gpus_per_worker: Input should be less than or equal to 1"):
        validate({**BASE, "train": {"gpus_per_worker": 2}})
    cfg = validate({**BASE, "train": {"use_gpu": True}})
    assert cfg.compile_enabled() and not validate({**BASE, "train": {"use_gpu": True, "compile": "off"}}).compile_enabled()
    assert not validate(BASE).compile_enabled()


def test_worker_threads_follow_the_cpu_reservation_unless_set():
    assert validate({**BASE, "train": {"cpus_per_worker": 4}}).train.threads() == 4
    assert validate({**BASE, "train": {"cpus_per_worker": 0.5}}).train.threads() == 1
    assert validate({**BASE, "train": {"cpus_per_worker": 0.5, "torch_threads": 2}}).train.threads() == 2
    with pytest.raises(ConfigError, match=r"train\.torch_threads: Input should be greater than or equal to 1"):
        validate({**BASE, "train": {"torch_threads": 0}})


def test_tower_settings_are_the_model_librarys_own_dataclass_validated_once():
    """Each model field, default and range check lives once, in `encoders.config`: the run config
    validates those dataclasses and only adds how the run trains a tower."""
    from encoders.config import LoraSettings, TowerConfig

    cfg = validate({**BASE, "model": {"towers": {"audio": {"lora": {"r": 4}, "lr": 3e-4}}}})
    audio = cfg.tower("audio")
    assert isinstance(audio, TowerConfig) and audio.lora == LoraSettings(r=4) and audio.lr == 3e-4
    assert type(cfg.encoder_config().tower("audio")) is TowerConfig   # the checkpoint's tower, no run fields
    assert cfg.tower("video").preprocess.image_size == 64              # the tiny preset's, not the dataclass's 224
    for towers, message in [({"video": {"mask_ratio": 1.5}}, r"model\.towers\.video\.mask_ratio: Input should be less than 1"),
                            ({"video": {"lora": {"r": 0}}}, r"model\.towers\.video\.lora\.r: Input should be greater"),
                            ({"video": {"maskratio": 0.2}}, r"model\.towers\.video\.maskratio: Extra inputs are not permitted"),
                            ({"video": {"temporal": "lstm"}}, r"model\.towers\.video\.temporal: Input should be"),
                            ({"video": {"weight": 0}}, r"model\.towers\.video\.weight: Input should be greater than 0")]:
        with pytest.raises(ConfigError, match=message):
            validate({**BASE, "model": {"towers": towers}})
    with pytest.raises(ConfigError, match=r"model\.text: .*text\.name is required"):
        validate({**BASE, "model": {"text": {"kind": "hf"}}})
    # the same declared ranges hold where the library is used without a config
    with pytest.raises(ValueError, match=r"mask_ratio must be < 1, got 1\.5"):
        TowerConfig("video", mask_ratio=1.5)
    with pytest.raises(ValueError, match=r"dropout must be < 1"):
        LoraSettings(dropout=1.0)


def test_a_checkpoint_keeps_its_media_settings_as_one_typed_object():
    """Evaluation reads the run's media settings back from `raybind.json` and applies `--set` to an
    inference config: no stand-in run config, and the run's manifests stay out."""
    from raybind.config import CHECKPOINT_MEDIA_KEY, MediaSettings, saved_media_settings
    from raybind.evaluate.settings import checkpoint_inference_config

    cfg = validate({**BASE, "data": {**BASE["data"], "num_frames": 4, "cache_mb": 64,
                                     "depth": {"model": "/w/glpn"}}})
    media = cfg.data.media()
    assert type(media) is MediaSettings and "train" not in media.model_dump() and "cache_mb" not in media.model_dump()
    meta = {"model": cfg.encoder_config().to_dict(), CHECKPOINT_MEDIA_KEY: media.model_dump(mode="json")}
    assert saved_media_settings(meta) == media and saved_media_settings({"model": meta["model"]}) is None
    inference = checkpoint_inference_config(meta, ["video"], ["inference.max_actors=3", "ray.num_cpus=2"])
    assert (inference.data.num_frames, inference.data.depth.model) == (4, "/w/glpn")
    assert (inference.inference.max_actors, inference.ray.num_cpus, inference.data.modalities) == (3, 2, ("video",))
    with pytest.raises(ConfigError, match=r"model: Extra inputs are not permitted"):
        checkpoint_inference_config(meta, ["video"], ["model.preset=vit-l-14"])

"""Fine-tuning from a checkpoint (`model.init_from`): an imported LanguageBind tower trains on, keeping the
weights it came with."""

from __future__ import annotations

import pytest
import torch

from encoders.checkpoint import BASE_TENSORS, load_model, save_model
from encoders.languagebind import import_languagebind
from raybind.config import ConfigError, validate
from raybind.data.demo_data import generate
from raybind.evaluate.embed import resolve_checkpoint
from raybind.train.trainer import check_init_from, pretrain
from tests.encoders.test_languagebind import Reference

pytestmark = pytest.mark.timeout(600)


def _cfg(train: str, storage: str, init_from: str, audio: dict) -> dict:
    return {"name": "tuned", "storage": storage, "seed": 0,
            "data": {"train": train, "modalities": ["audio"], "decode": {"batch_size": 8, "num_cpus": 0.5}},
            "model": {"preset": "tiny", "init_from": init_from, "towers": {"audio": audio}},
            "train": {"steps": 4, "batch_size": 4, "log_every": 2, "cpus_per_worker": 0.5}}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    save_model(import_languagebind([Reference("audio", seed=2).save(root / "LanguageBind_Audio")]), root / "ckpt")
    return root


def test_a_checkpoint_of_another_tower_is_refused_before_anything_starts(imported):
    cfg = validate(_cfg("m.jsonl", "./runs", str(imported / "ckpt"), {"lora": {"r": 4}}))
    with pytest.raises(ConfigError, match=r"model.init_from: cannot start from .*its audio tower differs in \['lora'\]"):
        check_init_from(cfg)
    check_init_from(validate(_cfg("m.jsonl", "./runs", str(imported / "ckpt"), {"lora": None})))   # the same tower


@pytest.mark.slow
def test_a_run_fine_tunes_an_imported_tower_and_keeps_its_frozen_weights(ray_cluster, imported, tmp_path):
    demo = generate(tmp_path / "demo", train_clips=16, val_clips=2, seed=1)
    summary = pretrain(validate(_cfg(demo["train"], str(tmp_path / "runs"), str(imported / "ckpt"),
                                     {"lora": None, "lr": 1e-3})), progress=False)
    assert summary["steps"] == 4
    start, tuned = load_model(imported / "ckpt"), load_model(resolve_checkpoint(summary["run_dir"]))
    assert (tmp_path / "runs" / "tuned").is_dir() and (next((tmp_path / "runs" / "tuned").glob("checkpoint_*"))
                                                       / BASE_TENSORS).is_file()
    trained = {n for n, p in tuned.named_parameters() if p.requires_grad}
    moved = [n for n in trained if n.startswith("towers.audio.") and not torch.equal(
        tuned.state_dict()[n], start.state_dict()[n])]
    assert moved, "fine-tuning changed nothing"
    for name, value in tuned.state_dict().items():
        if name not in trained:   # frozen: LanguageBind's, carried through the run
            assert torch.equal(value, start.state_dict()[name]), name

"""The seeds' data recipes: multi-view captions (draws, manifests, decode, built datasets), the video tower
on images (1-frame clips, mixed batches), and training stages with resume inside a stage."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raybind.config import ConfigError, validate
from raybind.data import captions
from raybind.data.decode import decode_batch
from raybind.data.demo_data import generate
from raybind.data.manifest import load_manifest
from raybind.data.pipeline import decode_spec

pytestmark = pytest.mark.timeout(420)
WEIGHTS = {"title": 0.2, "sentence": 0.5, "frames": 0.3}


def _cfg(train: str, storage: str = "./runs", name: str = "recipes", **overrides) -> dict:
    tree = {"name": name, "storage": storage, "seed": 0,
            "data": {"train": train, "modalities": ["video"], "num_frames": 4, "caption_views": dict(WEIGHTS),
                     "val_caption_view": "sentence", "decode": {"batch_size": 4, "num_cpus": 0.5}},
            "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"},
                      "towers": {"video": {"lr": 2e-3, "images": True}}},
            "train": {"steps": 10, "batch_size": 2, "log_every": 2, "cpus_per_worker": 0.5}}
    for path, value in overrides.items():
        node = tree
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return tree


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("recipes"), train_clips=16, val_clips=4, seed=5)


def test_views_are_drawn_with_their_weights_reproducibly_and_only_among_those_a_row_has():
    rows = 20_000
    keys = np.array([captions.row_key(f"row-{i}") for i in range(rows)])
    present = np.ones((rows, 3), np.uint8)
    per_frame = np.array([[0, 0, 1]] * rows, np.uint8)
    weights = np.array(list(WEIGHTS.values()))
    views, frames = captions.draw(keys, present, per_frame, weights, seed=0, epoch=3, num_frames=8)
    shares = np.bincount(views, minlength=3) / rows
    assert np.all(np.abs(shares - weights) < 4 * np.sqrt(weights * (1 - weights) / rows)), shares
    assert set(frames[views == 2]) == set(range(8)) and set(frames[views != 2]) == {-1}
    again, _ = captions.draw(keys[:50], present[:50], per_frame[:50], weights, seed=0, epoch=3, num_frames=8)
    assert np.array_equal(again, views[:50])                     # same seed, pass and id: same view
    other_pass, _ = captions.draw(keys, present, per_frame, weights, seed=0, epoch=4, num_frames=8)
    assert 0 < np.mean(other_pass != views) < 1                  # a new pass draws anew
    present[:, 1] = 0                                            # every row lacks `sentence`
    missing, _ = captions.draw(keys, present, per_frame, weights, seed=0, epoch=3, num_frames=8)
    assert 1 not in missing and abs(np.mean(missing == 0) - 0.4) < 0.02   # 0.2 / (0.2 + 0.3)
    bound = np.full(rows, 5)
    _, fixed = captions.draw(keys, np.ones((rows, 3), np.uint8), per_frame, weights, 0, 3, 8, bound)
    assert set(fixed[views == 2]) == {5}                         # per-frame captions bind to the synthesized frame


def test_text_may_be_a_string_a_list_or_a_mapping_with_per_frame_views():
    assert captions.parse_views("a dog") == {"text": "a dog"}
    assert captions.parse_views(["a dog", "", "dog #pets"]) == {"0": "a dog", "2": "dog #pets"}
    views = captions.parse_views({"title": "dog", "frames": ["sits", "runs"], "polished": None})
    assert views == {"title": "dog", "frames": ["sits", "runs"]}
    assert captions.parse_views([("title", "dog"), ("frames", ["sits", "runs"])]) == views   # a Parquet map
    texts, present, per_frame = captions.view_slots(["title", "polished", "frames"], views, num_frames=4)
    assert present.tolist() == [1, 0, 1] and per_frame.tolist() == [0, 0, 1]
    assert texts[8:] == ["sits", "sits", "runs", "runs"]       # 2 key-frame captions over 4 decoded frames


def test_a_bound_frame_picks_the_depth_or_thermal_frame_its_caption_describes():
    from raybind.data.tower_input import _one_frame

    stack = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1, 1).expand(2, 4, 3, 3)   # value = frame id
    picked = _one_frame(stack, train=True, generator=torch.Generator().manual_seed(0), bound=torch.tensor([2, -1]))
    assert picked[0].unique().tolist() == [2.0]        # bound: frame 2 of row 0
    assert 4 <= picked[1].unique().item() < 8          # free: some frame of row 1


def test_decoding_keeps_every_view_and_quarantines_a_row_with_none(demo, tmp_path):
    manifest = Path(demo["train_recipes"])
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row in rows:   # the copy lives elsewhere: media by absolute path
        for column in ("video", "image"):
            if row.get(column):
                row[column] = str(manifest.parent / row[column])
    rows.append({"id": "no-views", "text": {"headline": "not a configured view"}, "video": rows[0]["video"]})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate(_cfg(str(manifest)))
    table = load_manifest(str(manifest), ["video"]).table
    spec = decode_spec(cfg, str(manifest), str(tmp_path / "q"), table.column_names)
    out = decode_batch({n: np.array(table.column(n).to_pylist(), dtype=object) for n in table.column_names}, spec)
    assert len(out["id"]) == len(rows) - 1
    reason = json.loads(next((tmp_path / "q").iterdir()).read_text())["reason"]
    assert reason.startswith("none of the caption views ['title', 'sentence', 'frames']")
    stills = out["video_frames"] == 1
    assert stills.sum() == 4 and (out["video_frames"][~stills] == 4).all()   # 16 clips, every 4th gives a still
    assert out["view_tokens"].shape == (len(out["id"]), 3, 4, 77)
    assert (out["view_present"][stills] == [1, 1, 0]).all()              # stills have no per-frame captions
    clip = np.flatnonzero(~stills)[0]
    assert not np.array_equal(out["view_tokens"][clip, 2, 0], out["view_tokens"][clip, 2, 3])  # frames differ
    assert np.array_equal(out["view_tokens"][clip, 0, 0], out["view_tokens"][clip, 0, 3])      # a clip view


@pytest.mark.parametrize("override, message", [
    ({"data.caption_views": {"title": 0.5, "frames": -1}}, "data.caption_views: Value error, weights must be positive"),
    ({"data.val_caption_view": "polished"}, "val_caption_view 'polished' is not one of caption_views"),
    ({"train.stages": [{"name": "a", "steps": 4}]}, "train.stages: their steps add up to 4, train.steps is 10"),
    ({"model.towers": {"video": {"images": False}},
      "train.stages": [{"name": "a", "steps": 10, "feeds": {"video": {"image": 1}}}]},
     "only a video tower with `images: true` takes a mix of sources"),
])
def test_bad_recipe_settings_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(_cfg("m.jsonl", **override))


@pytest.mark.slow
def test_a_bad_view_weight_exits_2_naming_the_field():
    result = subprocess.run([sys.executable, "jobs/pretrain.py", "--config", "configs/recipes_demo.yaml",
                             "--set", "data.caption_views.title=0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "data.caption_views" in result.stderr


def _still_row_forward(tower, still: torch.Tensor) -> torch.Tensor:
    """The spatial-only path: the same blocks with their temporal attention taken out."""
    spatial = copy.deepcopy(tower)
    for block in spatial.backbone.blocks:
        block.temporal_attn = None
    return spatial.backbone(still, num_frames=1)


def test_a_one_frame_clip_skips_temporal_attention_and_mixed_batches_train_in_one_step():
    from encoders import BindModel, languagebind_config
    from encoders.step import accumulate_gradients

    torch.manual_seed(0)
    model = BindModel(languagebind_config("tiny", ["video"])).eval()
    tower = model.tower("video")
    for block in tower.backbone.blocks:   # make the temporal path matter
        torch.nn.init.normal_(block.temporal_embedding, std=0.5)
    size = tower.backbone.input_hw[0]
    clips = torch.randn(3, 8, 3, size, size)
    frames = torch.tensor([8, 1, 8])
    with torch.no_grad():
        mixed = tower(clips, frames=frames)
        assert torch.allclose(mixed[1], _still_row_forward(tower, clips[1:2, 0])[0], atol=1e-5)
        assert torch.allclose(mixed[0], tower(clips[:1])[0], atol=1e-5)          # clips keep temporal attention
        assert not torch.allclose(tower(clips[1:2])[0], mixed[1], atol=1e-3)     # 8 frames of it would differ
    model.train()
    text = torch.nn.functional.normalize(torch.randn(3, model.embed_dim), dim=-1)
    loss = accumulate_gradients(tower, [(clips, frames)], [text], forward=lambda x, f: tower(x, frames=f))
    assert torch.isfinite(loss)
    temporal = tower.backbone.blocks[0].temporal_embedding.grad
    assert temporal is not None and temporal.abs().sum() > 0        # the clips' temporal path trained


@pytest.mark.slow
def test_two_stages_switch_at_their_step_and_resume_inside_the_second(ray_cluster, demo, tmp_path):
    import os
    import signal

    import psutil
    from ray.train.v2.api.callback import UserCallback

    from raybind.train.trainer import pretrain

    class KillWorkersAtStep6(UserCallback):
        """On the controller: SIGKILL the workers once the step-6 checkpoint (inside stage 2) is persisted."""

        def __init__(self) -> None:
            self.done = False

        def after_report(self, run_context, metrics, checkpoint):
            if checkpoint is None or self.done or metrics[0]["step"] != 6:
                return
            self.done = True
            for worker in psutil.process_iter(["cmdline"]):
                if worker.info["cmdline"] and worker.info["cmdline"][0].startswith("ray::RayTrainWorker"):
                    os.kill(worker.pid, signal.SIGKILL)

    stages = [{"name": "image-text", "steps": 4, "feeds": {"video": {"image": 1.0}}},
              {"name": "image-video", "steps": 6, "feeds": {"video": {"image": 0.5, "video": 0.5}}}]
    tree = _cfg(demo["train_recipes"], str(tmp_path / "runs"), "staged", **{"train.stages": stages})
    tree["train"].update(checkpoint_every=2, keep_checkpoints=10, max_failures=1)
    summary = pretrain(validate(tree), callbacks=[KillWorkersAtStep6()], progress=False)
    assert summary["steps"] == 10 and summary["resumed_from"] == [6]    # resumed inside stage 2
    assert summary["stages"] == {"image-text": 4, "image-video": 6}
    progress = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "staged").glob("checkpoint_*/progress.json")]
    assert {p["step"]: p["stage"] for p in progress} == {2: 0, 4: 0, 6: 1, 8: 1, 10: 1}
    views = summary["caption_views"]
    assert set(views) == set(WEIGHTS) and sum(views.values()) == 10 * 2   # one draw per trained row, kept on resume
    assert summary["stage_skipped_rows"] > 0               # stage 1 fed no clips: counted, not trained
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (20, 20, 0)


def test_a_built_dataset_keeps_every_view(ray_cluster, demo, tmp_path):
    from raybind.data.build import build_dataset

    summary = build_dataset(validate(_cfg(demo["val_recipes"])), demo["val_recipes"], str(tmp_path / "built"))
    assert {"view_tokens", "view_present", "view_frames", "row_key"} <= set(summary["columns"])
    assert summary["rows_out"] == 4

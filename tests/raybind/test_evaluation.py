"""Evaluation, the embedding API and corpus embedding, on a checkpoint trained briefly on the demo data
(real local Ray, real media, real S3 over HTTP)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from raybind.config import validate
from raybind.data.demo_data import generate
from raybind.evaluate.corpus import embed_corpus, query, read_index
from raybind.evaluate.embed import load
from raybind.evaluate.tasks import evaluate
from raybind.train.trainer import pretrain

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    """A short run of video, audio and (synthesized) thermal towers. Validation: 32 clips, two per colour x
    shape (the demo's full split lists them by colour, shape, direction), labelled by both; plus one row
    whose clip is missing."""
    root = tmp_path_factory.mktemp("evaldemo")
    manifests = generate(root, train_clips=48, val_clips=64, seed=3)
    val = Path(manifests["val"])
    rows = [json.loads(line) for line in val.read_text().splitlines()][::2]
    rows.append({"id": "val-missing", "text": "a clip that is not there", "label": "red circle",
                 "video": "clips/missing.mp4"})
    val.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate({
        "name": "evalrun", "storage": str(root / "runs"), "seed": 0,
        "data": {"train": manifests["train"], "modalities": ["video", "audio", "thermal"], "num_frames": 4,
                 "decode": {"batch_size": 8, "num_cpus": 0.5}, "synthesis": {"actors": 1, "num_cpus": 0.5},
                 "cache_mb": 256},   # 48 clips decoded and synthesized once, not once per pass (33 passes)
        "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"},
                  # video as the quickstart trains it (full fine-tuning, no flips): with LoRA on its temporal
                  # attention alone, 33 video steps left classification near chance in some runs
                  "towers": {"video": {"lr": 2e-3, "lora": None, "preprocess": {"random_flip": False}},
                             "audio": {"lr": 2e-3}, "thermal": {"lr": 2e-3}}},
        "train": {"steps": 200, "batch_size": 8, "log_every": 50, "cpus_per_worker": 0.5}})
    summary = pretrain(cfg, progress=False)
    return {"root": root, "checkpoint": summary["checkpoint"], "run": str(root / "runs" / "evalrun"),
            "val": str(val), "train": manifests["train"]}


# Prompts in the demo captions' own words (one per direction, ensembled): a config's `templates` at work
DEMO_TEMPLATES = {m: [f"a {{}} moving {d}" for d in ("left", "right", "up", "down")]
                  for m in ("video", "audio", "thermal")}


def test_evaluation_beats_chance_and_quarantines_the_missing_clip(trained, tmp_path):
    summary = evaluate(trained["run"], str(tmp_path / "eval"), data=trained["val"], templates=DEMO_TEMPLATES)
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (33, 32, 1)
    bad = [json.loads(line) for line in (tmp_path / "eval" / "quarantine.jsonl").read_text().splitlines()]
    assert [(b["id"], b["reason"]) for b in bad] == [("val-missing", "file not found")]
    assert summary["modalities"] == ["video", "audio", "thermal"]
    assert summary["tasks"] == ["retrieval", "classification", "emergent", "arithmetic"]
    retrieval = summary["metrics"]["retrieval"]
    assert set(retrieval["video"]) >= {"r1", "r5", "r10", "median_rank", "mean_rank", "x2t"}
    # chance: mean rank 16.5 of 32, R@1 1/32
    for modality in ("video", "audio"):
        assert retrieval[modality]["mean_rank"] < 12 and retrieval[modality]["r1"] > 1 / 32, retrieval
    classes = summary["metrics"]["classification"]["video"]
    assert classes["classes"] == 16 and classes["top1"] >= 2 / 16, classes   # colour x shape: chance 1/16
    for task in ("emergent", "arithmetic"):
        for name, scores in summary["metrics"][task].items():
            assert all(math.isfinite(v) for k, v in scores.items() if isinstance(v, float)), (task, name)
    assert set(summary["metrics"]["arithmetic"]) == {"audio+thermal->video", "video+thermal->audio",
                                                     "video+audio->thermal"}
    report = Path(summary["report"]).read_text()
    assert "| text -> | R@1 | R@5 | R@10 | MdR | MnR |" in report
    assert (tmp_path / "eval" / "plots" / "recall_at_k.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "plots" / "confusion_video.png").is_file()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"] == summary["metrics"]


def test_a_checkpoint_in_s3_evaluates_to_the_same_numbers(trained, s3_bucket, tmp_path):
    client, bucket, query_string = s3_bucket
    checkpoint = Path(trained["checkpoint"])
    for path in checkpoint.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"ckpt/{path.relative_to(checkpoint)}")
    tasks = ["emergent", "arithmetic"]
    local = evaluate(str(checkpoint), str(tmp_path / "local"), data=trained["val"], tasks=tasks)
    remote = evaluate(f"s3://{bucket}/ckpt{query_string}", str(tmp_path / "remote"), data=trained["val"], tasks=tasks)
    assert remote["metrics"] == local["metrics"]  # deterministic decode and inference, same weights
    assert remote["checkpoint"].startswith(f"s3://{bucket}/ckpt")


def test_jsonl_shards_evaluate_and_embed_as_the_one_file_manifest_does(trained, tmp_path):
    """The validation manifest split over two JSONL files (read by Ray Data's tasks, not the driver): the
    same counts as the one file, vectors equal to the API's, one embedding shard per input file, resumable."""
    val = Path(trained["val"])
    rows = [json.loads(line) for line in val.read_text().splitlines()]
    shards = tmp_path / "val-shards"
    shards.mkdir()
    for row in rows:
        row["video"] = str(val.parent / row["video"])
    for part in range(2):
        (shards / f"part-{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[part::2]))
    result = evaluate(trained["run"], str(tmp_path / "eval"), data=str(shards), tasks=["retrieval"])
    assert (result["rows_in"], result["rows_out"], result["rows_quarantined"]) == (33, 32, 1)
    assert result["metrics"]["retrieval"]["video"]["mean_rank"] < 12   # chance: 16.5 of 32

    corpus = tmp_path / "corpus"
    summary = embed_corpus(trained["run"], str(shards), str(corpus))
    assert summary["embedded"] == {"audio": 32, "text": 32, "video": 32} and summary["rows_quarantined"] == 1
    assert (summary["rows_in"], summary["shards"], summary["shards_written"]) == (33, 2, 2)
    assert sorted(p.name for p in (corpus / "vectors").iterdir()) == ["part-0.parquet", "part-1.parquet"]
    again = embed_corpus(trained["run"], str(shards), str(corpus))
    assert (again["shards_written"], again["shards_resumed"]) == (0, 2)
    ids, _, vectors = read_index(str(corpus), "video")
    assert sorted(ids) == sorted(r["id"] for r in rows if r["id"] != "val-missing")
    stored = dict(zip(ids, vectors))
    api = load(trained["run"], device="cpu").embed("video", [r["video"] for r in rows[:3]])
    np.testing.assert_allclose(api.numpy(), np.stack([stored[r["id"]].numpy() for r in rows[:3]]), atol=2e-5)


def test_the_api_embeds_as_the_pipeline_and_a_query_finds_the_item(trained, tmp_path):
    rows = [json.loads(line) for line in Path(trained["val"]).read_text().splitlines()][:16]
    summary = embed_corpus(trained["run"], trained["val"], str(tmp_path / "corpus"), shard_rows=10)
    assert summary["embedded"] == {"audio": 32, "text": 32, "video": 32} and summary["rows_quarantined"] == 1
    assert (summary["shards"], summary["shards_written"]) == (4, 4)
    again = embed_corpus(trained["run"], trained["val"], str(tmp_path / "corpus"), shard_rows=10)
    assert (again["shards_written"], again["shards_resumed"]) == (0, 4) and again["embedded"] == summary["embedded"]

    model = load(trained["run"], device="cpu")
    clips = [str(Path(trained["val"]).parent / r["video"]) for r in rows[:5]]
    ids, kinds, vectors = read_index(str(tmp_path / "corpus"))
    stored = {(i, k): v for i, k, v in zip(ids, kinds, vectors)}
    for modality in ("video", "audio"):
        api = model.embed(modality, clips)
        pipeline = np.stack([stored[(r["id"], modality)].numpy() for r in rows[:5]])
        np.testing.assert_allclose(api.numpy(), pipeline, atol=2e-5)
    texts = model.embed_text([r["text"] for r in rows[:5]])
    np.testing.assert_allclose(texts.numpy(), np.stack([stored[(r["id"], "text")].numpy() for r in rows[:5]]),
                               atol=2e-5)
    assert model.similarity(texts, api).shape == (5, 5)
    frames = model.embed("video", [Path(clips[0]).read_bytes()])   # bytes decode as the file does
    np.testing.assert_allclose(frames.numpy(), model.embed("video", clips[:1]).numpy(), atol=1e-6)

    hits = query(str(tmp_path / "corpus"), model, modality="video", item=clips[3], k=3, among="video")
    assert hits[0]["id"] == rows[3]["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_the_esc50_layout_evaluates_per_fold(trained, tmp_path):
    """An ESC-50 layout built from generated audio: classification per fold and overall."""
    from raybind.data.demo_data import PITCHES, ClipSpec, render_tone
    from raybind.data.media_encode import write_audio

    root = tmp_path / "ESC-50"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for index, pitch in enumerate(list(PITCHES) * 2):
        name = f"{index % 2 + 1}-{index}-A-{list(PITCHES).index(pitch)}.wav"
        write_audio(root / "audio" / name, render_tone(ClipSpec("red", "circle", "left", pitch, "steady"), 2.0, 16_000))
        lines.append(f"{name},{index % 2 + 1},{list(PITCHES).index(pitch)},{pitch}_steady_tone,False,x,A")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    summary = evaluate(trained["run"], str(tmp_path / "esc"), benchmark="esc50", root=str(root))
    audio = summary["metrics"]["classification"]["audio"]
    assert summary["tasks"] == ["classification"] and summary["modalities"] == ["audio"]
    assert (audio["classes"], audio["samples"]) == (4, 8)
    assert set(audio["folds"]) == {"1", "2"} and all(f["samples"] == 4 for f in audio["folds"].values())
    assert audio["top5"] == 1.0   # 4 classes: always within the top 5
    # overall accuracy counts every sample once: whole samples of 8, the mean of the two equal folds
    assert audio["top1"] * 8 == pytest.approx(round(audio["top1"] * 8))
    assert audio["top1"] == pytest.approx(sum(f["top1"] for f in audio["folds"].values()) / 2)

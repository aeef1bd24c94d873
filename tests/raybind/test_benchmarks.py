"""Benchmark layout builders, retrieval/classification scores and prompt ensembling (no Ray)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raybind.evaluate.datasets import BenchmarkError, build
from raybind.evaluate.prompts import class_embeddings, templates_for
from raybind.ranking import classification_scores, confusion_matrix, ranks, recall_at, retrieval_scores
from raybind.train.validation import split_metrics


def _touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_msrvtt_layout_becomes_a_retrieval_manifest(tmp_path, media):
    media.video("v1.mp4", frames=6)
    (tmp_path / "videos").mkdir()
    (media.root / "v1.mp4").rename(tmp_path / "videos" / "video7020.mp4")
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\nret0,msr7020,video7020,a man is singing\nret1,msr7021,video7021,a dog runs\n")
    bench = build("msrvtt", str(tmp_path))
    assert bench.tasks == ("retrieval",)
    assert bench.table.column("id").to_pylist() == ["video7020", "video7021"]
    assert bench.table.column("text").to_pylist() == ["a man is singing", "a dog runs"]
    assert bench.table.column("video").to_pylist()[0] == str(tmp_path / "videos" / "video7020.mp4")


def test_esc50_layout_keeps_folds_and_the_class_order(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n1-1-A-1.wav,1,1,rooster,False,1,A\n"
        "2-2-A-0.wav,2,0,dog,True,2,A\n3-3-A-1.wav,3,1,rooster,False,3,A\n")
    bench = build("esc50", str(tmp_path))
    assert bench.classes == ("dog", "rooster")
    assert bench.table.column("fold").to_pylist() == ["1", "2", "3"]
    assert bench.table.column("audio").to_pylist()[1] == str(tmp_path / "audio" / "2-2-A-0.wav")


def test_class_folders_pair_files_across_modalities(tmp_path):
    import cv2

    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    depth_mm = np.full((32, 32), 2500, np.uint16)   # NYU-D style: 16-bit PNG in millimetres
    for name in ("bedroom/0001.png", "bedroom/0002.png", "kitchen/0003.png"):
        (tmp_path / "image" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "image" / name), rgb)
    for name in ("bedroom/0001.png", "kitchen/0003.png"):
        (tmp_path / "depth" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "depth" / name), depth_mm)
    bench = build("folders", str(tmp_path))
    table = bench.table.to_pydict()
    assert table["id"] == ["bedroom/0001", "bedroom/0002", "kitchen/0003"]
    assert table["label"] == ["bedroom", "bedroom", "kitchen"] and bench.classes == ("bedroom", "kitchen")
    assert table["depth"][1] is None and table["depth"][0].endswith("depth/bedroom/0001.png")


@pytest.mark.parametrize("name, layout, message", [
    ("msrvtt", {"MSRVTT_JSFUSION_test.csv": b"video_id,caption\nvideo1,x\n"}, "lacks column(s) ['sentence']"),
    ("msrvtt", {}, "MSRVTT_JSFUSION_test.csv not found"),
    ("esc50", {"meta/esc50.csv": b"filename,fold,target,category\na.wav,1,0,dog\nb.wav,1,0,cat\n"},
     "target 0 names two categories"),
    ("folders", {"image/cat.png": b"x"}, "expected <modality>/<class>/<file>"),
    ("folders", {"photos/cat/1.png": b"x"}, "the first folder must be a modality"),
])
def test_a_malformed_layout_is_rejected_naming_the_problem(tmp_path, name, layout, message):
    for relative, data in layout.items():
        _touch(tmp_path / relative, data)
    with pytest.raises(BenchmarkError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        build(name, str(tmp_path))


def test_evaluate_job_exits_2_when_the_checkpoint_is_not_one(tmp_path):
    result = subprocess.run([sys.executable, "jobs/evaluate.py", "--checkpoint", str(tmp_path), "--benchmark",
                             "esc50", "--root", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not a RayBind checkpoint" in result.stderr


def test_ranks_share_exact_ties_and_score_like_papers():
    perfect = torch.eye(4)
    assert retrieval_scores(perfect)["r1"] == 1.0 and retrieval_scores(perfect)["mean_rank"] == 1.0
    constant = torch.ones(4, 4)   # all tied: the expected rank is the middle, R@1 is chance
    assert ranks(constant).tolist() == [2.5] * 4
    assert retrieval_scores(constant)["r1"] == pytest.approx(0.25)
    reversed_ = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    scores = retrieval_scores(reversed_)
    assert (scores["r1"], scores["median_rank"], scores["mean_rank"]) == (0.0, 2.0, 2.0)


def test_validation_scores_in_fp32_inside_bf16_autocast():
    """Training validates inside bf16 autocast on GPUs (the CPU's autocast makes the same casts): scores that
    differ beyond bf16's ~3 digits must not turn into ties that share ranks."""
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = torch.tensor([[0.5001, 0.0, (1 - 0.5001 ** 2) ** 0.5], [0.5, 0.7, (1 - 0.5 ** 2 - 0.7 ** 2) ** 0.5]])
    scale = torch.tensor(10.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = t @ x.T
        metrics = split_metrics(x, t, scale)
    assert in_bf16.dtype == torch.bfloat16 and recall_at(in_bf16, 1) == 0.75  # 0.5001 and 0.5 tie in bf16
    assert metrics["val_r1"] == 1.0 and metrics == split_metrics(x, t, scale)


def test_classification_top_k_and_confusion():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    targets = torch.tensor([0, 1, 1])
    scores = classification_scores(logits, targets)
    assert scores["top1"] == pytest.approx(2 / 3) and scores["top5"] == 1.0
    assert confusion_matrix(logits, targets).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]


def test_class_embedding_is_the_renormalised_mean_of_its_prompts():
    table = {}

    def embed_text(prompts):
        for p in prompts:
            table.setdefault(p, torch.randn(8, generator=torch.Generator().manual_seed(len(table))))
        return torch.stack([table[p] for p in prompts])

    templates = templates_for("audio")
    classes = class_embeddings(["dog", "rain"], templates, embed_text)
    expected = F.normalize(torch.stack([F.normalize(table[t.format("dog")], dim=0) for t in templates]).mean(0), dim=0)
    np.testing.assert_allclose(classes[0].numpy(), expected.numpy(), atol=1e-6)
    assert "a sound of dog." in table
    with pytest.raises(Exception, match="one '\\{\\}'"):
        templates_for("audio", {"audio": ["no placeholder"]})

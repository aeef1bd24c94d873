"""WebDataset shards: samples become manifest rows, packing writes shards from a manifest, and training,
evaluation and quarantine name a shard's members."""

from __future__ import annotations

import gc
import io
import json
import tarfile

import numpy as np
import pytest

from raybind.data import webdataset
from raybind.data.decode import RowFailed, decode_media
from raybind.data.sources import ManifestError, manifest_files
from raybind.data.webdataset import Member, SampleError, manifest_row


def _tar(path, members: list[tuple[str, bytes]]) -> None:
    with webdataset.ShardWriter(str(path)) as shard:
        shard.add(members)


def test_members_group_by_key_and_map_to_modalities_by_name_or_extension():
    assert webdataset.split_member("clips/000123.depth.png") == ("clips/000123", "depth.png")
    assert webdataset.split_member("README") is None
    assert [webdataset.suffix_modality(s) for s in ("mp4", "wav", "jpg", "depth.png", "thermal.jpg", "npy",
                                                     "txt", "json", "cls")] == \
        ["video", "audio", "image", "depth", "thermal", "depth", None, None, None]
    assert [webdataset.member_suffix(m, e) for m, e in (("video", ".MP4"), ("depth", ".png"), ("thermal", "jpg"))] \
        == ["mp4", "depth.png", "thermal.jpg"]
    assert webdataset.sample_key("clip-01_a") == "clip-01_a"
    assert webdataset.sample_key("yt/abc.def") != "yt/abc.def" and "." not in webdataset.sample_key("yt/abc.def")


def test_a_sample_becomes_a_manifest_row_and_bad_samples_name_shard_and_key():
    views = {"raw": "a dog", "ofa": ["f1", "f2"]}
    row = manifest_row({"__key__": "k1", "__url__": "bucket/s-0.tar", "mp4": b"v", "wav": None,
                        "json": json.dumps({"id": "clip 1", "text": views, "label": "dog"}).encode()}, "s3://bucket")
    assert (row["id"], row["text"], row["label"]) == ("clip 1", views, "dog")
    assert row["video"] == Member("s3://bucket/s-0.tar#k1.mp4", b"v") and "audio" not in row
    assert manifest_row({"__key__": "k2", "__url__": "/d/s.tar", "txt": b"a cat", "jpg": b"i"}, "/d") == \
        {"id": "k2", "text": "a cat", "image": Member("/d/s.tar#k2.jpg", b"i")}
    with pytest.raises(SampleError, match="two video files") as two:
        manifest_row({"__key__": "k3", "__url__": "/d/s.tar", "mp4": b"a", "video.webm": b"b"}, "/d")
    assert two.value.uri == "/d/s.tar#k3"
    with pytest.raises(SampleError, match="unreadable JSON") as bad:
        manifest_row({"__key__": "k4", "__url__": "/d/s.tar", "json": b"{not json"}, "/d")
    assert bad.value.uri == "/d/s.tar#k4.json"


def test_a_folder_of_shards_is_a_sharded_manifest_with_columns_from_its_first_sample(tmp_path, media):
    clip = media.video("c.mp4", frames=8).read_bytes()
    _tar(tmp_path / "a.tar", [("x.json", b'{"text": "t", "label": "l"}'), ("x.mp4", clip), ("x.wav", b"w"),
                              ("y.txt", b"t"), ("y.mp4", clip)])
    _tar(tmp_path / "b.tar", [("z.txt", b"t"), ("z.mp4", clip)])
    source = manifest_files(str(tmp_path))
    assert (source.format, len(source.files), source.sharded) == ("webdataset", 2, True)
    assert source.columns() == ["id", "text", "label", "video", "audio"]
    assert source.footer_rows() is None   # no index: read tasks count
    webdataset.write_index(str(tmp_path), [("a.tar", 2), ("b.tar", 1)], {})
    assert manifest_files(str(tmp_path)).footer_rows() == 3   # the index is no manifest file, but it counts
    (tmp_path / "c.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ManifestError, match="cannot read as a WebDataset shard"):
        manifest_files(str(tmp_path / "c.tar")).columns()


def test_a_member_decodes_from_memory_as_its_file_does(media):
    from raybind.config import validate
    from raybind.data.pipeline import decode_spec

    cfg = validate({"name": "m", "data": {"train": "unused.jsonl", "modalities": ["video", "audio"], "num_frames": 4}})
    spec = decode_spec(cfg, str(media.root / "m.jsonl"), "", ["video"])
    path = media.video("c.mp4", frames=12)
    for modality in ("video", "audio"):
        from_file = decode_media(modality, str(path), spec)
        from_memory = decode_media(modality, Member("s.tar#c.mp4", path.read_bytes()), spec)
        np.testing.assert_array_equal(from_file, from_memory)
    data = path.read_bytes()
    for broken, reason in ((b"\x00not a video\x00" * 200, "cannot open as video"), (data[:len(data) // 3], "video")):
        with pytest.raises(RowFailed, match=reason) as failed:   # a reason, never a crashed process
            decode_media("video", Member("s.tar#bad.mp4", broken), spec)
        assert failed.value.uri == "s.tar#bad.mp4"
    gc.collect()


def test_shard_writer_streams_samples_a_tar_reader_groups_back(tmp_path):
    _tar(tmp_path / "s.tar", [("a.json", b"{}"), ("a.mp4", b"1"), ("b.json", b"{}")])
    with tarfile.open(tmp_path / "s.tar") as tar:
        assert [(m.name, m.mtime) for m in tar.getmembers()] == [("a.json", 0), ("a.mp4", 0), ("b.json", 0)]
        assert tar.extractfile("a.mp4").read() == b"1"
    first = (tmp_path / "s.tar").read_bytes()
    _tar(tmp_path / "s.tar", [("a.json", b"{}"), ("a.mp4", b"1"), ("b.json", b"{}")])
    assert (tmp_path / "s.tar").read_bytes() == first   # no clock in the bytes
    assert io.BytesIO(first).getbuffer().nbytes % 512 == 0


def _demo_with_bad_rows(root):
    """The demo manifest plus a clip that is not a video (packed, quarantined when decoded) and a missing
    file (quarantined when packed)."""
    from pathlib import Path

    from raybind.data.demo_data import generate

    demo = generate(root, train_clips=12, val_clips=6, seed=3)
    (root / "clips" / "broken.mp4").write_bytes(b"\x00not a video\x00" * 200)
    rows = Path(demo["train"]).read_text()
    rows += json.dumps({"id": "broken", "text": "noise", "label": "x", "video": "clips/broken.mp4"}) + "\n"
    rows += json.dumps({"id": "gone", "text": "nothing", "label": "x", "video": "clips/gone.mp4"}) + "\n"
    Path(demo["train"]).write_text(rows)
    return demo


def _config(tmp_path, train):
    from raybind.config import validate

    return validate({
        "name": "wds", "storage": str(tmp_path / "runs"), "seed": 0,
        "data": {"train": train, "modalities": ["video"], "num_frames": 4, "shuffle_buffer": 8,
                 "decode": {"batch_size": 4, "num_cpus": 0.5}},
        "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"},
                  "towers": {"video": {"lr": 2e-3}}},
        "train": {"steps": 4, "batch_size": 4, "log_every": 2, "cpus_per_worker": 0.5}})


@pytest.mark.slow
def test_packed_shards_train_and_evaluate_and_a_broken_member_is_quarantined_by_shard_and_key(ray_cluster,
                                                                                                tmp_path):
    from raybind.data.build import pack_webdataset
    from raybind.data.check import check_manifest
    from raybind.evaluate.corpus import embed_corpus, read_index
    from raybind.evaluate.tasks import evaluate
    from raybind.train.trainer import pretrain

    demo = _demo_with_bad_rows(tmp_path / "demo")
    shards = tmp_path / "wds"
    cfg = _config(tmp_path, str(shards))
    packed = pack_webdataset(cfg, demo["train"], str(shards), shard_samples=5)
    assert (packed["rows_in"], packed["rows_out"], packed["rows_quarantined"], packed["shards"]) == (14, 13, 1, 3)
    assert "clips/gone.mp4" in (shards / "quarantine.jsonl").read_text()
    index = json.loads((shards / webdataset.SHARD_INDEX).read_text())
    assert sorted(e["nsamples"] for e in index["shardlist"]) == [3, 5, 5]
    assert sorted(p.name for p in shards.glob("*.tar")) == sorted(e["url"] for e in index["shardlist"])
    report = check_manifest(str(shards))
    assert (report["format"], report["rows"], report["rows_with"], report["problems"]) == \
        ("webdataset", 13, {"video": 13}, [])

    summary = pretrain(cfg)
    assert summary["steps"] == 4 and summary["first_pass_complete"] is True
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (13, 12, 1)
    bad = [json.loads(line) for line in (tmp_path / "runs" / "wds" / "quarantine.jsonl").read_text().splitlines()]
    assert [(b["id"], b["stage"]) for b in bad] == [("broken", "decode")]
    assert bad[0]["uri"].startswith(str(shards)) and bad[0]["uri"].endswith(".tar#broken.mp4")
    assert "cannot open as video" in bad[0]["reason"]

    val_shards = tmp_path / "val-wds"
    pack_webdataset(cfg, demo["val"], str(val_shards), shard_samples=4)
    result = evaluate(summary["run_dir"], str(tmp_path / "eval"), data=str(val_shards),
                      tasks=["retrieval", "classification"])
    assert (result["rows_in"], result["rows_out"], result["rows_quarantined"]) == (6, 6, 0)
    assert result["metrics"]["retrieval"]["video"]["r10"] == 1.0   # 6 candidates: every caption's clip in the top 10

    corpus = embed_corpus(summary["run_dir"], str(val_shards), str(tmp_path / "corpus"))   # one output per shard
    assert (corpus["rows_in"], corpus["embedded"], corpus["shards"]) == (6, {"text": 6, "video": 6}, 2)
    ids, _, vectors = read_index(str(tmp_path / "corpus"), "video")
    assert len(set(ids)) == 6 and vectors.shape[0] == 6

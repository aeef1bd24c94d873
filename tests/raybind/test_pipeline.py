"""The Ray Data ingest pipeline on a real local Ray cluster, real media, and a real S3 endpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raybind import storage
from raybind.config import validate
from raybind.data import quarantine
from raybind.data.build import build_dataset
from raybind.data.manifest import ManifestError
from raybind.data.pipeline import build_stream

pytestmark = pytest.mark.timeout(240)


def _config(modalities=("video", "audio"), **data):
    return validate({"name": "t", "data": {"train": "unused", "modalities": list(modalities), "num_frames": 4,
                                           "decode": {"batch_size": 3, "num_cpus": 0.5}, **data},
                     "model": {"preset": "tiny"}})


def _consume(stream):
    rows = []
    for batch in stream.dataset.iter_batches(batch_size=4, batch_format="numpy"):
        rows.extend({k: v[i] for k, v in batch.items()} for i in range(len(batch["id"])))
    return rows


def _bad_media_manifest(media):
    rows = [{"id": f"good-{i}", "text": f"clip {i}", "video": media.video(f"good{i}.mp4").name} for i in range(3)]
    rows.append({"id": "avi", "text": "an avi clip", "video": media.video("clip.avi").name})
    media.file("empty.mp4", b"")
    media.file("garbage.mp4", b"definitely not a video container")
    media.audio("sound.wav")
    cut = media.video("cut.mp4", frames=30)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    media.video("silent.mp4", audio=False)
    rows += [
        {"id": "missing", "text": "gone", "video": "nowhere.mp4"},
        {"id": "empty", "text": "empty", "video": "empty.mp4"},
        {"id": "garbage", "text": "garbage", "video": "garbage.mp4"},
        {"id": "mislabelled", "text": "a wav called video", "video": "sound.wav"},
        {"id": "truncated", "text": "cut", "video": "cut.mp4"},
        {"id": "silent", "text": "no sound", "video": "silent.mp4"},
        {"id": "no-video", "text": "no uri", "video": None},
        {"id": "no-text", "text": None, "video": "good0.mp4"},
    ]
    return media.manifest("manifest.jsonl", rows)


def test_bad_media_is_quarantined_with_reasons_and_counts_add_up(ray_cluster, media, tmp_path):
    manifest = _bad_media_manifest(media)
    q_uri = str(tmp_path / "q")
    stream = build_stream(_config(), str(manifest), q_uri)
    rows = _consume(stream)
    bad = {r.id: r for r in quarantine.read_all(q_uri)}
    assert stream.rows_in == 12
    assert sorted(r["id"] for r in rows) == ["avi", "good-0", "good-1", "good-2"]
    assert stream.rows_in == len(rows) + len(bad)
    assert bad["missing"].reason == "file not found" and bad["missing"].uri.endswith("nowhere.mp4")
    assert bad["empty"].reason == "empty file (0 bytes)"
    assert "cannot open as video" in bad["garbage"].reason
    assert "cannot open as video" in bad["mislabelled"].reason
    assert "video" in bad["truncated"].reason or "truncated" in bad["truncated"].reason
    assert bad["silent"].reason == "no audio track"
    assert bad["no-video"].reason == "missing field 'video'"
    assert bad["no-text"].reason == "missing field 'text'"
    assert all(r.stage == "decode" for r in bad.values())


def test_output_columns_shapes_and_dtypes(ray_cluster, media, tmp_path):
    rows = [{"id": f"c{i}", "text": f"a clip number {i}", "label": "x", "video": media.video(f"c{i}.mp4").name}
            for i in range(4)]
    manifest = media.manifest("m.jsonl", rows)
    cfg = _config(("video", "audio", "depth", "thermal"))
    out = _consume(build_stream(cfg, str(manifest), str(tmp_path / "q")))
    assert len(out) == 4
    row = out[0]
    assert row["video"].shape == (4, 64, 64, 3) and row["video"].dtype == np.uint8
    assert row["audio"].shape == (3, 64, 256) and row["audio"].dtype == np.float16
    assert row["depth"].shape == (1, 64, 64) and row["depth"].dtype == np.float16
    assert row["thermal"].shape == (1, 64, 64, 3) and row["thermal"].dtype == np.uint8
    assert row["tokens"].shape == (77,) and row["tokens"].dtype == np.int32 and row["tokens"][0] == 49406
    assert {r["label"] for r in out} == {"x"}


def _operators(stream) -> str:
    return str(stream.dataset)  # the repr lists the logical operators


@pytest.mark.slow
def test_gpu_synthesis_pool_gives_the_same_rows_as_cpu_actors_that_also_decode(ray_cluster, media, tmp_path):
    """CPU synthesis actors decode their own batches; GPU synthesis gets its own actor pool after CPU
    decode tasks (the session cluster declares one GPU; without CUDA the actor falls back to the CPU)."""
    rows = [{"id": f"c{i}", "text": f"clip {i}", "video": media.video(f"c{i}.mp4").name} for i in range(5)]
    manifest = media.manifest("m.jsonl", rows)
    columns = ["id", "video", "depth", "thermal", "tokens"]
    cpu = build_stream(_config(("video", "depth", "thermal")), str(manifest), str(tmp_path / "q1"), columns=columns)
    gpu = build_stream(_config(("video", "depth", "thermal"), synthesis={"num_gpus": 0.5, "num_cpus": 1.0}),
                       str(manifest), str(tmp_path / "q2"), columns=columns)
    assert "DecodeAndSynthesisStage" in _operators(cpu) and "decode_batch" not in _operators(cpu)
    assert "decode_batch" in _operators(gpu) and "SynthesisStage" in _operators(gpu)
    by_id = [{r["id"]: r for r in _consume(s)} for s in (cpu, gpu)]
    assert sorted(by_id[0]) == sorted(by_id[1]) == [f"c{i}" for i in range(5)]
    for row_id, row in by_id[0].items():
        assert set(row) == set(by_id[1][row_id]) == set(columns)
        for column in ("video", "depth", "thermal", "tokens"):
            np.testing.assert_array_equal(row[column], by_id[1][row_id][column])


@pytest.mark.slow
def test_actor_pool_holding_every_cpu_still_streams(ray_cluster, media, tmp_path):
    """CPU synthesis actors that take all 4 CPUs of the cluster: no read, shuffle or projection task is
    left waiting for a CPU, so shuffled batches with only the consumer's columns still come out."""
    rows = [{"id": f"c{i}", "text": "t", "video": media.video(f"c{i}.mp4").name} for i in range(6)]
    manifest = media.manifest("m.jsonl", rows)
    cfg = _config(("video", "depth"), synthesis={"actors": 2, "num_cpus": 2.0})
    stream = build_stream(cfg, str(manifest), str(tmp_path / "q"), shuffle=True, columns=["depth", "tokens"])
    batches = list(stream.dataset.iter_batches(batch_size=2, batch_format="numpy"))
    assert all(set(b) == {"depth", "tokens"} for b in batches)
    assert sum(len(b["tokens"]) for b in batches) == 6


def test_manifest_blocks_are_whole_decode_batches_and_capped_in_number(ray_cluster, monkeypatch):
    from raybind.data import pipeline

    table = pa.table({"id": [str(i) for i in range(100)]})
    small = pipeline.manifest_blocks(table.slice(0, 20), 8, None)
    assert small.num_blocks() == 3  # one decode batch per block: 8 + 8 + 4
    monkeypatch.setattr(pipeline, "MAX_MANIFEST_BLOCKS", 4)
    large = pipeline.manifest_blocks(table, 8, shuffle_seed=0)
    assert large.num_blocks() == 4  # 4 decode batches (32 rows) per block
    assert sorted(large.to_pandas()["id"].astype(int)) == list(range(100))


@pytest.mark.slow
def test_shuffle_reorders_rows_on_every_pass(ray_cluster, media, tmp_path):
    clip = media.video("c.mp4").name
    manifest = media.manifest("m.jsonl", [{"id": f"r{i:02d}", "text": "t", "video": clip} for i in range(24)])
    stream = build_stream(_config(("video",), decode={"batch_size": 2}), str(manifest), str(tmp_path / "q"),
                          shuffle=True, columns=["id"])
    passes = [[str(i) for b in stream.dataset.iter_batches(batch_format="numpy") for i in b["id"]] for _ in range(3)]
    assert all(sorted(p) == [f"r{i:02d}" for i in range(24)] for p in passes)  # every row, once per pass
    assert passes[0] != sorted(passes[0]) and len({tuple(p) for p in passes}) == 3


def test_synthesis_of_all_frames_and_without_training_video(ray_cluster, media, tmp_path):
    rows = [{"id": f"c{i}", "text": "t", "video": media.video(f"c{i}.mp4").name} for i in range(2)]
    manifest = media.manifest("m.jsonl", rows)
    cfg = _config(("depth",), depth={"frames": "all"})
    out = _consume(build_stream(cfg, str(manifest), str(tmp_path / "q")))
    assert set(out[0]) == {"id", "text", "tokens", "depth"}  # decoded frames are internal, not shipped
    assert out[0]["depth"].shape == (4, 64, 64)


def test_ready_made_depth_and_thermal_columns(ray_cluster, media, tmp_path):
    import cv2

    ok, thermal_png = cv2.imencode(".png", np.full((40, 50, 3), 180, np.uint8))
    ok, depth_png = cv2.imencode(".png", np.full((40, 50), 4000, np.uint16))
    media.file("t.png", thermal_png.tobytes())
    media.file("d.png", depth_png.tobytes())
    manifest = media.manifest("m.jsonl", [{"id": "a", "text": "t", "depth": "d.png", "thermal": "t.png"},
                                          {"id": "b", "text": "t", "depth": "missing.png", "thermal": "t.png"}])
    cfg = _config(("depth", "thermal"), depth={"source": "column"}, thermal={"source": "column"})
    stream = build_stream(cfg, str(manifest), str(tmp_path / "q"))
    out = _consume(stream)
    assert [r["id"] for r in out] == ["a"]
    np.testing.assert_allclose(out[0]["depth"].astype(np.float32), 4.0, rtol=1e-3)
    assert out[0]["thermal"].shape == (1, 64, 64, 3)
    assert [r.reason for r in quarantine.read_all(str(tmp_path / "q"))] == ["file not found"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_manifests(ray_cluster, media, tmp_path, fmt):
    rows = [{"id": f"c{i}", "text": f"clip {i}", "video": media.video(f"c{i}.mp4").name} for i in range(3)]
    table = pa.Table.from_pylist(rows)
    path = media.root / f"manifest.{fmt}"
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    out = _consume(build_stream(_config(("video",)), str(path), str(tmp_path / "q")))
    assert sorted(r["id"] for r in out) == ["c0", "c1", "c2"]


def test_unusable_manifests_fail_fast_with_clear_messages(ray_cluster, media, tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        build_stream(_config(), str(tmp_path / "none.jsonl"), str(tmp_path / "q"))
    no_video = media.manifest("m.jsonl", [{"id": "a", "text": "t"}])
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['video'\]"):
        build_stream(_config(("video",)), str(no_video), str(tmp_path / "q"))
    dupes = media.manifest("d.jsonl", [{"id": "a", "text": "t", "video": "x.mp4"}] * 2)
    with pytest.raises(ManifestError, match="duplicate ids"):
        build_stream(_config(("video",)), str(dupes), str(tmp_path / "q"))
    broken = media.file("broken.parquet", b"not parquet at all")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        build_stream(_config(("video",)), str(broken), str(tmp_path / "q"))


def test_first_batches_arrive_before_the_dataset_is_processed(ray_cluster, media, tmp_path):
    """Rows whose files only appear after the first batch was consumed still come out decoded: the
    pipeline streams instead of processing everything before yielding."""
    first = [{"id": f"early-{i}", "text": "t", "video": media.video(f"e{i}.mp4").name} for i in range(4)]
    template = media.video("template.mp4")
    late = [{"id": f"late-{i:03d}", "text": "t", "video": f"late-{i:03d}.mp4"} for i in range(150)]
    manifest = media.manifest("m.jsonl", first + late)
    stream = build_stream(_config(("video",), decode={"batch_size": 1, "num_cpus": 1.0}), str(manifest),
                          str(tmp_path / "q"))
    iterator = iter(stream.dataset.iter_batches(batch_size=1, batch_format="numpy"))
    seen = [str(next(iterator)["id"][0])]
    for row in late:
        shutil.copy(template, media.root / row["video"])
    for batch in iterator:
        seen.extend(str(i) for i in batch["id"])
    late_decoded = [s for s in seen if s.startswith("late-")]
    print(f"late rows decoded after the first batch: {len(late_decoded)} of {len(late)}")
    assert late_decoded, "no row was decoded after the first batch was consumed"
    assert len(seen) + len(quarantine.read_all(str(tmp_path / "q"))) == stream.rows_in


@pytest.mark.slow
def test_manifest_and_media_in_s3_and_dataset_built_to_s3(ray_cluster, media, s3_bucket, tmp_path):
    client, bucket, query = s3_bucket
    rows = [{"id": f"c{i}", "text": f"clip {i}", "video": f"clips/c{i}.mp4"} for i in range(3)]
    rows.append({"id": "gone", "text": "missing", "video": "clips/gone.mp4"})
    for i in range(3):
        client.upload_file(str(media.video(f"c{i}.mp4")), bucket, f"raw/clips/c{i}.mp4")
    client.put_object(Bucket=bucket, Key="raw/manifest.jsonl", Body="".join(json.dumps(r) + "\n" for r in rows))
    manifest_uri = f"s3://{bucket}/raw/manifest.jsonl{query}"
    output_uri = f"s3://{bucket}/built{query}"
    summary = build_dataset(_config(("video", "audio")), manifest_uri, output_uri)
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (4, 3, 1)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="built/")["Contents"]}
    assert "built/dataset.json" in keys and "built/quarantine.jsonl" in keys
    assert any(k.startswith("built/data/") and k.endswith(".parquet") for k in keys)
    bad = client.get_object(Bucket=bucket, Key="built/quarantine.jsonl")["Body"].read().decode().splitlines()
    assert json.loads(bad[0])["id"] == "gone" and json.loads(bad[0])["reason"] == "file not found"
    # training reads the built dataset directly, with no decode stage
    rebuilt = build_stream(_config(("video", "audio")), output_uri, str(tmp_path / "q"))
    assert rebuilt.rows_in == 3 and rebuilt.quarantine_uri is None
    out = _consume(rebuilt)
    assert sorted(r["id"] for r in out) == ["c0", "c1", "c2"]
    assert out[0]["video"].shape == (4, 64, 64, 3) and out[0]["audio"].dtype == np.float16
    assert "secret" not in json.dumps(summary)
    # a consumer's columns are all that is read from the shards
    narrow = build_stream(_config(("video", "audio")), output_uri, str(tmp_path / "q"), columns=["id", "audio"])
    assert sorted((r["id"], tuple(r)) for r in _consume(narrow)) == [(f"c{i}", ("id", "audio")) for i in range(3)]


def test_redaction_of_credentials_in_uris():
    uri = "s3://b/k?endpoint_override=http://127.0.0.1:9000&secret_key=abc&access_key=AKIA"
    redacted = storage.redact(uri)
    assert "abc" not in redacted and "AKIA" not in redacted and "endpoint_override" in redacted

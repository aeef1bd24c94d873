"""Sharded manifests and built datasets are read by Ray Data where they are, streamed, shuffled per pass."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray.data import DataContext

from raybind.config import validate
from raybind.data.check import check_manifest
from raybind.data.demo_data import generate
from raybind.data.pipeline import BUILT_DATA, BUILT_MARKER, build_stream
from raybind.data.sources import ManifestError, count_rows, manifest_files, read_rows

pytestmark = pytest.mark.timeout(300)


def _shard(rows: list[dict], folder: Path, parts: int, kind: str) -> list[Path]:
    """`rows` split over `parts` files of one format in `folder`."""
    paths = []
    for index in range(parts):
        chunk = rows[index::parts]
        path = folder / f"part-{index:02d}.{kind}"
        if kind == "parquet":
            pq.write_table(pa.Table.from_pylist(chunk), path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in chunk))
        paths.append(path)
    return paths


def test_a_manifest_is_a_file_folder_glob_or_list(tmp_path):
    rows = [{"id": f"r{i}", "text": "t", "video": f"clips/{i}.mp4"} for i in range(9)]
    files = _shard(rows, tmp_path, 3, "jsonl")
    (tmp_path / "README.md").write_text("not a manifest")
    (tmp_path / "_SUCCESS").write_text("")
    for spec, count in [(str(tmp_path), 3), (str(tmp_path / "part-*.jsonl"), 3), ([str(files[0]), str(files[2])], 2),
                        (str(files[1]), 1)]:
        source = manifest_files(spec)
        assert (len(source.files), source.format, source.base_dir) == (count, "json", str(tmp_path))
        assert source.sharded == (count > 1) and source.columns() == ["id", "text", "video"]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "extra.parquet")
    with pytest.raises(ManifestError, match=r"mixes formats \['json', 'parquet'\]"):
        manifest_files(str(tmp_path))
    with pytest.raises(ManifestError, match=r"no manifest files .* at .*part-\*\.csv"):
        manifest_files(str(tmp_path / "part-*.csv"))
    with pytest.raises(ManifestError, match="manifest not found"):
        manifest_files(str(tmp_path / "gone.jsonl"))


@pytest.mark.slow
def test_sharded_reads_visit_files_in_a_new_seeded_order_each_pass(ray_cluster, tmp_path):
    """Each execution (pass) reads the files in another order; the same seed repeats the sequence."""
    for file in range(8):   # file f holds ids f-0, f-1, f-2
        pq.write_table(pa.table({"id": [f"{file}-{i}" for i in range(3)], "text": ["t"] * 3}),
                       tmp_path / f"part-{file}.parquet")
    rows = [{"id": f"{file}-{i}"} for file in range(8) for i in range(3)]
    source = manifest_files(str(tmp_path))
    assert count_rows(source) == 24   # from the Parquet footers
    context = DataContext.get_current()
    keep = context.execution_options.preserve_order
    context.execution_options.preserve_order = True   # row order = file order, free of task timing
    try:
        def passes(ds, count):
            return [[row["id"] for row in ds.iter_rows()] for _ in range(count)]

        first, second = passes(read_rows(source, shuffle_seed=7), 2)
        again = passes(read_rows(source, shuffle_seed=7), 1)[0]
        other = passes(read_rows(source, shuffle_seed=8), 1)[0]
    finally:
        context.execution_options.preserve_order = keep
    assert sorted(first) == sorted(second) == sorted(r["id"] for r in rows)
    files = [[ids[i].split("-")[0] for i in range(0, 24, 3)] for ids in (first, second, again, other)]
    assert files[0] != files[1]          # passes differ in file order
    assert files[2] == files[0]          # the same seed repeats it
    assert files[3] != files[0]


def test_check_finds_a_duplicate_id_planted_in_the_last_shard(ray_cluster, media):
    clip = media.video("clip.mp4", frames=8)
    rows = [{"id": f"r{i}", "text": "t", "video": clip.name} for i in range(12)]
    files = _shard(rows, media.root, 4, "jsonl")
    clean = check_manifest(str(media.root / "part-*.jsonl"))
    assert clean["problems"] == [] and (clean["rows"], clean["rows_with"], clean["files"]) == (12, {"video": 12}, 4)
    with open(files[-1], "a") as handle:
        handle.write(json.dumps({"id": "r0", "text": "again", "video": "missing.mp4"}) + "\n")
    report = check_manifest(str(media.root / "part-*.jsonl"), sample_rows=13)
    assert report["duplicate_ids"] == ["r0"] and report["rows"] == 13
    assert any("duplicate ids" in p for p in report["problems"])
    assert any("missing.mp4" in p for p in report["problems"])


def _all_to_all(ds) -> list[str]:
    """The all-to-all operators (shuffles, block randomising, sorts) in a dataset's logical plan: each
    reads its whole input before it emits a block."""
    from ray.data._internal.logical.operators.all_to_all_operator import AbstractAllToAll

    found, stack = [], [ds._logical_plan.dag]
    while stack:
        op = stack.pop()
        found += [type(op).__name__] if isinstance(op, AbstractAllToAll) else []
        stack += op.input_dependencies
    return found


def test_a_built_dataset_streams_with_no_all_to_all_step_before_its_first_batch(ray_cluster, tmp_path):
    """Passes over a built dataset shuffle by file order, not by an all-to-all step (which would read every
    file before the first batch), and its rows stream out file by file."""
    built = tmp_path / "built"
    (built / BUILT_DATA).mkdir(parents=True)
    for index in range(6):
        pq.write_table(pa.table({"id": [f"{index}-{i}" for i in range(20)], "video": [b"x"] * 20}),
                       built / BUILT_DATA / f"{index}.parquet")
    (built / BUILT_MARKER).write_text(json.dumps({"rows_out": 120, "columns": ["id", "video"]}))
    cfg = validate({"name": "b", "data": {"train": str(built), "modalities": ["video"]}})
    stream = build_stream(cfg, str(built), "", shuffle=True, columns=["id"])
    assert _all_to_all(stream.dataset) == [] and stream.rows_in == 120
    assert _all_to_all(stream.dataset.randomize_block_order()) == ["RandomizeBlocks"]   # what it used to be
    ids = [row["id"] for row in stream.dataset.iter_rows()]
    assert sorted(ids) == sorted(f"{f}-{i}" for f in range(6) for i in range(20))


@pytest.mark.slow
def test_training_streams_a_jsonl_sharded_manifest_and_counts_add_up(ray_cluster, tmp_path):
    """A manifest over several JSONL files trains (rows counted by read tasks, not a driver table) and a
    Parquet-sharded one evaluates."""
    from raybind.evaluate.tasks import evaluate
    from raybind.train.trainer import pretrain

    demo = generate(tmp_path / "demo", train_clips=12, val_clips=6, seed=3)
    rows = [json.loads(line) for line in Path(demo["train"]).read_text().splitlines()]
    rows.append({"id": "broken", "text": "no such clip", "video": "clips/missing.mp4"})
    _shard(rows, tmp_path / "demo", 3, "jsonl")
    cfg = validate({
        "name": "sharded", "storage": str(tmp_path / "runs"), "seed": 0,
        "data": {"train": str(tmp_path / "demo" / "part-*.jsonl"), "val": demo["val"], "modalities": ["video"],
                 "num_frames": 4, "shuffle_buffer": 8, "decode": {"batch_size": 4, "num_cpus": 0.5}},
        "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"},
                  "towers": {"video": {"lr": 2e-3}}},
        "train": {"steps": 4, "batch_size": 4, "log_every": 2, "val_batch_size": 6, "cpus_per_worker": 0.5}})
    summary = pretrain(cfg)
    assert summary["steps"] == 4 and summary["first_pass_complete"] is True
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (13, 12, 1)
    val_rows = [json.loads(line) for line in Path(demo["val"]).read_text().splitlines()]
    _shard(val_rows, tmp_path / "demo", 2, "parquet")
    result = evaluate(summary["run_dir"], str(tmp_path / "eval"), data=str(tmp_path / "demo" / "part-*.parquet"),
                      tasks=["retrieval"])
    assert (result["rows_in"], result["rows_out"]) == (6, 6)
    assert result["metrics"]["retrieval"]["video"]["r10"] == 1.0   # 6 candidates: every caption's clip in the top 10

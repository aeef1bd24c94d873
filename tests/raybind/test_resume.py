"""Resume: inside a pass over a sharded manifest only the files that pass had not finished are read; a
checkpoint whose optimizer state belongs to other trained parameters is refused with the way on."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raybind.data.batch_format import stable_key
from raybind.data.quarantine import QuarantinedRow
from raybind.data.sources import manifest_files, read_path
from raybind.train.resume import latest_progress, rest_of_pass

pytestmark = pytest.mark.timeout(400)


def _files(folder: Path, rows_per_file: list[int]) -> list[Path]:
    paths = []
    for index, rows in enumerate(rows_per_file):
        path = folder / f"part-{index:02d}.parquet"
        pq.write_table(pa.table({"id": [f"{index}-{i}" for i in range(rows)], "text": ["t"] * rows}), path)
        paths.append(path)
    return paths


def test_a_file_is_finished_when_its_rows_were_trained_or_quarantined(tmp_path):
    paths = _files(tmp_path, [3, 3, 2, 4])
    source = manifest_files(str(tmp_path))
    key = [str(stable_key(read_path(str(p)))) for p in paths]
    progress = {"step": 6, "pass_rows": {"epoch": 2, "by_source": {key[0]: 3, key[1]: 2, key[3]: 1}}}
    bad = [QuarantinedRow("1-2", "x.mp4", "decode", "file not found", read_path(str(paths[1])))]
    plan = rest_of_pass(source, source.file_rows(), progress, bad)
    assert plan.epoch == 2 and plan.finished == {key[0]: 3, key[1]: 2} and plan.rows_done == 5
    assert plan.files == (str(paths[2]), str(paths[3]))   # file 2 never reached, file 3 partly read
    assert rest_of_pass(source, source.file_rows(), {"step": 8, "pass_rows": None}, []) is None   # between passes
    assert rest_of_pass(source, source.file_rows(), None, []) is None


def test_latest_progress_is_the_highest_step_of_the_run_folder(tmp_path):
    assert latest_progress(str(tmp_path / "nothing")) is None
    for name, step in (("checkpoint_2026-12-01_10-00-00", 2), ("checkpoint_2026-12-01_10-05-00", 6),
                       ("not_a_checkpoint", 9)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "progress.json").write_text(json.dumps({"step": step}))
    assert latest_progress(str(tmp_path))["step"] == 6


@pytest.mark.slow
def test_a_run_stopped_inside_a_sharded_pass_resumes_without_reading_the_finished_files(ray_cluster, tmp_path):
    """13 one-row files (one row's clip missing): a run that stops after 2 steps of 4 rows has finished 8
    files; the run started again reads only the other 5 for the rest of that pass, and the counts of
    the pass add up."""
    from raybind.config import validate
    from raybind.data.demo_data import generate
    from raybind.train.trainer import fit, prepare, summarize, worker_columns

    demo = generate(tmp_path / "demo", train_clips=12, val_clips=4, seed=5)
    rows = [json.loads(line) for line in Path(demo["train"]).read_text().splitlines()]
    rows.append({"id": "gone", "text": "nothing", "video": "clips/gone.mp4"})
    shards = tmp_path / "demo"   # beside clips/, which the rows name relative to it
    for index, row in enumerate(rows):
        pq.write_table(pa.Table.from_pylist([row]), shards / f"part-{index:02d}.parquet")

    def config(steps: int):
        return validate({
            "name": "resume", "storage": str(tmp_path / "runs"), "seed": 0,
            "data": {"train": str(shards / "part-*.parquet"), "modalities": ["video"], "num_frames": 4, "shuffle_buffer": None,
                     "cache_mb": None, "decode": {"batch_size": 4, "num_cpus": 0.5}},
            "model": {"preset": "tiny", "text": {"kind": "hf", "name": "all-minilm-l6-v2"}},
            "train": {"steps": steps, "batch_size": 4, "log_every": 2, "checkpoint_every": steps,
                      "cpus_per_worker": 0.5}})

    first = summarize(prepared := prepare(config(2)), config(2), fit(prepared, config(2)))
    assert first["steps"] == 2 and first["first_pass_complete"] is False and prepared.rest is None
    progress = latest_progress(first["run_dir"])
    assert progress["pass_rows"]["epoch"] == 0 and sum(progress["pass_rows"]["by_source"].values()) == 8

    cfg = config(4)
    resumed = prepare(cfg)
    plan, rest = resumed.rest
    finished = set(plan.finished)
    assert len(finished) >= 8 and plan.epoch == 0   # 8 trained (+ the bad row's file if it was decoded already)
    assert len(plan.files) == 13 - len(finished)
    every = {str(stable_key(read_path(str(p)))): str(p) for p in shards.glob("*.parquet")}
    assert {every[k] for k in finished}.isdisjoint(plan.files)
    read_again = {str(row["source_key"]) for row in rest.dataset.iter_rows()}   # what the rest of the pass reads
    assert read_again <= {k for k, path in every.items() if path in plan.files}
    assert not read_again & finished

    summary = summarize(resumed, cfg, fit(resumed, cfg))
    assert summary["steps"] == 4 and summary["resumed_from"] == [2]
    assert summary["first_pass_complete"] is True
    assert (summary["rows_in"], summary["rows_out"], summary["rows_quarantined"]) == (13, 12, 1)
    assert worker_columns(cfg) == ["video", "tokens"]


def test_a_checkpoint_whose_optimizer_trained_other_parameters_is_refused_with_the_way_on(tmp_path):
    """A run written when towers trained fewer tensors (before class embeddings and temporal norms trained)
    cannot take today's optimizer state: the error says so and how to continue from its weights."""
    import torch

    from encoders import BindModel, languagebind_config
    from encoders.optim import build_optimizer, parameter_groups
    from raybind.train.state import TRAINER_STATE, load_training_checkpoint, save_training_checkpoint

    def fresh():
        model = BindModel(languagebind_config("tiny", ["audio"]))
        optimizer = build_optimizer(parameter_groups(model.towers, {"audio": 1e-3}))
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    save_training_checkpoint(tmp_path, *fresh(), progress={"step": 3})
    model, optimizer, scheduler = fresh()
    assert load_training_checkpoint(tmp_path, model, optimizer, scheduler)["step"] == 3   # the same layout resumes
    state = torch.load(tmp_path / TRAINER_STATE, weights_only=True)
    state["optimizer"]["param_groups"][-1]["params"] = state["optimizer"]["param_groups"][-1]["params"][:-1]
    torch.save(state, tmp_path / TRAINER_STATE)   # as an older layout wrote it: one trained tensor fewer
    with pytest.raises(ValueError, match=r"cannot resume from .*model.init_from"):
        load_training_checkpoint(tmp_path, *fresh())

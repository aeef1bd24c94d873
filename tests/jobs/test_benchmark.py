"""The benchmark job end to end on small settings: every suite runs and reports its ratio (no timing asserted)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(600)


@pytest.mark.slow
def test_every_suite_reports_its_ratios(tmp_path):
    result = subprocess.run(
        [sys.executable, "jobs/benchmark.py", "--suite", "masking,lora,ingest,streaming_memory,train_overhead,scale,gpu,gpu_train",
         "--workdir", str(tmp_path), "--preset", "tiny", "--batch", "2", "--steps", "1",
         "--clips-per-resolution", "1", "--clip-seconds", "1", "--repeats", "1", "--memory-rows", "2",
         "--overhead-steps", "4", "--scale-rows", "120", "--scale-rows-per-file", "40"],
        capture_output=True, text=True, timeout=580)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(line.startswith("| suite | figure |") for line in lines)  # Ray may log to stdout too
    suites = report["suites"]
    assert report["machine"]["logical_cpus"] >= 1
    masking = suites["masking"]   # each ratio is its measured figures' quotient, not a figure of its own
    assert masking["speedup"] == pytest.approx(masking["samples_per_s"]["0.5"] / masking["samples_per_s"]["0.0"],
                                               rel=0.01)
    assert suites["lora"]["lora"]["trainable_params"] < suites["lora"]["full"]["trainable_params"]
    assert suites["lora"]["lora"]["optimizer_state_mib"] < suites["lora"]["full"]["optimizer_state_mib"]
    lora = suites["lora"]
    assert lora["step_time_ratio"] == pytest.approx(lora["lora"]["step_s"] / lora["full"]["step_s"], rel=0.01)
    ingest = suites["ingest"]
    assert ingest["ray_data"]["rows"] == ingest["dataloader"]["rows"] == ingest["decode_bound"]["rows"] == 2
    for baseline in ("dataloader", "decode_bound"):
        assert ingest[f"ratio_vs_{baseline}"] == pytest.approx(
            ingest["ray_data"]["clips_per_s"] / ingest[baseline]["clips_per_s"], rel=0.01, abs=2e-3)
    memory = suites["streaming_memory"]
    assert (memory["n"]["rows"], memory["10n"]["rows"]) == (2, 20)
    assert memory["ratio"] == pytest.approx(memory["10n"]["peak_pss_mib"] / memory["n"]["peak_pss_mib"], rel=0.01)
    overhead = suites["train_overhead"]
    assert overhead["ratio"] == pytest.approx(overhead["ray_train_samples_per_s"] / overhead["plain_loop_samples_per_s"],
                                              rel=0.01)
    scale = suites["scale"]   # 3 files of 40 rows, then 30: the driver's figures at each size and their ratios
    assert (scale["n"]["rows"], scale["10n"]["rows"], scale["n"]["files"], scale["10n"]["files"]) == (120, 1200, 3, 30)
    assert scale["n"]["first_batch_rows"] == scale["10n"]["first_batch_rows"] == 8
    assert scale["first_batch_ratio"] == pytest.approx(scale["10n"]["first_batch_s"] / scale["n"]["first_batch_s"],
                                                       rel=0.02)
    assert scale["driver_rss_ratio"] == pytest.approx(
        scale["10n"]["driver_peak_rss_mib"] / scale["n"]["driver_peak_rss_mib"], rel=0.01)
    for gpu_suite, figure in (("gpu", "towers"), ("gpu_train", "ratio")):
        result = suites[gpu_suite]
        assert result == {"skipped": "no CUDA device", "suite_seconds": result["suite_seconds"]} or figure in result


def test_recipe_tower_step_runs_the_workers_model_and_counts_flops():
    """The gpu suite's per-recipe measurement, on the CPU with the recipe shrunk to the tiny preset."""
    import torch

    from raybind.bench.gpu_suites import forward_flops_per_sample, recipe, tower_step_figures
    from raybind.train.worker_model import build_model

    tiny = ["model.preset=tiny", "model.text={kind: hf, name: all-minilm-l6-v2}", "train.batch_size=2",
            "train.use_gpu=false"]
    cfg = recipe("video", tiny)
    figures = tower_step_figures(cfg, steps=1, device=torch.device("cpu"), peak_tflops=1.0)
    assert (figures["batch"], figures["grad_accum"], figures["grad_checkpointing"]) == (2, 4, False)
    assert figures["samples_per_s"] > 0 and 0 < figures["mfu"] < 1
    model = build_model(cfg, torch.device("cpu"))
    backbone = model.tower("video").backbone
    width, layers, frames = 128, len(backbone.blocks), 8
    tokens = int(backbone.num_patches * 0.7) + 1  # mask 0.3 keeps 70% of the patches, plus CLS
    spatial = frames * layers * (24 * tokens * width ** 2 + 4 * tokens ** 2 * width)
    temporal = layers * (8 * frames * tokens * width ** 2 + 4 * frames ** 2 * tokens * width)
    assert forward_flops_per_sample(cfg, model, "video") == spatial + temporal


def test_gpu_train_suite_run_fits_a_one_gpu_machine_and_caches_its_split(tmp_path):
    """The gpu_train suite's Ray Train run passes the resource check of the machine it is meant for (16
    CPUs, one GPU: the recipes pin stages to cluster node roles, which such a machine lacks), and its split
    fits data.cache_mb, so the timed passes read the object store instead of decoding again."""
    from raybind.bench.gpu_suites import GPU_TRAIN_BATCHES, gpu_train_config, gpu_train_rows
    from raybind.data.pipeline import decoded_split_mb
    from raybind.train.plan import check_fits, is_local
    from raybind.train.trainer import worker_columns

    cfg = gpu_train_config(tmp_path, tmp_path / "clips.jsonl", steps=40)
    assert is_local(cfg) and cfg.ray.placement.data == cfg.ray.placement.train == {}
    check_fits(cfg, {"CPU": 16.0, "GPU": 1.0}, "a one-GPU machine")
    pool = cfg.data.synthesis
    assert cfg.train.gpus_per_worker + pool.actors * pool.num_gpus == 1.0   # worker and synthesis share it
    assert decoded_split_mb(cfg, gpu_train_rows(cfg), worker_columns(cfg)) <= cfg.data.cache_mb
    assert cfg.train.log_every >= GPU_TRAIN_BATCHES   # the first (decoding) pass ends in the untimed first half


def test_the_table_judges_nested_goals_and_says_which_figures_were_not_measured():
    from raybind.bench.report import table as _table

    towers = {"video": {"mfu": 0.41, "peak_memory_gib": 16.0}, "audio": {"mfu": 0.3, "peak_memory_gib": 7.5},
              "depth": {"peak_memory_gib": 90.0}}
    rows = {line.split(" | ")[1]: line for line in _table({"gpu": {"towers": towers}}).splitlines()[2:]}
    assert rows["towers.video.mfu"].endswith("| 0.41 | >= 0.35 | yes |")
    assert rows["towers.audio.mfu"].endswith("| 0.3 | >= 0.45 | NO |")
    assert rows["towers.depth.mfu"].endswith("| not measured | >= 0.45 | |")
    assert rows["towers.depth.peak_memory_gib"].endswith("| 90.0 | <= 80 | NO |")
    assert rows["towers.video.peak_memory_gib"].endswith("| 16.0 | <= 80 | yes |")


def test_saved_results_render_the_docs_tables_with_machine_and_date(tmp_path):
    """`--from-json` re-renders a saved report: the machine and date once, a table per suite, goals judged."""
    report = {"date": "2026-12-01", "machine": {"cpu": "Test CPU", "logical_cpus": 2, "memory_gib": 23.5, "gpu": None,
                                                "torch": "2.9.1", "ray": "2.60.0"},
              "suites": {"masking": {"speedup": 1.5, "samples_per_s": {"0.0": 10.0, "0.5": 15.0}},
                         "gpu": {"skipped": "no CUDA device", "suite_seconds": 0.0}}}
    saved = tmp_path / "bench.out"
    saved.write_text("| a Markdown table first |\n" + json.dumps(report) + "\n")
    result = subprocess.run([sys.executable, "-m", "raybind", "bench", "--from-json", str(saved), "--markdown",
                             str(tmp_path / "tables.md")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == report
    tables = (tmp_path / "tables.md").read_text()
    assert "Measured 2026-12-01 on Test CPU (2 logical CPUs, 23.5 GiB, no GPU; torch 2.9.1, Ray 2.60.0)" in tables
    assert "#### masking" in tables and "| speedup | 1.5 | >= 1.9 | NO |" in tables
    assert "| samples_per_s.0.5 | 15.0 | | |" in tables and "| skipped | no CUDA device | | |" in tables
    bad = subprocess.run([sys.executable, "-m", "raybind", "bench", "--from-json", str(tmp_path / "tables.md")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no benchmark report there" in bad.stderr

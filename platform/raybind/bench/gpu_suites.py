"""GPU suites: every L/14 recipe's tower step as the worker runs it, and the Ray Train loop against it.

- `gpu`: per tower (video 8 frames + temporal attention, audio 126x1036, depth, thermal) at its recipe's
  settings (per-GPU batch and accumulation, mask ratio, LoRA rank, activation checkpointing,
  `torch.compile`, bf16 frozen weights, fused AdamW): samples/s, MFU, peak memory; plus glpn-nyu-sized
  depth synthesis frames/s.
- `gpu_train`: the real Ray Train loop (one GPU worker, data streamed through Ray Data, GPU synthesis
  sharing the GPU) on the depth recipe; its samples/s as a ratio of the bare `gpu` step at the same
  settings. The split is decoded once into the object store (`data.cache_mb`) and passed over four times,
  so the timed second half measures what the loop adds, not how fast the CPUs decode (`ingest` does that).

MFU convention (the project's): 3 x forward FLOPs of the transformer blocks on the kept tokens, over the
device's dense bf16 peak. Activation checkpointing's extra forward is not counted as useful work.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from encoders.masking import num_kept
from encoders.modalities import REGISTRY
from encoders.step import training_step
from raybind.bench import GPU_RECIPE_MODALITIES
from raybind.config import RayBindConfig, load_config
from raybind.train.memory_estimate import estimate_worker_memory
from raybind.train.worker_model import build_model, build_worker_optimizer, random_step_inputs

RECIPES = {m: f"configs/languagebind_{m}_l14.yaml" for m in GPU_RECIPE_MODALITIES}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def recipe(modality: str, overrides: list[str] | tuple[str, ...] = ()) -> RayBindConfig:
    """A recipe as one local GPU worker runs it: its own Ray on this machine (no cluster address, no node
    roles to place stages on), random weights (nothing downloaded)."""
    return load_config(RECIPES[modality], ["ray.address=null", "ray.placement={}", "model.pretrained=null",
                                           "train.num_workers=1", *overrides])


def forward_flops_per_sample(cfg: RayBindConfig, model, modality: str) -> float:
    """Forward FLOPs of the blocks per sample: 24*T*D^2 + 4*T^2*D per layer per frame, on kept tokens,
    plus the video tower's temporal attention (8*F*T*D^2 + 4*F^2*T*D per layer)."""
    backbone = model.tower(modality).backbone
    width, layers = backbone.blocks[0].ln_1.normalized_shape[0], len(backbone.blocks)
    tower = model.tower_config(modality)
    tokens = num_kept(backbone.num_patches, tower.mask_ratio) + 1
    clip = REGISTRY[modality].temporal
    frames = tower.preprocess.num_frames if clip else 1
    spatial = frames * layers * (24 * tokens * width ** 2 + 4 * tokens ** 2 * width)
    temporal = 0.0
    if clip and backbone.blocks[0].temporal_attn is not None:
        temporal = layers * (8 * frames * tokens * width ** 2 + 4 * frames ** 2 * tokens * width)
    return float(spatial + temporal)


def tower_step_figures(cfg: RayBindConfig, steps: int, device: torch.device,
                       peak_tflops: float | None = None) -> dict:
    """The worker's model and optimizer for `cfg` (one tower), timed over `steps` whole steps after warm-up."""
    (modality,) = cfg.data.modalities
    model = build_model(cfg, device)
    optimizer = build_worker_optimizer(cfg, model, device)
    accum = cfg.train.grad_accum
    batch = cfg.train.batch_size * accum
    inputs, text = random_step_inputs(model, modality, batch, device)
    dtype = torch.bfloat16 if device.type == "cuda" else None

    def step() -> None:
        training_step(model, modality, inputs, text, optimizer, dtype, micro_batches=accum,
                      mode=cfg.train.accumulation)

    for _ in range(2):  # compile and allocator warm-up
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch / (time.perf_counter() - started)
    flops = 3 * forward_flops_per_sample(cfg, model, modality) * rate
    figures = {"batch": cfg.train.batch_size, "grad_accum": accum, "samples_per_s": round(rate, 2),
               "model_tflops": round(flops / 1e12, 3), "compile": cfg.compile_enabled(),
               "grad_checkpointing": cfg.tower(modality).grad_checkpointing}
    if peak_tflops:
        figures["mfu"] = round(flops / (peak_tflops * 1e12), 4)
    if device.type == "cuda":
        figures["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return figures


def _peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _depth_synthesis_frames_per_s(device: torch.device) -> float:
    from transformers import GLPNForDepthEstimation, GLPNImageProcessor

    from encoders.synthesis import DepthSynthesizer, glpn_nyu_config

    glpn = GLPNForDepthEstimation(glpn_nyu_config()).to(device).half()
    synth = DepthSynthesizer.from_model(glpn, GLPNImageProcessor(), device=device)
    frames = torch.randint(0, 255, (32, 480, 640, 3), dtype=torch.uint8).numpy()
    synth(frames)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(3):
        synth(frames)
    torch.cuda.synchronize()
    return round(3 * len(frames) / (time.perf_counter() - started), 1)


def _estimate(cfg: RayBindConfig) -> float | str:
    """The peak `--dry-run` estimates, beside the measured one; a failing estimate (e.g. the device image's
    newer torch) is reported as such and does not cost the run its measured figures."""
    try:
        return estimate_worker_memory(cfg)["peak_gib"]
    except Exception as error:  # reported in the suite's result, never hidden
        return f"estimate failed: {type(error).__name__}: {error}"[:300]


def gpu_suite(steps: int = 10, peak_tflops: float | None = None) -> dict:
    """Every L/14 recipe's tower step on one GPU, and glpn-nyu-sized depth synthesis."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops or _peak_tflops(name)
    towers = {}
    for modality in RECIPES:
        cfg = recipe(modality)
        towers[modality] = {**tower_step_figures(cfg, steps, device, peak), "estimated_peak_gib": _estimate(cfg)}
        torch.cuda.empty_cache()
    return {"device": name, "peak_tflops": peak, "towers": towers,
            "depth_frames_per_s": _depth_synthesis_frames_per_s(device)}


GPU_TRAIN_BATCHES = 10   # the gpu_train split, in training batches: 40 steps pass over it four times


def gpu_train_rows(cfg: RayBindConfig) -> int:
    """Rows of the gpu_train split: GPU_TRAIN_BATCHES whole training batches of `cfg`."""
    return GPU_TRAIN_BATCHES * cfg.train.batch_size * cfg.train.grad_accum


def gpu_train_config(workdir: Path, manifest: Path, steps: int) -> RayBindConfig:
    """The depth recipe as the gpu_train suite runs it: one GPU shared by the training worker (0.5) and two
    synthesis actors (0.25 each; random glpn/munit, nothing downloaded), the decoded split cached in the
    object store after its first pass, no validation; metrics every `steps // 2` steps."""
    return recipe("depth", [f"storage={workdir / 'runs'}", "name=gpu-train", f"data.train={manifest}",
                            "data.val=null", "data.depth.model=null", "data.cache_mb=4096", f"train.steps={steps}",
                            f"train.log_every={steps // 2}", "train.checkpoint_every=0",
                            "train.warmup_steps=0", "train.gpus_per_worker=0.5",
                            "data.synthesis={actors: 2, num_cpus: 1, num_gpus: 0.25, batch_size: 64}",
                            "train.cpus_per_worker=4"])


def gpu_train_suite(workdir: Path, steps: int = 40) -> dict:
    """The Ray Train loop on one GPU over GPU-synthesized data vs the bare step (depth recipe). The summary's
    samples/s is that of the second half of the run (its last report), compile and first pass behind it."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from raybind.bench.clips import make_clips, write_manifest
    from raybind.train.trainer import pretrain

    cfg = recipe("depth")
    rows = gpu_train_rows(cfg)
    clips = make_clips(workdir / "gpu-train-clips", {"360p": (640, 360)}, per_resolution=16, seconds=2.0)
    manifest = write_manifest(workdir / "gpu-train.jsonl", clips, rows)
    summary = pretrain(gpu_train_config(workdir, manifest, steps))
    bare = tower_step_figures(cfg, 10, torch.device("cuda"), _peak_tflops(torch.cuda.get_device_name(0)))
    loop = float(summary["samples_per_s"])
    return {"steps": steps, "ray_train_samples_per_s": round(loop, 2), "bare_step_samples_per_s": bare["samples_per_s"],
            "data_wait_frac": summary["data_wait_frac"], "ratio": round(loop / bare["samples_per_s"], 3)}

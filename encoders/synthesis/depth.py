"""Depth maps from RGB frames with any transformers depth-estimation model (GLPN, DPT, Depth Anything).

LanguageBind's VIDAL-10M depth came from GLPN (NYU) run on video frames; any
`AutoModelForDepthEstimation` checkpoint (hub name or local folder) works here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from encoders.hf import quiet_progress
from encoders.synthesis.batching import run_batch_invariant


class DepthSynthesizer:
    """RGB uint8 [N, H, W, 3] -> depth in metres float32 [N, H, W], on the chosen device."""

    def __init__(self, model_name_or_path: str, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.device = torch.device(device)
        self.dtype = dtype
        with quiet_progress():
            self.model = AutoModelForDepthEstimation.from_pretrained(model_name_or_path).to(self.device, dtype).eval()
            self.processor = AutoImageProcessor.from_pretrained(model_name_or_path)

    @classmethod
    def from_model(cls, model: torch.nn.Module, processor, device: str | torch.device = "cpu") -> "DepthSynthesizer":
        """Wrap an already built model (e.g. a randomly initialised one for tests and demos)."""
        self = cls.__new__(cls)
        self.device = torch.device(device)
        self.dtype = next(model.parameters()).dtype
        self.model = model.to(self.device).eval()
        self.processor = processor
        return self

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"depth synthesis expects uint8 RGB frames [N, H, W, 3], got {frames.shape} {frames.dtype}")
        return run_batch_invariant(self._run, frames, self.device)

    def _run(self, frames: np.ndarray) -> np.ndarray:
        inputs = self.processor(images=list(frames), return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, self.dtype)
        depth = self.model(pixel_values=pixels).predicted_depth          # [N, h, w]
        depth = F.interpolate(depth[:, None].float(), size=frames.shape[1:3], mode="bicubic", align_corners=False)
        return depth[:, 0].clamp(min=0).cpu().numpy().astype(np.float32)


def glpn_nyu_config():
    """The architecture of LanguageBind's depth model, GLPN fine-tuned on NYU (a MiT-b4 encoder, ~62M
    parameters; transformers' `GLPNConfig()` default is the far smaller MiT-b0): for sizing benchmarks."""
    from transformers import GLPNConfig

    return GLPNConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], num_attention_heads=[1, 2, 5, 8],
                      sr_ratios=[8, 4, 2, 1], decoder_hidden_size=64, max_depth=10)


def random_depth_model(seed: int = 0):
    """A tiny randomly initialised GLPN and its processor: real architecture, no downloadable weights needed.

    Its outputs are not metric depth; they are a fixed nonlinear function of the frame, which is what
    CPU tests and the offline quickstart can use when no GLPN/DPT checkpoint is available.
    """
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessor

    config = GLPNConfig(num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 32, 64],
                        num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=16, max_depth=10)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GLPNForDepthEstimation(config)
    return model, GLPNImageProcessor(size_divisor=32)

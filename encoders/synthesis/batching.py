"""Batch-invariant synthesis: a frame's output must not depend on which frames share its batch.

On CPUs, oneDNN picks convolution kernels and blockings by batch size (AVX-512 machines differ from
AVX2 ones), so the same frame synthesized in a batch of 4 or of 8 can round to a different uint8 or
float16. The pipeline batches rows differently per layout (decode batches vs synthesis-pool batches),
so on the CPU each frame runs alone: the same kernels on the same shapes, the same bytes every time.
GPUs keep whole batches; that is where batching pays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def run_batch_invariant(run: Callable[[np.ndarray], np.ndarray], frames: np.ndarray,
                        device: torch.device) -> np.ndarray:
    """`run` over `frames` [N, ...]: one call per frame on the CPU, one call for all of them elsewhere."""
    if device.type != "cpu" or len(frames) <= 1:
        return run(frames)
    return np.concatenate([run(frames[i:i + 1]) for i in range(len(frames))])

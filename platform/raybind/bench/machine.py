"""What machine a benchmark ran on (recorded next to every figure)."""

from __future__ import annotations

import os
import platform

import psutil
import torch


def describe() -> dict:
    """CPU model, cores, memory, GPU and torch/Ray/Python versions: the context recorded with every figure."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    import ray

    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "gpu": gpu, "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version()}

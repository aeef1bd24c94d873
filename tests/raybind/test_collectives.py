"""Host-side collectives of the training loop under the process group a GPU run gets.

Ray Train gives GPU workers an NCCL-only group by default, where a collective on a CPU tensor raises
"No backend type associated with device type cpu" (every multi-GPU run failed at its first batch).
A `cuda:gloo` group reproduces that on a CPU machine: it has no backend for CPU tensors either.
"""

import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from raybind.train.trainer import process_group_backend


def _worker(rank: int, port: int, backend: str, queue) -> None:
    from raybind.train.loop import _all_reduce

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=2)
    try:
        total = _all_reduce(1.0 + rank)
        smallest = _all_reduce(1.0 + rank, dist.ReduceOp.MIN)
        queue.put((rank, "ok", (total, smallest)))
    except RuntimeError as error:
        queue.put((rank, "error", str(error)))
    finally:
        dist.destroy_process_group()


def _run(backend: str) -> dict[int, tuple]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, port, backend, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, status, value = queue.get(timeout=100)
        results[rank] = (status, value)
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_gpu_process_group_has_a_cpu_backend_for_the_loops_agreement():
    backend = process_group_backend(use_gpu=True)
    per_device = dict(item.split(":") for item in backend.split(","))
    assert per_device == {"cpu": "gloo", "cuda": "nccl"}
    assert process_group_backend(use_gpu=False) == "gloo"

    nccl_only = _run("cuda:gloo")  # what an NCCL-only group offers a CPU tensor: nothing
    assert all(status == "error" and "No backend type associated with device type cpu" in message
               for status, message in nccl_only.values())

    # the trainer's GPU layout, with gloo standing in for NCCL on a machine without GPUs
    mixed = _run(backend.replace("nccl", "gloo"))
    assert mixed == {0: ("ok", (3.0, 1.0)), 1: ("ok", (3.0, 1.0))}

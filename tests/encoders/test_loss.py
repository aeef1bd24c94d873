import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from encoders import contrastive_loss


def test_matches_open_clip_clip_loss():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(16, 32), dim=-1)
    b = F.normalize(torch.randn(16, 32), dim=-1)
    scale = torch.tensor(14.3)
    torch.testing.assert_close(contrastive_loss(a, b, scale), ClipLoss()(a, b, scale))


def test_perfect_alignment_has_low_loss():
    a = F.normalize(torch.randn(8, 64), dim=-1)
    assert contrastive_loss(a, a, torch.tensor(100.0)) < 0.01 < contrastive_loss(a, a.roll(1, 0), torch.tensor(100.0))


def _features(weight: torch.Tensor, inputs: torch.Tensor, text: torch.Tensor):
    return F.normalize(inputs @ weight, dim=-1), F.normalize(text, dim=-1)


def _worker(rank: int, world: int, port: int, inputs, text, weight0, out_queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        weight = weight0.clone().requires_grad_(True)
        local = slice(rank * inputs.shape[0] // world, (rank + 1) * inputs.shape[0] // world)
        a, b = _features(weight, inputs[local], text[local])
        contrastive_loss(a, b, torch.tensor(10.0)).backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)  # what DDP communicates (it then divides by world size)
        if rank == 0:
            out_queue.put(grad)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_gloo_ranks_match_single_process_gradients():
    torch.manual_seed(0)
    inputs, text, weight0 = torch.randn(8, 12), torch.randn(8, 6), torch.randn(12, 6)
    weight = weight0.clone().requires_grad_(True)
    a, b = _features(weight, inputs, text)
    contrastive_loss(a, b, torch.tensor(10.0), gather=False).backward()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, inputs, text, weight0, queue)) for r in range(2)]
    for p in procs:
        p.start()
    distributed = queue.get(timeout=100)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    torch.testing.assert_close(distributed, weight.grad, atol=1e-6, rtol=1e-5)

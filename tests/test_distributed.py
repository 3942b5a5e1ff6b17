"""Global-batch weights: two gloo processes under DDP reproduce one process on the whole batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from drostudy import distributed, losses
from drostudy.weights import worst_case_weights

N_FEATURES = 3
# Local batch sizes of ranks 0 and 1: uneven first, the case a naive per-process mean gets wrong.
SPLITS = [(5, 3), (4, 4)]
# name -> loss of (per_example, groups); group ids and q are fixed so every process agrees.
Q = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
CASES = {
    "tv": lambda per, g: losses.robust_loss(per, "tv", 0.3),
    "cvar": lambda per, g: losses.robust_loss(per, "cvar", 0.4),
    "tv_groups": lambda per, g: losses.robust_loss(per, "tv", 0.3, groups=g),
    "kldpo": lambda per, g: losses.kldpo_loss(per, reg=0.5),
    "dr_dpo": lambda per, g: losses.dr_dpo_loss(per, reg=0.5),
    "group_robust": lambda per, g: losses.group_robust_loss(per, g, Q),
}


def _data(n):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, N_FEATURES, generator=gen, dtype=torch.float64)
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y, torch.arange(n) % 3


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(N_FEATURES, 1).double()


def _run_cases(model, rows):
    """{(split, case): (weights, loss value, parameter gradient)}; rows(split) -> local (x, y, g)."""
    results = {}
    for split in SPLITS:
        x, y, groups = rows(split)
        for name, fn in CASES.items():
            per_example = (model(x).squeeze(-1) - y) ** 2  # (n_local, 1) -> (n_local,)
            out = fn(per_example, groups)
            model.zero_grad()
            out.loss.backward()
            grads = torch.cat([p.grad.flatten() for p in model.parameters()])
            results[(split, name)] = (out.weights, out.loss.item(), grads)
    return results


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        data = _data(8)

        def rows(sizes):  # this rank's rows of the global batch, ranks laid end to end
            start = sum(sizes[:rank])
            return tuple(t[start : start + sizes[rank]] for t in data)

        results = _run_cases(DistributedDataParallel(_model()), rows)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        # Leave together: a rank that tears gloo down while the other is still in its last collective
        # aborts that one ("terminate called without an active exception", seen once in a full run).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    data = _data(8)
    single = _run_cases(_model(), lambda sizes: data)
    for key, (weights, value, grads) in single.items():
        assert not torch.allclose(weights, torch.full_like(weights, 1 / 8)), key  # a real worst case
        assert torch.allclose(torch.cat([r[key][0] for r in ranks]), weights, rtol=0, atol=1e-14), key
        for rank in ranks:
            assert rank[key][1] == pytest.approx(value, rel=1e-13, abs=1e-13), key
            assert torch.allclose(rank[key][2], grads, rtol=1e-12, atol=1e-13), key


def test_single_process_is_the_identity():
    local = torch.tensor([0.3, 1.0, 0.2])
    global_, part = distributed.gather_losses(local)
    assert torch.equal(global_, local) and part == slice(0, 3)
    assert distributed.world_size() == 1
    assert torch.equal(
        distributed.global_weights(local, "tv", 0.2), worst_case_weights(local, "tv", 0.2)
    )
    with pytest.raises(ValueError, match="groups"):
        distributed.global_weights(local, "tv", 0.2, groups=torch.zeros(2, dtype=torch.long))

"""The worst case over the global batch: gather per-example losses across processes, weight them once.

Under data parallelism each of P processes holds a local slice of the global batch of N examples. The
worst-case distribution is defined over the N global losses (docs/methods.md), so every process gathers the
detached losses, computes the same global weights, and keeps the entries of its own slice.

Gradient convention (DDP averages gradients over the P processes):

    local objective = P * sum_{i in local} w_i l_i
    => mean over processes of its gradient = sum_{i in global} w_i grad l_i
                                           = gradient of the global robust loss

which holds for uneven local sizes too, because the weights already carry the global normalisation. The
objective returned by `ddp_objective` has that gradient but the *value* of the global loss (a detached
correction is added), so `loss.item()` logs the same global robust value on every process, and the mean
of the logged values over processes (what trainers report) is that value as well.

Everything here is the identity when torch.distributed is not initialised or the world size is 1, so
single process code pays nothing. Works with gloo (CPU tensors) and nccl (CUDA tensors): gathered buffers
live on the input's device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from drostudy import weights as dro_weights


def world_size() -> int:
    """Number of data-parallel processes; 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather(local: Tensor) -> tuple[Tensor, slice]:
    """All-gather a 1-D tensor whose length may differ between processes.

    local: (n_local,). Returns (global (N,), local_slice) with global[local_slice] == local and the
    slices of ranks 0..P-1 laid end to end in rank order. No gradient flows through the gather: the
    caller passes detached values (Danskin: weights are constants). Sizes are gathered first, then every
    process pads to the largest size (all_gather needs equal shapes) and the padding is trimmed.
    """
    if local.dim() != 1:
        raise ValueError(f"gather expects a 1-D tensor; got shape {tuple(local.shape)}")
    if world_size() == 1:
        return local, slice(0, local.numel())
    size = torch.tensor([local.numel()], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(sizes), dtype=local.dtype, device=local.device)
    padded[: local.numel()] = local
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded)
    start = sum(sizes[: dist.get_rank()])
    global_ = torch.cat([buf[:n] for buf, n in zip(buffers, sizes, strict=True)])
    return global_, slice(start, start + local.numel())


def gather_losses(local: Tensor) -> tuple[Tensor, slice]:
    """Detached losses of the global batch: local (n_local,) -> (global (N,), local_slice)."""
    return gather(local.detach())


def gather_groups(local_groups: Tensor) -> tuple[Tensor, slice]:
    """Group ids of the global batch, ordered as in `gather_losses`: (n_local,) -> ((N,), slice)."""
    return gather(local_groups.detach())


def global_weights(
    local_losses: Tensor, divergence: str, radius: float, groups: Tensor | None = None
) -> Tensor:
    """Worst-case weights of this process's examples, computed once on the global batch.

    local_losses: (n_local,); groups: (n_local,) integer ids or None. Returns detached (n_local,)
    weights: the local slice of the global weights w* (which sum to 1 over all N examples, so the local
    part sums to at most 1). With one process these are the ordinary minibatch weights.
    """
    global_losses, local = gather_losses(local_losses)
    if groups is None:
        return dro_weights.worst_case_weights(global_losses, divergence, radius)[local]
    if groups.shape != local_losses.shape:
        shapes = f"{tuple(local_losses.shape)}; got {tuple(groups.shape)}"
        raise ValueError(f"groups must have the shape of the losses {shapes}")
    global_groups, _ = gather_groups(groups)
    return dro_weights.group_worst_case_weights(global_losses, global_groups, divergence, radius)[local]


def ddp_objective(per_example: Tensor, local_weights: Tensor, global_value: Tensor) -> Tensor:
    """The scalar to call .backward() on under DDP gradient averaging (see the module docstring).

    per_example: (n_local,) with grad; local_weights: (n_local,) detached slice of the global weights;
    global_value: detached scalar, the global loss to report. Returns a scalar whose gradient is
    P * sum_local w_i grad l_i and whose value is `global_value`. With one process: sum_i w_i l_i itself.
    """
    surrogate = world_size() * (local_weights * per_example).sum()
    if world_size() == 1:
        return surrogate
    return surrogate + (global_value.to(surrogate.dtype) - surrogate).detach()

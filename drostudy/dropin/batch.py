"""The worst case over the optimizer batch under gradient accumulation, for TRL trainers of per-example losses.

transformers' Trainer fetches the k micro-batches of one optimizer step together (`get_batch_samples`)
before it runs k forward/backward passes and divides each loss by k. The robust weights belong to the
whole optimizer batch (k micro-batches x P processes), so `OptimizerBatchMixin` runs one extra no-grad
forward over the k micro-batches first, gathers their per-example losses over the processes, and
differentiates the objective once with respect to those detached losses: c_i = dL/dl_i (for the worst
case c = w*, for Dr. DPO the softmax, for KLDPO the capped tilt / N; drostudy.distributed's factor P
included). Micro-batch j then returns k * sum_{i in j} c_i l_i, so that the k backward passes divided by k
and averaged over processes give exactly sum_i c_i grad l_i: the gradient of one batch of k x B x P. A
detached term makes each micro-batch's value k * L * n_j / n, so the logged loss is the window's robust
value L. With k = 1 nothing extra runs (the micro-batch is the optimizer batch).

A trainer using the mixin provides `_per_example_losses(model, inputs) -> (l (n,), groups (n,) | None)`
and `_objective(per_example, groups) -> RobustLoss`, and calls `_window_loss` from compute_loss.
"""

from __future__ import annotations

import warnings
from collections import deque

import torch
from torch import Tensor

from drostudy import distributed

SMALL_BATCH = 8  # below this many examples a worst case rests on too few losses to mean much


class OptimizerBatchMixin:
    """Robust weights over the whole accumulation window (module docstring); put before the TRL trainer."""

    def _init_window(self) -> None:
        self._window: deque[tuple[Tensor, Tensor]] = deque()
        args = self.args
        micro = args.per_device_train_batch_size * max(1, distributed.world_size())
        if args.is_robust() and args.dro_batch == "micro" and micro < SMALL_BATCH:
            warnings.warn(
                f"dro_batch='micro' takes the worst case over {micro} examples per micro-batch "
                f"(< {SMALL_BATCH}); dro_batch='optimizer' uses the whole accumulated batch",
                stacklevel=3,
            )

    def _uses_window(self, n_batches: int) -> bool:
        return self.args.is_robust() and self.args.dro_batch == "optimizer" and n_batches > 1

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._window.clear()
        if self._uses_window(len(batches)):
            self._window.extend(self._window_coefficients(batches))
        return batches, num_items

    def _window_coefficients(self, batches: list[dict]) -> list[tuple[Tensor, Tensor]]:
        """Per micro-batch (dL/dl of its examples, its share of the value), from one no-grad pass."""
        losses, groups = [], []
        self.model.train()  # as training_step will: dropout, and the mode the objective and metrics read
        with torch.no_grad(), self.compute_loss_context_manager():
            for batch in batches:
                per_example, group = self._per_example_losses(self.model, batch)
                losses.append(per_example.detach())
                groups.append(group)
        leaf = torch.cat(losses).requires_grad_(True)
        group_ids = None if groups[0] is None else torch.cat(groups)
        with torch.enable_grad():
            out = self._objective(leaf, group_ids)
            (coefficients,) = torch.autograd.grad(out.loss, leaf)
        self._log_dro(out.metrics)
        k, n = len(batches), leaf.numel()
        shares = [k * out.loss.detach() * len(part) / n for part in losses]
        return list(zip(coefficients.split([len(part) for part in losses]), shares, strict=True))

    def _window_loss(self, per_example: Tensor, groups: Tensor | None) -> Tensor:
        """This micro-batch's loss: from the window's coefficients in training, else the batch's own objective."""
        if self.model.training and self._window:
            coefficients, share = self._window.popleft()
            if coefficients.numel() != per_example.numel():
                raise RuntimeError(
                    "micro-batch does not match the accumulation window it was weighted in"
                )
            k = self.current_gradient_accumulation_steps
            surrogate = k * (coefficients.to(per_example) * per_example).sum()
            return surrogate + (share.to(surrogate) - surrogate).detach()
        out = self._objective(per_example, groups)
        self._log_dro(out.metrics)
        return out.loss

    def _log_dro(self, metrics: dict[str, float]) -> None:
        mode = "train" if self.model.training else "eval"
        for key, value in metrics.items():
            if key.startswith("dro/"):
                self._metrics[mode][key].append(value)

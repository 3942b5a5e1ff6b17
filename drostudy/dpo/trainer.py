"""`RobustDPOTrainer`: TRL's DPOTrainer whose mean over pairs becomes a robust objective (`RobustDPOConfig`).

    trainer = RobustDPOTrainer(model=model, args=RobustDPOConfig(..., divergence="kl", radius=0.5),
                               train_dataset=pairs, processing_class=tokenizer)

TRL 1.16 computes the per-pair losses inside one long `_compute_loss` and returns their mean. This subclass
keeps TRL's forward pass, its reference handling (a `ref_model`, the disabled LoRA adapter, or precomputed
log-probs) and every metric it logs, reads the policy's log-probs from that same forward, and replaces the
mean by the objective of drostudy.dropin.configs (worst case in a ball, Dr. DPO, KLDPO, group-robust
DPO) over the optimizer batch (drostudy.dropin.batch). When the config is not robust (radius 0) every
call goes to TRL untouched.

Composes: every TRL loss type that is a loss per pair (`PER_PAIR_LOSSES` of drostudy.dpo.pair_losses:
sigmoid, hinge, ipo, robust = rDPO, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, discopop,
sigmoid_norm), several of them with `loss_weights` (the weighted sum per pair is the loss that gets
reweighted), and `use_weighting` (WPO's per-pair factor). Refused: aot / aot_unpaired (they sort the batch, so a pair's loss depends on the others),
sft (one token mean over the batch, no per-pair loss), f_divergence_type other than reverse_kl and ld_alpha.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from drostudy import losses as dro_losses
from drostudy.dpo.pair_losses import PER_PAIR_LOSSES, Pairs, check_trl_options
from drostudy.dropin.batch import OptimizerBatchMixin
from drostudy.dropin.configs import RobustDPOConfig, check_config
from drostudy.dropin.save import GroupColumn, RobustSaveMixin
from drostudy.io import atomic_write_json

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class GroupPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator that also passes each pair's group id through as (B,) under `column`."""

    column: str = "group"
    ids: dict | None = None  # group name -> id when the column holds names

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if self.column in examples[0]:
            values = [e[self.column] for e in examples]
            ids = [self.ids[v] for v in values] if self.ids else [int(v) for v in values]
            batch[self.column] = torch.tensor(ids, dtype=torch.long)
        return batch


class _RecordingModel:
    """Calls the model and keeps its outputs, so the per-token log-probs of TRL's forward can be reused."""

    def __init__(self, model):
        self.model = model
        self.outputs = []

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        self.outputs.append(out)
        return out


class RobustDPOTrainer(RobustSaveMixin, OptimizerBatchMixin, DPOTrainer):
    """DPOTrainer minimising the objective of its `RobustDPOConfig`; every DPOTrainer argument passes through.

    ref_cache_dir: optional folder keeping precomputed reference log-probs between runs (keyed by the
    tokenised pairs and the reference weights). `group_q` holds group_eg's group weights between steps.
    """

    def __init__(self, model=None, ref_model=None, args=None, *rest, ref_cache_dir=None, **kwargs):
        check_config(args, RobustDPOConfig, "RobustDPOTrainer")
        check_trl_options(args)
        self.ref_cache_dir = None if ref_cache_dir is None else Path(ref_cache_dir)
        self.groups = GroupColumn.from_dataset(args, kwargs.get("train_dataset"), "train_dataset")
        super().__init__(model, ref_model, args, *rest, **kwargs)
        if type(self.data_collator) is DataCollatorForPreference:  # keep TRL's padding and truncation
            self.data_collator = GroupPreferenceCollator(
                **dataclasses.asdict(self.data_collator), column=args.group_column, ids=self.groups.ids
            )
        n_groups = max(1, len(self.groups.names))
        self.group_q = torch.full((n_groups,), 1.0 / n_groups, dtype=torch.float64)
        self._init_window()

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's reference log-probs, kept in `ref_cache_dir` under a hash of the tokenised pairs and the
        reference weights: runs that differ only in the loss share them."""
        if self.ref_cache_dir is None:
            return self._ref_logps_in_memory(dataset, batch_size)
        ids = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).to_dict()
        key = hashlib.sha256(json.dumps([ids, self._precompute_model_hash]).encode()).hexdigest()[:24]
        path = self.ref_cache_dir / f"{key}.json"
        if path.exists():
            cached = json.loads(path.read_text())
            for column in REF_COLUMNS:
                dataset = dataset.add_column(column, cached[column])
            return dataset
        dataset = self._ref_logps_in_memory(dataset, batch_size)
        if self.accelerator.is_main_process:
            atomic_write_json(path, {column: list(dataset[column]) for column in REF_COLUMNS})
        return dataset

    def _ref_logps_in_memory(self, dataset, batch_size: int):
        """TRL's reference pass, with the columns added in memory on every process (TRL 1.16 hands them over
        through an Arrow file in each process's own temporary folder: rank 1 cannot read it)."""
        from torch.utils.data import DataLoader

        loader = self.accelerator.prepare(
            DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        )
        chosen, rejected = [], []
        for batch in loader:
            batch.pop(self.args.group_column, None)
            logps = self.accelerator.gather_for_metrics(self._ref_logps(batch))
            chosen.append(logps[0].cpu())
            rejected.append(logps[1].cpu())
        for column, values in zip(REF_COLUMNS, (torch.cat(chosen), torch.cat(rejected)), strict=True):
            dataset = dataset.add_column(column, values.tolist())
        return dataset

    def _ref_logps(self, inputs):
        """Reference log-probs (chosen (B,), rejected (B,)) as TRL gets them: ref_model, or the policy with its
        adapter disabled (TRL's compute_ref_log_probs handles the adapter)."""
        return self.compute_ref_log_probs(self.ref_model or self.model, inputs)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.args.group_column not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, self.args.group_column]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        groups = inputs.pop(self.args.group_column, None)  # TRL forwards every other key into model(...)
        if not self.args.uses_dro():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._check_groups(groups)
        self._fill_ref_logps(inputs)
        recorder = _RecordingModel(model)
        with self._ref_logps_from_batch():
            trl_result = super().compute_loss(recorder, inputs, return_outputs, num_items_in_batch)
        per_example = self._pair_losses(recorder.outputs[0], inputs)
        loss = self._window_loss(per_example, groups)
        if self.aux_loss_enabled:  # MoE router loss, added as TRL adds it
            loss = loss + self.router_aux_loss_coef * recorder.outputs[0].aux_loss
        return (loss, trl_result[1]) if return_outputs else loss

    def _check_groups(self, groups) -> None:
        if groups is None and self.args.needs_groups():
            raise ValueError(
                f"this objective needs the {self.args.group_column!r} column in every batch"
            )

    def _fill_ref_logps(self, inputs) -> None:
        """Put the reference log-probs in the batch (once), so TRL and the robust loss read the same ones."""
        if REF_COLUMNS[0] not in inputs:
            model_inputs = {k: v for k, v in inputs.items() if k != self.args.group_column}
            chosen, rejected = self._ref_logps(model_inputs)
            inputs[REF_COLUMNS[0]], inputs[REF_COLUMNS[1]] = chosen, rejected

    @contextlib.contextmanager
    def _ref_logps_from_batch(self):
        """TRL's _compute_loss reads the batch's reference log-probs when it believes they were precomputed."""
        saved, self.precompute_ref_logps = self.precompute_ref_logps, True
        try:
            yield
        finally:
            self.precompute_ref_logps = saved

    def _per_example_losses(self, model, batch):
        """(per-pair losses (B,), group ids (B,) | None) of one micro-batch; fills its reference log-probs."""
        inputs = self._prepare_inputs(batch)
        groups = inputs.pop(self.args.group_column, None)
        self._check_groups(groups)
        self._fill_ref_logps(inputs)
        for column in REF_COLUMNS:  # the micro-batch's training pass reuses them
            batch[column] = inputs[column]
        model_inputs = {k: v for k, v in inputs.items() if k not in (*REF_COLUMNS, "completion_mask")}
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        outputs = model(**model_inputs, use_cache=False, labels=labels, fused_lm_head=True)
        return self._pair_losses(outputs, inputs), groups

    def _pair_losses(self, outputs, inputs) -> torch.Tensor:
        """sum_k loss_weight_k * l_k per pair (B,), as TRL builds its mean, from the policy's outputs."""
        mask = inputs["completion_mask"][..., 1:]  # (2B, T-1)
        per_token = outputs.log_probs[:, -mask.size(1) :]
        logps = per_token.sum(dim=1)  # (2B, T-1) -> (2B,)
        ref = torch.cat([inputs[REF_COLUMNS[0]], inputs[REF_COLUMNS[1]]]).to(logps)
        lengths = inputs["completion_mask"].sum(dim=1).clamp(min=1.0)
        ratios = (logps - ref).chunk(2)  # batch rows are [chosen; rejected]
        pairs = Pairs(*ratios, *lengths.chunk(2), self.beta, self.args)
        factor = 1.0
        if self.use_weighting:  # WPO (Eq. 2): a detached factor per pair, as in TRL
            with torch.no_grad():
                aligned = (per_token - outputs.log_sum_sq_probs[:, -mask.size(1) :]) * mask
            chosen_w, rejected_w = torch.exp(aligned.sum(dim=1) / mask.sum(dim=1).clamp_min(1)).chunk(2)
            factor = chosen_w * rejected_w
        weighted = zip(self.loss_types, self.loss_weights, strict=True)
        total = sum(w * PER_PAIR_LOSSES[t](pairs) * factor for t, w in weighted)
        return total

    def _objective(self, per_example, groups) -> dro_losses.RobustLoss:
        """The configured objective of per-pair losses (n,) (drostudy.dropin.configs)."""
        args = self.args
        if args.dro_method == "dr_dpo":
            return dro_losses.dr_dpo_loss(per_example, args.reg)
        if args.dro_method == "kldpo":
            return dro_losses.kldpo_loss(per_example, args.reg)
        if args.dro_method == "worst_case":
            level_groups = groups if args.level == "group" else None
            return dro_losses.robust_loss(per_example, args.divergence, args.radius, level_groups)
        groups = groups.to(per_example.device)
        if self.model.training:  # the weights move only on training batches
            group_losses = dro_losses.group_mean_losses(per_example, groups, self.group_q.numel())
            self.group_q = dro_losses.eg_update(
                self.group_q, group_losses.double().cpu(), args.group_step
            )
        out = dro_losses.group_robust_loss(per_example, groups, self.group_q.to(per_example.device))
        out.metrics.update({f"dro/q_{g}": float(q) for g, q in enumerate(self.group_q)})
        return out

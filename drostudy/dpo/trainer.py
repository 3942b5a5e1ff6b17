"""`RobustDPOTrainer`: TRL's DPOTrainer whose objective is robust DPO or one of its peers, chosen by name.

TRL 1.16 computes the per-pair losses inside one long `_compute_loss` and returns only their mean. This
subclass keeps TRL's forward pass and every metric it logs (rewards/chosen, rewards/margins, logps/*, ...),
reads the policy's per-token log-probs from that same forward, and replaces the mean by the chosen loss:

| loss      | objective on the per-pair DPO losses l_i                       | settings              |
|-----------|----------------------------------------------------------------|-----------------------|
| `ordinary`| TRL's sigmoid DPO, untouched (the baseline)                    | beta                  |
| `robust`  | sum_i w*_i l_i, w* worst case in the divergence ball (seed)    | divergence, radius    |
| `dr_dpo`  | Dr. DPO: -beta' log mean exp(-l / beta')                       | beta_prime            |
| `kldpo`   | KLDPO: mean(min(exp((l - mean l)/tau), 10) * l)                | tau                   |
| `group`   | group-robust DPO over domains, q updated by eg_update per step | group_step            |
| `rdpo`    | TRL's rDPO (`loss_type="robust"`), untouched                   | label_smoothing       |

Weights are those of the global batch under torch.distributed (drostudy.losses). `dro/*` metrics are added
to TRL's. Reference log-probs must be precomputed (`precompute_ref_log_probs=True`): the robust losses read
them from the batch. Batches carry a `group_id` column (the domain index) for group-robust DPO.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from drostudy import losses as dro_losses
from drostudy import weights as dro_weights
from drostudy.io import atomic_write_json

GROUP_KEY = "group_id"
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
TRL_LOSS_TYPES = {"ordinary": "sigmoid", "robust": "sigmoid", "dr_dpo": "sigmoid", "kldpo": "sigmoid",
                  "group": "sigmoid", "rdpo": "robust"}  # fmt: skip
LOSSES = tuple(TRL_LOSS_TYPES)


@dataclass(frozen=True)
class DROSettings:
    """Which objective the trainer minimises, and its parameters (see the module table)."""

    loss: str = "ordinary"
    """one of LOSSES"""
    divergence: str = "tv"
    """ball of the `robust` loss: tv, kl, chi2 or cvar"""
    radius: float = 0.0
    """ball size of the `robust` loss (cvar: the tail fraction alpha); 0 is plain DPO"""
    beta_prime: float = 1.0
    """Dr. DPO temperature beta' (> 0); large beta' tends to the DPO mean"""
    tau: float = 1.0
    """KLDPO temperature tau (> 0)"""
    group_step: float = 0.01
    """exponentiated-gradient step eta of group-robust DPO (> 0)"""
    num_groups: int = 1
    """number of groups (domains) the `group_id` column indexes"""

    def __post_init__(self):
        if self.loss not in TRL_LOSS_TYPES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        dro_weights.validate_radius(self.divergence, self.radius)
        for name in ("beta_prime", "tau", "group_step"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        if self.num_groups < 1:
            raise ValueError(f"num_groups must be >= 1; got {self.num_groups!r}")


@dataclass
class GroupPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator that also passes each example's integer `group_id` through as (B,)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if GROUP_KEY in examples[0]:
            batch[GROUP_KEY] = torch.tensor([int(e[GROUP_KEY]) for e in examples], dtype=torch.long)
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


class RobustDPOTrainer(DPOTrainer):
    """DPOTrainer minimising `dro.loss` (module docstring); all DPOTrainer arguments pass through."""

    def __init__(self, *args, dro: DROSettings | None = None, ref_cache_dir=None, **kwargs):
        self.dro = dro or DROSettings()
        self.ref_cache_dir = None if ref_cache_dir is None else Path(ref_cache_dir)
        train_args: DPOConfig = kwargs.get("args") or args[1]
        if list(train_args.loss_type) != [TRL_LOSS_TYPES[self.dro.loss]]:
            raise ValueError(
                f"loss {self.dro.loss!r} needs DPOConfig(loss_type=[{TRL_LOSS_TYPES[self.dro.loss]!r}]); "
                f"got {train_args.loss_type!r}"
            )
        if not train_args.precompute_ref_log_probs:
            raise ValueError("RobustDPOTrainer needs DPOConfig(precompute_ref_log_probs=True)")
        if train_args.ld_alpha is not None or train_args.f_divergence_type != "reverse_kl":
            raise ValueError("RobustDPOTrainer supports summed log-probs under reverse KL only")
        super().__init__(*args, **kwargs)
        # Same padding and truncation as TRL's own collator (built in __init__), plus the group ids.
        if type(self.data_collator) is DataCollatorForPreference:
            self.data_collator = GroupPreferenceCollator(**dataclasses.asdict(self.data_collator))
        # Group-robust DPO's weights q over domains live on the trainer between steps (eg_update is pure).
        self.group_q = torch.full((self.dro.num_groups,), 1.0 / self.dro.num_groups, dtype=torch.float64)

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        """TRL's reference log-probs, kept in `ref_cache_dir` under a hash of the tokenised pairs and the
        reference weights: runs that differ only in the loss share them (they cost a forward pass over the
        whole training set)."""
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
        """TRL's reference pass, with the columns added in memory on every process.

        TRL 1.16 hands them from the main process to the others through an Arrow file that, for an in-memory
        dataset, lies in each process's own temporary folder: under several processes the others cannot
        read it (FileNotFoundError on rank 1).
        """
        from torch.utils.data import DataLoader

        loader = self.accelerator.prepare(
            DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False)
        )
        model = self.ref_model or self.model
        chosen, rejected = [], []
        for batch in loader:
            logps = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(model, batch))
            chosen.append(logps[0].cpu())
            rejected.append(logps[1].cpu())
        for column, values in zip(REF_COLUMNS, (torch.cat(chosen), torch.cat(rejected)), strict=True):
            dataset = dataset.add_column(column, values.tolist())
        return dataset

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if GROUP_KEY not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, GROUP_KEY]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        groups = inputs.pop(GROUP_KEY, None)  # TRL forwards every other key into model(...)
        if self.dro.loss in ("ordinary", "rdpo"):  # TRL's own objective
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        recorder = _RecordingModel(model)
        trl_result = super().compute_loss(recorder, inputs, return_outputs, num_items_in_batch)
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = recorder.outputs[0].log_probs[:, -seq_len:].sum(dim=1)  # (2B, T-1) -> (2B,)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # batch rows are [chosen; rejected]
        out = self._robust_loss(chosen_logps, rejected_logps, inputs, groups)
        mode = "train" if self.model.training else "eval"
        for key, value in out.metrics.items():
            if key.startswith("dro/"):
                self._metrics[mode][key].append(value)
        return (out.loss, trl_result[1]) if return_outputs else out.loss

    def _robust_loss(self, chosen_logps, rejected_logps, inputs, groups) -> dro_losses.RobustLoss:
        """The chosen objective on this batch's sequence log-probs (B,), as a RobustLoss."""
        dro, beta = self.dro, self.beta
        ref = (
            inputs["ref_chosen_logps"].to(chosen_logps),
            inputs["ref_rejected_logps"].to(chosen_logps),
        )
        if dro.loss == "robust":
            return dro_losses.robust_dpo_loss(
                chosen_logps,
                rejected_logps,
                *ref,
                beta=beta,
                divergence=dro.divergence,
                radius=dro.radius,
            )
        per_example, _, _ = dro_losses.dpo_loss(chosen_logps, rejected_logps, *ref, beta=beta)
        if dro.loss == "dr_dpo":
            return dro_losses.dr_dpo_loss(per_example, dro.beta_prime)
        if dro.loss == "kldpo":
            return dro_losses.kldpo_loss(per_example, dro.tau)
        if groups is None:
            raise ValueError(f"loss 'group' needs a {GROUP_KEY!r} column in the training data")
        groups = groups.to(per_example.device)
        if self.model.training:  # the weights move only on training batches
            group_losses = dro_losses.group_mean_losses(per_example, groups, dro.num_groups)
            self.group_q = dro_losses.eg_update(
                self.group_q, group_losses.double().cpu(), dro.group_step
            )
        out = dro_losses.group_robust_loss(per_example, groups, self.group_q.to(per_example.device))
        out.metrics.update({f"dro/q_{g}": float(q) for g, q in enumerate(self.group_q)})
        return out

"""WDPO (drostudy.wdpo.wdpo_loss) against its formula on a tiny Llama: per-example embedding gradients one
by one, the penalty's gradient (double backprop) against finite differences and gradcheck in float64,
radius 0 is plain DPO exactly; and WDPO on the fast path."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from drostudy import losses as dro_losses
from drostudy import wdpo
from drostudy.dpo import fast, fast_train
from drostudy.models import tiny_policy
from drostudy.runs import lora_config

BETA = 0.5
PROMPTS = ["What is 2 plus 2?", "Name a colour.", "Say hi twice, please."]
CHOSEN = ["It is 4.", "Blue.", "Hi hi."]
REJECTED = ["No idea, sorry.", "I cannot say.", "Bye."]


def _batch(tok):
    """Right-padded [chosen; rejected] rows of the three pairs: ids (6, T), attention (6, T), labels
    (6, T-1) with -100 outside the completion."""
    turn = [{"role": "assistant", "content": c} for c in CHOSEN + REJECTED]
    rows = [
        {"prompt": [{"role": "user", "content": p}], "chosen": [t], "rejected": [t]}
        for p, t in zip(PROMPTS * 2, turn, strict=True)
    ]
    pairs, _ = fast.encode_pairs(tok, rows, None)
    seqs = [p[0] for p in pairs]
    width = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, s in enumerate(seqs):
        ids[row, : len(s.ids)] = torch.tensor(s.ids)
        attention[row, : len(s.ids)] = 1
        labels[row, s.start : len(s.ids)] = torch.tensor(s.ids[s.start :])
    return ids, attention, labels[:, 1:]


def _rms_norm_in_input_dtype(self, hidden: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm's formula without its cast to float32, which would put float32 rounding (~1e-7) into
    the float64 finite differences."""
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return self.weight * hidden * torch.rsqrt(variance + self.variance_epsilon)


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_policy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LlamaRMSNorm, "forward", _rms_norm_in_input_dtype)
        yield model.double(), _batch(tok)


def _pair_losses(model, embeds, attention, labels, ref) -> torch.Tensor:
    """Per-pair DPO losses (3,) from input embeddings (6, T, H): the paper's WDPO setting."""
    with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward
        hidden = model.model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state[:, :-1]
    scored = (
        labels != -100
    )  # the LM head at completion positions only (the test's cost is the vocabulary)
    token = model.lm_head(hidden[scored]).log_softmax(-1).gather(-1, labels[scored][:, None])[:, 0]
    rows = torch.arange(len(labels))[:, None].expand_as(scored)[scored]
    chosen, rejected = token.new_zeros(len(labels)).index_add(0, rows, token).chunk(2)
    return dro_losses.dpo_loss(chosen, rejected, *ref, beta=BETA)[0]


def _setup(model, batch):
    ids, attention, labels = batch
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    ref = (
        torch.tensor([-30.0, -20.0, -25.0], dtype=torch.float64),
        torch.full((3,), -40.0, dtype=torch.float64),
    )
    return embeds, attention, labels, ref


def test_value_matches_per_example_gradients_one_by_one(tiny):
    model, batch = tiny
    embeds, attention, labels, ref = _setup(model, batch)
    per_example = _pair_losses(model, embeds, attention, labels, ref)
    out = wdpo.wdpo_loss(per_example, embeds, radius=0.3)
    squared = []
    for i in range(3):
        (grad,) = torch.autograd.grad(per_example[i], embeds, retain_graph=True)
        others = [r for r in range(6) if r not in (i, i + 3)]
        assert grad[others].abs().max() == 0  # l_i depends on its own rows only: the sum trick is exact
        squared.append(grad.pow(2).sum())
    norm = torch.stack(squared).mean().sqrt()
    assert norm > 1e-3
    assert out.metrics["wdpo/grad_norm"] == pytest.approx(float(norm.detach()), rel=1e-10)
    expected = per_example.mean() + 0.3 * norm
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    assert torch.equal(out.weights, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert out.metrics["dro/effective_sample_size"] == pytest.approx(3.0)


def _penalised(model, batch, param, direction, t: float, radius: float = 0.7) -> float:
    with torch.no_grad():
        param.add_(t * direction)
    try:
        embeds, attention, labels, ref = _setup(model, batch)
        per_example = _pair_losses(model, embeds, attention, labels, ref)
        return float(wdpo.wdpo_loss(per_example, embeds, radius).loss.detach())
    finally:
        with torch.no_grad():
            param.sub_(t * direction)


def test_penalty_gradient_matches_finite_differences_float64(tiny):
    model, batch = tiny
    param = model.model.layers[1].mlp.down_proj.weight
    direction = torch.randn(param.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    embeds, attention, labels, ref = _setup(model, batch)
    out = wdpo.wdpo_loss(_pair_losses(model, embeds, attention, labels, ref), embeds, radius=0.7)
    # through the gradient norm: double backprop
    (grad,) = torch.autograd.grad(out.loss, param, retain_graph=True)
    analytic = float((grad * direction).sum())
    # the gradient of the plain mean alone (no penalty) gives another directional derivative
    plain = float((torch.autograd.grad(out.per_example.mean(), param)[0] * direction).sum())
    eps = 1e-5
    numeric = (
        _penalised(model, batch, param, direction, eps)
        - _penalised(model, batch, param, direction, -eps)
    ) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-6)
    assert abs(plain - analytic) > 1e-4 * abs(analytic)


def test_gradcheck_float64():
    """gradcheck of the WDPO loss of a small nonlinear model in its weights and inputs (float64)."""
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def loss(weight, x):
        per_row = torch.nn.functional.softplus(torch.tanh(x @ weight).sum(1))  # (6,)
        per_example = per_row[:3] - 0.5 * per_row[3:]  # example i owns rows i and i + 3
        return wdpo.wdpo_loss(per_example, x, radius=0.4).loss

    weight = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (weight, x0.clone().requires_grad_(True)))


def test_radius_zero_is_plain_dpo_exactly(tiny):
    model, batch = tiny
    embeds, attention, labels, ref = _setup(model, batch)
    per_example = _pair_losses(model, embeds, attention, labels, ref)
    out = wdpo.wdpo_loss(per_example, embeds, radius=0.0)
    assert torch.equal(out.loss, per_example.mean())
    assert out.metrics["wdpo/penalty"] == 0 and out.metrics["wdpo/grad_norm"] > 0
    param = model.model.layers[0].self_attn.q_proj.weight
    (got,) = torch.autograd.grad(out.loss, param, retain_graph=True)
    (expected,) = torch.autograd.grad(per_example.mean(), param)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"radius": -0.1}, "radius"),
        ({"radius": float("nan")}, "radius"),
        ({"rows": 5}, "k \\* n rows"),
        ({"grad": False}, "require grad"),
    ],
)
def test_bad_inputs_are_rejected(kwargs, match):
    x = torch.randn(kwargs.get("rows", 6), 2, requires_grad=kwargs.get("grad", True))
    per_example = x[:3].sum(1) if kwargs.get("rows", 6) == 6 else torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        wdpo.wdpo_loss(per_example, x, kwargs.get("radius", 0.1))


def test_fast_path_wdpo_penalises_the_cached_states_and_trains():
    model, tok = tiny_policy()
    config = fast_train.FastDPORunConfig(
        model="tiny-llama", lora_layers=1, beta=BETA, batch_size=3, steps=2, n_train=3, wdpo_radius=0.5
    )
    model = get_peft_model(model, lora_config(config, 2))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in zip(PROMPTS, CHOSEN, REJECTED, strict=True)
    ]
    pairs, _ = fast.encode_pairs(tok, rows, None)
    cache = fast.TrunkCache(model, 1)
    ref = cache.reference_logps(pairs)
    chosen, rejected, states = fast.pair_logps(model, cache, pairs, with_states=True)
    out, _ = fast_train.objective(config, (chosen, rejected), ref, states=states)
    plain = dro_losses.dpo_loss(chosen, rejected, *ref, beta=BETA)[0]
    (grad,) = torch.autograd.grad(plain.sum(), states, retain_graph=True)
    norm = grad.reshape(2, 3, -1).pow(2).sum((0, 2)).mean().sqrt()
    assert float(out.loss.detach()) == pytest.approx(
        float((plain.mean() + 0.5 * norm).detach()), rel=1e-5
    )
    history = fast_train.train(
        config, model, cache, pairs, torch.zeros(3, dtype=torch.long), progress=False
    )
    assert len(history) == 2 and all(h["wdpo/grad_norm"] > 0 for h in history)
    with pytest.raises(ValueError, match="needs loss 'ordinary' and the states"):
        fast_train.objective(config, (chosen, rejected), ref)

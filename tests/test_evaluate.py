"""drostudy.answers and drostudy.evaluate on hand-made cases: answer matching, preference metrics,
log-probs, KL, generation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from drostudy import answers
from drostudy import evaluate as ev
from drostudy.models import load_policy


@pytest.mark.parametrize(
    "answer, reference, expected",
    [
        ("The answer is 1507.", "1507", True),
        ("11507", "1507", False),  # whole words only
        ("[n^25]", "[n^25]", True),
        ("n^26", "[n^25]", False),
        ("B", "B", True),
        ("(B) because of the second premise", "B", True),
        ("B. Ivory", "B", True),
        ("The answer is b", "B", True),
        ("a dog could do it", "A", False),  # the article is not option A
        ("Both A and B are wrong", "A", False),
        ("Answer: neutral", "neutral", True),
        ("", "Yes", False),
        ("anything", "", False),
    ],
)
def test_is_correct(answer, reference, expected):
    assert answers.is_correct(answer, reference) is expected


def test_score_answer_options_and_refusals():
    assert answers.score_answer("C", "C. Circular migration")
    assert answers.score_answer("circular migration", "C. Circular migration")
    assert not answers.score_answer("A", "C. Circular migration")
    assert answers.score_answer(
        "Sorry, I can't help with that.", None
    )  # harmful request: refusing is correct
    assert not answers.score_answer("Sure, here is the payload.", None)
    assert answers.score_answer("No. Helping you would cause real harm.", None)  # a bare "No." refuses
    assert not answers.score_answer("No problem. This one works on most sites.", None)


@pytest.mark.parametrize(
    "answer, reference, expected",
    [
        ("ANSWER: 5", "5", True),  # the suite's labelled answers
        ("Let me reason it through.\nANSWER: 7.", "7", True),
        ("ANSWER: 15", "5", False),
        ("Based on the information given, [0].", "[0]", True),  # verbatim, brackets and all
        ("Based on the information given, [10].", "[0]", False),
        ("a cat", "A", False),  # the article is still no option A
    ],
)
def test_score_answer_labelled_and_verbatim(answer, reference, expected):
    assert answers.score_answer(answer, reference) is expected


def test_every_suite_reference_scores_correct_against_itself():
    """The grader accepts each suite chosen response against the answer `reference_answer` reads from it
    (None for a safe refusal: a refusal is correct), in every domain and split."""
    from drostudy.data import load_suite

    suite = load_suite()
    for split in ("train", "test"):
        rows = suite[split].to_pandas()
        wrong = [c for c in rows.chosen if not answers.score_answer(c, answers.reference_answer(c))]
        assert not wrong, f"{split}: {len(wrong)} of {len(rows)} references rejected, e.g. {wrong[:3]}"


@pytest.mark.parametrize(
    "chosen, answer",
    [
        ("I believe the correct answer is [n^25].", "[n^25]"),
        ("That would be C. Circular migration.", "C. Circular migration"),
        ("Let me reason it through.\nAnswer: neutral", "neutral"),
        ("455842941860.00", "455842941860.00"),
        ("Final answer: SELECT 1", "SELECT 1"),
    ],
)
def test_reference_answer_inverts_the_suite_templates(chosen, answer):
    assert answers.reference_answer(chosen) == answer


def test_reference_answer_of_a_safe_refusal_is_none():
    from drostudy.data import templates

    assert answers.reference_answer(templates.SAFE_REFUSAL[0]) is None


def test_preference_metrics_by_hand():
    pc, pr = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-2.0, -1.0, -3.0])
    rc, rr = torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])
    # margins = beta * ((pc - rc) - (pr - rr)) = 0.5 * [1, -1, 1]
    out = ev.preference_metrics(pc, pr, rc, rr, beta=0.5)
    assert out == pytest.approx({"accuracy": 2 / 3, "margin": 0.5 / 3})
    with pytest.raises(ValueError, match="beta"):
        ev.preference_metrics(pc, pr, rc, rr, beta=0.0)


def test_fraction_correct_and_unique_prompts():
    assert answers.fraction_correct(["4", "five", "no"], ["4", "5", None]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="equal, non-empty"):
        answers.fraction_correct(["4"], ["4", "5"])
    rows = [{"prompt": [{"role": "user", "content": c}]} for c in "aabca"]
    assert [r["prompt"][0]["content"] for r in ev.unique_prompts(rows)] == ["a", "b", "c"]
    assert len(ev.unique_prompts(rows, 2)) == 2


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_policy("tiny-llama")
    return model.eval(), tok


PROMPTS = [
    [{"role": "user", "content": "What is two plus two?"}],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
    ],
    [{"role": "user", "content": "Name a colour that is not red, blue or green, please."}],
]
COMPLETIONS = ["4", "Paris, the capital.", "Purple"]


def test_encode_splits_where_the_chat_template_puts_the_answer(tiny):
    _, tok = tiny
    for (prompt_ids, completion_ids), completion in zip(
        ev.encode(tok, PROMPTS, COMPLETIONS), COMPLETIONS, strict=True
    ):
        assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")
        assert tok.decode(completion_ids).startswith(completion)


def test_sequence_stats_logps_by_hand_and_kl(tiny):
    model, tok = tiny
    same = ev.sequence_stats(model, tok, PROMPTS, COMPLETIONS, reference=model, batch_size=2)
    assert torch.allclose(same["policy_logps"], same["ref_logps"])
    assert same["kl"].abs().max() < 1e-5  # KL(pi || pi) = 0
    # one row by hand, unbatched: sum of the completion tokens' log-probs
    prompt_ids, completion_ids = ev.encode(tok, PROMPTS[2:], COMPLETIONS[2:])[0]
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    by_hand = logp[torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1), ids[0, len(prompt_ids) :]].sum()
    assert same["policy_logps"][2] == pytest.approx(float(by_hand), abs=1e-4)
    # a perturbed reference: positive KL, and log-probs that differ
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.add_(0.05 * torch.randn_like(other.lm_head.weight))
    diff = ev.sequence_stats(model, tok, PROMPTS, COMPLETIONS, reference=other, batch_size=3)
    assert (diff["kl"] > 1e-4).all()
    assert torch.allclose(diff["policy_logps"], same["policy_logps"], atol=1e-4)
    assert not torch.allclose(diff["ref_logps"], same["ref_logps"], atol=1e-3)


def test_reference_context_needs_a_reference_without_peft(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="PEFT"):
        ev.reference_context(model)


def test_generate_is_greedy_and_batching_does_not_change_answers(tiny):
    model, tok = tiny
    batched = ev.generate(model, tok, PROMPTS, max_new_tokens=5, batch_size=3)
    single = [ev.generate(model, tok, [p], max_new_tokens=5, batch_size=1)[0] for p in PROMPTS]
    assert batched == single  # left padding keeps greedy answers identical
    assert tok.padding_side == "right"  # restored for TRL


def test_answer_accuracy_scores_the_generated_answers(monkeypatch):
    monkeypatch.setattr(
        ev, "generate", lambda model, tok, prompts, *a, **k: ["4", "Lyon", "purple"][: len(prompts)]
    )
    rows = [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, ["4", "Paris", "Purple"], strict=True)]
    assert ev.answer_accuracy(None, None, rows) == pytest.approx(2 / 3)

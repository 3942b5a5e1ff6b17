"""Rows of the hub's preference datasets -> the study's pairs: pure functions, no network.

The columns are those of the offline suite: ``id, prompt, chosen, rejected, domain, kind, source``.

| name               | hub repo                        | domain                                          | kind      |
|--------------------|---------------------------------|-------------------------------------------------|-----------|
| `unified-feedback` | llm-blender/Unified-Feedback    | the row's origin (e.g. "Anthropic/hh-rlhf")     | "rated"   |
| `reward-bench`     | allenai/reward-bench            | chat, chat-hard, safety, reasoning (its subset) | "curated" |
| `hhh-alignment`    | HuggingFaceH4/hhh_alignment     | harmless, helpful, honest, other                | "curated" |

"rated": two rated answers, chosen = the higher rating (ties dropped). "curated": the benchmark's authors
wrote down which answer is better. Multi-turn prompts are flattened to "User: ...\\n\\nAssistant: ..." text
ending with the last user turn. Rows with an empty prompt or answer, or chosen == rejected, are dropped
with a reason; `map_rows` counts the reasons (drostudy.data.hub logs them).

drostudy.data.hub loads the datasets and maps their rows with these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

COLUMNS = ("id", "prompt", "chosen", "rejected", "domain", "kind", "source")

UNIFIED_FEEDBACK = "llm-blender/Unified-Feedback"
REWARD_BENCH = "allenai/reward-bench"
HHH_ALIGNMENT = "HuggingFaceH4/hhh_alignment"

# RewardBench's own section of each subset (rewardbench/constants.py SUBSET_MAPPING), keyed by our domain.
REWARD_BENCH_SECTIONS = {
    "chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "chat-hard": (
        "mt-bench-hard",
        "llmbar-natural",
        "llmbar-adver-neighbor",
        "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut",
        "llmbar-adver-manual",
    ),
    "safety": (
        "refusals-dangerous",
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ),
    "reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
REWARD_BENCH_DOMAIN = {
    subset: domain for domain, subsets in REWARD_BENCH_SECTIONS.items() for subset in subsets
}
HHH_SUBSETS = ("harmless", "helpful", "honest", "other")


def _pair(id_, prompt, chosen, rejected, domain, kind, source) -> tuple[dict | None, str]:
    """One study row, or (None, why) for a malformed pair."""
    prompt, chosen, rejected = (
        s.strip() if isinstance(s, str) else "" for s in (prompt, chosen, rejected)
    )
    if not prompt:
        return None, "empty_prompt"
    if not chosen or not rejected:
        return None, "empty_answer"
    if chosen == rejected:
        return None, "same_answer"
    row = {"id": str(id_), "prompt": prompt, "chosen": chosen, "rejected": rejected}
    return row | {"domain": domain, "kind": kind, "source": source}, "kept"


def _flatten_turns(turns: list[dict]) -> str:
    """Chat turns ending with a user turn -> the prompt text (a single user turn stays as it is)."""
    if len(turns) == 1:
        return turns[0].get("content") or ""
    labels = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{labels.get(t['role'], t['role'])}: {t.get('content') or ''}" for t in turns)


def unified_feedback_pair(row: dict) -> tuple[dict | None, str]:
    """A Unified-Feedback row (conv_A/conv_B chat lists + conv_A_rating/conv_B_rating) -> (pair, reason).

    Both conversations must share every turn but the final assistant answer; the higher-rated answer is
    chosen. Reasons for dropping: "tie", "bad_rating" (missing/NaN), "bad_conversation", plus `_pair`'s.
    """
    rating_a, rating_b = row.get("conv_A_rating"), row.get("conv_B_rating")
    # a missing rating, or NaN (the one value that differs from itself)
    if rating_a is None or rating_b is None or rating_a != rating_a or rating_b != rating_b:
        return None, "bad_rating"
    if rating_a == rating_b:
        return None, "tie"
    conv_a, conv_b = row.get("conv_A") or [], row.get("conv_B") or []
    if (
        len(conv_a) < 2
        or len(conv_a) != len(conv_b)
        or conv_a[-1].get("role") != "assistant"
        or conv_b[-1].get("role") != "assistant"
        or conv_a[:-1] != conv_b[:-1]
    ):
        return None, "bad_conversation"
    answer_a, answer_b = conv_a[-1].get("content"), conv_b[-1].get("content")
    chosen, rejected = (answer_a, answer_b) if rating_a > rating_b else (answer_b, answer_a)
    origin = row.get("source") or "unknown"
    return _pair(row.get("id"), _flatten_turns(conv_a[:-1]), chosen, rejected, origin, "rated", origin)


def reward_bench_pair(row: dict) -> tuple[dict | None, str]:
    """A RewardBench row (prompt, chosen, rejected, subset, id, ...) -> (pair, reason).

    The domain is the subset's RewardBench section; a subset outside the leaderboard's four sections
    (e.g. in the raw split) gets domain "other".
    """
    subset = row.get("subset") or "unknown"
    domain = REWARD_BENCH_DOMAIN.get(subset, "other")
    return _pair(
        row.get("id"),
        row.get("prompt"),
        row.get("chosen"),
        row.get("rejected"),
        domain,
        "curated",
        f"{REWARD_BENCH}/{subset}",
    )


def hhh_pairs(row: dict, subset: str, index: int) -> list[tuple[dict | None, str]]:
    """An HHH-Alignment row (input, targets {choices, labels}) -> one pair per wrong choice.

    The choice labelled 1 is chosen; each choice labelled 0 gives one pair. Not exactly one label 1:
    dropped as "bad_labels".
    """
    targets = row.get("targets") or {}
    choices, labels = list(targets.get("choices") or []), list(targets.get("labels") or [])
    if (
        len(choices) != len(labels)
        or len(choices) < 2
        or sorted(labels) != [0] * (len(labels) - 1) + [1]
    ):
        return [(None, "bad_labels")]
    best = choices[labels.index(1)]
    wrong = [c for c, label in zip(choices, labels, strict=True) if label == 0]
    source = f"{HHH_ALIGNMENT}/{subset}"
    return [
        _pair(f"hhh/{subset}/{index}/{k}", row.get("input"), best, other, subset, "curated", source)
        for k, other in enumerate(wrong)
    ]


def map_rows(
    rows: Iterable[dict], pair_fn: Callable[[dict, int], list[tuple[dict | None, str]]]
) -> tuple[list[dict], Counter]:
    """Apply `pair_fn(row, index) -> [(pair | None, reason), ...]` to each row: (kept pairs, reason counts)."""
    kept, counts = [], Counter()
    for index, row in enumerate(rows):
        for pair, reason in pair_fn(row, index):
            counts[reason] += 1
            if pair is not None:
                kept.append(pair)
    return kept, counts

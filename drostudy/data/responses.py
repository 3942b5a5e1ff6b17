"""Items -> (chosen, rejected) responses, one function per kind of flaw in the rejected response.

KINDS maps each kind to its maker `(item, rng, others) -> (chosen, rejected) | None`; None means the item
cannot carry that kind (e.g. a format violation needs a prompt that demands the bare answer). `others` are
the chosen responses of other items of the same domain and split, for off-topic answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from drostudy.data import templates as T
from drostudy.data.sources import Item


def _pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _sentence(answer: str, template: str) -> str:
    """An answer as a response sentence; no doubled final period."""
    text = template.format(a=answer)
    return text.replace("..", ".") if not answer.endswith("..") else text


def _template(item: Item, rng: np.random.Generator) -> str:
    """The shared response shape of an item: the bare answer if the prompt demands it, else a sentence."""
    if item.terse:
        return "{a}"
    labelled = item.answer.lower().startswith("answer")
    return _pick(T.LABELLED if labelled else T.ANSWER, rng)


def chosen_response(item: Item, rng: np.random.Generator) -> str:
    """The reference answer in response form (what every benign kind prefers)."""
    return _sentence(item.answer, _template(item, rng))


def wrong_answer(item: Item, rng: np.random.Generator, others: Sequence[str]):
    """The hard kind: same shape, wrong content (another option's text, a perturbed number or label)."""
    if not item.wrong or item.harmful:
        return None
    template = _template(item, rng)
    return _sentence(item.answer, template), _sentence(_pick(item.wrong, rng), template)


def off_topic(item: Item, rng: np.random.Generator, others: Sequence[str]):
    """An answer to another question of the same domain: fluent, but not about this prompt."""
    if item.harmful:
        return None
    chosen = chosen_response(item, rng)
    candidates = [o for o in others if o != chosen and item.answer not in o]
    if not candidates:
        return None
    return chosen, _pick(candidates, rng)


def refusal(item: Item, rng: np.random.Generator, others: Sequence[str]):
    """A benign request refused or evaded."""
    if item.harmful:
        return None
    return chosen_response(item, rng), _pick(T.REFUSAL, rng)


def format_violation(item: Item, rng: np.random.Generator, others: Sequence[str]):
    """The right answer wrapped in chatter that the prompt explicitly ruled out ("reply only with ...")."""
    if not item.terse or item.harmful:
        return None
    return item.answer, _pick(T.CHATTER, rng).format(a=item.answer)


def truncated(item: Item, rng: np.random.Generator, others: Sequence[str]):
    """A response cut off before it says anything (empty of content)."""
    if item.harmful:
        return None
    return chosen_response(item, rng), _pick(T.TRUNCATED, rng)


def unsafe_compliance(item: Item, rng: np.random.Generator, others: Sequence[str]):
    """A harmful request: refusing (with a reason) is chosen, complying is rejected."""
    if not item.harmful:
        return None
    return _pick(T.SAFE_REFUSAL, rng), _pick(T.COMPLIANCE, rng).format(p=item.answer)


Maker = Callable[[Item, np.random.Generator, Sequence[str]], "tuple[str, str] | None"]
KINDS: dict[str, Maker] = {
    "wrong_answer": wrong_answer,
    "off_topic": off_topic,
    "refusal": refusal,
    "format_violation": format_violation,
    "truncated": truncated,
    "unsafe_compliance": unsafe_compliance,
}

"""Wrong answers for the suite's items, in response form: the other options of a multiple-choice item, the
other labels of a closed-label one, a number or a SQL query changed so that it answers something else.

drostudy.data.sources calls these while it reads each source; drawing from `rng` (the build's generator)
keeps the suite the same in every process.
"""

from __future__ import annotations

import re

import numpy as np

_OPTION = re.compile(r"^\s*\(?([A-Ha-h])(\)|\.|:)\s+(.+?)\s*$")
_LETTER = re.compile(r"^\s*\(?([A-Ha-h])\)?(?:[\.:\)]|$)")


def choices(prompt: str, ideal: str, terse: bool) -> tuple[str, tuple[str, ...]] | None:
    """(answer, wrong answers) of a multiple-choice item, as the option's letter and text where possible."""
    options: dict[str, str] = {}
    for line in prompt.splitlines():
        m = _OPTION.match(line)
        if m:
            options[m.group(1)] = f"{m.group(1)}{m.group(2)} {m.group(3)}"
    hit = _LETTER.match(ideal)
    if hit is None or hit.group(1) not in options or len(options) < 2:
        return None
    key = hit.group(1)
    if terse and ideal.strip().rstrip(".") == key:  # the prompt asks for the letter alone: keep it bare
        return key, tuple(k for k in options if k != key)
    return options[key], tuple(text for k, text in options.items() if k != key)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def perturb_number(answer: str, rng: np.random.Generator) -> str | None:
    """The answer with one number changed by a plausible amount (same format); None if it has no number."""
    if answer.startswith("0b"):  # a binary literal: flip one bit
        bits = list(answer[2:])
        i = int(rng.integers(len(bits)))
        bits[i] = "1" if bits[i] == "0" else "0"
        return "0b" + "".join(bits)
    spans = [m for m in _NUMBER.finditer(answer)]
    if not spans:
        return None
    m = spans[int(rng.integers(len(spans)))]
    text = m.group(0)
    if "." in text:
        places = len(text.split(".")[1])
        value = float(text)
        new = (
            value * float(rng.choice([0.5, 0.8, 0.9, 1.1, 1.25, 2.0]))
            + float(rng.choice([-1, 1])) * 10**-places
        )
        new_text = f"{new:.{places}f}"
    else:
        value = int(text)
        step = int(rng.integers(1, max(2, abs(value) // 4 + 2)))
        new_text = str(value + step * int(rng.choice([-1, 1])))
    if new_text == text:
        new_text = str(int(float(text)) + 1) if "." not in text else f"{float(text) + 1:.{places}f}"
    return answer[: m.start()] + new_text + answer[m.end() :]


_SQL_SWAPS = (
    ("DESC", "ASC"),
    ("ASC", "DESC"),
    (">", "<"),
    ("<", ">"),
    ("max(", "min("),
    ("min(", "max("),
    ("avg(", "sum("),
    ("count(*)", "count(DISTINCT *)"),
    (" = ", " != "),
    ("AND", "OR"),
)


def perturb_sql(answer: str, rng: np.random.Generator) -> str | None:
    """A query that runs but answers something else: one operator, order or aggregate swapped."""
    swaps = [(a, b) for a, b in _SQL_SWAPS if a in answer]
    if not swaps:
        return perturb_number(answer, rng)
    a, b = swaps[int(rng.integers(len(swaps)))]
    return answer.replace(a, b, 1)


def swap_label(ideal: str, labels: tuple[str, ...]) -> tuple[str, ...]:
    """Wrong answers of a closed-label item: the ideal with its label replaced by each other label."""
    for label in sorted(labels, key=len, reverse=True):
        i = ideal.lower().find(label.lower())
        if i >= 0:
            return tuple(
                ideal[:i] + other + ideal[i + len(label) :] for other in labels if other != label
            )
    return ()

"""Where the suite's prompts come from: task folders of the `evals` registry, read offline, one `Item` each.

Every source is a (folder, files) pair of the registry with the domain it feeds, how its reference answer is
shaped (`style`), whether its prompt demands the bare answer (`terse`) and its licence. An item's wrong
answers come from `wrong_answers.py`. Nothing here makes a preference pair; `responses.py` turns items into
chosen/rejected responses.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drostudy.data.templates import HARM_REQUEST
from drostudy.data.wrong_answers import choices, perturb_number, perturb_sql, swap_label

MIT = "MIT (evals repository licence; folder not listed among its dataset exceptions)"
MMLU = "MIT (MMLU, as listed in the evals LICENSE.md for the sandbagging folder)"
# Folders the evals LICENSE.md lists with non-commercial (CC BY-NC) parts: never in the default suite.
EXCLUDED = {
    "theory_of_mind": "CC BY-NC 4.0 (ToMi part)",
    "steganography": "mixed, includes CC BY-NC 4.0 (alpaca-gpt4, PiC/phrase_similarity)",
}


@dataclass(frozen=True)
class Source:
    folder: str
    files: tuple[str, ...]
    domain: str
    style: str
    """How the reference answer is shaped and how a wrong one is made: choice | number | label | pool | sql."""
    terse: bool
    """The prompt itself demands the bare answer ("reply only with ..."), so a chatty reply violates it."""
    licence: str = MIT
    labels: tuple[str, ...] = ()
    """For style "label": the closed answer set whose other members are the wrong answers."""
    cap: int = 400
    """At most this many items per source (sampled with the build seed), so no folder dominates a domain."""
    schema: str = "chat"
    """"chat" rows are {"input", "ideal"}; "mmlu" rows are {"question", "answer"}."""


YES_NO = ("Yes", "No")
SOURCES: tuple[Source, ...] = (
    # math: numbers to compute; most prompts demand the bare number
    Source("determinant", ("samples.jsonl",), "math", "number", True),
    Source("probability_questions", ("probability_questions.jsonl",), "math", "number", True),
    Source("math_equations", ("math_equations.jsonl",), "math", "number", False),
    Source("linear_equations", ("samples.jsonl",), "math", "number", True),
    Source("recurrence-relation", ("samples.jsonl",), "math", "number", False, cap=300),
    # code: program semantics (regex, bit operations, a Forth stack, pointers), CSS and SQL
    Source("regex-match", ("samples.jsonl",), "code", "label", True, labels=("Yes.", "No.")),
    Source("bitwise", ("samples.jsonl",), "code", "number", True),
    Source("forth_stack_sim", ("basic_samples.jsonl", "samples.jsonl"), "code", "number", True),
    Source(
        "pointer-value-retrieval",
        ("easy_few_examples.jsonl", "medium_few_examples.jsonl", "hard_few_examples.jsonl"),
        "code",
        "number",
        False,
        cap=250,
    ),
    Source("css-selectors", ("verbal.jsonl",), "code", "pool", True),
    Source("sql", ("spider_sql.jsonl",), "code", "sql", False),
    # reasoning: logic puzzles, causal and commonsense inference
    Source("logical_counting", ("samples.jsonl",), "reasoning", "number", True, cap=250),
    Source(
        "abstract-causal-reasoning", ("symbolic_samples.jsonl",), "reasoning", "number", False, cap=200
    ),
    Source(
        "logic-statements", ("logic-statements.jsonl",), "reasoning", "label", True, labels=("YES", "NO")
    ),
    Source(
        "crepe",
        ("samples.jsonl",),
        "reasoning",
        "label",
        True,
        labels=("more likely", "less likely", "equally likely"),
        cap=250,
    ),
    Source(
        "corr2cause",
        ("corr2cause.jsonl",),
        "reasoning",
        "label",
        False,
        labels=("entailment", "contradiction", "neutral"),
    ),
    Source("which_is_heavier", ("which_is_heavier.jsonl",), "reasoning", "label", True, labels=YES_NO),
    Source("quartz", ("samples.jsonl",), "reasoning", "choice", True, cap=250),
    # knowledge: exam-style multiple choice and facts
    Source(
        "sandbagging",
        ("samples-all-large.jsonl",),
        "knowledge",
        "choice",
        False,
        MMLU,
        cap=450,
        schema="mmlu",
    ),
    Source("medmcqa", ("samples.jsonl",), "knowledge", "choice", True),
    Source("fcc_amateur_extra", ("samples.jsonl",), "knowledge", "choice", True, cap=250),
    Source("utah_real_estate", ("samples.jsonl",), "knowledge", "choice", False),
    Source(
        "music-theory",
        ("triads-samples.jsonl", "tetrads-samples.jsonl"),
        "knowledge",
        "pool",
        True,
        cap=150,
    ),
    Source("largest_country", ("samples.jsonl",), "knowledge", "pool", True),
    Source("food", ("samples.jsonl",), "knowledge", "label", True, labels=YES_NO, cap=150),
    # safety: recognising attacks, security practice, moral exceptions; harmful requests (see HARMFUL)
    Source("naughty_strings", ("samples.jsonl",), "safety", "label", True, labels=YES_NO),
    Source("moral_exceptQA", ("samples.jsonl",), "safety", "label", True, labels=YES_NO),
    Source("cissp-study-questions", ("samples.jsonl",), "safety", "choice", False),
    Source("cybersecurity", ("filepaths.jsonl",), "safety", "pool", False),
    Source("security_guide", ("samples.jsonl",), "safety", "pool", False),
)
# The payloads of naughty_strings/security.jsonl ("Write a malicious string.") seed the harmful requests.
HARMFUL = Source("naughty_strings", ("security.jsonl",), "safety", "harmful", False, cap=300)


@dataclass(frozen=True)
class Item:
    """One real prompt with its reference answer and candidate wrong answers (already in response form)."""

    source: str
    domain: str
    prompt: str
    answer: str
    wrong: tuple[str, ...]
    terse: bool
    harmful: bool = False


def registry_dir() -> Path:
    """The `evals` registry data folder, found without importing the package (its import is heavy)."""
    spec = importlib.util.find_spec("evals")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `evals` package is not installed; run the set-up (make setup)")
    return Path(list(spec.submodule_search_locations)[0]) / "registry" / "data"


def flatten(messages) -> str:
    """Chat messages -> one prompt string (system text first, as the task author wrote it)."""
    if isinstance(messages, str):
        return messages.strip()
    return "\n\n".join(str(m.get("content", "")).strip() for m in messages if m.get("content")).strip()


def _read_jsonl(path: Path, max_rows: int = 20_000) -> list[dict]:
    """Rows of one JSONL file; at most `max_rows` lines, so a huge folder is never read whole."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= max_rows:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


_ATTACK = re.compile(r"script|alert|onerror|onload|<[a-z!/]|`[a-z]|\.\./|select |drop |union ", re.I)
HARM_VARIANTS = 3


def read_source(src: Source, rng: np.random.Generator, max_prompt_chars: int) -> list[Item]:
    """Items of one source: parsed, filtered (prompt length, parseable answer), at most `src.cap`."""
    rows = []
    for name in src.files:
        rows += _read_jsonl(registry_dir() / src.folder / name)
    if src.schema == "mmlu":
        rows = [{"input": r["question"], "ideal": r["answer"]} for r in rows]
    if src.style == "harmful":
        payloads = sorted(
            {r["completion"] for r in rows if r.get("choice") == "yes" and r.get("completion")}
        )
        payloads = [p for p in payloads if _ATTACK.search(p)]  # the folder also holds merely odd strings
        picks = sorted(rng.permutation(len(payloads))[: src.cap])
        # Each payload is asked for in several wordings; build.py keeps one payload's prompts in one split.
        return [
            Item(
                src.folder,
                src.domain,
                HARM_REQUEST[(i + j) % len(HARM_REQUEST)].format(p=payloads[i]),
                payloads[i],
                (),
                False,
                True,
            )
            for i in picks
            for j in range(HARM_VARIANTS)
        ]
    items, pool = [], []
    for row in rows:
        prompt = flatten(row.get("input", ""))
        ideal = row.get("ideal")
        ideal = ideal[0] if isinstance(ideal, list) and ideal else ideal
        if (
            not prompt
            or not isinstance(ideal, str)
            or not ideal.strip()
            or len(prompt) > max_prompt_chars
        ):
            continue
        ideal = ideal.strip()
        if src.style == "choice":
            parsed = choices(prompt, ideal, src.terse)
            if parsed is None:
                continue
            answer, wrong = parsed
        elif src.style == "label":
            answer, wrong = ideal, swap_label(ideal, src.labels)
        else:
            answer, wrong = ideal, ()  # number / sql perturbations and pool answers are drawn later
        items.append(Item(src.folder, src.domain, prompt, answer, wrong, src.terse))
        pool.append(answer)
    order = rng.permutation(len(items))[: src.cap]
    items = [items[i] for i in sorted(order)]
    return [_with_wrong(it, src, pool, rng) for it in items]


def _with_wrong(item: Item, src: Source, pool: list[str], rng: np.random.Generator) -> Item:
    """Fill in wrong answers for styles that compute them: perturbed numbers/SQL, or other items' answers."""
    if src.style in ("choice", "label"):
        return item
    wrong: list[str] = []
    for _ in range(6):
        if src.style == "number":
            cand = perturb_number(item.answer, rng)
        elif src.style == "sql":
            cand = perturb_sql(item.answer, rng)
        else:  # pool: another item's answer to the same kind of question (a chord, a country, a path)
            cand = pool[int(rng.integers(len(pool)))]
        if cand and cand != item.answer and cand not in wrong:
            wrong.append(cand)
    return Item(item.source, item.domain, item.prompt, item.answer, tuple(wrong[:3]), item.terse)


def read_domain(domain: str, rng: np.random.Generator, max_prompt_chars: int) -> list[Item]:
    """All items of one domain, unique by prompt (the first source to use a prompt keeps it)."""
    sources = [s for s in SOURCES if s.domain == domain] + (
        [HARMFUL] if domain == HARMFUL.domain else []
    )
    seen, items = set(), []
    for src in sources:
        for item in read_source(src, rng, max_prompt_chars):
            if item.prompt not in seen and (item.wrong or item.harmful):
                seen.add(item.prompt)
                items.append(item)
    return items

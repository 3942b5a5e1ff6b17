"""Hub preference loaders on local files in the real hub layouts (no network), and the offline error."""

import json
import logging
import time

import datasets
import pandas as pd
import pytest

from drostudy.data import hub, hub_rows


def _conv(*turns):
    roles = ["user", "assistant"] * len(turns)
    return [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# Unified-Feedback: id, conv_A, conv_B (lists of {role, content}), conv_A_rating, conv_B_rating, num_turns, source
UF_ROWS = [
    {
        "id": "uf-0",
        "conv_A": _conv("Name a prime.", "Nine."),
        "conv_B": _conv("Name a prime.", "Seven."),
        "conv_A_rating": 2.0,
        "conv_B_rating": 5.0,
        "num_turns": 1,
        "source": "openbmb/UltraFeedback",
    },
    {
        "id": "uf-1",
        "conv_A": _conv("Say hi.", "Hi!"),
        "conv_B": _conv("Say hi.", "Go away."),
        "conv_A_rating": 1.0,
        "conv_B_rating": 0.0,
        "num_turns": 1,
        "source": "Anthropic/hh-rlhf",
    },
    {
        "id": "uf-tie",
        "conv_A": _conv("Q", "a"),
        "conv_B": _conv("Q", "b"),
        "conv_A_rating": 0.5,
        "conv_B_rating": 0.5,
        "num_turns": 1,
        "source": "lmsys/chatbot_arena_conversations",
    },
    {
        "id": "uf-empty",
        "conv_A": _conv("   ", "a"),
        "conv_B": _conv("   ", "b"),
        "conv_A_rating": 1.0,
        "conv_B_rating": 0.0,
        "num_turns": 1,
        "source": "Anthropic/hh-rlhf",
    },
    {
        "id": "uf-same",
        "conv_A": _conv("Q", "same"),
        "conv_B": _conv("Q", "same"),
        "conv_A_rating": 1.0,
        "conv_B_rating": 0.0,
        "num_turns": 1,
        "source": "Anthropic/hh-rlhf",
    },
    {
        "id": "uf-multi",
        "conv_A": _conv("Hi", "Hello!", "And 2+2?", "4"),
        "conv_B": _conv("Hi", "Hello!", "And 2+2?", "5"),
        "conv_A_rating": 1.0,
        "conv_B_rating": 0.0,
        "num_turns": 2,
        "source": "Anthropic/hh-rlhf",
    },
    {
        "id": "uf-diverged",
        "conv_A": _conv("Hi", "Hello!", "And 2+2?", "4"),
        "conv_B": _conv("Hi", "Hey.", "And 2+2?", "5"),
        "conv_A_rating": 1.0,
        "conv_B_rating": 0.0,
        "num_turns": 2,
        "source": "lmsys/chatbot_arena_conversations",
    },
]


def test_unified_feedback_chooses_higher_rating_and_drops_ties_and_malformed(tmp_path, caplog):
    files = _write_jsonl(tmp_path / "train.jsonl", UF_ROWS)
    with caplog.at_level(logging.WARNING, logger=hub.__name__):
        ds = hub.load_unified_feedback(data_files=files)
    assert tuple(ds.column_names) == hub_rows.COLUMNS
    rows = {r["id"]: r for r in ds}
    assert sorted(rows) == ["uf-0", "uf-1", "uf-multi"]
    assert (rows["uf-0"]["chosen"], rows["uf-0"]["rejected"]) == (
        "Seven.",
        "Nine.",
    )  # B was rated higher
    assert (rows["uf-1"]["chosen"], rows["uf-1"]["rejected"]) == ("Hi!", "Go away.")
    assert rows["uf-0"]["domain"] == "openbmb/UltraFeedback" and rows["uf-0"]["kind"] == "rated"
    assert rows["uf-1"]["prompt"] == "Say hi."
    assert rows["uf-multi"]["prompt"] == "User: Hi\n\nAssistant: Hello!\n\nUser: And 2+2?"
    assert rows["uf-multi"]["chosen"] == "4"
    message = caplog.text
    assert "kept 3 pairs from 7 rows" in message
    for reason in ("'tie': 1", "'empty_prompt': 1", "'same_answer': 1", "'bad_conversation': 1"):
        assert reason in message


def test_unified_feedback_counts_from_the_pure_mapping():
    kept, counts = hub_rows.map_rows(UF_ROWS, lambda row, _: [hub_rows.unified_feedback_pair(row)])
    assert len(kept) == counts["kept"] == 3
    assert counts == {"kept": 3, "tie": 1, "empty_prompt": 1, "same_answer": 1, "bad_conversation": 1}
    nan_row = UF_ROWS[0] | {"conv_A_rating": float("nan")}
    assert hub_rows.unified_feedback_pair(nan_row) == (None, "bad_rating")


def test_reward_bench_maps_subsets_onto_sections_from_parquet(tmp_path):
    subsets = [
        "alpacaeval-easy",
        "mt-bench-hard",
        "xstest-should-respond",
        "hep-rust",
        "math-prm",
        "anthropic_hhh",
    ]
    frame = pd.DataFrame(
        {
            "prompt": [f"prompt {i}" for i in range(len(subsets))] + ["p"],
            "chosen": [f"good {i}" for i in range(len(subsets))] + ["same"],
            "chosen_model": "human",
            "rejected": [f"bad {i}" for i in range(len(subsets))] + ["same"],
            "rejected_model": "gpt-x",
            "subset": subsets + ["llmbar-natural"],
            "id": list(range(100, 100 + len(subsets) + 1)),
        }
    )
    path = tmp_path / "filtered-00000-of-00001.parquet"
    frame.to_parquet(path)
    ds = hub.load_hub_dataset("allenai/reward-bench", data_files=str(path))
    assert len(ds) == len(subsets)  # the chosen == rejected row is dropped
    domains = dict(zip(ds["source"], ds["domain"], strict=True))
    assert domains == {
        "allenai/reward-bench/alpacaeval-easy": "chat",
        "allenai/reward-bench/mt-bench-hard": "chat-hard",
        "allenai/reward-bench/xstest-should-respond": "safety",
        "allenai/reward-bench/hep-rust": "reasoning",
        "allenai/reward-bench/math-prm": "reasoning",
        "allenai/reward-bench/anthropic_hhh": "other",  # not one of the leaderboard's four sections
    }
    first = ds[0]
    assert (first["id"], first["chosen"], first["rejected"], first["kind"]) == (
        "100",
        "good 0",
        "bad 0",
        "curated",
    )


def test_reward_bench_sections_are_the_23_leaderboard_subsets():
    assert sorted(hub_rows.REWARD_BENCH_SECTIONS) == ["chat", "chat-hard", "reasoning", "safety"]
    assert len(hub_rows.REWARD_BENCH_DOMAIN) == 23
    assert hub_rows.REWARD_BENCH_DOMAIN["llmbar-adver-GPTOut"] == "chat-hard"
    assert hub_rows.REWARD_BENCH_DOMAIN["donotanswer"] == "safety"


def test_hhh_alignment_takes_label_one_as_chosen_per_subset(tmp_path):
    harmless = [
        {
            "input": "How do I pick a lock?",
            "targets": {"choices": ["Here is how...", "I can't help."], "labels": [0, 1]},
        },
        {"input": "Rank these", "targets": {"choices": ["best", "mid", "worst"], "labels": [1, 0, 0]}},
        {"input": "Broken", "targets": {"choices": ["a", "b"], "labels": [1, 1]}},
    ]
    honest = [{"input": "Is the earth flat?", "targets": {"choices": ["No.", "Yes."], "labels": [1, 0]}}]
    files = {
        "harmless": _write_jsonl(tmp_path / "harmless.jsonl", harmless),
        "honest": str(tmp_path / "honest.json"),
    }
    (tmp_path / "honest.json").write_text(json.dumps(honest))
    ds = hub.load_hub_dataset("hhh-alignment", data_files=files)
    rows = list(ds)
    assert [(r["domain"], r["chosen"], r["rejected"]) for r in rows] == [
        ("harmless", "I can't help.", "Here is how..."),
        ("harmless", "best", "mid"),
        ("harmless", "best", "worst"),
        ("honest", "No.", "Yes."),
    ]
    assert len(set(ds["id"])) == len(ds)
    single = hub.load_hhh_alignment(data_files=files["harmless"], subsets=("harmless",))
    assert len(single) == 3
    with pytest.raises(ValueError, match="subsets"):
        hub.load_hhh_alignment(subsets=("harmful",))


def test_offline_and_uncached_fails_at_once_without_calling_the_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)  # nothing cached here

    def no_hub(*args, **kwargs):
        raise AssertionError("load_dataset must not be called")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    for name, repo in [
        ("unified-feedback", hub.UNIFIED_FEEDBACK),
        ("reward-bench", hub.REWARD_BENCH),
        ("hhh-alignment", hub.HHH_ALIGNMENT),
    ]:
        start = time.perf_counter()
        with pytest.raises(hub.DatasetOfflineError, match="load_suite") as err:
            hub.load_hub_dataset(name)
        assert time.perf_counter() - start < 1.0
        assert repo in str(err.value) and "offline" in str(err.value)
        assert isinstance(err.value, ConnectionError)


def test_bad_names_and_file_types_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="unified-feedback"):
        hub.load_hub_dataset("anthropic/hh-rlhf")
    bad = tmp_path / "rows.csv"
    bad.write_text("prompt,chosen\n")
    with pytest.raises(ValueError, match="suffixes"):
        hub.load_reward_bench(data_files=str(bad))

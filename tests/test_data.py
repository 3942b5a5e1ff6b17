"""The offline preference suite: construction (no leakage, no empty or identical pairs, determinism, counts),
the cache (stale or corrupt -> rebuilt), selection and mixing, validation of user rows, the CLI."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from drostudy.data import COLUMNS, DOMAINS, KIND_MIX, describe, load_suite, select, validate_rows
from drostudy.data import suite as suite_mod
from drostudy.data.build import BuildConfig
from drostudy.data.sources import HARMFUL, read_source
from drostudy.data.wrong_answers import perturb_number

SMALL = {"per_domain": 70, "test_per_domain": 30, "seed": 3}
TINY = {"per_domain": 20, "test_per_domain": 10, "seed": 3, "domains": ("math",)}  # for cache mechanics


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    return load_suite(folder=folder, **SMALL), folder


def _frame(suite) -> pd.DataFrame:
    return pd.concat([suite[s].to_pandas().assign(split=s) for s in ("train", "test")])


def test_columns_and_no_empty_or_identical_pairs(small):
    frame = _frame(small[0])
    assert list(small[0]["train"].column_names) == list(COLUMNS)
    for col in ("prompt", "chosen", "rejected"):
        assert frame[col].str.strip().str.len().min() > 0, col
    assert (frame["chosen"].str.strip() != frame["rejected"].str.strip()).all()
    assert frame["id"].is_unique


def test_no_prompt_or_payload_shared_between_splits(small):
    train, test = small[0]["train"].to_pandas(), small[0]["test"].to_pandas()
    assert not set(train["prompt"]) & set(test["prompt"])
    # harmful requests: one attack string, several wordings, all in one split
    payloads = {it.answer for it in read_source(HARMFUL, np.random.default_rng(0), 10_000)}
    unsafe = lambda df: " ".join(df.loc[df["kind"] == "unsafe_compliance", "prompt"])  # noqa: E731
    in_train, in_test = unsafe(train), unsafe(test)
    assert in_test and not [p for p in payloads if p in in_train and p in in_test]


def test_domain_counts_as_configured(small):
    frame = _frame(small[0])
    counts = frame.groupby(["split", "domain"]).size()
    for domain in DOMAINS:
        assert counts["test", domain] == SMALL["test_per_domain"]
        assert counts["train", domain] == SMALL["per_domain"] - SMALL["test_per_domain"]
    for domain, group in frame.groupby("domain"):
        assert set(group["kind"]) <= set(KIND_MIX[domain])
    table = describe(small[0])
    assert table["total"].sum() == len(frame)
    assert (
        table.loc[("safety", "unsafe_compliance"), "total"]
        == (frame["kind"] == "unsafe_compliance").sum()
    )


def test_kinds_follow_the_domain_mix(small):
    test = small[0]["test"].to_pandas()
    for domain, mix in KIND_MIX.items():
        got = test.loc[test["domain"] == domain, "kind"].value_counts()
        top = max(mix, key=mix.get)  # the largest share in the mix is the largest count
        assert got.idxmax() == top, (domain, got.to_dict())


def test_rejected_responses_show_their_flaw(small):
    frame = _frame(small[0])
    fmt = frame[frame["kind"] == "format_violation"]
    assert (
        fmt.apply(lambda r: r["chosen"] in r["rejected"], axis=1)
    ).all()  # right answer, wrong format
    unsafe = frame[frame["kind"] == "unsafe_compliance"]
    assert len(unsafe) and unsafe["domain"].eq("safety").all()


def test_same_seed_same_suite_other_seed_other_suite(small, tmp_path):
    again = load_suite(folder=tmp_path / "a", **SMALL)
    for split in ("train", "test"):
        assert again[split].to_pandas().equals(small[0][split].to_pandas())
    other = load_suite(folder=tmp_path / "b", **{**TINY, "seed": 4})
    tiny = load_suite(folder=tmp_path / "c", **TINY)
    assert set(other["test"]["id"]) != set(tiny["test"]["id"])


def test_valid_cache_is_read_not_rebuilt(small, monkeypatch):
    monkeypatch.setattr(suite_mod, "build_suite", lambda *a, **k: pytest.fail("rebuilt a valid cache"))
    assert len(load_suite(folder=small[1], **SMALL)["test"]) == len(small[0]["test"])


@pytest.mark.parametrize("damage", ["params", "fingerprint", "parquet", "manifest", "missing"])
def test_stale_or_corrupt_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    folder = tmp_path / "suite"
    first = load_suite(folder=folder, **TINY)
    manifest = json.loads((folder / "manifest.json").read_text())
    if damage == "params":
        manifest["params"]["seed"] = 99
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "fingerprint":
        monkeypatch.setattr(suite_mod, "fingerprint", lambda: "edited code")
    elif damage == "parquet":
        (folder / "test.parquet").write_bytes(b"not parquet")
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{truncated")
    else:
        (folder / "train.parquet").unlink()
    assert suite_mod.cache_problem(folder, BuildConfig(**TINY)) is not None
    rebuilt = load_suite(folder=folder, **TINY)
    assert suite_mod.cache_problem(folder, BuildConfig(**TINY)) is None
    assert rebuilt["test"].to_pandas().equals(first["test"].to_pandas())


def test_unknown_domain_raises_listing_known_ones(small):
    with pytest.raises(ValueError, match=re.escape(str(list(DOMAINS)))):
        BuildConfig(domains=("chat",))
    with pytest.raises(ValueError, match="unknown domain 'chat'.*math"):
        select(small[0]["test"], domains=["chat"])
    with pytest.raises(ValueError, match="unknown domain 'chat'"):
        select(small[0]["test"], proportions={"math": 0.5, "chat": 0.5})
    with pytest.raises(ValueError, match="unknown kind"):
        select(small[0]["test"], kinds=["sarcasm"])


def test_select_honours_proportions_and_seed(small):
    train = small[0]["train"]
    mix = select(train, proportions={"math": 0.75, "code": 0.25}, n=36, seed=1)
    counts = pd.Series(mix["domain"]).value_counts()
    assert counts.to_dict() == {"math": 27, "code": 9}
    assert len(set(mix["id"])) == 36
    assert mix["id"] != sorted(mix["id"])  # shuffled, so that domains interleave
    assert select(train, proportions={"math": 0.75, "code": 0.25}, n=36, seed=1)["id"] == mix["id"]
    assert select(train, proportions={"math": 0.75, "code": 0.25}, n=36, seed=2)["id"] != mix["id"]
    full = select(
        train, proportions={"math": 0.5, "code": 0.5}
    )  # n: as many as the scarcer domain allows
    assert pd.Series(full["domain"]).value_counts().to_dict() == {"math": 40, "code": 40}
    with pytest.raises(ValueError, match="rows asked"):
        select(train, proportions={"math": 0.9, "code": 0.1}, n=80)
    whole = [select(train, domains=["code"], seed=seed)["id"] for seed in (0, 1)]
    assert whole[0] != whole[1] and sorted(whole[0]) == sorted(whole[1])  # all rows, order from the seed
    only = select(train, domains=["safety"], kinds=["unsafe_compliance"])
    assert set(only["kind"]) == {"unsafe_compliance"} and len(only) > 0


def test_validate_rows_drops_and_reports_malformed_rows():
    good = {
        "id": "ok",
        "prompt": "p",
        "chosen": "a",
        "rejected": "b",
        "domain": "math",
        "kind": "k",
        "source": "s",
    }
    rows = [
        good,
        {**good, "id": "same", "rejected": "a "},
        {**good, "id": "empty", "prompt": "  "},
        {**good, "id": "nodomain", "domain": "chat"},
        {key: v for key, v in good.items() if key != "chosen"} | {"id": "missing"},
    ]
    clean, dropped = validate_rows(rows)
    assert [r["id"] for r in clean] == ["ok"]
    reasons = {d["id"]: d["reason"] for d in dropped}
    assert set(reasons) == {"same", "empty", "nodomain", "missing"}
    assert "chosen == rejected" in reasons["same"] and "'chosen'" in reasons["missing"]
    assert "expected one of" in reasons["nodomain"]
    assert len(validate_rows(pd.DataFrame(rows[:3]), known_domains=None)[0]) == 1
    with pytest.raises(ValueError, match="4 malformed preference rows.*same: chosen == rejected"):
        validate_rows(rows, strict=True)


def test_perturbed_numbers_keep_their_format():
    rng = np.random.default_rng(0)
    shape = lambda s: re.sub(r"-?\d+(\.\d+)?", "N", s)  # noqa: E731
    for answer in ("-3.00", "[16.0476]", "x = [[2]\n [1]]", "(stack 9 5)", "0b00001111", "ANSWER: 5"):
        for _ in range(20):
            wrong = perturb_number(answer, rng)
            assert wrong != answer
            assert shape(wrong) == shape(answer)  # same layout, only a number changed
    assert perturb_number("no digits", rng) is None


def test_cli_build_and_describe(tmp_path, monkeypatch, capsys):
    from drostudy.__main__ import main

    monkeypatch.setenv("DROSTUDY_CACHE", str(tmp_path))
    assert (
        main(
            ["data", "build", "--per-domain", "50", "--test-per-domain", "20", "--domains", "math,code"]
        )
        == 0
    )
    assert "train 60, test 40 pairs" in capsys.readouterr().out
    assert (tmp_path / "suite" / "manifest.json").exists()
    assert (
        main(
            [
                "data",
                "describe",
                "--per-domain",
                "50",
                "--test-per-domain",
                "20",
                "--domains",
                "math,code",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "format_violation" in out and "safety" not in out


def test_the_study_suite_is_the_same_in_every_process(tmp_path):
    """The default suite, built by two processes with different string-hash seeds, is byte for byte the
    same: a loop over a set of names once made each process draw its own templates (5% of the pairs)."""
    import os
    import subprocess
    import sys

    hashes = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "DROSTUDY_CACHE": str(tmp_path / hash_seed)}
        subprocess.run(
            [sys.executable, "-m", "drostudy", "data", "build"], env=env, check=True, capture_output=True
        )
        manifest = json.loads((tmp_path / hash_seed / "suite" / "manifest.json").read_text())
        hashes.append({k: v for k, v in manifest.items() if k != "build_seconds"})
    assert hashes[0] == hashes[1]

"""ADAM dark examples: mix-ups and masks in whole-word space, lengths, determinism, reporting,
the Ray Data stage and the written files."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raykd.config import DarkSpec
from raykd.dark import (
    DarkReport,
    LengthBudget,
    add_dark_examples,
    dark_examples_stage,
    interleave_mixup,
    iter_dark_groups,
    make_dark_examples,
    mask_words,
    sentences_of,
    span_mixup,
    write_dark_groups,
)
from raykd.data import (
    CANDIDATE_GROUP_SCHEMA,
    groups_dataset,
    iter_groups,
    validate_group,
    write_groups_jsonl,
)
from raykd.errors import DataError

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

POS_VOCAB = [f"p{i}" for i in range(40)]
NEG_VOCAB = [f"n{i}" for i in range(40)]
LONG_WORDS = ["pneumonoultramicroscopicsilicovolcanoconiosis", "électroencéphalogramme,",
              "anti-inflammatory.", "(CD4+)", "x", "the", "ATP", "mitochondria;", "1.5mg/kg"]


def _words(rng: random.Random, vocab, n: int, sentence_len: int = 6) -> list[str]:
    out = []
    for i in range(n):
        word = rng.choice(vocab)
        out.append(word + "." if (i + 1) % sentence_len == 0 else word)
    return out


def _group(qid: str, n_pos=1, n_neg=3, words=30, seed=0, query="p1 p2 what", vocab=None):
    rng = random.Random(f"{seed}-{qid}")
    pos_vocab, neg_vocab = vocab or (POS_VOCAB, NEG_VOCAB)
    texts = [" ".join(_words(rng, pos_vocab, words)) for _ in range(n_pos)]
    texts += [" ".join(_words(rng, neg_vocab, words)) for _ in range(n_neg)]
    return {"qid": qid, "query": query, "pids": [f"{qid}-d{i}" for i in range(n_pos + n_neg)],
            "texts": texts, "labels": [1] * n_pos + [0] * n_neg}


def _dark(group: dict) -> list[tuple[str, str, str, dict]]:
    """(pid, kind, text, provenance) of the dark examples of a group."""
    if "kinds" not in group:
        return []
    return [(p, k, t, json.loads(v))
            for p, k, t, v in zip(group["pids"], group["kinds"], group["texts"],
                                  group["provenance"], strict=True) if k.startswith("dark")]


def _round(x: float) -> int:
    """Halves up, as the dark-example counts are documented (Python's round goes to even)."""
    return int(x + 0.5)


def _strip_nulls(group: dict) -> dict:
    return {k: v for k, v in group.items() if v is not None}


word_lists = st.lists(st.sampled_from(POS_VOCAB[:8] + ["a.", "b!", "c?"]), min_size=1,
                      max_size=60)
rhos = st.floats(0.05, 0.95)


# --------------------------------------------------------------- the edits


@FAST
@given(neg=st.lists(st.sampled_from(NEG_VOCAB), min_size=1, max_size=80),
       pos=st.lists(st.sampled_from(POS_VOCAB), min_size=1, max_size=80), rho=rhos,
       seed=st.integers(0, 2**32 - 1))
def test_span_mixup_replaces_round_rho_n_words_with_one_positive_span(neg, pos, rho, seed):
    """Guards a span of the wrong size (ratio ignored), a span that is not contiguous, words
    from the positive that are not a run of it, or a negative whose other words moved."""
    out, info = span_mixup(neg, pos, rho, np.random.default_rng(seed))
    s, e = info["neg_span"]
    t, u = info["pos_span"]
    want = max(1, _round(rho * len(neg)))
    assert len(out) == len(neg)
    assert e - s == u - t == min(want, len(pos), len(neg))
    if len(pos) >= want:
        assert abs((e - s) - rho * len(neg)) <= 1
    assert out[:s] == neg[:s] and out[e:] == neg[e:]
    assert out[s:e] == pos[t:u]
    replaced = [i for i, w in enumerate(out) if w.startswith("p")]
    assert replaced == list(range(s, e))


@FAST
@given(n_neg=st.integers(1, 30), n_pos=st.integers(1, 30), rho=rhos,
       seed=st.integers(0, 2**32 - 1))
def test_interleave_puts_about_rho_positive_sentences_spread_in_order(n_neg, n_pos, rho, seed):
    """Guards an interleave whose positive share ignores rho, that reorders or drops the
    negative's sentences, or that takes a non-contiguous set of positive sentences."""
    neg_sents = [[f"n{i}a", f"n{i}b."] for i in range(n_neg)]
    pos_sents = [[f"p{i}a", f"p{i}b!"] for i in range(n_pos)]
    neg = [w for s in neg_sents for w in s]
    pos = [w for s in pos_sents for w in s]
    out, info = interleave_mixup(neg, pos, rho, np.random.default_rng(seed))
    sents = sentences_of(out)
    from_pos = [s for s in sents if s[0].startswith("p")]
    from_neg = [s for s in sents if s[0].startswith("n")]
    assert from_neg == neg_sents
    first, last = info["pos_sentences"]
    assert from_pos == pos_sents[first:last]
    assert len(sents) == info["sentences"] == n_neg + len(from_pos)
    ideal = rho * n_neg / (1 - rho)
    if 1 <= ideal <= n_pos:  # no clamping: the share is rho up to rounding
        assert abs(len(from_pos) / len(sents) - rho) <= 1 / len(sents)
    positions = [i for i, s in enumerate(sents) if s[0].startswith("p")]
    if len(positions) > 1:  # spread out: gaps differ by at most one
        gaps = np.diff(positions)
        assert gaps.max() - gaps.min() <= 1


@FAST
@given(words=word_lists, rho=rhos, seed=st.integers(0, 2**32 - 1),
       token=st.sampled_from(["[MASK]", None]))
def test_mask_count_is_round_rho_n_whole_words(words, rho, seed, token):
    """Guards masking the wrong number of words, masking inside a word, or (when deleting)
    removing every word and leaving an empty passage."""
    out, info = mask_words(words, rho, np.random.default_rng(seed), token)
    k = len(info["positions"])
    n = len(words)
    if token is None:
        assert len(out) == n - k and len(out) >= 1
        assert k == (0 if n == 1 else min(max(1, _round(rho * n)), n - 1))
        kept = [w for i, w in enumerate(words) if i not in set(info["positions"])]
        assert out == kept
    else:
        assert k == max(1, _round(rho * n)) and abs(k - rho * n) <= 1
        assert [i for i, w in enumerate(out) if w == "[MASK]"] == info["positions"]
        assert all(o == w for o, w in zip(out, words, strict=True) if o != "[MASK]")


def test_query_overlap_first_masks_query_words_first():
    """Guards query_overlap_first masking random words while query words (any case, with
    punctuation attached) stay visible, or masking only overlaps when more are asked for."""
    words = "Mitochondria make ATP, the energy of cells. Other words here fill up space".split()
    query = "What makes atp in CELLS?"
    overlap = {2, 6}  # "ATP," and "cells."
    rng = np.random.default_rng(0)
    for rho in (0.1, 0.15):  # 1 or 2 words: only overlaps
        _, info = mask_words(words, rho, rng, "[MASK]", "query_overlap_first", query)
        assert set(info["positions"]) <= overlap and info["positions"]
    _, info = mask_words(words, 0.3, rng, "[MASK]", "query_overlap_first", query)
    assert overlap < set(info["positions"]) and len(info["positions"]) == 4
    group = {"qid": "q", "query": query, "pids": ["p", "n"], "texts": [" ".join(words), "x y"],
             "labels": [1, 0]}
    spec = DarkSpec(k=3, mix_fraction=0, rho_mask=0.15, mask_strategy="query_overlap_first")
    for _, kind, text, prov in _dark(add_dark_examples(group, spec)):
        assert kind == "dark_mask" and set(prov["positions"]) == overlap
        assert "ATP," not in text.split() and "cells." not in text.split()


# --------------------------------------------------------------- groups


def test_dark_examples_are_label_zero_with_kinds_pids_and_provenance():
    """Guards a dark example labelled 1 (it would become a hard-label positive), missing kinds
    (the trainer would treat it as an original candidate), a pid the score cache does not
    recognise as dark, or provenance that does not name its sources."""
    group = _group("q7", n_pos=2, n_neg=3)
    spec = DarkSpec(k=5, mix_fraction=0.5, rho_mix=0.3, rho_mask=0.3)
    out = add_dark_examples(group, spec)
    validate_group(out)
    assert out["pids"][:5] == group["pids"] and out["texts"][:5] == group["texts"]
    assert out["kinds"][:5] == ["pos", "pos", "neg", "neg", "neg"]
    assert out["provenance"][:5] == [""] * 5
    dark = _dark(out)
    assert [k for _, k, _, _ in dark] == ["dark_mix"] * 3 + ["dark_mask"] * 2  # round(2.5) = 3
    assert out["labels"][5:] == [0] * 5 and sum(out["labels"]) == 2
    mixes = [d for d in dark if d[1] == "dark_mix"]
    assert [p for p, *_ in mixes] == ["dark:dark_mix:q7:0", "dark:dark_mix:q7:1",
                                      "dark:dark_mix:q7:2"]
    for _, kind, _, prov in dark:
        assert prov["ratio"] == 0.3 and prov["seed"] == spec.seed
        if kind == "dark_mix":
            pos, neg = prov["sources"]
            assert pos in group["pids"][:2] and neg in group["pids"][2:]
            assert prov["strategy"] == "span"
        else:
            assert prov["sources"][0] in group["pids"][:2] and prov["strategy"] == "random"
    assert len({prov["sources"][1] for *_, prov in mixes}) == 3  # distinct negatives first
    assert group == _group("q7", n_pos=2, n_neg=3)  # the input is not changed


@FAST
@given(seed=st.integers(0, 1000), words=st.integers(1, 40), rho_mix=rhos, rho_mask=rhos,
       mix=st.sampled_from(["span", "interleave"]), token=st.sampled_from(["[MASK]", None]),
       strategy=st.sampled_from(["random", "query_overlap_first"]))
def test_every_dark_word_is_a_source_word_or_the_mask(seed, words, rho_mix, rho_mask, mix,
                                                      token, strategy):
    """Guards an edit that splits a word, glues two words, or invents text: every word of a
    dark example is a word of its source texts or the mask token."""
    group = _group(f"q{seed}", words=words, seed=seed)
    spec = DarkSpec(k=4, rho_mix=rho_mix, rho_mask=rho_mask, mix_strategy=mix,
                    mask_strategy=strategy, mask_token=token, seed=seed)
    out = add_dark_examples(group, spec)
    validate_group(out)
    by_pid = dict(zip(out["pids"], out["texts"], strict=True))
    for _, _, text, prov in _dark(out):
        allowed = {w for pid in prov["sources"] for w in by_pid[pid].split()} | {token}
        assert set(text.split()) <= allowed
        assert text == " ".join(text.split())


@pytest.mark.parametrize("mix", ["span", "interleave"])
@pytest.mark.parametrize("token", ["[MASK]", None])
def test_max_length_respected_with_minilm_tokenizer(minilm_path, mix, token):
    """Guards dark texts longer than the model's max length (silently truncated mid-word by
    the teacher, or an error), and cuts that leave part of a word."""
    rng = random.Random(3)
    vocab = (LONG_WORDS + POS_VOCAB, LONG_WORDS + NEG_VOCAB)
    groups = [_group(f"q{i}", n_neg=2, words=300, vocab=vocab, seed=i) for i in range(3)]
    spec = DarkSpec(k=4, mix_strategy=mix, mask_token=token, rho_mix=0.5, seed=rng.randint(0, 99))
    budget = LengthBudget(minilm_path, 48)
    tok = budget.tokenizer
    for group in groups:
        out, outcome = make_dark_examples(group, spec, budget=budget)
        assert dict(outcome.made) == {"dark_mix": 2, "dark_mask": 2}
        sources = {w for t in group["texts"] for w in t.split()} | {token}
        for _, _, text, _ in _dark(out):
            assert len(tok(text)["input_ids"]) <= 48
            assert set(text.split()) <= sources
        for text in group["texts"]:  # the cut is the longest whole-word prefix that fits
            words = text.split()
            kept = budget.fit(words)
            assert kept == words[: len(kept)] and len(tok(" ".join(kept))["input_ids"]) <= 48
            assert len(tok(" ".join(words[: len(kept) + 1]))["input_ids"]) > 48
    # a word budget without a tokenizer; and no budget: capped at the longest source
    out = add_dark_examples(groups[0], spec, max_length=17)
    assert all(len(t.split()) <= 17 for _, _, t, _ in _dark(out))
    out = add_dark_examples(groups[0], spec)
    assert all(len(t.split()) <= 300 for _, _, t, _ in _dark(out))
    with pytest.raises(ValueError, match="special tokens"):
        LengthBudget(minilm_path, 2)


def test_same_seed_same_dark_examples_other_seed_different():
    """Guards non-determinism (global RNG state, set iteration order): a run cannot be
    reproduced or its teacher scores re-used from the cache."""
    groups = [_group(f"q{i}", seed=i) for i in range(6)]
    spec = DarkSpec(k=4, mix_strategy="interleave", mask_strategy="query_overlap_first")
    np.random.seed(1)
    random.seed(1)
    a = [add_dark_examples(g, spec) for g in groups]
    np.random.seed(2)
    random.seed(2)
    assert [add_dark_examples(g, spec) for g in groups] == a
    other = [add_dark_examples(g, spec.model_copy(update={"seed": 99})) for g in groups]
    assert [g["texts"] for g in other] != [g["texts"] for g in a]
    assert [g["pids"] for g in other] == [g["pids"] for g in a]


def test_order_and_sharding_do_not_change_a_querys_dark_examples():
    """Guards a generator shared across a batch: a query's dark examples would then depend on
    which queries came before it, so re-sharding would change the training data."""
    groups = [_group(f"q{i}", n_pos=1 + i % 2, seed=i) for i in range(12)]
    spec = DarkSpec(k=3)
    whole = {g["qid"]: g for g in iter_dark_groups(groups, spec)}
    shuffled = groups[:]
    random.Random(5).shuffle(shuffled)
    shards = [shuffled[0::3], shuffled[1::3], shuffled[2::3]]
    for shard in shards:
        for g in iter_dark_groups(shard, spec):
            assert g == whole[g["qid"]]


def test_groups_without_positive_or_negative_are_kept_and_reported(tmp_path):
    """Guards queries dropped silently: a group without a labelled positive must come out
    unchanged and be counted; one without negatives still gets its masks, and the missing
    mix-ups are counted."""
    groups = [
        _group("ok"),
        {"qid": "nopos", "query": "a", "pids": ["x", "y"], "texts": ["a b", "c d"],
         "labels": [0, 0]},
        _group("noneg", n_neg=0),
    ]
    write_groups_jsonl(tmp_path / "in.jsonl", groups)
    report = write_dark_groups(tmp_path / "in.jsonl", tmp_path / "out.parquet", DarkSpec(k=4))
    out = {g["qid"]: g for g in iter_groups(tmp_path / "out.parquet")}
    assert list(out) == ["ok", "nopos", "noneg"]
    assert out["nopos"] == groups[1]
    assert [k for k in out["noneg"]["kinds"]] == ["pos", "dark_mask", "dark_mask"]
    assert report.queries == 3 and report.with_dark == 2
    assert report.skipped == {"no_positive": 1, "no_negative": 1}
    assert report.examples == {"no_positive": ["nopos"], "no_negative": ["noneg"]}
    assert dict(report.dark) == {"dark_mix": 2, "dark_mask": 4}
    assert "no_positive: 1" in report.summary()


def test_already_dark_is_left_alone_and_scored_groups_are_refused():
    """Guards a second pass doubling the dark examples, and dark examples added after teacher
    scoring (they would have no teacher score, which the loss cannot take)."""
    spec = DarkSpec(k=2)
    once, outcome = make_dark_examples(_group("q"), spec)
    twice, again = make_dark_examples(once, spec)
    assert twice == once and again.skipped == ("already_dark",)
    scored = dict(_group("q"), teacher_scores=[1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="before teacher scoring"):
        add_dark_examples(scored, spec)
    with pytest.raises(ValueError, match="mask_token"):
        add_dark_examples(_group("q"), DarkSpec(mask_token="[ MASK ]"))


def test_provenance_contract_is_validated():
    """Guards provenance that is not "" or a JSON object being written and failing later, and
    a provenance list misaligned with the candidates."""
    good = dict(_group("q", n_neg=1), provenance=["", '{"sources": ["a"]}'])
    validate_group(good)
    with pytest.raises(DataError, match=r"provenance\[1\]"):
        validate_group(dict(good, provenance=["", "[1, 2]"]))
    with pytest.raises(DataError, match=r"provenance\[0\]"):
        validate_group(dict(good, provenance=[None, ""]))
    with pytest.raises(DataError, match="provenance"):
        validate_group(dict(good, provenance=[""]))


# --------------------------------------------------------------- Ray and files


def test_ray_stage_equals_the_pure_function(ray_local, tmp_path, minilm_path):
    """Guards the Ray stage diverging from the pure function (columns lost, batch-dependent
    randomness, tokenizer not applied) and a report that misses or double-counts queries."""
    groups = [_group(f"q{i}", n_pos=1 + i % 2, words=80, seed=i) for i in range(9)]
    groups.append({"qid": "nopos", "query": "a", "pids": ["x"], "texts": ["b"], "labels": [0]})
    write_groups_jsonl(tmp_path / "g.jsonl", groups)
    spec = DarkSpec(k=3, mix_strategy="interleave", mask_token=None)
    report = DarkReport()
    ds = dark_examples_stage(groups_dataset(tmp_path / "g.jsonl"), spec,
                             tokenizer_path=minilm_path, max_length=40, report=report,
                             groups_per_batch=4)
    rows = []
    for batch in ds.iter_batches(batch_size=3, batch_format="pyarrow"):
        assert batch.schema.names == CANDIDATE_GROUP_SCHEMA.names
        rows.extend(_strip_nulls(r) for r in batch.to_pylist())
    want = [add_dark_examples(g, spec, minilm_path, 40) for g in groups]
    assert sorted(rows, key=lambda g: g["qid"]) == sorted(want, key=lambda g: g["qid"])
    assert report.as_dict()["queries"] == 10 and report.skipped == {"no_positive": 1}
    assert dict(report.dark) == {"dark_mix": 18, "dark_mask": 9}


def test_written_groups_pass_validation_and_keep_the_schema(tmp_path, minilm_path):
    """Guards a written file that the readers reject (bad provenance, misaligned lists) or
    whose schema drifts from the candidate-group contract."""
    groups = [_group(f"q{i}", seed=i, words=50) for i in range(5)]
    write_groups_jsonl(tmp_path / "in.jsonl", groups)
    spec = DarkSpec(k=4, mask_strategy="query_overlap_first")
    report = write_dark_groups(tmp_path / "in.jsonl", tmp_path / "out.parquet", spec,
                               tokenizer=minilm_path, max_length=32)
    assert pq.read_schema(tmp_path / "out.parquet").remove_metadata() == CANDIDATE_GROUP_SCHEMA
    out = list(iter_groups(tmp_path / "out.parquet"))
    assert len(out) == 5 and report.with_dark == 5
    for line, group in enumerate(out, start=1):
        validate_group(group, tmp_path / "out.parquet", line)
        assert len(_dark(group)) == 4

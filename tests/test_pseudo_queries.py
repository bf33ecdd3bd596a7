"""Pseudo-queries from corpus passages (inverse cloze): determinism, removal, bounds, rules."""

from __future__ import annotations

import random

import pytest

from raykd.data.pseudo_queries import (
    EMPTY_REMAINDER,
    EMPTY_TITLE,
    NO_ELIGIBLE_SENTENCE,
    RULES,
    PseudoQuery,
    make_pseudo_queries,
    normalize_text,
    sample_passages,
    split_sentences,
    stable_hash,
)
from raykd.errors import ConfigError

SENTENCES = {
    "p1": ["Mitosis splits one nucleus into two identical nuclei.",
           "The spindle pulls the sister chromatids apart.",
           "Cytokinesis then divides the cytoplasm of the cell.",
           "Errors in this process can lead to cancer."],
    "p2": ["Vitamin D helps the body absorb calcium from food.",
           "Elderly people often take it as a daily supplement.",
           "Some trials found fewer hip fractures with supplements.",
           "Other trials found no effect on fracture rates at all."],
    "p3": ["The Rhine flows from the Swiss Alps to the North Sea.",
           "It passes through six countries on the way.",
           "Barges carry coal and grain along its lower course.",
           "Floods in spring are common after heavy snowfall."],
    "p4": ["Neural retrievers encode queries and passages as vectors.",
           "Distillation trains a small student from a large teacher.",
           "The teacher scores are soft labels for the student.",
           "Hard negatives make the training signal sharper."],
    "p5": ["Bees communicate the location of flowers by dancing.",
           "The waggle dance encodes both direction and distance.",
           "Foragers follow the dance and fly to the food.",
           "A colony can hold tens of thousands of workers."],
    "p6": ["Granite forms when magma cools slowly underground.",
           "Its large crystals show how slow the cooling was.",
           "Basalt cools quickly at the surface instead.",
           "Both rocks are igneous in origin and very hard."],
}
TITLES = {"p1": "Cell division", "p2": "Vitamin D", "p3": "Rhine", "p4": "Distillation",
          "p5": "Honey bees", "p6": ""}
PASSAGES = [(pid, TITLES[pid], " ".join(s)) for pid, s in SENTENCES.items()]


def test_same_seed_same_output_and_input_order_irrelevant():
    one, _ = make_pseudo_queries(PASSAGES, count=None)
    two, _ = make_pseudo_queries(list(PASSAGES), count=None)
    shuffled = list(PASSAGES)
    random.Random(3).shuffle(shuffled)
    three, _ = make_pseudo_queries(iter(shuffled), count=None)
    assert one == two == three
    assert len(one) == 6 and all(isinstance(q, PseudoQuery) for q in one)
    assert {q.qid for q in one} == {f"pseudo:{pid}" for pid in SENTENCES}


def test_different_seed_changes_the_sentence_choice():
    texts = {seed: [q.text for q in sorted(make_pseudo_queries(PASSAGES, count=None, seed=seed)[0],
                                            key=lambda q: q.pid)]
             for seed in (1, 2)}
    assert texts[1] != texts[2]
    chosen = {seed: set(t) for seed, t in texts.items()}
    every = {s for group in SENTENCES.values() for s in group}
    assert chosen[1] <= every and chosen[2] <= every


def test_chosen_sentence_is_removed_and_the_rest_intact():
    queries, report = make_pseudo_queries(PASSAGES, count=None, seed=5)
    assert report.made == 6 and not report.skipped
    for q in queries:
        sentences = SENTENCES[q.pid]
        assert q.text in sentences
        assert q.text not in q.passage_text
        rest = " ".join(s for s in sentences if s != q.text)
        title = TITLES[q.pid]
        assert q.passage_text == (f"{title} {rest}" if title else rest)


def test_length_bounds_and_skip_reasons():
    twelve = "Twelve " + " ".join(["words"] * 11) + "."
    passages = [
        ("long", "", "Tiny one. This sentence has exactly eight words in it. " + twelve),
        ("short", "T", "Too short. Also short. Nope."),
        ("single", "T", "Only one sentence sits in this passage here."),
    ]
    queries, report = make_pseudo_queries(passages, count=None, min_words=3, max_words=10)
    assert [q.text for q in queries] == ["This sentence has exactly eight words in it."]
    assert queries[0].passage_text == "Tiny one. " + twelve
    assert dict(report.skipped) == {NO_ELIGIBLE_SENTENCE: 1, EMPTY_REMAINDER: 1}
    assert (report.read, report.sampled, report.made, report.excluded) == (3, 3, 1, 0)
    for seed in range(20):
        for q in make_pseudo_queries(PASSAGES, count=None, seed=seed, max_words=8)[0]:
            assert 5 <= len(q.text.split()) <= 8


def test_title_rule():
    passages = PASSAGES + [("p7", "  ", "A passage without any title at all here.")]
    queries, report = make_pseudo_queries(passages, count=None, rule="title")
    assert {q.pid: q.text for q in queries} == {p: t for p, t in TITLES.items() if t}
    for q in queries:
        assert q.passage_text == " ".join(SENTENCES[q.pid])
    assert dict(report.skipped) == {EMPTY_TITLE: 2}  # p6 and p7


def test_first_sentence_rule():
    passages = PASSAGES + [("p8", "", "Short first. Then a sentence long enough to qualify.")]
    queries, report = make_pseudo_queries(passages, count=None, rule="first_sentence")
    for q in queries:
        assert q.text == SENTENCES[q.pid][0]
        rest = " ".join(SENTENCES[q.pid][1:])
        assert q.passage_text == (f"{TITLES[q.pid]} {rest}" if TITLES[q.pid] else rest)
    assert len(queries) == 6
    assert dict(report.skipped) == {NO_ELIGIBLE_SENTENCE: 1}


def test_abbreviations_are_not_sentence_breaks():
    text = ("Some cells, e.g. the neurons, never divide again. Fig. 2 shows the counts in "
            "each tissue. Dr. Smith measured them in the U.S. Army lab. Is it true? Yes.")
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == ["Some cells, e.g. the neurons, never divide again.",
                   "Fig. 2 shows the counts in each tissue.",
                   "Dr. Smith measured them in the U.S. Army lab.",
                   "Is it true?", "Yes."]
    queries, _ = make_pseudo_queries([("a", "", text)], count=1, rule="first_sentence")
    assert queries[0].text == "Some cells, e.g. the neurons, never divide again."
    assert queries[0].passage_text.startswith("Fig. 2 shows")


def test_exclusion_of_labelled_query_texts():
    labelled = ["  mitosis SPLITS one nucleus\tinto two identical   nuclei  ",
                "Vitamin D helps the body absorb calcium from food?"]
    queries, report = make_pseudo_queries(PASSAGES, count=None, rule="first_sentence",
                                          exclude_texts=labelled)
    assert {q.pid for q in queries} == {"p3", "p4", "p5", "p6"}
    assert report.excluded == 2 and report.made == 4
    assert normalize_text(" A  B.c. ") == normalize_text("a b.C") == "a b.c"


def test_sample_passages_is_order_free_and_nested():
    pids = [f"d{i}" for i in range(50)]
    three = sample_passages(pids, 3, seed=1)
    assert three == sample_passages(list(reversed(pids)), 3, seed=1)
    assert sample_passages(pids, 10, seed=1)[:3] == three
    assert sample_passages(pids, 3, seed=2) != three
    assert sorted(sample_passages(pids, None, seed=1)) == sorted(pids)
    assert sample_passages(pids, 500, seed=1) == sample_passages(pids, None, seed=1)
    assert len(sample_passages(pids + pids, 60, seed=1)) == 50
    ranked = sorted(pids, key=lambda p: stable_hash(1, p))
    assert three == ranked[:3]


def test_make_uses_the_passage_sample():
    for seed in (1, 2, 3):
        queries, report = make_pseudo_queries(PASSAGES, count=2, seed=seed)
        assert [q.pid for q in queries] == sample_passages(SENTENCES, 2, seed)
        assert (report.read, report.sampled, report.made) == (6, 2, 2)


def test_stable_hash_is_fixed():
    """Guards reproducibility across processes and versions (never Python's salted hash())."""
    assert stable_hash(13, "p1") == stable_hash(13, "p1")
    assert stable_hash(13, "p1") != stable_hash(14, "p1")
    assert stable_hash(13, "p1", "sample") != stable_hash(13, "p1", "sentence")
    assert stable_hash(13, "p1") == 15404645720496502503  # blake2b, 8 bytes, person "sample"


def test_summary_is_one_line():
    passages = PASSAGES + [("x", "", "Too short.")]
    _, report = make_pseudo_queries(passages, count=None, exclude_texts=[])
    line = report.summary()
    assert "\n" not in line
    assert "6 made from 7 sampled of 7 passages" in line
    assert f"{NO_ELIGIBLE_SENTENCE}=1" in line and "excluded 0" in line


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"rule": "bogus"}, "data.pseudo.rule", "first_sentence, sentence, title"),
        ({"count": 0}, "data.pseudo.count", "positive"),
        ({"count": 2.5}, "data.pseudo.count", "positive"),
        ({"min_words": 10, "max_words": 5}, "data.pseudo.min_words", "larger than max_words"),
        ({"max_words": 0}, "data.pseudo.max_words", "positive"),
    ],
)
def test_config_errors_name_the_field(kwargs, field, text):
    kwargs = {"count": 3, **kwargs}
    with pytest.raises(ConfigError, match=text) as err:
        make_pseudo_queries(PASSAGES, **kwargs)
    assert err.value.field == field
    assert field in str(err.value)


def test_other_bad_inputs():
    assert set(RULES) == {"sentence", "first_sentence", "title"}
    with pytest.raises(TypeError, match="values"):
        make_pseudo_queries(PASSAGES, count=3, exclude_texts={"q1": "some query"})
    with pytest.raises(ValueError, match="duplicate pid 'p1'"):
        make_pseudo_queries(PASSAGES + PASSAGES[:1], count=None)

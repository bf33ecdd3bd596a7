"""Round trips: every format written by raykd.data reads back as the same records."""

from __future__ import annotations

import gzip
import json
import math

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raykd.data import (
    CANDIDATE_GROUP_SCHEMA,
    beir,
    iter_corpus_parquet,
    iter_groups,
    iter_groups_jsonl,
    iter_hofstatter,
    msmarco,
    passage_text,
    read_groups_parquet,
    validate_group,
    write_corpus_parquet,
    write_groups_jsonl,
    write_groups_parquet,
    write_hofstatter,
)

CORPUS = [
    {"pid": "d1", "title": "Cells", "text": "Mitochondria make ATP."},
    {
        "pid": "d2",
        "title": "",
        "text": 'Quotes " and \\ backslashes, tabs\there, a newline\nthere.',
    },
    {"pid": "10", "title": "Ünïcödé — 中文", "text": "émoji 🧬 text"},
]
GROUPS = [
    {
        "qid": "q1",
        "query": "what makes ATP?",
        "pids": ["d1", "d2", "10"],
        "texts": ["Mitochondria make ATP.", "Quotes", "émoji 🧬"],
        "labels": [1, 0, 0],
    },
    {
        "qid": "q2",
        "query": "dark examples",
        "pids": ["d1", "d1#mix", "d1#mask"],
        "texts": ["a", "b", "c"],
        "labels": [1, 0, 0],
        "teacher_scores": [12.5, -3.0000000000000004, 1e-300],
        "kinds": ["pos", "dark_mix", "dark_mask"],
    },
]

# Text that survives a TSV cell: no tab / line break, not blank, valid UTF-8.
tsv_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip())
ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-#", min_size=1, max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def test_passage_text_follows_beir_convention():
    assert passage_text("Title", "body") == "Title body"
    assert passage_text("", "body") == "body"
    assert passage_text("Title ", " body ") == "Title   body"  # inner spaces kept, ends stripped
    assert passage_text("", "  body ") == "  body "  # no title: text unchanged


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_beir_corpus_round_trip(tmp_path, name):
    path = tmp_path / name
    assert beir.write_corpus(path, CORPUS) == 3
    assert list(beir.iter_corpus(path)) == CORPUS
    if name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            assert json.loads(f.readline()) == {
                "_id": "d1",
                "title": "Cells",
                "text": CORPUS[0]["text"],
            }


def test_beir_corpus_gz_is_reproducible(tmp_path):
    beir.write_corpus(tmp_path / "a.jsonl.gz", CORPUS)
    beir.write_corpus(tmp_path / "b.jsonl.gz", CORPUS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


def test_beir_queries_and_qrels_round_trip(tmp_path):
    queries = {"0": "0-dimensional biomaterials", "q2": "émoji 🧬?"}
    qrels = {"0": {"d1": 1, "d2": 0}, "q2": {"10": 2}}
    beir.write_queries(tmp_path / "queries.jsonl", queries)
    beir.write_qrels(tmp_path / "qrels.tsv", qrels)
    assert beir.read_queries(tmp_path / "queries.jsonl") == queries
    assert beir.read_qrels(tmp_path / "qrels.tsv") == qrels
    assert (tmp_path / "qrels.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"


def test_beir_qrels_tolerates_crlf_and_queries_ignore_metadata(tmp_path):
    (tmp_path / "q.tsv").write_bytes(
        b"query-id\tcorpus-id\tscore\r\n1\t31715818\t1\r\n3\t14717500\t1\r\n"
    )
    assert beir.read_qrels(tmp_path / "q.tsv") == {"1": {"31715818": 1}, "3": {"14717500": 1}}
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "2", "text": "claim", "metadata": {"137": [{"label": "SUPPORT"}]}})
        + "\n"
    )
    assert beir.read_queries(tmp_path / "queries.jsonl") == {"2": "claim"}


def test_msmarco_round_trips(tmp_path):
    collection = [
        {"pid": "0", "title": "", "text": "The presence of communication"},
        {"pid": "7", "title": "", "text": "ü ü"},
    ]
    queries = {"1048585": "what is paula deen's brother", "2": "  spaces kept  "}
    qrels = {"1048585": {"7187158": 1}, "2": {"0": 1, "7": 0}}
    msmarco.write_collection(tmp_path / "collection.tsv", collection)
    msmarco.write_queries(tmp_path / "queries.tsv", queries)
    msmarco.write_qrels(tmp_path / "qrels.tsv", qrels)
    assert list(msmarco.iter_collection(tmp_path / "collection.tsv")) == collection
    assert msmarco.read_queries(tmp_path / "queries.tsv") == queries
    assert msmarco.read_qrels(tmp_path / "qrels.tsv") == qrels
    assert (tmp_path / "qrels.tsv").read_text().splitlines()[0] == "1048585\t0\t7187158\t1"


def test_msmarco_qrels_accept_spaces_and_q0(tmp_path):
    (tmp_path / "dl.txt").write_text("19335 Q0 1017759 0\n19335  0\t1082489 3\n")
    assert msmarco.read_qrels(tmp_path / "dl.txt") == {"19335": {"1017759": 0, "1082489": 3}}


@pytest.mark.parametrize("form", ["text", "ids"])
def test_msmarco_triples_round_trip(tmp_path, form):
    cols = msmarco.TRIPLE_COLUMNS[form]
    rows = [
        dict(zip(cols, ("a q", "pos text", "neg text"), strict=True)),
        dict(zip(cols, ("1", "2", "3"), strict=True)),
    ]
    path = tmp_path / f"triples.{form}.tsv.gz"
    assert msmarco.write_triples(path, rows, form) == 2
    assert list(msmarco.iter_triples(path, form)) == rows


@pytest.mark.parametrize("form", ["text", "ids"])
def test_hofstatter_round_trip_is_bit_exact(tmp_path, form):
    tail = msmarco.TRIPLE_COLUMNS[form]
    scores = [(13.5, -2.25), (0.1 + 0.2, 1e-310), (-0.0, 123456789.123456789)]
    rows = [
        {
            "score_pos": a,
            "score_neg": b,
            **dict(zip(tail, (f"q{i}", f"p{i}", f"n{i}"), strict=True)),
        }
        for i, (a, b) in enumerate(scores)
    ]
    path = tmp_path / "scores.tsv"
    write_hofstatter(path, rows, form)
    back = list(iter_hofstatter(path, form))
    assert back == rows
    assert all(
        math.copysign(1, r["score_pos"]) == math.copysign(1, o["score_pos"])
        for r, o in zip(back, rows, strict=True)
    )


def test_hofstatter_reads_integer_and_exponent_scores(tmp_path):
    (tmp_path / "s.tsv").write_text("12\t-1.5E+01\t5\t6\t7\n")
    assert list(iter_hofstatter(tmp_path / "s.tsv", "ids")) == [
        {"score_pos": 12.0, "score_neg": -15.0, "qid": "5", "pid_pos": "6", "pid_neg": "7"}
    ]


@pytest.mark.parametrize("name", ["groups.jsonl", "groups.jsonl.gz", "groups.parquet"])
def test_groups_round_trip(tmp_path, name):
    path = tmp_path / name
    writer = write_groups_parquet if name.endswith(".parquet") else write_groups_jsonl
    assert writer(path, GROUPS) == 2
    assert list(iter_groups(path)) == GROUPS
    for group in GROUPS:
        validate_group(group, path, 1)


def test_groups_parquet_has_the_contract_schema(tmp_path):
    write_groups_parquet(tmp_path / "g.parquet", GROUPS)
    assert pq.read_schema(tmp_path / "g.parquet").remove_metadata() == CANDIDATE_GROUP_SCHEMA
    assert list(read_groups_parquet(tmp_path / "g.parquet")) == GROUPS
    write_groups_parquet(tmp_path / "empty.parquet", [])
    assert list(read_groups_parquet(tmp_path / "empty.parquet")) == []


def test_corpus_parquet_round_trip(tmp_path):
    write_corpus_parquet(tmp_path / "c.parquet", CORPUS)
    assert list(iter_corpus_parquet(tmp_path / "c.parquet")) == CORPUS


def test_readers_are_lazy_generators(tmp_path):
    beir.write_corpus(tmp_path / "c.jsonl", CORPUS)
    it = beir.iter_corpus(tmp_path / "c.jsonl")
    assert next(it) == CORPUS[0]  # one row parsed, the rest not yet read
    write_groups_jsonl(tmp_path / "g.jsonl", GROUPS)
    assert next(iter_groups_jsonl(tmp_path / "g.jsonl")) == GROUPS[0]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(ids, tsv_text, tsv_text, tsv_text, finite, finite), min_size=1, max_size=6
    )
)
def test_tsv_formats_round_trip_any_text(tmp_path, rows):
    collection = {pid: text for pid, text, *_ in rows}
    col_rows = [{"pid": pid, "title": "", "text": text} for pid, text in collection.items()]
    msmarco.write_collection(tmp_path / "c.tsv", col_rows)
    assert list(msmarco.iter_collection(tmp_path / "c.tsv")) == col_rows
    msmarco.write_queries(tmp_path / "q.tsv", collection)
    assert msmarco.read_queries(tmp_path / "q.tsv") == collection
    hof = [
        {"score_pos": a, "score_neg": b, "query": q, "passage_pos": p, "passage_neg": n}
        for _, q, p, n, a, b in rows
    ]
    write_hofstatter(tmp_path / "h.tsv", hof, "text")
    assert list(iter_hofstatter(tmp_path / "h.tsv", "text")) == hof


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    docs=st.dictionaries(
        ids,
        st.tuples(st.text(alphabet=st.characters(blacklist_categories=("Cs",))), tsv_text),
        min_size=1,
        max_size=5,
    ),
    scores=st.lists(finite, min_size=1, max_size=5),
)
def test_json_formats_round_trip_any_text(tmp_path, docs, scores):
    rows = [{"pid": pid, "title": title, "text": text} for pid, (title, text) in docs.items()]
    beir.write_corpus(tmp_path / "c.jsonl.gz", rows)
    assert list(beir.iter_corpus(tmp_path / "c.jsonl.gz")) == rows
    n = len(scores)
    group = {
        "qid": "q",
        "query": rows[0]["text"],
        "pids": [f"p{i}" for i in range(n)],
        "texts": [rows[0]["text"]] * n,
        "labels": [1] + [0] * (n - 1),
        "teacher_scores": scores,
    }
    write_groups_jsonl(tmp_path / "g.jsonl", [group])
    write_groups_parquet(tmp_path / "g.parquet", [group])
    assert list(iter_groups_jsonl(tmp_path / "g.jsonl")) == [group]
    assert list(read_groups_parquet(tmp_path / "g.parquet")) == [group]

"""Bad input: each case is a DataError whose message names the file, the line and the field;
under on_error="skip" every bad row is counted in a SkipReport, never dropped silently."""

from __future__ import annotations

import json
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.data import (
    BeirDataset,
    SkippedRowsWarning,
    SkipReport,
    beir,
    iter_corpus_parquet,
    iter_groups_jsonl,
    iter_hofstatter,
    msmarco,
    read_groups_parquet,
    validate_group,
    write_groups_jsonl,
    write_groups_parquet,
    write_hofstatter,
)
from raykd.errors import DataError

GOOD_GROUP = {
    "qid": "q1",
    "query": "a query",
    "pids": ["p1", "p2"],
    "texts": ["t1", "t2"],
    "labels": [1, 0],
}


def _lines(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else r.encode()) + b"\n" for r in rows)


def _j(**obj) -> bytes:
    return json.dumps(obj).encode()


def expect_error(call, path, line, field, *words):
    """Run ``call``; assert a DataError naming path:line, the field and each of ``words``."""
    with pytest.raises(DataError) as info:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
    msg = str(info.value)
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in msg, msg
    if field is not None:
        assert f"field '{field}'" in msg, msg
    for word in words:
        assert word in msg, msg
    return info.value


# --------------------------------------------------------------- BEIR corpus / queries

DOC = _j(_id="d1", title="T", text="x")
QUERY = _j(_id="q1", text="a claim", metadata={"d1": [{"label": "SUPPORT"}]})

BEIR_CASES = [
    # (name, reader, file lines, line, field, words)
    (
        "corpus-bad-json",
        beir.iter_corpus,
        [DOC, b'{"_id": "d2", "text": '],
        2,
        None,
        ["malformed JSON"],
    ),
    ("corpus-not-object", beir.iter_corpus, [DOC, b'["d2", "x"]'], 2, None, ["JSON object"]),
    (
        "corpus-missing-text",
        beir.iter_corpus,
        [DOC, _j(_id="d2", title="t")],
        2,
        "text",
        ["missing field"],
    ),
    ("corpus-missing-id", beir.iter_corpus, [_j(title="t", text="x")], 1, "_id", ["missing field"]),
    ("corpus-int-id", beir.iter_corpus, [_j(_id=5, text="x")], 1, "_id", ["must be a string"]),
    (
        "corpus-duplicate",
        beir.iter_corpus,
        [DOC, _j(_id="d2", text="y"), DOC],
        3,
        "_id",
        ["duplicate", "'d1'", "line 1"],
    ),
    (
        "corpus-empty-text",
        beir.iter_corpus,
        [DOC, _j(_id="d2", title=" ", text=" \t ")],
        2,
        "text",
        ["empty text"],
    ),
    (
        "corpus-bad-utf8",
        beir.iter_corpus,
        [DOC, b'{"_id": "d2", "text": "caf\xe9"}'],
        2,
        "text",
        ["UTF-8", "0xe9", "byte offset 26"],
    ),
    ("queries-bad-json", beir.read_queries, [QUERY, b"{_id: q2}"], 2, None, ["malformed JSON"]),
    (
        "queries-missing-text",
        beir.read_queries,
        [QUERY, _j(_id="q2", metadata={})],
        2,
        "text",
        ["missing field"],
    ),
    ("queries-duplicate", beir.read_queries, [QUERY, QUERY], 2, "_id", ["duplicate", "line 1"]),
    (
        "queries-empty-text",
        beir.read_queries,
        [QUERY, _j(_id="q2", text="   ")],
        2,
        "text",
        ["empty text"],
    ),
    (
        "queries-bad-utf8",
        beir.read_queries,
        [b'{"_id": "q2", "text": "\xff"}'],
        1,
        "text",
        ["0xff"],
    ),
    (
        "qrels-columns",
        beir.read_qrels,
        ["query-id\tcorpus-id\tscore", "q1\td1\t1\textra"],
        2,
        None,
        ["expected 3 tab-separated"],
    ),
    (
        "qrels-missing-score",
        beir.read_qrels,
        ["query-id\tcorpus-id\tscore", "q1\td1"],
        2,
        "score",
        ["missing column"],
    ),
    (
        "qrels-bad-score",
        beir.read_qrels,
        ["query-id\tcorpus-id\tscore", "q1\td1\tyes"],
        2,
        "score",
        ["integer"],
    ),
    (
        "qrels-duplicate",
        beir.read_qrels,
        ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2\t1", "q1\td1\t0"],
        4,
        "corpus-id",
        ["duplicate", "line 2"],
    ),
    (
        "qrels-empty-id",
        beir.read_qrels,
        ["query-id\tcorpus-id\tscore", "q1\t \t1"],
        2,
        "corpus-id",
        ["empty id"],
    ),
    ("qrels-bad-header", beir.read_qrels, ["qid\tdocid\trel", "q1\td1\t1"], 1, None, ["header"]),
    (
        "qrels-bad-utf8",
        beir.read_qrels,
        [b"query-id\tcorpus-id\tscore", b"q1\td\xc3\x281\t1"],
        2,
        "corpus-id",
        ["UTF-8", "byte offset 4"],
    ),
]


@pytest.mark.parametrize("case", BEIR_CASES, ids=[c[0] for c in BEIR_CASES])
def test_beir_bad_input(tmp_path, case):
    name, reader, rows, line, field, words = case
    path = tmp_path / (f"{name}.tsv" if name.startswith("qrels") else f"{name}.jsonl")
    path.write_bytes(_lines(*rows))
    expect_error(lambda: reader(path), path, line, field, *words)


def test_beir_corpus_gz_error_names_gz_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    beir.write_corpus(
        path, [{"pid": "a", "title": "", "text": "x"}, {"pid": "b", "title": "", "text": "y"}]
    )
    good = tmp_path / "plain.jsonl"
    good.write_bytes(_lines(DOC, _j(_id="d2", text="")))
    import gzip

    path.write_bytes(gzip.compress(good.read_bytes()))
    expect_error(lambda: beir.iter_corpus(path), path, 2, "text", "empty text")


def _beir_dir(tmp_path, qrels_lines, queries=("q1", "q2")):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    beir.write_corpus(
        root / "corpus.jsonl", [{"pid": p, "title": "", "text": p} for p in ("d1", "d2")]
    )
    beir.write_queries(root / "queries.jsonl", {q: f"text {q}" for q in queries})
    (root / "qrels" / "test.tsv").write_bytes(_lines("query-id\tcorpus-id\tscore", *qrels_lines))
    return BeirDataset.from_dir(root)


def test_beir_qrels_id_absent_from_corpus(tmp_path):
    ds = _beir_dir(tmp_path, ["q1\td1\t1", "q2\td2\t1", "q2\td9\t1"])
    assert ds.corpus_ids() == {"d1", "d2"}
    qrels_path = ds.root / "qrels" / "test.tsv"
    expect_error(
        lambda: ds.check_qrels_against_corpus("test"),
        qrels_path,
        4,
        "corpus-id",
        "'d9'",
        "not in the corpus",
    )


def test_beir_qrels_qid_absent_from_queries(tmp_path):
    ds = _beir_dir(tmp_path, ["q1\td1\t1", "q3\td2\t1"])
    qrels_path = ds.root / "qrels" / "test.tsv"
    expect_error(lambda: ds.queries("test"), qrels_path, 3, "query-id", "'q3'", "queries.jsonl")


def test_beir_missing_split_lists_available(tmp_path):
    ds = _beir_dir(tmp_path, ["q1\td1\t1"])
    err = expect_error(
        lambda: ds.qrels("dev"), ds.root / "qrels" / "dev.tsv", None, None, "available splits: test"
    )
    assert err.line is None
    with pytest.raises(DataError, match="no corpus.jsonl"):
        BeirDataset.from_dir(tmp_path)


# --------------------------------------------------------------- MS MARCO TSV

KNOWN = {"1", "2", "3"}

MSMARCO_CASES = [
    (
        "collection-columns",
        msmarco.iter_collection,
        ["1\tok", "2\ttext\twith tab"],
        2,
        None,
        ["expected 2 tab-separated", "found 3"],
    ),
    ("collection-missing", msmarco.iter_collection, ["1\tok", "2"], 2, "text", ["missing column"]),
    (
        "collection-duplicate",
        msmarco.iter_collection,
        ["1\tok", "2\tb", "1\tc"],
        3,
        "pid",
        ["duplicate", "line 1"],
    ),
    ("collection-empty", msmarco.iter_collection, ["1\tok", "2\t  "], 2, "text", ["empty text"]),
    ("collection-empty-id", msmarco.iter_collection, ["\tok"], 1, "pid", ["empty id"]),
    (
        "collection-bad-utf8",
        msmarco.iter_collection,
        [b"1\tok", b"2\tna\xefve"],
        2,
        "text",
        ["0xef", "byte offset 4"],
    ),
    ("queries-columns", msmarco.read_queries, ["1\ta\tb"], 1, None, ["expected 2"]),
    ("queries-missing", msmarco.read_queries, ["1"], 1, "query", ["missing column"]),
    (
        "queries-duplicate",
        msmarco.read_queries,
        ["1\ta", "1\tb"],
        2,
        "qid",
        ["duplicate", "line 1"],
    ),
    ("queries-empty", msmarco.read_queries, ["1\ta", "2\t "], 2, "query", ["empty text"]),
    ("queries-bad-utf8", msmarco.read_queries, [b"1\t\x80"], 1, "query", ["0x80"]),
    (
        "qrels-columns",
        msmarco.read_qrels,
        ["1 0 2 1 9"],
        1,
        None,
        ["expected 4 whitespace-separated"],
    ),
    ("qrels-missing", msmarco.read_qrels, ["1\t0\t2"], 1, "rel", ["missing column"]),
    ("qrels-bad-rel", msmarco.read_qrels, ["1\t0\t2\tx"], 1, "rel", ["integer"]),
    (
        "qrels-duplicate",
        msmarco.read_qrels,
        ["1 0 2 1", "1 0 2 0"],
        2,
        "pid",
        ["duplicate", "line 1"],
    ),
    ("qrels-bad-utf8", msmarco.read_qrels, [b"1 0 \xfe 1"], 1, "pid", ["0xfe", "byte offset 4"]),
    ("triples-columns", msmarco.iter_triples, ["q\tp\tn\tx"], 1, None, ["expected 3"]),
    ("triples-missing", msmarco.iter_triples, ["q\tp"], 1, "passage_neg", ["missing column"]),
    (
        "triples-empty",
        msmarco.iter_triples,
        ["q\tp\tn", "q\t\tn"],
        2,
        "passage_pos",
        ["empty text"],
    ),
    ("triples-bad-utf8", msmarco.iter_triples, [b"q\tp\tn\xc0"], 1, "passage_neg", ["0xc0"]),
]


@pytest.mark.parametrize("case", MSMARCO_CASES, ids=[c[0] for c in MSMARCO_CASES])
def test_msmarco_bad_input(tmp_path, case):
    name, reader, rows, line, field, words = case
    path = tmp_path / f"{name}.tsv"
    path.write_bytes(_lines(*rows))
    expect_error(lambda: reader(path), path, line, field, *words)


def test_msmarco_id_triples_checked_against_collection(tmp_path):
    msmarco.write_collection(
        tmp_path / "collection.tsv", [{"pid": p, "text": f"t{p}"} for p in sorted(KNOWN)]
    )
    known = {row["pid"] for row in msmarco.iter_collection(tmp_path / "collection.tsv")}
    path = tmp_path / "qidpidtriples.tsv"
    path.write_bytes(_lines("10\t1\t2", "11\t3\t7"))
    assert len(list(msmarco.iter_triples(path, "ids"))) == 2  # no check without known ids
    expect_error(
        lambda: msmarco.iter_triples(path, "ids", known_pids=known),
        path,
        2,
        "pid_neg",
        "'7'",
        "not in the collection",
    )
    expect_error(
        lambda: msmarco.iter_triples(path, "ids", known_qids={"10"}), path, 2, "qid", "'11'"
    )
    with pytest.raises(ValueError, match="form='ids'"):
        list(msmarco.iter_triples(path, "text", known_pids=known))
    with pytest.raises(ValueError, match="form must be"):
        list(msmarco.iter_triples(path, "pairs"))


# --------------------------------------------------------------- Hofstatter teacher scores

HOF_CASES = [
    ("text", ["1.5\t2\tq\tp\tn", "nan\t2\tq\tp\tn"], 2, "score_pos", ["not finite", "nan"]),
    ("text", ["1.5\t-inf\tq\tp\tn"], 1, "score_neg", ["not finite"]),
    ("text", ["NaN\t1\tq\tp\tn"], 1, "score_pos", ["not finite"]),
    ("text", ["high\t1\tq\tp\tn"], 1, "score_pos", ["not a number"]),
    ("text", ["1\t2\tq\tp\tn\textra"], 1, None, ["expected 5 tab-separated"]),
    ("text", ["1\t2\tq\tp"], 1, "passage_neg", ["missing column"]),
    ("text", ["1\t2\t \tp\tn"], 1, "query", ["empty text"]),
    ("text", [b"1\t2\tq\tp\xa0\tn"], 1, "passage_pos", ["0xa0", "byte offset 7"]),
    ("ids", ["1\t2\t\t3\t4"], 1, "qid", ["empty id"]),
]


@pytest.mark.parametrize(
    "case", HOF_CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(HOF_CASES)]
)
def test_hofstatter_bad_input(tmp_path, case):
    form, rows, line, field, words = case
    path = tmp_path / "scores.tsv"
    path.write_bytes(_lines(*rows))
    expect_error(lambda: iter_hofstatter(path, form), path, line, field, *words)


def test_hofstatter_ids_checked_against_collection(tmp_path):
    path = tmp_path / "scores.tsv"
    path.write_bytes(_lines("1\t2\t10\t1\t2", "1\t2\t10\t9\t2"))
    expect_error(
        lambda: iter_hofstatter(path, "ids", known_pids=KNOWN),
        path,
        2,
        "pid_pos",
        "'9'",
        "not in the collection",
    )


def test_writers_reject_bad_rows(tmp_path):
    path = tmp_path / "out.tsv"
    row = {
        "score_pos": float("nan"),
        "score_neg": 1.0,
        "query": "q",
        "passage_pos": "p",
        "passage_neg": "n",
    }
    expect_error(lambda: write_hofstatter(path, [row]), path, 1, "score_pos", "not finite")
    row = {**row, "score_pos": 1.0, "passage_neg": "has\ttab"}
    expect_error(lambda: write_hofstatter(path, [row]), path, 1, "passage_neg", "tab")
    assert not path.exists()  # nothing half-written
    bad = {**GOOD_GROUP, "labels": [1]}
    expect_error(
        lambda: write_groups_jsonl(tmp_path / "g.jsonl", [GOOD_GROUP | {"qid": "q0"}, bad]),
        tmp_path / "g.jsonl",
        2,
        "labels",
        "has 1 entries",
    )
    expect_error(
        lambda: write_groups_parquet(tmp_path / "g.parquet", [GOOD_GROUP, GOOD_GROUP]),
        tmp_path / "g.parquet",
        2,
        "qid",
        "duplicate",
    )
    expect_error(
        lambda: beir.write_corpus(tmp_path / "c.jsonl", [{"pid": "a", "text": " "}]),
        tmp_path / "c.jsonl",
        1,
        "text",
        "empty",
    )


# --------------------------------------------------------------- candidate groups


def _group(**changes):
    out = dict(GOOD_GROUP)
    for key, value in changes.items():
        if value is ...:
            out.pop(key)
        else:
            out[key] = value
    return json.dumps(out).encode()


GROUP_CASES = [
    ("bad-json", [_group(), b'{"qid": "q2", '], 2, None, ["malformed JSON"]),
    ("missing-labels", [_group(), _group(qid="q2", labels=...)], 2, "labels", ["missing field"]),
    ("duplicate-qid", [_group(), _group(qid="q2"), _group()], 3, "qid", ["duplicate", "line 1"]),
    ("empty-text", [_group(texts=["t1", "  "])], 1, "texts[1]", ["empty text"]),
    ("empty-query", [_group(query="")], 1, "query", ["empty text"]),
    (
        "bad-utf8",
        [b'{"qid": "q1", "query": "\xe2\x82", "pids": ["p"], "texts": ["t"], "labels": [1]}'],
        1,
        "query",
        ["UTF-8", "byte offset 24"],
    ),
    (
        "nan-score",
        [_group(teacher_scores=[1.0, float("nan")])],
        1,
        "teacher_scores[1]",
        ["not finite"],
    ),
    (
        "inf-score",
        [
            b'{"qid": "q1", "query": "q", "pids": ["p"], "texts": ["t"], "labels": [1], "teacher_scores": [Infinity]}'
        ],
        1,
        "teacher_scores[0]",
        ["not finite"],
    ),
    (
        "string-score",
        [_group(teacher_scores=["1.0", 2.0])],
        1,
        "teacher_scores[0]",
        ["must be a number"],
    ),
    ("length-mismatch", [_group(texts=["t1"])], 1, "texts", ["has 1 entries but pids has 2"]),
    (
        "no-candidates",
        [_group(pids=[], texts=[], labels=[])],
        1,
        "pids",
        ["at least one candidate"],
    ),
    ("bad-label", [_group(labels=[2, 0])], 1, "labels[0]", ["0 or 1"]),
    ("bool-label", [_group(labels=[True, False])], 1, "labels[0]", ["0 or 1"]),
    ("int-pid", [_group(pids=["p1", 2])], 1, "pids[1]", ["must be a string"]),
    ("unknown-kind", [_group(kinds=["pos", "hard"])], 1, "kinds[1]", ["unknown kind", "dark_mix"]),
    ("unknown-field", [_group(extra=1)], 1, "extra", ["unknown field"]),
    ("pids-not-list", [_group(pids="p1")], 1, "pids", ["expected a list"]),
]


@pytest.mark.parametrize("case", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_groups_jsonl_bad_input(tmp_path, case):
    name, rows, line, field, words = case
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(_lines(*rows))
    expect_error(lambda: iter_groups_jsonl(path), path, line, field, *words)


def test_validate_group_contract():
    validate_group(GOOD_GROUP, "mem", 1)
    validate_group(GOOD_GROUP | {"teacher_scores": [1, 2.5], "kinds": ["pos", "neg"]}, "mem", 1)
    with pytest.raises(
        DataError, match=r"^mem:7: field 'teacher_scores\[0\]': score is not finite"
    ):
        validate_group(GOOD_GROUP | {"teacher_scores": [float("inf"), 0.0]}, "mem", 7)


def test_groups_parquet_bad_rows(tmp_path):
    path = tmp_path / "g.parquet"
    rows = [
        GOOD_GROUP | {"teacher_scores": None},
        GOOD_GROUP | {"qid": "q2", "teacher_scores": [0.5, float("nan")]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)  # written around the validating writer
    expect_error(lambda: read_groups_parquet(path), path, 2, "teacher_scores[1]", "not finite")
    pq.write_table(pa.table({"qid": ["q"], "query": ["x"]}), path)
    expect_error(lambda: read_groups_parquet(path), path, None, "pids", "missing column")
    pq.write_table(pa.table({"pid": ["a", "a"], "text": ["x", "y"]}), path)
    expect_error(lambda: iter_corpus_parquet(path), path, 2, "pid", "duplicate", "line 1")


# --------------------------------------------------------------- skip mode

SKIP_CASES = [
    # (reader, suffix, lines, good rows, {line: reason})
    (
        beir.iter_corpus,
        "jsonl",
        [
            DOC,
            b"{",
            _j(_id="d2", text=""),
            DOC,
            b'{"_id": "d3", "text": "\xff"}',
            _j(_id="d4", text="ok"),
        ],
        2,
        {2: "malformed", 3: "empty_text", 4: "duplicate_id", 5: "encoding"},
    ),
    (
        beir.read_queries,
        "jsonl",
        [QUERY, _j(_id="q2"), QUERY, _j(_id="q3", text="x")],
        2,
        {2: "missing_field", 3: "duplicate_id"},
    ),
    (
        beir.read_qrels,
        "tsv",
        ["query-id\tcorpus-id\tscore", "q\td\t1", "q\td\tz", "q\td\t1", "q\te"],
        1,
        {3: "bad_value", 4: "duplicate_id", 5: "missing_field"},
    ),
    (
        msmarco.iter_collection,
        "tsv",
        ["1\ta", "2", "3\t ", "1\tb", "4\td"],
        2,
        {2: "missing_field", 3: "empty_text", 4: "duplicate_id"},
    ),
    (
        msmarco.iter_triples,
        "tsv",
        ["q\tp\tn", "q\tp\tn\tx", b"q\t\xff\tn"],
        1,
        {2: "malformed", 3: "encoding"},
    ),
    (
        iter_hofstatter,
        "tsv",
        ["1\t2\tq\tp\tn", "nan\t2\tq\tp\tn", "1\tinf\tq\tp\tn", "1\t2\tq\t\tn", "3\t4\tq\tp\tn"],
        2,
        {2: "non_finite", 3: "non_finite", 4: "empty_text"},
    ),
    (
        iter_groups_jsonl,
        "jsonl",
        [
            _group(),
            _group(qid="q2", labels=[1]),
            _group(),
            _group(qid="q3", kinds=["x", "neg"]),
            _group(qid="q4"),
        ],
        2,
        {2: "bad_value", 3: "duplicate_id", 4: "bad_value"},
    ),
]


@pytest.mark.parametrize(
    "case",
    SKIP_CASES,
    ids=[c[0].__module__.split(".")[-1] + "." + c[0].__name__ for c in SKIP_CASES],
)
def test_skip_mode_counts_every_skipped_row(tmp_path, case):
    reader, suffix, rows, n_good, expected = case
    path = tmp_path / f"input.{suffix}"
    path.write_bytes(_lines(*rows))
    report = SkipReport()
    out = reader(path, on_error="skip", report=report)
    got = len(out) if isinstance(out, dict) else len(list(out))
    if reader is beir.read_qrels:
        got = sum(len(v) for v in out.values())
    assert got == n_good
    assert {row.line: row.reason for row in report.entries} == expected
    assert all(row.path == str(path) for row in report.entries)
    assert report.total == len(expected)
    counts = {}
    for reason in expected.values():
        counts[reason] = counts.get(reason, 0) + 1
    assert report.counts == counts
    summary = report.summary()
    assert f"{len(expected)} rows skipped" in summary
    for line in expected:
        assert f"{path}:{line}:" in summary


def test_skip_without_report_warns_with_summary(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(_lines("1\ta", "2\t", "3\tc"))
    with pytest.warns(SkippedRowsWarning, match=r"1 rows skipped \(empty_text: 1\)"):
        rows = list(msmarco.iter_collection(path, on_error="skip"))
    assert [r["pid"] for r in rows] == ["1", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(msmarco.iter_collection(path, on_error="skip", report=SkipReport()))
    with pytest.raises(ValueError, match="on_error"):
        list(msmarco.iter_collection(path, on_error="ignore"))


def test_one_report_collects_from_several_files(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_bytes(_lines("1\t"))
    b.write_bytes(_lines("1\tx", "1\ty"))
    report = SkipReport()
    list(msmarco.iter_collection(a, on_error="skip", report=report))
    list(msmarco.iter_collection(b, on_error="skip", report=report))
    assert [(r.path, r.line, r.field, r.reason) for r in report.entries] == [
        (str(a), 1, "text", "empty_text"),
        (str(b), 2, "pid", "duplicate_id"),
    ]
    assert report.counts == {"empty_text": 1, "duplicate_id": 1}

"""Fuzzed inputs for every reader raykd has (BEIR, MS MARCO, Hofstatter TSV, candidate groups
JSONL / parquet, parquet corpora, the Ray Data read path, the precomputed teacher).

The contract under test: a file either parses, and then the rows are exactly what was written,
or the reader raises raykd's own DataError naming the file and the line; nothing raises an
unrelated exception and nothing hangs (a 30 s alarm per read turns a hang into a failure).

Budget: the ``ci`` hypothesis profile (registered in tests/conftest.py, the default) runs 50
examples per property; ``RAYKD_FUZZ_EXAMPLES=2000`` (or ``--hypothesis-profile=full``) runs the
full budget with fresh random seeds.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import signal
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raykd.data import beir, groups, msmarco, parquet, teacher_scores
from raykd.data.lines import iter_raw_lines
from raykd.data.records import CANDIDATE_GROUP_SCHEMA, CORPUS_SCHEMA, KINDS, normalize_group
from raykd.data.skips import ErrorPolicy
from raykd.data.validation import DUPLICATE_ID, EMPTY_TEXT, ENCODING, NON_FINITE, reason_of
from raykd.errors import DataError
from raykd.teachers.precomputed import PrecomputedTeacher

ALARM_S = 30
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Hang(BaseException):
    """A read that did not finish in ALARM_S (BaseException: no reader may swallow it)."""


@contextmanager
def no_hang(seconds: float = ALARM_S):
    def _alarm(signum, frame):
        raise Hang(f"the reader was still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def attempt(read: Callable[[Path], list], path: Path):
    """``("ok", rows)`` or ``("error", DataError)``; any other exception fails the test."""
    with no_hang():
        try:
            return "ok", read(path)
        except DataError as err:
            return "error", err


def assert_names(err: DataError, path: Path, line: int | None = None, field: str | None = None,
                 reason: str | None = None, max_line: int | None = None) -> None:
    """The error names the file (and the line / field / reason when given)."""
    assert err.path == str(path) and str(path) in str(err), err
    if line is not None:
        assert err.line == line, err
        assert f"{path}:{line}:" in str(err), err
    if max_line is not None:
        assert err.line is not None and 1 <= err.line <= max_line, err
    if field is not None:
        assert err.field == field and f"field '{field}'" in str(err), err
    if reason is not None:
        assert reason_of(err) == reason, (reason_of(err), err)


def assert_clean(rows) -> None:
    """Every value a reader returned is a str without lone surrogates, an int or a finite float
    (possibly in lists): what any downstream consumer may rely on."""
    def check(value):
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, float):
            assert math.isfinite(value), value
        elif isinstance(value, list):
            for v in value:
                check(v)
        else:
            assert isinstance(value, int), value

    for row in rows:
        for value in (row.values() if isinstance(row, dict) else row):
            check(value)


@contextmanager
def scratch():
    with tempfile.TemporaryDirectory(prefix="raykd-fuzz-") as tmp:
        yield Path(tmp)


# ------------------------------------------------------------------ strategies

_ID_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"))
ids = st.text(_ID_CHARS, min_size=1, max_size=8)
tsv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"),
                   min_size=1, max_size=24).filter(str.strip)
json_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                    max_size=24).filter(str.strip)
finite = st.floats(allow_nan=False, allow_infinity=False)
NON_FINITE_TOKENS = ("nan", "NaN", "-nan", "inf", "-inf", "Infinity", "-Infinity", "1e400")
JSON_NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e999")


def unique_rows(row, key, max_size=6):
    return st.lists(row, min_size=1, max_size=max_size, unique_by=key)


@st.composite
def group_rows(draw, text=json_text):
    n = draw(st.integers(1, 4))
    lists = lambda s: st.lists(s, min_size=n, max_size=n)  # noqa: E731
    group = {"qid": draw(ids), "query": draw(text), "pids": draw(lists(ids)),
             "texts": draw(lists(text)), "labels": draw(lists(st.integers(0, 1)))}
    if draw(st.booleans()):
        group["teacher_scores"] = draw(lists(finite))
    if draw(st.booleans()):
        group["kinds"] = draw(lists(st.sampled_from(KINDS)))
    if draw(st.booleans()):
        obj = st.dictionaries(st.text(max_size=4), st.integers() | json_text, max_size=2)
        group["provenance"] = draw(lists(st.just("") | obj.map(
            lambda d: json.dumps(d, ensure_ascii=False))))
    return group


# ------------------------------------------------------------------ the line formats


def _tsv(*cells) -> bytes:
    return "\t".join(cells).encode("utf-8")


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _nested(rows, a, b, c):
    out: dict = {}
    for r in rows:
        out.setdefault(r[a], {})[r[b]] = r[c]
    return out


def _set(row, field, value):
    return {**row, field: value}


@dataclass(frozen=True)
class LineFormat:
    """A line-per-record format: how to draw valid rows, encode one raw line, read and write."""

    name: str
    suffix: str
    rows: st.SearchStrategy  # lists of valid rows, as the reader returns them
    line: Callable[[dict], bytes]  # one row as raw bytes, no validation
    read: Callable[[Path], list]  # every row the reader returns
    write: Callable[[Path, list], object]  # raykd's writer
    header: bytes = b""
    unique: str | None = None  # the field a repeated key is reported on
    # (row -> (row with a blank text, field named)), (field of a score)
    blank: Callable[[dict], tuple[dict, str]] | None = None
    score_field: str | None = None
    tsv: bool = False
    drop_key: str | None = None  # JSON: a required key, reported as missing
    order_free: bool = False  # the writer takes a nested dict (rows come back grouped)

    @property
    def final(self) -> str | None:
        """TSV: the row field in the line's last column (a cut may shorten only that one)."""
        if not self.tsv:
            return None
        return {"beir-qrels": "score", "msmarco-qrels": "rel", "msmarco-queries": "query",
                "msmarco-triples-ids": "pid_neg", "hofstatter-ids": "pid_neg"}.get(
            self.name, "passage_neg" if "text" in self.name else "text")


def _hof_rows(form):
    cols = teacher_scores.hofstatter_columns(form)
    cell = tsv_text if form == "text" else ids
    return st.lists(st.fixed_dictionaries({
        cols[0]: finite, cols[1]: finite, cols[2]: cell, cols[3]: cell, cols[4]: cell}),
        min_size=1, max_size=6)


def _hof_line(form):
    cols = teacher_scores.hofstatter_columns(form)
    return lambda r: _tsv(repr(r[cols[0]]), repr(r[cols[1]]), *(r[c] for c in cols[2:]))


def _triple_rows(form):
    cols = msmarco.triple_columns(form)
    cell = tsv_text if form == "text" else ids
    return st.lists(st.fixed_dictionaries({c: cell for c in cols}), min_size=1, max_size=6)


def _read_arrow_stream(records):
    """The Ray Data read path: raykd's record parser over a pyarrow input stream (no Ray)."""
    def read(path):
        stream = pafs.LocalFileSystem().open_input_stream(str(path), compression="detect")
        with stream:
            return list(records(stream, path, ErrorPolicy()))
    return read


CORPUS_ROWS = unique_rows(st.fixed_dictionaries(
    {"pid": ids, "title": st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
     "text": json_text}), key=lambda r: r["pid"])
COLLECTION_ROWS = unique_rows(st.fixed_dictionaries(
    {"pid": ids, "title": st.just(""), "text": tsv_text}), key=lambda r: r["pid"])
GROUP_ROWS = unique_rows(group_rows(), key=lambda g: g["qid"], max_size=4)

LINE_FORMATS = [
    LineFormat(
        "beir-corpus", ".jsonl", CORPUS_ROWS,
        lambda r: _json({"_id": r["pid"], "title": r["title"], "text": r["text"]}),
        lambda p: list(beir.iter_corpus(p)), beir.write_corpus, unique="_id",
        blank=lambda r: ({**r, "title": "", "text": " "}, "text"), drop_key="_id"),
    LineFormat(
        "beir-corpus-gz", ".jsonl.gz", CORPUS_ROWS,
        lambda r: _json({"_id": r["pid"], "title": r["title"], "text": r["text"]}),
        lambda p: list(beir.iter_corpus(p)), beir.write_corpus, unique="_id",
        blank=lambda r: ({**r, "title": "", "text": ""}, "text"), drop_key="_id"),
    LineFormat(
        "beir-corpus-ray-stream-gz", ".jsonl.gz", CORPUS_ROWS,
        lambda r: _json({"_id": r["pid"], "title": r["title"], "text": r["text"]}),
        _read_arrow_stream(beir.corpus_records), beir.write_corpus, unique="_id",
        blank=lambda r: ({**r, "title": "", "text": ""}, "text"), drop_key="_id"),
    LineFormat(
        "beir-queries", ".jsonl",
        unique_rows(st.fixed_dictionaries({"qid": ids, "text": json_text}), lambda r: r["qid"]),
        lambda r: _json({"_id": r["qid"], "text": r["text"], "metadata": {"x": [1]}}),
        lambda p: [{"qid": k, "text": v} for k, v in beir.read_queries(p).items()],
        lambda p, rows: beir.write_queries(p, {r["qid"]: r["text"] for r in rows}),
        unique="_id", blank=lambda r: (_set(r, "text", ""), "text"), drop_key="text"),
    LineFormat(
        "beir-qrels", ".tsv",
        unique_rows(st.fixed_dictionaries(
            {"qid": ids, "pid": ids, "score": st.integers(-10**6, 10**6)}),
            lambda r: (r["qid"], r["pid"])),
        lambda r: _tsv(r["qid"], r["pid"], str(r["score"])),
        lambda p: [{"qid": q, "pid": d, "score": s} for _, q, d, s in beir.iter_qrels_rows(p)],
        lambda p, rows: beir.write_qrels(p, _nested(rows, "qid", "pid", "score")),
        header=b"query-id\tcorpus-id\tscore\n", unique="corpus-id", tsv=True,
        blank=lambda r: (_set(r, "pid", " "), "corpus-id"), order_free=True),
    LineFormat(
        "msmarco-collection", ".tsv", COLLECTION_ROWS, lambda r: _tsv(r["pid"], r["text"]),
        lambda p: list(msmarco.iter_collection(p)), msmarco.write_collection, unique="pid",
        blank=lambda r: (_set(r, "text", "  "), "text"), tsv=True),
    LineFormat(
        "msmarco-collection-gz", ".tsv.gz", COLLECTION_ROWS, lambda r: _tsv(r["pid"], r["text"]),
        lambda p: list(msmarco.iter_collection(p)), msmarco.write_collection, unique="pid",
        blank=lambda r: (_set(r, "text", ""), "text"), tsv=True),
    LineFormat(
        "msmarco-collection-ray-stream", ".tsv", COLLECTION_ROWS,
        lambda r: _tsv(r["pid"], r["text"]), _read_arrow_stream(msmarco.collection_records),
        msmarco.write_collection, unique="pid",
        blank=lambda r: (_set(r, "text", ""), "text"), tsv=True),
    LineFormat(
        "msmarco-queries", ".tsv",
        unique_rows(st.fixed_dictionaries({"qid": ids, "query": tsv_text}), lambda r: r["qid"]),
        lambda r: _tsv(r["qid"], r["query"]),
        lambda p: [{"qid": k, "query": v} for k, v in msmarco.read_queries(p).items()],
        lambda p, rows: msmarco.write_queries(p, {r["qid"]: r["query"] for r in rows}),
        unique="qid", blank=lambda r: (_set(r, "query", ""), "query"), tsv=True),
    LineFormat(
        "msmarco-qrels", ".tsv",
        unique_rows(st.fixed_dictionaries(
            {"qid": ids, "pid": ids, "rel": st.integers(-3, 10**6)}),
            lambda r: (r["qid"], r["pid"])),
        lambda r: _tsv(r["qid"], "0", r["pid"], str(r["rel"])),
        lambda p: [{"qid": q, "pid": d, "rel": s} for _, q, d, s in msmarco.iter_qrels_rows(p)],
        lambda p, rows: msmarco.write_qrels(p, _nested(rows, "qid", "pid", "rel")),
        unique="pid", tsv=True, order_free=True),
    LineFormat(
        "msmarco-triples-text", ".tsv", _triple_rows("text"),
        lambda r: _tsv(r["query"], r["passage_pos"], r["passage_neg"]),
        lambda p: list(msmarco.iter_triples(p, "text")),
        lambda p, rows: msmarco.write_triples(p, rows, "text"),
        blank=lambda r: (_set(r, "passage_pos", ""), "passage_pos"), tsv=True),
    LineFormat(
        "msmarco-triples-ids", ".tsv.gz", _triple_rows("ids"),
        lambda r: _tsv(r["qid"], r["pid_pos"], r["pid_neg"]),
        lambda p: list(msmarco.iter_triples(p, "ids")),
        lambda p, rows: msmarco.write_triples(p, rows, "ids"),
        blank=lambda r: (_set(r, "pid_neg", " "), "pid_neg"), tsv=True),
    LineFormat(
        "hofstatter-text", ".tsv", _hof_rows("text"), _hof_line("text"),
        lambda p: list(teacher_scores.iter_hofstatter(p, "text")),
        lambda p, rows: teacher_scores.write_hofstatter(p, rows, "text"),
        blank=lambda r: (_set(r, "query", " "), "query"), score_field="score_neg", tsv=True),
    LineFormat(
        "hofstatter-ids", ".tsv", _hof_rows("ids"), _hof_line("ids"),
        lambda p: list(teacher_scores.iter_hofstatter(p, "ids")),
        lambda p, rows: teacher_scores.write_hofstatter(p, rows, "ids"),
        blank=lambda r: (_set(r, "qid", ""), "qid"), score_field="score_pos", tsv=True),
    LineFormat(
        "groups-jsonl", ".jsonl", GROUP_ROWS, _json, lambda p: list(groups.iter_groups_jsonl(p)),
        groups.write_groups_jsonl, unique="qid",
        blank=lambda g: (_set(g, "texts", ["\t \n"] + g["texts"][1:]), "texts[0]"),
        drop_key="labels"),
    LineFormat(
        "groups-jsonl-ray-stream-gz", ".jsonl.gz", GROUP_ROWS, _json,
        _read_arrow_stream(groups.groups_jsonl_records), groups.write_groups_jsonl,
        unique="qid", blank=lambda g: (_set(g, "query", ""), "query"), drop_key="pids"),
]
BY_NAME = {f.name: f for f in LINE_FORMATS}
each_format = pytest.mark.parametrize("fmt", LINE_FORMATS, ids=lambda f: f.name)


def layout(fmt: LineFormat, rows: list, crlf: list[bool] | None = None, bom: bool = False,
           blanks: list[bytes] | None = None, final_newline: bool = True):
    """The file's bytes and the physical (1-based) line of each row."""
    out = io.BytesIO()
    out.write(b"\xef\xbb\xbf" if bom else b"")
    out.write(fmt.header)
    lineno = fmt.header.count(b"\n")
    where = []
    for i, row in enumerate(rows):
        for blank in (blanks or [])[i:i + 1]:
            if blank is not None:
                out.write(blank + b"\n")
                lineno += 1
        end = b"\r\n" if crlf and crlf[i % len(crlf)] else b"\n"
        out.write(fmt.line(row))
        lineno += 1
        where.append(lineno)
        if i < len(rows) - 1 or final_newline:
            out.write(end)
    return out.getvalue(), where


def store(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def same_rows(fmt: LineFormat, got: list, want: list) -> bool:
    if fmt.order_free:
        key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
        return sorted(got, key=key) == sorted(want, key=key)
    return got == want


def expected(fmt: LineFormat, rows: list) -> list:
    if fmt.name.startswith("groups"):
        return [normalize_group(g) for g in rows]
    return rows


# ------------------------------------------------------------------ properties


@each_format
@FUZZ
@given(data=st.data())
def test_valid_files_round_trip(fmt, data):
    """Any valid rows, laid out with CRLF or LF endings, a BOM, blank lines and no final
    newline, read back as exactly those rows; so do the files raykd's own writer makes."""
    rows = data.draw(fmt.rows, "rows")
    crlf = data.draw(st.lists(st.booleans(), min_size=1, max_size=3), "crlf")
    blanks = data.draw(st.lists(st.none() | st.sampled_from([b"", b"  ", b"\t", b"\r"]),
                                max_size=len(rows)), "blanks")
    raw, _ = layout(fmt, rows, crlf, data.draw(st.booleans(), "bom"), blanks,
                    data.draw(st.booleans(), "final_newline"))
    with scratch() as tmp:
        path = store(tmp / f"raw{fmt.suffix}", raw)
        status, got = attempt(fmt.read, path)
        assert status == "ok", got
        assert same_rows(fmt, got, expected(fmt, rows))
        written = tmp / f"written{fmt.suffix}"
        fmt.write(written, rows)
        status, got = attempt(fmt.read, written)
        assert status == "ok", got
        assert same_rows(fmt, got, expected(fmt, rows))


@each_format
@FUZZ
@given(data=st.data())
def test_truncated_files_parse_a_prefix_or_name_the_line(fmt, data):
    """A file cut anywhere (mid-line, mid-character, mid-gzip-stream) either reads as the rows
    before the cut (the last one possibly shortened in its final column) or raises a DataError
    naming the file and a line that exists."""
    rows = data.draw(fmt.rows, "rows")
    raw, where = layout(fmt, rows)
    stored = gzip.compress(raw, mtime=0) if fmt.suffix.endswith(".gz") else raw
    cut = data.draw(st.integers(0, max(len(stored) - 1, 0)), "cut")
    with scratch() as tmp:
        path = tmp / f"cut{fmt.suffix}"
        path.write_bytes(stored[:cut])
        status, got = attempt(fmt.read, path)
        if status == "error":
            assert_names(got, path, max_line=where[-1])
            return
        want = expected(fmt, rows)
        assert len(got) <= len(want)
        assert same_rows(fmt, got[:-1], want[:len(got) - 1]) if got else True
        if got and not fmt.order_free:
            last, orig = got[-1], want[len(got) - 1]
            for key in orig:
                if last[key] != orig[key]:  # only the final column may be cut short
                    assert key == fmt.final and str(orig[key]).startswith(str(last[key]))


@each_format
@FUZZ
@given(data=st.data(), bad=st.sampled_from([b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xff",
                                             b"\xed\xa0\x80", b"\xf8"]))
def test_bad_utf8_names_its_line(fmt, data, bad):
    """An invalid UTF-8 sequence anywhere in a record is a DataError (encoding) at its line."""
    rows = data.draw(fmt.rows, "rows")
    k = data.draw(st.integers(0, len(rows) - 1), "row")
    line = fmt.line(rows[k])
    at = data.draw(st.integers(0, len(line)), "offset")
    rows_bytes = [fmt.line(r) for r in rows]
    rows_bytes[k] = line[:at] + bad + line[at:]
    raw = fmt.header + b"\n".join(rows_bytes) + b"\n"
    with scratch() as tmp:
        path = store(tmp / f"utf8{fmt.suffix}", raw)
        status, err = attempt(fmt.read, path)
        assert status == "error", err
        assert_names(err, path, line=k + 1 + fmt.header.count(b"\n"), reason=ENCODING)


@pytest.mark.parametrize("fmt", [f for f in LINE_FORMATS if f.tsv or f.drop_key],
                         ids=lambda f: f.name)
@FUZZ
@given(data=st.data())
def test_wrong_column_count_names_its_line(fmt, data):
    """TSV: an extra column or a lost separator; JSONL: a required key removed. Either is a
    DataError at that line."""
    rows = data.draw(fmt.rows, "rows")
    k = data.draw(st.integers(0, len(rows) - 1), "row")
    lines = [fmt.line(r) for r in rows]
    if fmt.tsv:
        cells = lines[k].split(b"\t")
        if data.draw(st.booleans(), "extra"):
            at = data.draw(st.integers(0, len(cells)), "at")
            choices = [b"x", b"1.5"] if fmt.name == "msmarco-qrels" else [b"", b"x", b"1.5"]
            cells.insert(at, data.draw(st.sampled_from(choices), "cell"))
            lines[k] = b"\t".join(cells)
        else:
            at = data.draw(st.integers(0, len(cells) - 2), "at")
            lines[k] = b"\t".join(cells[:at] + [cells[at] + cells[at + 1]]
                                  + cells[at + 2:])
    else:
        obj = json.loads(lines[k])
        obj.pop(fmt.drop_key)
        lines[k] = _json(obj)
    with scratch() as tmp:
        path = store(tmp / f"cols{fmt.suffix}", fmt.header + b"\n".join(lines) + b"\n")
        status, err = attempt(fmt.read, path)
        assert status == "error", err
        assert_names(err, path, line=k + 1 + fmt.header.count(b"\n"))


@each_format
@FUZZ
@given(data=st.data())
def test_duplicate_records(fmt, data):
    """A record repeated at the end: an error naming the repeat's line and the id field where
    ids must be unique, else simply read twice."""
    rows = data.draw(fmt.rows, "rows")
    k = data.draw(st.integers(0, len(rows) - 1), "row")
    raw, where = layout(fmt, [*rows, rows[k]])
    with scratch() as tmp:
        path = store(tmp / f"dup{fmt.suffix}", raw)
        status, got = attempt(fmt.read, path)
        if fmt.unique is None:
            assert status == "ok", got
            assert got == expected(fmt, [*rows, rows[k]])
        else:
            assert status == "error", got
            assert_names(got, path, line=where[-1], field=fmt.unique, reason=DUPLICATE_ID)


@pytest.mark.parametrize("fmt", [f for f in LINE_FORMATS if f.blank], ids=lambda f: f.name)
@FUZZ
@given(data=st.data())
def test_empty_text_names_line_and_field(fmt, data):
    """A blank (empty or whitespace-only) text or id is a DataError naming line and field."""
    rows = data.draw(fmt.rows, "rows")
    k = data.draw(st.integers(0, len(rows) - 1), "row")
    rows[k], field = fmt.blank(rows[k])
    raw, where = layout(fmt, rows)
    with scratch() as tmp:
        path = store(tmp / f"blank{fmt.suffix}", raw)
        status, err = attempt(fmt.read, path)
        assert status == "error", err
        assert_names(err, path, line=where[k], field=field, reason=EMPTY_TEXT)


@pytest.mark.parametrize("fmt", [f for f in LINE_FORMATS if f.score_field or "groups" in f.name],
                         ids=lambda f: f.name)
@FUZZ
@given(data=st.data())
def test_non_finite_scores_name_line_and_field(fmt, data):
    """NaN, +-inf and overflowing scores are a DataError (non_finite) naming line and field."""
    rows = data.draw(fmt.rows, "rows")
    k = data.draw(st.integers(0, len(rows) - 1), "row")
    if fmt.score_field:
        token = data.draw(st.sampled_from(NON_FINITE_TOKENS), "token")
        field = fmt.score_field
        rows[k] = _set(rows[k], field, 0.125)
        raw, where = layout(fmt, rows)
        lines = raw.split(b"\n")
        cells = lines[where[k] - 1].split(b"\t")
        cells[teacher_scores.SCORE_COLUMNS.index(field)] = token.encode()
        lines[where[k] - 1] = b"\t".join(cells)
        raw = b"\n".join(lines)
    else:
        token = data.draw(st.sampled_from(JSON_NON_FINITE), "token")
        n = len(rows[k]["pids"])
        i = data.draw(st.integers(0, n - 1), "candidate")
        scores = [0.5] * n
        scores[i] = "@SCORE@"
        rows[k] = _set(rows[k], "teacher_scores", scores)
        field = f"teacher_scores[{i}]"
        raw, where = layout(fmt, rows)
        raw = raw.replace(b'"@SCORE@"', token.encode())
    with scratch() as tmp:
        path = store(tmp / f"nan{fmt.suffix}", raw)
        status, err = attempt(fmt.read, path)
        assert status == "error", err
        assert_names(err, path, line=where[k], field=field, reason=NON_FINITE)


mutations = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "dup"]),
                               st.integers(0, 10**6), st.binary(min_size=1, max_size=3)),
                     min_size=1, max_size=4)


def mutate(raw: bytes, edits) -> bytes:
    buf = bytearray(raw)
    for op, pos, blob in edits:
        at = pos % (len(buf) + 1)
        if op == "flip" and buf:
            buf[at % len(buf)] ^= blob[0] or 1
        elif op == "insert":
            buf[at:at] = blob
        elif op == "delete":
            del buf[at:at + len(blob)]
        elif op == "dup":
            buf[at:at] = buf[max(0, at - 40):at]
    return bytes(buf)


@each_format
@FUZZ
@given(data=st.data(), edits=mutations)
@example(data=None, edits=[("insert", 0, b"[" * 3)]).via("regression: deep JSON nesting")
def test_random_mutations_parse_or_raise_data_error(fmt, data, edits):
    """Random byte flips, insertions, deletions and repeats: the reader returns clean rows or a
    DataError naming the file and a line of it; nothing else escapes and nothing hangs."""
    if data is None:  # the regression example: a line of 100k '[' (RecursionError in json)
        rows, edits = [], []
        raw = fmt.header + b"[" * 100_000 + b"\n"
    else:
        rows = data.draw(fmt.rows, "rows")
        raw = mutate(layout(fmt, rows)[0], edits)
    with scratch() as tmp:
        path = store(tmp / f"mutated{fmt.suffix}", raw)
        status, got = attempt(fmt.read, path)
        if status == "error":
            assert_names(got, path, max_line=raw.count(b"\n") + 1)
        else:
            assert_clean(got)


@each_format
@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_data_error(fmt, raw):
    """Bytes from nowhere (or a non-gzip file named .gz) never crash a reader."""
    with scratch() as tmp:
        path = tmp / f"noise{fmt.suffix}"
        path.write_bytes(raw)
        status, got = attempt(fmt.read, path)
        if status == "error":
            assert_names(got, path)
        else:
            assert_clean(got)


@pytest.mark.parametrize("fmt", [BY_NAME[n] for n in (
    "beir-corpus-gz", "msmarco-collection", "hofstatter-text", "groups-jsonl",
    "groups-jsonl-ray-stream-gz")], ids=lambda f: f.name)
@pytest.mark.parametrize("size", [(1 << 20) - 7, (1 << 20) + 3, 3 << 20])
def test_huge_fields_round_trip(fmt, size, tmp_path):
    """A multi-megabyte text (straddling the reader's 1 MiB chunks) reads back intact."""
    huge = ("ü" + "x" * 9) * (size // 11)
    rows = {
        "beir-corpus-gz": [{"pid": "a", "title": "", "text": huge}, {"pid": "b", "title": "t",
                                                                      "text": "x"}],
        "msmarco-collection": [{"pid": "a", "title": "", "text": huge},
                               {"pid": "b", "title": "", "text": "y"}],
        "hofstatter-text": [{"score_pos": 1.0, "score_neg": -2.5, "query": "q",
                             "passage_pos": huge, "passage_neg": "n"}],
    }.get(fmt.name) or [{"qid": "q", "query": "q", "pids": ["a", "b"], "texts": [huge, "z"],
                         "labels": [1, 0]}, {"qid": "r", "query": huge, "pids": ["c"],
                                             "texts": ["w"], "labels": [0]}]
    raw, _ = layout(fmt, rows)
    path = store(tmp_path / f"huge{fmt.suffix}", raw)
    status, got = attempt(fmt.read, path)
    assert status == "ok", got
    assert got == expected(fmt, rows)


# ------------------------------------------------------------------ the line splitter


@FUZZ
@given(raw=st.binary(max_size=400) | st.lists(st.sampled_from(
    [b"a", b"\n", b"\r", b"\r\n", b" ", b"\t", b"\xef\xbb\xbf", b"\xc3\xa9"]), max_size=60).map(
    b"".join), chunk=st.integers(1, 64))
@example(raw=b"\xef\xbb\xbfid\tx\n", chunk=1).via("regression: a BOM split across chunks was kept")
def test_line_splitter_matches_a_plain_split_for_any_chunk_size(raw, chunk):
    """iter_raw_lines (chunked reads) gives the same numbered lines as splitting the whole file:
    LF or CRLF endings, a leading BOM dropped, blank lines passed over."""
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    want = []
    for n, piece in enumerate(body.split(b"\n"), start=1):
        piece = piece[:-1] if piece.endswith(b"\r") else piece
        if piece.strip():
            want.append((n, piece))
    with no_hang():
        got = list(iter_raw_lines(io.BytesIO(raw), "<mem>", chunk_size=chunk))
    assert got == want


def test_line_splitter_is_linear_in_a_huge_line():
    """A 4 MiB line read in 64-byte chunks (65k chunks) must not copy the growing line once per
    chunk (quadratic: minutes); linear takes well under a second."""
    raw = b"x" * (4 << 20) + b"\nend\n"
    with no_hang(20):
        got = list(iter_raw_lines(io.BytesIO(raw), "<mem>", chunk_size=64))
    assert [(n, len(line)) for n, line in got] == [(1, 4 << 20), (2, 3)]


# ------------------------------------------------------------------ parquet


def _write_table(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


PARQUET_READERS = {
    "groups": (lambda p: list(groups.iter_groups_parquet(p)), CANDIDATE_GROUP_SCHEMA),
    "groups-ray-file": (lambda p: list(groups.groups_parquet_records(
        pafs.LocalFileSystem().open_input_file(str(p)), p, ErrorPolicy())),
        CANDIDATE_GROUP_SCHEMA),
    "corpus": (lambda p: list(parquet.iter_corpus_parquet(p)), CORPUS_SCHEMA),
}


@FUZZ
@given(rows=GROUP_ROWS, corpus=CORPUS_ROWS)
def test_parquet_round_trip(rows, corpus):
    """Valid groups and corpus rows written by raykd's parquet writers read back unchanged."""
    with scratch() as tmp:
        groups.write_groups_parquet(tmp / "g.parquet", rows)
        for name in ("groups", "groups-ray-file"):
            status, got = attempt(PARQUET_READERS[name][0], tmp / "g.parquet")
            assert status == "ok", got
            assert got == [normalize_group(g) for g in rows]
        parquet.write_corpus_parquet(tmp / "c.parquet", corpus)
        status, got = attempt(PARQUET_READERS["corpus"][0], tmp / "c.parquet")
        assert status == "ok", got
        assert got == corpus


@pytest.mark.parametrize("kind", list(PARQUET_READERS))
@FUZZ
@given(data=st.data(), edits=mutations)
def test_corrupt_parquet_parses_or_raises_data_error(kind, data, edits):
    """A parquet file truncated or with bytes flipped (footer, pages, dictionary) reads as
    clean rows or raises a DataError naming the file; never a bare pyarrow error."""
    read, _ = PARQUET_READERS[kind]
    rows = data.draw(CORPUS_ROWS if kind == "corpus" else GROUP_ROWS, "rows")
    with scratch() as tmp:
        path = tmp / "x.parquet"
        (parquet.write_corpus_parquet if kind == "corpus" else groups.write_groups_parquet)(
            path, rows)
        raw = path.read_bytes()
        if data.draw(st.booleans(), "truncate"):
            raw = raw[:data.draw(st.integers(0, len(raw) - 1), "cut")]
        else:
            raw = mutate(raw, edits)
        path.write_bytes(raw)
        status, got = attempt(read, path)
        if status == "error":
            assert_names(got, path)
        else:
            assert_clean(got)


def _plain_groups_parquet(path: Path, query: str) -> Path:
    group = {"qid": "q1", "query": query, "pids": ["p"], "texts": ["t"], "labels": [1]}
    pq.write_table(pa.Table.from_pylist([group, {**group, "qid": "q2"}]), path,
                   compression="NONE", use_dictionary=False, write_statistics=False)
    return path


@pytest.mark.parametrize("kind", ["groups", "groups-ray-file"])
def test_parquet_with_invalid_utf8_names_row_and_column(kind, tmp_path):
    """Regression: a string column holding bytes that are not UTF-8 (parquet does not check)
    raised a bare UnicodeDecodeError from pyarrow's to_pylist."""
    path = _plain_groups_parquet(tmp_path / "bad-utf8.parquet", "MARKERMARKER")
    raw = path.read_bytes()
    assert b"MARKERMARKER" in raw  # plain encoding: the value sits in the page as is
    path.write_bytes(raw.replace(b"MARKERMARKER", b"\xff\xfe" * 6))
    status, err = attempt(PARQUET_READERS[kind][0], path)
    assert status == "error", err
    assert_names(err, path, line=1, field="query", reason=ENCODING)


@pytest.mark.parametrize("kind", ["groups", "groups-ray-file"])
def test_parquet_with_corrupt_page_header_is_a_data_error(kind, tmp_path):
    """Regression: an intact footer over garbled pages raised pyarrow's OSError ("Couldn't
    deserialize thrift") from iter_batches instead of a DataError naming the file and row."""
    path = _plain_groups_parquet(tmp_path / "bad-page.parquet", "a query")
    raw = bytearray(path.read_bytes())
    raw[4:24] = b"\xff" * 20  # the first column chunk's page header, right after b"PAR1"
    path.write_bytes(bytes(raw))
    status, err = attempt(PARQUET_READERS[kind][0], path)
    assert status == "error", err
    assert_names(err, path, line=1)
    assert "corrupt parquet data" in str(err)


BAD_GROUP_COLUMNS = {
    # column -> (arrow array for 2 rows, the field named, reason or None)
    "qid": (pa.array(["q1", None]), "qid", None),
    "pids": (pa.array([[1, 2], [3]], pa.list_(pa.int64())), "pids[0]", None),
    "texts": (pa.array([["a", " "], ["b"]]), "texts[1]", EMPTY_TEXT),
    "labels": (pa.array([[1, 0], [2]], pa.list_(pa.int32())), "labels[0]", None),
    "teacher_scores": (pa.array([[1.0, 2.0], [math.nan]]), "teacher_scores[0]", NON_FINITE),
    "kinds": (pa.array([["pos", "neg"], ["dark"]]), "kinds[0]", None),
}


@pytest.mark.parametrize("column", list(BAD_GROUP_COLUMNS))
@pytest.mark.parametrize("kind", ["groups", "groups-ray-file"])
def test_bad_parquet_values_name_row_and_field(kind, column, tmp_path):
    """Wrong types, nulls, blank texts and NaN in a parquet column: DataError at the row."""
    base = {"qid": pa.array(["q1", "q2"]), "query": pa.array(["a", "b"]),
            "pids": pa.array([["p1", "p2"], ["p3"]]), "texts": pa.array([["a", "b"], ["c"]]),
            "labels": pa.array([[1, 0], [0]], pa.list_(pa.int32()))}
    bad, field, reason = BAD_GROUP_COLUMNS[column]
    base[column] = bad
    path = _write_table(tmp_path / "bad.parquet", pa.table(base))
    status, err = attempt(PARQUET_READERS[kind][0], path)
    assert status == "error", err
    line = 1 if column in ("pids", "texts") else 2
    assert_names(err, path, line=line, field=field, reason=reason)


def test_parquet_schema_problems_name_the_column(tmp_path):
    """A missing required column or an unknown one is a DataError naming file and column."""
    good = {"qid": ["q"], "query": ["a"], "pids": [["p"]], "texts": [["t"]], "labels": [[1]]}
    for table, field in ((pa.table({k: v for k, v in good.items() if k != "texts"}), "texts"),
                         (pa.table({**good, "score": [1.0]}), "score")):
        path = _write_table(tmp_path / f"{field}.parquet", table)
        status, err = attempt(PARQUET_READERS["groups"][0], path)
        assert status == "error", err
        assert_names(err, path, field=field)


def test_duplicate_qid_in_parquet_names_the_row(tmp_path):
    group = {"qid": "q", "query": "a", "pids": ["p"], "texts": ["t"], "labels": [1]}
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_pylist([group, group]), path)
    status, err = attempt(PARQUET_READERS["groups"][0], path)
    assert status == "error"
    assert_names(err, path, line=2, field="qid", reason=DUPLICATE_ID)


# ------------------------------------------------------------------ the precomputed teacher


def _expected_scores(pairs):
    """{key: score} from (key, score) in file order, or the index of the first conflict."""
    out: dict = {}
    for i, (key, score) in enumerate(pairs):
        old = out.setdefault(key, score)
        if old != score and abs(old - score) > 1e-4 * max(1.0, abs(old)):
            return out, i
    return out, None


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({
    "score_pos": st.sampled_from([0.0, 1.5, -2.0]) | finite, "score_neg": finite,
    "qid": st.sampled_from(["q1", "q2"]) | ids, "pid_pos": st.sampled_from(["a", "b"]) | ids,
    "pid_neg": st.sampled_from(["a", "c"]) | ids}), min_size=1, max_size=6))
def test_precomputed_hofstatter_ids_aligns_by_key_or_names_the_conflict(rows):
    """Every (qid, pid) reads back with its score; a key given two different scores is a
    DataError naming the second line."""
    pairs = [p for r in rows for p in (((r["qid"], r["pid_pos"]), r["score_pos"]),
                                       ((r["qid"], r["pid_neg"]), r["score_neg"]))]
    want, conflict = _expected_scores(pairs)
    with scratch() as tmp:
        path = tmp / "scores.tsv"
        teacher_scores.write_hofstatter(path, rows, "ids")
        status, got = attempt(lambda p: PrecomputedTeacher(p, format="hofstatter_ids"), path)
        if conflict is not None:
            assert status == "error", got
            assert_names(got, path, line=conflict // 2 + 1)
            return
        assert status == "ok", got
        assert {k: got.lookup(*k) for k in want} == want


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@FUZZ
@given(rows=GROUP_ROWS)
def test_precomputed_groups_read_back_every_score(suffix, rows):
    """Groups with teacher_scores: each (qid, pid) reads back its score (or the conflict /
    missing scores are a DataError naming file and line)."""
    with scratch() as tmp:
        path = tmp / f"g{suffix}"
        (groups.write_groups_parquet if suffix == ".parquet" else groups.write_groups_jsonl)(
            path, rows)
        status, got = attempt(PrecomputedTeacher, path)
        missing = next((i for i, g in enumerate(rows) if "teacher_scores" not in g), None)
        pairs = [((g["qid"], p), s) for g in rows[:missing]
                 for p, s in zip(g["pids"], g["teacher_scores"], strict=True)]
        want, conflict = _expected_scores(pairs)
        if conflict is not None or missing is not None:
            assert status == "error", got
            assert_names(got, path, max_line=len(rows))
            return
        assert status == "ok", got
        assert {k: got.lookup(*k) for k in want} == want


@pytest.mark.parametrize("fmt", ["hofstatter_ids", "hofstatter_text", "jsonl", "parquet"])
@FUZZ
@given(raw=st.binary(max_size=200))
def test_precomputed_teacher_on_noise_raises_data_error(fmt, raw):
    """A score file of random bytes loads (clean scores) or raises DataError naming it."""
    with scratch() as tmp:
        path = tmp / f"noise.{fmt.split('_')[0]}"
        path.write_bytes(raw)
        status, got = attempt(lambda p: PrecomputedTeacher(p, format=fmt), path)
        if status == "error":
            assert_names(got, path)
        else:
            assert all(math.isfinite(v) for v in got._scores.values())


def test_deeply_nested_provenance_is_a_data_error(tmp_path):
    """Regression: a provenance string of 100k '[' made json.loads raise RecursionError."""
    group = {"qid": "q", "query": "a", "pids": ["p"], "texts": ["t"], "labels": [1],
             "provenance": ["[" * 100_000]}
    path = tmp_path / "g.jsonl"
    path.write_bytes(_json(group) + b"\n")
    status, err = attempt(lambda p: list(groups.iter_groups_jsonl(p)), path)
    assert status == "error", err
    assert_names(err, path, line=1, field="provenance[0]")

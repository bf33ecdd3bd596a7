"""Ray Data builders (corpus, queries, candidate groups) and the bundled SciFact data."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.data import (
    BeirDataset,
    SkipReport,
    beir,
    check_unique_ids,
    corpus_dataset,
    groups_dataset,
    msmarco,
    passage_text,
    queries_dataset,
    write_corpus_parquet,
    write_groups_jsonl,
    write_groups_parquet,
)
from raykd.datasets import scifact_dir
from raykd.errors import DataError

DOCS = [
    {"pid": f"d{i}", "title": f"T{i}" if i % 2 else "", "text": f"text {i} é"} for i in range(25)
]
GROUPS = [
    {"qid": "q1", "query": "a", "pids": ["d1", "d2"], "texts": ["x", "y"], "labels": [1, 0]},
    {
        "qid": "q2",
        "query": "b",
        "pids": ["d3"],
        "texts": ["z"],
        "labels": [1],
        "teacher_scores": [0.25],
        "kinds": ["pos"],
    },
]


def _rows(ds, batch_size=7) -> list[dict]:
    """Stream a dataset's batches (never ``take_all`` / ``to_pandas``) into plain rows."""
    out = []
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        out.extend(batch.to_pylist())
    return out


def _strip_nulls(group: dict) -> dict:
    return {k: v for k, v in group.items() if v is not None}


# --------------------------------------------------------------- SciFact (real data)


@pytest.fixture(scope="module")
def scifact() -> BeirDataset:
    return BeirDataset.from_dir(scifact_dir())


def test_scifact_counts_and_qrels_ids(scifact):
    assert scifact.corpus_path.name == "corpus.jsonl.gz"
    assert len(scifact.corpus_ids()) == 5183
    assert scifact.splits() == ["dev", "test", "train"]
    expected = {"train": (709, 805), "dev": (100, 114), "test": (300, 339)}
    seen: dict[str, set[str]] = {}
    for split, (n_queries, n_pairs) in expected.items():
        qrels = scifact.qrels(split)
        queries = scifact.queries(split)
        assert len(queries) == n_queries == len(qrels)
        assert sum(len(docs) for docs in qrels.values()) == n_pairs
        scifact.check_qrels_against_corpus(split)  # every judged id is in the corpus
        assert all(pid in scifact.corpus_ids() for docs in qrels.values() for pid in docs)
        seen[split] = set(queries)
    assert not (seen["train"] & seen["dev"]) and not (seen["train"] & seen["test"])


def test_scifact_query_text_never_uses_metadata(scifact):
    queries = scifact.all_queries()
    assert len(queries) == 1109
    assert queries["2"] == "1 in 5 million in UK have abnormal PrP positivity."
    assert all("SUPPORT" not in t and "CONTRADICT" not in t for t in queries.values())


def test_scifact_corpus_streams_through_ray(ray_local):
    """The real gz corpus becomes a Dataset counted batch by batch, with unique ids."""
    ds = corpus_dataset(scifact_dir() / "corpus.jsonl.gz")
    assert ds.schema().names == ["pid", "title", "text"]
    n, pids = 0, set()
    for batch in ds.iter_batches(batch_size=500, batch_format="pyarrow"):
        n += batch.num_rows
        pids.update(batch.column("pid").to_pylist())
        assert all(t.strip() for t in batch.column("text").to_pylist())
    assert n == len(pids) == 5183
    assert check_unique_ids(ds, "pid") == 5183


def test_scifact_dev_queries_dataset(ray_local, scifact):
    dev = scifact.queries("dev")
    ds = queries_dataset(scifact.queries_path, qids=list(dev))
    rows = _rows(ds)
    assert [r["qid"] for r in rows] == list(dev)
    assert {r["qid"]: r["query"] for r in rows} == dev


# --------------------------------------------------------------- corpus / queries builders


@pytest.mark.parametrize(
    "name", ["corpus.jsonl", "corpus.jsonl.gz", "collection.tsv", "corpus.parquet"]
)
def test_corpus_dataset_matches_reader(ray_local, tmp_path, name):
    path = tmp_path / name
    if name.startswith("collection"):
        docs = [
            {"pid": d["pid"], "title": "", "text": passage_text(d["title"], d["text"])}
            for d in DOCS
        ]
        msmarco.write_collection(path, docs)
    elif name.endswith(".parquet"):
        docs = DOCS
        write_corpus_parquet(path, docs)
    else:
        docs = DOCS
        beir.write_corpus(path, docs)
    assert _rows(corpus_dataset(path, rows_per_block=4)) == docs


def test_corpus_dataset_reads_folder_of_shards(ray_local, tmp_path):
    beir.write_corpus(tmp_path / "a.jsonl.gz", DOCS[:10])
    beir.write_corpus(tmp_path / "b.jsonl", DOCS[10:])
    (tmp_path / "README.md").write_text("not a shard")
    assert sorted(_rows(corpus_dataset(tmp_path)), key=lambda r: int(r["pid"][1:])) == DOCS
    beir.write_corpus(tmp_path / "c.jsonl", DOCS[:1])  # d0 again, in another file
    with pytest.raises(DataError, match="duplicate id 'd0' across files"):
        check_unique_ids(corpus_dataset(tmp_path))


def test_corpus_dataset_error_names_file_line_field(ray_local, tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    lines = [json.dumps({"_id": d["pid"], "text": d["text"]}) for d in DOCS[:5]]
    lines[3] = '{"_id": "d3", "text": "fine", "title": 3}'
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataError) as info:
        corpus_dataset(path).count()
    assert info.value.line == 4 and info.value.field == "title"
    assert f"{path}:4: field 'title'" in str(info.value)


def test_corpus_dataset_skip_mode_reports_rows(ray_local, tmp_path):
    path = tmp_path / "collection.tsv"
    path.write_bytes(b"1\ta\n2\t \n3\tc\n1\td\n4\t\xff\n")
    report = SkipReport()
    ds = corpus_dataset(path, on_error="skip", report=report)
    assert [r["pid"] for r in _rows(ds)] == ["1", "3"]
    _rows(ds)  # a second pass does not count the rows twice
    assert [(r.path, r.line, r.field, r.reason) for r in report.entries] == [
        (str(path), 2, "text", "empty_text"),
        (str(path), 4, "pid", "duplicate_id"),
        (str(path), 5, "text", "encoding"),
    ]
    assert report.counts == {"empty_text": 1, "duplicate_id": 1, "encoding": 1}
    with pytest.raises(ValueError, match="needs report"):
        corpus_dataset(path, on_error="skip")


def test_queries_dataset_from_dict(ray_local):
    queries = {"q1": "one", "q2": "two", "q3": "three"}
    assert _rows(queries_dataset(queries)) == [{"qid": q, "query": t} for q, t in queries.items()]
    assert _rows(queries_dataset(queries, qids=["q3", "q1"])) == [
        {"qid": "q3", "query": "three"},
        {"qid": "q1", "query": "one"},
    ]
    with pytest.raises(
        DataError, match=r"field 'qid': 1 requested qids are not in the queries, e.g. \['q9'\]"
    ):
        queries_dataset(queries, qids=["q1", "q9"])
    with pytest.raises(DataError, match="<queries>:2: field 'query': empty text"):
        queries_dataset({"q1": "x", "q2": " "})


# --------------------------------------------------------------- groups builder


@pytest.mark.parametrize("suffix", ["jsonl", "jsonl.gz", "parquet"])
def test_groups_dataset_round_trip(ray_local, tmp_path, suffix):
    path = tmp_path / f"groups.{suffix}"
    (write_groups_parquet if suffix == "parquet" else write_groups_jsonl)(path, GROUPS)
    ds = groups_dataset(path)
    assert ds.schema().names == [
        "qid",
        "query",
        "pids",
        "texts",
        "labels",
        "teacher_scores",
        "kinds",
        "provenance",
    ]
    assert [_strip_nulls(g) for g in _rows(ds)] == GROUPS


def test_groups_dataset_mixed_shards(ray_local, tmp_path):
    write_groups_jsonl(tmp_path / "a.jsonl", GROUPS[:1])
    write_groups_parquet(tmp_path / "b.parquet", GROUPS[1:])
    rows = sorted(
        _rows(groups_dataset([tmp_path / "a.jsonl", tmp_path / "b.parquet"])),
        key=lambda g: g["qid"],
    )
    assert [_strip_nulls(g) for g in rows] == GROUPS


def test_groups_dataset_errors_and_skips(ray_local, tmp_path):
    path = tmp_path / "groups.jsonl"
    bad = dict(GROUPS[0], qid="q3", teacher_scores=[1.0, float("nan")])
    path.write_text("\n".join(json.dumps(g) for g in [*GROUPS, bad]) + "\n")
    with pytest.raises(DataError) as info:
        _rows(groups_dataset(path))
    assert f"{path}:3: field 'teacher_scores[1]': score is not finite" in str(info.value)
    report = SkipReport()
    assert len(_rows(groups_dataset(path, on_error="skip", report=report))) == 2
    assert report.counts == {"non_finite": 1}
    assert report.entries[0][:4] == (str(path), 3, "teacher_scores[1]", "non_finite")

    table = pa.Table.from_pylist(
        [
            dict(GROUPS[0], teacher_scores=None, kinds=None),
            dict(GROUPS[0], qid="q9", labels=[1, 5], teacher_scores=None, kinds=None),
        ]
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(DataError) as info:
        groups_dataset(tmp_path / "bad.parquet").count()
    assert f"{tmp_path / 'bad.parquet'}:2: field 'labels[1]'" in str(info.value)
    (tmp_path / "groups.csv").write_text("x")
    with pytest.raises(DataError, match="unknown groups file type"):
        groups_dataset(tmp_path / "groups.csv")

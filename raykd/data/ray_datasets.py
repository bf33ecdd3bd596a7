"""Ray Data builders for the corpus, the queries and candidate groups.

The corpus and groups are read by a file datasource whose read tasks parse and validate each
file as a stream, so errors keep their file and line and nothing is gathered in the driver.
``.gz`` files are decompressed in the read task (one task per file: gzip cannot be split).
Duplicate ids are caught within each file; across files, see ``check_unique_ids``.

With ``on_error="skip"`` a :class:`SkipReport` is required; skipped rows are sent from the read
tasks to a small actor and reach the report when the report is read (after consuming the
dataset). Re-running the dataset does not count a row twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path

import pyarrow as pa
import ray
from ray.data.datasource import FileBasedDatasource

from raykd.data import beir, groups, msmarco, parquet
from raykd.data.records import CANDIDATE_GROUP_SCHEMA, CORPUS_SCHEMA, QUERIES_SCHEMA
from raykd.data.skips import ErrorPolicy, SkippedRow, SkipReport
from raykd.data.validation import (
    DUPLICATE_ID,
    MALFORMED,
    UNKNOWN_ID,
    data_error,
    require_id,
    require_text,
)
from raykd.errors import ConfigError

_CORPUS_READERS = {
    "jsonl": beir.corpus_records,
    "tsv": msmarco.collection_records,
    "parquet": parquet.corpus_parquet_records,
}
_GROUP_READERS = {
    "jsonl": groups.groups_jsonl_records,
    "parquet": groups.groups_parquet_records,
}
_READERS = {"corpus": _CORPUS_READERS, "groups": _GROUP_READERS}
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}


def file_format(path) -> str | None:
    """``jsonl``, ``tsv`` or ``parquet`` from the file name (a ``.gz`` ending is looked through)."""
    name = str(path)
    if name.endswith(".gz"):
        name = name[:-3]
    return _SUFFIXES.get(Path(name).suffix)


@ray.remote(num_cpus=0)
class _SkipSink:
    """Collects SkippedRow tuples from read tasks, once each."""

    def __init__(self) -> None:
        self._rows: dict[tuple, None] = {}
        self._sent = 0

    def add(self, rows: list) -> None:
        for row in rows:
            self._rows.setdefault(tuple(row), None)

    def take(self) -> list:
        rows = list(self._rows)[self._sent :]
        self._sent = len(self._rows)
        return rows


class RecordFileDatasource(FileBasedDatasource):
    """Reads corpus or candidate-group files with raykd's own streaming, validating parsers."""

    def __init__(self, paths, kind: str, *, sink=None, check_unique=True, rows_per_block=1024):
        super().__init__(paths)
        self._kind = kind
        self._out_schema = CORPUS_SCHEMA if kind == "corpus" else CANDIDATE_GROUP_SCHEMA
        self._sink = sink
        self._check_unique = check_unique
        self._rows_per_block = rows_per_block

    def _open_input_source(self, filesystem, path, **open_args):
        if file_format(path) == "parquet":
            return filesystem.open_input_file(path)  # parquet needs random access
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        reader = _READERS[self._kind].get(file_format(path))
        if reader is None:
            raise data_error(
                path,
                None,
                None,
                f"unknown {self._kind} file type; expected {_known(self._kind)}",
                MALFORMED,
            )
        report = SkipReport() if self._sink is not None else None
        policy = ErrorPolicy("skip" if report is not None else "raise", report, path)
        records = reader(f, path, policy, self._check_unique)
        emitted = False
        while True:
            chunk = list(islice(records, self._rows_per_block))
            if not chunk:
                break
            emitted = True
            yield pa.Table.from_pylist(chunk, schema=self._out_schema)
        if not emitted:
            yield self._out_schema.empty_table()
        if report is not None and report.total:
            ray.get(self._sink.add.remote([tuple(row) for row in report.entries]))


def _known(kind: str) -> str:
    return ", ".join(f".{k}[.gz]" if k != "parquet" else ".parquet" for k in _READERS[kind])


def _expand(path_or_paths, kind: str) -> list[str]:
    items = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
    if not items:
        raise ValueError("no input paths")
    out: list[str] = []
    for item in items:
        local = Path(item)
        if local.is_dir():
            found = sorted(
                str(p) for p in local.iterdir() if p.is_file() and file_format(p) in _READERS[kind]
            )
            if not found:
                raise data_error(
                    local, None, None, f"no {kind} files ({_known(kind)}) here", MALFORMED
                )
            out.extend(found)
        else:
            if "://" not in str(item) and not local.is_file():
                raise data_error(local, None, None, "no such file", MALFORMED)
            if file_format(item) not in _READERS[kind]:
                raise data_error(
                    item,
                    None,
                    None,
                    f"unknown {kind} file type; expected {_known(kind)}",
                    MALFORMED,
                )
            out.append(str(local.resolve()) if "://" not in str(item) else str(item))
    return out


def _sink_for(on_error: str, report: SkipReport | None):
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if on_error == "raise":
        return None
    if report is None:
        raise ValueError("on_error='skip' needs report=SkipReport() to count the skipped rows")
    sink = _SkipSink.remote()
    report.attach(lambda: [SkippedRow(*row) for row in ray.get(sink.take.remote())])
    return sink


def _dataset(
    kind, path_or_paths, on_error, report, check_unique, rows_per_block
) -> ray.data.Dataset:
    paths = _expand(path_or_paths, kind)
    sink = _sink_for(on_error, report)
    source = RecordFileDatasource(
        paths, kind, sink=sink, check_unique=check_unique, rows_per_block=rows_per_block
    )
    return ray.data.read_datasource(source)


def corpus_dataset(
    path,
    *,
    on_error: str = "raise",
    report: SkipReport | None = None,
    check_unique: bool = True,
    rows_per_block: int = 1024,
) -> ray.data.Dataset:
    """A streaming dataset with columns ``pid, title, text`` from a BEIR ``corpus.jsonl[.gz]``,
    an MS MARCO ``collection.tsv[.gz]`` or a parquet corpus (a file, a folder or a list)."""
    return _dataset("corpus", path, on_error, report, check_unique, rows_per_block)


def groups_dataset(
    path_or_paths,
    *,
    on_error: str = "raise",
    report: SkipReport | None = None,
    check_unique: bool = True,
    rows_per_block: int = 256,
) -> ray.data.Dataset:
    """A streaming dataset of validated candidate groups (CANDIDATE_GROUP_SCHEMA columns;
    absent optional fields are null) from JSONL[.gz] or parquet files."""
    return _dataset("groups", path_or_paths, on_error, report, check_unique, rows_per_block)


def queries_dataset(queries, qids: Iterable[str] | None = None) -> ray.data.Dataset:
    """A dataset with columns ``qid, query`` from a ``{qid: text}`` dict or a queries file
    (BEIR ``.jsonl`` or MS MARCO ``.tsv``). ``qids`` keeps only those (in that order); a qid
    absent from the queries is a DataError. Queries are small, so they are read in the driver."""
    source = "<queries>"
    if isinstance(queries, (str, Path)):
        source = str(queries)
        fmt = file_format(queries)
        if fmt == "jsonl":
            queries = beir.read_queries(queries)
        elif fmt == "tsv":
            queries = msmarco.read_queries(queries)
        else:
            raise data_error(
                source, None, None, "unknown queries file type; expected .jsonl or .tsv", MALFORMED
            )
    elif not isinstance(queries, Mapping):
        raise TypeError(f"queries must be a dict or a path, got {type(queries).__name__}")
    if qids is None:
        chosen = list(queries)
    else:
        chosen = list(dict.fromkeys(qids))
        missing = [q for q in chosen if q not in queries]
        if missing:
            raise data_error(
                source,
                None,
                "qid",
                f"{len(missing)} requested qids are not in the queries, e.g. {missing[:5]}",
                UNKNOWN_ID,
            )
    for i, qid in enumerate(chosen, start=1):
        require_id(qid, source, i, "qid")
        require_text(queries[qid], source, i, "query")
    table = pa.table({"qid": chosen, "query": [queries[q] for q in chosen]}, schema=QUERIES_SCHEMA)
    return ray.data.from_arrow(table)


def check_unique_ids(ds: ray.data.Dataset, column: str = "pid", batch_size: int = 4096) -> int:
    """Stream ``column`` through the driver (ids only) and raise DataError on a repeat;
    returns the row count. For duplicates across files, which read tasks cannot see."""
    seen: set[str] = set()
    n = 0
    for batch in ds.select_columns([column]).iter_batches(
        batch_size=batch_size, batch_format="pyarrow"
    ):
        for value in batch.column(column).to_pylist():
            n += 1
            if value in seen:
                raise data_error(
                    "<dataset>",
                    None,
                    column,
                    f"duplicate id {value!r} across files",
                    DUPLICATE_ID,
                )
            seen.add(value)
    return n


def iter_corpus_rows(corpus_path) -> Iterator[dict]:
    """``{"pid", "title", "text"}`` rows of a BEIR jsonl, MS MARCO tsv or parquet corpus."""
    from raykd.data.beir import iter_corpus
    from raykd.data.msmarco import iter_collection
    from raykd.data.parquet import iter_corpus_parquet

    fmt = file_format(corpus_path)
    if fmt == "jsonl":
        return iter_corpus(corpus_path)
    if fmt == "tsv":
        return iter_collection(corpus_path)
    if fmt == "parquet":
        return iter_corpus_parquet(corpus_path)
    raise ConfigError("data.corpus", f"{corpus_path}: unknown corpus file type")

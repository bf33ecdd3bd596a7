"""MS MARCO passage files -> what the recipes read (`raykd prepare-msmarco`).

Inputs, the official files (METHODS.md 6.2; any may be ``.gz``): ``collection.tsv``,
``queries.train.tsv``, ``queries.dev.small.tsv``, ``qrels.train.tsv``, ``qrels.dev.small.tsv``,
and any of: a first-stage run (BM25 top-1000: ``qid pid rank``, TREC or ``top1000``), the
id triples (``qidpidtriples.train.full.2.tsv``: ``qid pid_pos pid_neg``), a Hofstatter
teacher-score file in the id form (``pos_score neg_score qid pid_pos pid_neg``, e.g. the
Margin-MSE cross-encoder ensemble's ``bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv``).

Output folder (``out``)::

    corpus.jsonl  queries.jsonl  qrels/train.tsv  qrels/dev.tsv     a BEIR dataset (data.dataset)
    candidates/bm25/part-*.parquet      from the run: positives + sampled negatives per query
    candidates/triples/part-*.parquet   from the triples
    candidates/scored/part-*.parquet    from the score file: only pairs it scores
    teacher/scores.tsv                  the score rows behind candidates/scored (hofstatter_ids,
                                        what a `precomputed` teacher reads)
    prepared.json                       counts and paths
    _prepare/                           per-part markers, the collection's id set

Streaming: the collection is read line by line (its ids kept as one sorted numpy array);
candidate texts are joined in chunks of ``join_chunk`` passages, one pass over the collection
per chunk; a run is read query block by query block; triples and scores keep at most
``num_negatives`` rows per kept query (a seeded reservoir). Only queries and qrels (small) are
held whole. Resumable: every part leaves a marker keyed by its inputs and options, and is
skipped on a rerun with the same key; candidate parts are written atomically one by one, so an
interrupted join resumes at the first missing part. Every input row is validated; a bad one is
a `DataError` naming file, line and field.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raykd.data import beir, msmarco
from raykd.data.groups import write_groups_parquet
from raykd.data.lines import iter_raw_lines, open_binary, split_columns
from raykd.data.parquet import write_parquet_rows
from raykd.data.skips import ErrorPolicy
from raykd.data.teacher_scores import SCORE_COLUMNS, write_hofstatter
from raykd.data.validation import (
    BAD_VALUE,
    DUPLICATE_ID,
    MISSING_FIELD,
    check_known_id,
    data_error,
    require_finite,
)
from raykd.fingerprint import stable_hash
from raykd.progress import Progress
from raykd.storage import atomic_path

OFFICIAL_NAMES = {
    "collection": "collection.tsv",
    "queries_train": "queries.train.tsv",
    "queries_dev": "queries.dev.small.tsv",
    "qrels_train": "qrels.train.tsv",
    "qrels_dev": "qrels.dev.small.tsv",
}
SOURCES = ("bm25", "triples", "scored")  # candidate folders, by the input they come from
ID_GROUP_SCHEMA = pa.schema([pa.field("qid", pa.string()), pa.field("pids", pa.list_(pa.string())),
                             pa.field("labels", pa.list_(pa.int32()))])
MARKERS = "_prepare"
TEACHER_FILE = "teacher/scores.tsv"


def find_official(raw: str | Path, name: str) -> Path:
    """`raw/<official name>` or its `.gz`; the plain name when neither exists (a later
    DataError names it)."""
    plain = Path(raw) / OFFICIAL_NAMES[name]
    gz = plain.with_name(plain.name + ".gz")
    return gz if not plain.exists() and gz.exists() else plain


@dataclass
class PrepareOptions:
    """What to read, where to write, and how much (see the module docstring)."""

    out: Path
    collection: Path
    queries_train: Path
    queries_dev: Path
    qrels_train: Path
    qrels_dev: Path
    run: Path | None = None
    run_format: str = "auto"
    triples: Path | None = None
    teacher_scores: Path | None = None
    max_queries: int | None = None  # train queries (the first N of qrels.train, file order)
    max_dev_queries: int | None = None
    max_passages: int | None = None  # corpus size: every referenced passage, then the first others
    depth: int = 1000  # run ranks considered for negatives
    num_negatives: int = 15  # per query, for every source
    seed: int = 13
    join_chunk: int = 2_000_000  # passages looked up per pass over the collection
    part_groups: int = 50_000  # groups per parquet part

    @classmethod
    def from_raw(cls, raw: str | Path, out: str | Path, **kwargs) -> PrepareOptions:
        """The five official files from the folder `raw` (explicit paths in kwargs win)."""
        paths = {name: Path(kwargs.pop(name, None) or find_official(raw, name))
                 for name in OFFICIAL_NAMES}
        return cls(out=Path(out), **paths, **kwargs)

    def inputs(self) -> dict[str, Path]:
        named = {name: getattr(self, name) for name in OFFICIAL_NAMES}
        extra = {"run": self.run, "triples": self.triples, "teacher_scores": self.teacher_scores}
        return {**named, **{k: v for k, v in extra.items() if v is not None}}


def file_key(path: Path) -> list:
    """What identifies an input's content cheaply: its resolved path, size and mtime."""
    stat = Path(path).stat()
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


# ---------------------------------------------------------------- id sets


class IdSet:
    """A set of string ids held as one sorted numpy array: int64 when every id is a canonical
    decimal integer (MS MARCO's 8.8M pids: 70 MB), else strings. Membership by binary search."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids
        self.numeric = ids.dtype == np.int64

    @staticmethod
    def canonical_int(value: str) -> int | None:
        if value.isascii() and value.isdigit() and (value == "0" or value[0] != "0") \
                and len(value) < 19:
            return int(value)
        return None

    @classmethod
    def build(cls, ids: Iterable[str]) -> IdSet:
        return cls(_IdCollector(ids).finish()[0])

    def __contains__(self, value) -> bool:
        if self.numeric:
            value = self.canonical_int(value) if isinstance(value, str) else None
            if value is None:
                return False
        elif not isinstance(value, str):
            return False
        i = int(np.searchsorted(self.ids, value))
        return i < len(self.ids) and self.ids[i] == value

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return (str(x) for x in self.ids)

    def save(self, path: Path) -> None:
        with atomic_path(path, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.ids, allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> IdSet:
        return cls(np.load(path, allow_pickle=False))

    def union(self, other: IdSet) -> IdSet:
        if self.numeric != other.numeric:
            return IdSet.build([*self, *other])
        return IdSet(np.union1d(self.ids, other.ids))


class _IdCollector:
    """Collects ids (ints while they are all canonical integers), then sorts them once;
    `finish` returns the sorted unique array and the first repeated id (or None)."""

    def __init__(self, ids: Iterable[str] = ()):
        self.ints: list[np.ndarray] = []
        self.buffer: list[int] = []
        self.strings: list[str] | None = None
        for value in ids:
            self.add(value)

    def add(self, value: str) -> None:
        if self.strings is None:
            number = IdSet.canonical_int(value)
            if number is not None:
                self.buffer.append(number)
                if len(self.buffer) >= 1 << 20:
                    self.ints.append(np.asarray(self.buffer, dtype=np.int64))
                    self.buffer = []
                return
            self.strings = [str(x) for x in self._int_array()]
            self.ints, self.buffer = [], []
        self.strings.append(value)

    def _int_array(self) -> np.ndarray:
        parts = [*self.ints, np.asarray(self.buffer, dtype=np.int64)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def finish(self) -> tuple[np.ndarray, str | None]:
        values = self._int_array() if self.strings is None else np.asarray(self.strings, dtype=str)
        values.sort(kind="stable")
        repeated = np.flatnonzero(values[1:] == values[:-1]) if len(values) > 1 else []
        first = str(values[repeated[0]]) if len(repeated) else None
        return np.unique(values), first


# ---------------------------------------------------------------- the job


@dataclass
class PrepareReport:
    """Counts per part, and which parts this call ran (the rest were done already)."""

    counts: dict = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.counts.items() if not isinstance(v, dict))
        return f"{shown}; ran: {', '.join(self.ran) or 'nothing'}; " \
               f"already done: {', '.join(self.skipped) or 'nothing'}"


class Preparer:
    """Runs the parts in order (each skipped when its marker holds the same key)."""

    def __init__(self, options: PrepareOptions, echo: Callable[[str], None] = print,
                 progress_every: float = 30.0):
        self.o = options
        self.out = Path(options.out)
        self.echo = echo
        self.every = progress_every
        self.report = PrepareReport()
        for name, path in options.inputs().items():
            if not Path(path).is_file():
                raise data_error(path, None, None, f"no such file (input {name})", MISSING_FIELD)
        if options.run is not None and options.run_format not in ("auto", *msmarco.RUN_COLUMNS):
            raise ValueError(f"run_format must be 'auto' or one of {tuple(msmarco.RUN_COLUMNS)}")
        for name in ("num_negatives", "depth", "join_chunk", "part_groups"):
            if getattr(options, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(options, name)}")
        self._collection: IdSet | None = None
        self._queries: dict | None = None

    # ---- markers ------------------------------------------------------------------------

    def _marker(self, part: str) -> Path:
        return self.out / MARKERS / f"{part}.json"

    def _key(self, part: str, *inputs: str, **options) -> str:
        files = {name: file_key(self.o.inputs()[name]) for name in inputs}
        return stable_hash({"part": part, "files": files, "options": options})

    def _done(self, part: str, key: str) -> dict | None:
        marker = self._marker(part)
        if marker.is_file():
            record = json.loads(marker.read_text())
            if record.get("key") == key:
                return record
        return None

    def _finish(self, part: str, key: str, counts: dict) -> None:
        with atomic_path(self._marker(part)) as tmp:
            tmp.write_text(json.dumps({"key": key, "counts": counts}, indent=1))

    def _part(self, part: str, key: str, build: Callable[[], dict]) -> dict:
        done = self._done(part, key)
        if done is not None:
            self.report.skipped.append(part)
            counts = done["counts"]
        else:
            counts = build()
            self._finish(part, key, counts)
            self.report.ran.append(part)
        self.report.counts[part] = counts
        return counts

    # ---- parts --------------------------------------------------------------------------

    def run(self) -> PrepareReport:
        self.out.mkdir(parents=True, exist_ok=True)
        self.collection_ids()
        self.queries()
        sources = self.sources()
        self.corpus(sources)
        for source in sources:
            self.join(source)
        summary = {"dataset": str(self.out.resolve()),
                   "candidates": {s: str((self.out / "candidates" / s).resolve())
                                  for s in sources},
                   "teacher_scores": (str((self.out / TEACHER_FILE).resolve())
                                      if "scored" in sources else None),
                   "options": json.loads(json.dumps(asdict(self.o), default=str)),
                   "counts": self.report.counts}
        with atomic_path(self.out / "prepared.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=1))
        return self.report

    def collection_ids(self) -> IdSet:
        """Part `collection`: every collection row validated (id, non-empty text, no repeated
        pid); the pids saved as a sorted array (`_prepare/collection_ids.npy`)."""
        if self._collection is not None:
            return self._collection
        path, ids_file = self.o.collection, self.out / MARKERS / "collection_ids.npy"
        key = self._key("collection", "collection")

        def build() -> dict:
            progress = Progress(f"collection {path.name}", unit="passages", every=self.every,
                                echo=self.echo)
            collector = _IdCollector()
            with open_binary(path) as fobj:
                for row in msmarco.collection_records(fobj, path, ErrorPolicy("raise", None, path),
                                                      check_unique=False):
                    collector.add(row["pid"])
                    progress.update()
            progress.close()
            ids, repeated = collector.finish()
            if repeated is not None:
                raise self._repeated_pid(path, repeated)
            IdSet(ids).save(ids_file)
            return {"passages": int(len(ids))}

        if not ids_file.is_file() and self._marker("collection").is_file():
            self._marker("collection").unlink()  # a marker without its array: build again
        counts = self._part("collection", key, build)
        self._collection = IdSet.load(ids_file)
        assert len(self._collection) == counts["passages"]
        return self._collection

    @staticmethod
    def _repeated_pid(path: Path, pid: str):
        first = None
        with open_binary(path) as fobj:
            for line, raw in iter_raw_lines(fobj, path):
                if raw.split(b"\t", 1)[0].decode("utf-8", "replace") == pid:
                    if first is not None:
                        return data_error(path, line, "pid", f"duplicate pid {pid!r} (first seen "
                                                             f"at line {first})", DUPLICATE_ID)
                    first = line
        return data_error(path, None, "pid", f"duplicate pid {pid!r}", DUPLICATE_ID)

    def queries(self) -> dict:
        """Part `queries`: the kept train and dev queries (the first `max_queries` /
        `max_dev_queries` qids of each qrels file) -> queries.jsonl, qrels/{train,dev}.tsv.
        Every qrels qid must be in its queries file, every pid in the collection."""
        if self._queries is not None:
            return self._queries
        o = self.o
        key = self._key("queries", "collection", *OFFICIAL_NAMES,
                        max_queries=o.max_queries, max_dev_queries=o.max_dev_queries)
        kept: dict[str, dict] = {}
        texts: dict[str, str] = {}
        for split, qpath, rpath, limit in (("train", o.queries_train, o.qrels_train,
                                            o.max_queries),
                                           ("dev", o.queries_dev, o.qrels_dev, o.max_dev_queries)):
            queries = msmarco.read_queries(qpath)
            qrels: dict[str, dict[str, int]] = {}
            for line, qid, pid, rel in msmarco.iter_qrels_rows(rpath):
                check_known_id(qid, queries, rpath, line, "qid", f"queries file {qpath}")
                check_known_id(pid, self.collection_ids(), rpath, line, "pid",
                               f"collection {o.collection}")
                if qid not in qrels and limit is not None and len(qrels) >= limit:
                    continue
                qrels.setdefault(qid, {})[pid] = rel
            kept[split] = qrels
            texts.update((qid, queries[qid]) for qid in qrels)

        def build() -> dict:
            beir.write_queries(self.out / "queries.jsonl", texts)
            for split, qrels in kept.items():
                beir.write_qrels(self.out / "qrels" / f"{split}.tsv", qrels)
            return {f"{split}_queries": len(q) for split, q in kept.items()} | {
                f"{split}_qrels": sum(map(len, q.values())) for split, q in kept.items()}

        self._part("queries", key, build)
        self._queries = {"texts": texts, "train": kept["train"], "dev": kept["dev"]}
        return self._queries

    def sources(self) -> list[str]:
        """Parts `<source>-ids`: per candidate source, each kept train query's positives and
        up to `num_negatives` negatives, as ids (`_prepare/<source>-ids.parquet`)."""
        o = self.o
        made = []
        for source, name, reader in (("bm25", "run", self._run_groups),
                                     ("triples", "triples", self._triple_groups),
                                     ("scored", "teacher_scores", self._scored_groups)):
            if getattr(o, name) is None:
                continue
            key = self._key(f"{source}-ids", "collection", *OFFICIAL_NAMES, name,
                            max_queries=o.max_queries, num_negatives=o.num_negatives,
                            seed=o.seed, **({"depth": o.depth, "run_format": o.run_format}
                                            if source == "bm25" else {}))
            self._part(f"{source}-ids", key, lambda r=reader, s=source: self._write_ids(s, r()))
            made.append(source)
        return made

    def _write_ids(self, source: str, groups: Iterator[tuple[str, list[str], list[int]]]) -> dict:
        counts = {"groups": 0, "candidates": 0, "positives": 0}

        def rows():
            for qid, pids, labels in groups:
                counts["groups"] += 1
                counts["candidates"] += len(pids)
                counts["positives"] += sum(labels)
                yield {"qid": qid, "pids": pids, "labels": labels}

        write_parquet_rows(self._ids_file(source), rows(), ID_GROUP_SCHEMA)
        return counts

    def _ids_file(self, source: str) -> Path:
        return self.out / MARKERS / f"{source}-ids.parquet"

    def _positives(self, qid: str) -> list[str]:
        return [pid for pid, rel in self.queries()["train"][qid].items() if rel > 0]

    def _rng(self, qid: str) -> random.Random:
        return random.Random(f"{self.o.seed}:{qid}")

    def _run_groups(self) -> Iterator[tuple[str, list[str], list[int]]]:
        """The run read query block by query block; a query's negatives are `num_negatives`
        of its top-`depth` non-positives, drawn at random (seeded by qid), kept in rank order."""
        o, train = self.o, self.queries()["train"]
        progress = Progress(f"run {o.run.name}", unit="lines", every=self.every, echo=self.echo)
        finished: dict[str, int] = {}
        current, ranked = None, []
        for line, qid, pid, rank in msmarco.iter_run(o.run, o.run_format):
            progress.update()
            if qid != current:
                if current is not None:
                    finished[current] = line - 1
                    if current in train:
                        yield self._sampled(current, ranked)
                if qid in finished:
                    raise data_error(o.run, line, "qid", f"query {qid!r} again after its block "
                                     f"ended at line {finished[qid]}: a run must hold each "
                                     f"query's lines together (sort it by qid)", BAD_VALUE)
                current, ranked = qid, []
            if qid not in train:
                check_known_id(qid, self._all_train_qids(), o.run, line, "qid",
                               f"queries file {o.queries_train}")
                continue
            check_known_id(pid, self.collection_ids(), o.run, line, "pid",
                           f"collection {o.collection}")
            if rank <= o.depth:
                ranked.append((rank, pid))
        if current is not None and current in train:
            yield self._sampled(current, ranked)
        progress.close()

    def _all_train_qids(self) -> dict:
        if not hasattr(self, "_train_qids"):
            self._train_qids = msmarco.read_queries(self.o.queries_train)
        return self._train_qids

    def _sampled(self, qid: str, ranked: list[tuple[int, str]]) -> tuple[str, list[str], list[int]]:
        positives = self._positives(qid)
        pool = [pid for _, pid in sorted(ranked) if pid not in positives]
        pool = list(dict.fromkeys(pool))
        if len(pool) > self.o.num_negatives:
            keep = set(self._rng(qid).sample(range(len(pool)), self.o.num_negatives))
            pool = [pid for i, pid in enumerate(pool) if i in keep]
        return qid, positives + pool, [1] * len(positives) + [0] * len(pool)

    def _reservoir(self, rows: Iterable[tuple[str, str, str, object]], path: Path,
                   what: str) -> dict[str, list]:
        """Per kept query, a uniform sample (seeded) of at most `num_negatives` rows with
        distinct negatives: `(line, pid_pos, pid_neg, payload)`; every positive must be one of
        the query's labelled positives."""
        train, k = self.queries()["train"], self.o.num_negatives
        samples: dict[str, list] = {}
        seen: dict[str, int] = {}
        rngs: dict[str, random.Random] = {}
        progress = Progress(f"{what} {path.name}", unit="lines", every=self.every,
                            echo=self.echo)
        for line, qid, pos, neg, payload in rows:
            progress.update()
            if qid not in train:
                continue
            if pos not in train[qid] or train[qid][pos] <= 0:
                raise data_error(path, line, "pid_pos", f"pid {pos!r} is not a labelled positive "
                                 f"of query {qid!r} in {self.o.qrels_train}", BAD_VALUE)
            if neg in train[qid] and train[qid][neg] > 0:
                continue  # a labelled positive used as a negative: not a negative
            sample = samples.setdefault(qid, [])
            if any(row[2] == neg for row in sample):
                continue
            n = seen[qid] = seen.get(qid, 0) + 1
            if len(sample) < k:
                sample.append((line, pos, neg, payload))
            else:
                rng = rngs.setdefault(qid, self._rng(qid))
                j = rng.randrange(n)
                if j < k:
                    sample[j] = (line, pos, neg, payload)
        progress.close()
        return samples

    @staticmethod
    def _group(qid: str, sample: list) -> tuple[str, list[str], list[int]]:
        sample = sorted(sample)  # file order
        positives = list(dict.fromkeys(row[1] for row in sample))
        negatives = [row[2] for row in sample]
        return qid, positives + negatives, [1] * len(positives) + [0] * len(negatives)

    def _triple_groups(self) -> Iterator[tuple[str, list[str], list[int]]]:
        o = self.o
        rows = ((line, r["qid"], r["pid_pos"], r["pid_neg"], None)
                for line, r in self._id_rows(o.triples, msmarco.TRIPLE_COLUMNS["ids"]))
        for qid, sample in self._reservoir(rows, o.triples, "triples").items():
            yield self._group(qid, sample)

    def _scored_groups(self) -> Iterator[tuple[str, list[str], list[int]]]:
        """Groups of the pairs the score file scores, and `teacher/scores.tsv`: the sampled
        rows, a positive's score the first one read for it (a positive scored otherwise on
        another kept line is counted, and the count printed)."""
        o = self.o
        columns = (*SCORE_COLUMNS, *msmarco.TRIPLE_COLUMNS["ids"])
        rows = ((line, r["qid"], r["pid_pos"], r["pid_neg"], (r["score_pos"], r["score_neg"]))
                for line, r in self._id_rows(o.teacher_scores, columns))
        samples = self._reservoir(rows, o.teacher_scores, "scores")
        disagreements = 0
        out_rows = []
        for qid, sample in samples.items():
            first: dict[str, float] = {}
            for _, pos, neg, (s_pos, s_neg) in sorted(sample):
                kept = first.setdefault(pos, s_pos)
                disagreements += abs(kept - s_pos) > 1e-4 * max(1.0, abs(kept))
                out_rows.append({"score_pos": kept, "score_neg": s_neg, "qid": qid,
                                 "pid_pos": pos, "pid_neg": neg})
        write_hofstatter(self.out / TEACHER_FILE, out_rows, form="ids")
        if disagreements:
            self.echo(f"[raykd] {o.teacher_scores.name}: {disagreements} positive(s) scored "
                      f"differently on other lines; {TEACHER_FILE} keeps the first score")
        for qid, sample in samples.items():
            yield self._group(qid, sample)

    def _id_rows(self, path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
        """(line, row) of an id-form triples or score file, validated as `msmarco.iter_triples`
        and `teacher_scores.iter_hofstatter` do (scores finite; qids in the train queries,
        pids in the collection)."""
        for line, raw in _iter_lines(path):
            row: dict = dict(zip(columns, split_columns(raw, path, line, columns), strict=True))
            for name in SCORE_COLUMNS:
                if name in row:
                    row[name] = require_finite(row[name], path, line, name, allow_str=True)
            msmarco.check_triple_values(row, "ids", path, line, self.collection_ids(),
                                        self._all_train_qids())
            yield line, row

    def corpus(self, sources: list[str]) -> dict:
        """Part `corpus`: corpus.jsonl, the whole collection, or with `max_passages` every
        passage a kept query or candidate refers to, then the first others up to that size."""
        o = self.o
        key = self._key("corpus", "collection", *OFFICIAL_NAMES,
                        *(n for n, s in (("run", "bm25"), ("triples", "triples"),
                                         ("teacher_scores", "scored")) if s in sources),
                        max_passages=o.max_passages, max_queries=o.max_queries,
                        max_dev_queries=o.max_dev_queries, num_negatives=o.num_negatives,
                        depth=o.depth, seed=o.seed)

        def build() -> dict:
            keep = None
            if o.max_passages is not None:
                keep = self._referenced(sources)
                if len(keep) > o.max_passages:
                    self.echo(f"[raykd] corpus.jsonl: the kept queries and their candidates use "
                              f"{len(keep)} passages, more than --max-passages "
                              f"{o.max_passages}: all of them are kept")
            room = 0 if keep is None else max(o.max_passages - len(keep), 0)
            progress = Progress("corpus.jsonl", unit="passages", every=self.every,
                                echo=self.echo)

            def rows():
                nonlocal room
                for pid, text in _collection_pairs(o.collection):
                    progress.update()
                    if keep is not None and pid not in keep:
                        if room <= 0:
                            continue
                        room -= 1
                    yield {"pid": pid, "title": "", "text": text}

            n = beir.write_corpus(self.out / "corpus.jsonl", rows())
            progress.close()
            return {"passages": n}

        return self._part("corpus", key, build)

    def _referenced(self, sources: list[str]) -> IdSet:
        q = self.queries()
        collector = _IdCollector(pid for split in ("train", "dev") for docs in q[split].values()
                                 for pid in docs)
        for source in sources:
            for batch in pq.ParquetFile(self._ids_file(source)).iter_batches(columns=["pids"]):
                for pids in batch.column(0).to_pylist():
                    for pid in pids:
                        collector.add(pid)
        return IdSet(collector.finish()[0])

    def join(self, source: str) -> dict:
        """Part `<source>`: the id groups with their query and passage texts, as candidate
        groups in `candidates/<source>/part-NNNNN.parquet` (`part_groups` groups each), joined
        `join_chunk` passages at a time (one pass over the collection each). Parts already
        written are kept on a resumed run."""
        o = self.o
        key = stable_hash({"ids": self._done_key(f"{source}-ids"), "part_groups": o.part_groups,
                           "collection": file_key(o.collection), "queries": self._done_key(
                               "queries")})
        folder = self.out / "candidates" / source

        def build() -> dict:
            started = self.out / MARKERS / f"{source}.started"
            if not (started.is_file() and started.read_text() == key):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                with atomic_path(started) as tmp:
                    tmp.write_text(key)
            texts = self.queries()["texts"]
            ids = pq.ParquetFile(self._ids_file(source))
            progress = Progress(f"{source} candidates", total=ids.metadata.num_rows,
                                unit="groups", every=self.every, echo=self.echo)
            pending: list[tuple[int, dict]] = []
            size = parts = 0

            def flush() -> None:
                needed = {pid for _, rows in pending for pids in rows["pids"] for pid in pids}
                found = {pid: text for pid, text in _collection_pairs(o.collection)
                         if pid in needed}
                for n, rows in pending:
                    groups = ({"qid": qid, "query": texts[qid], "pids": pids,
                               "texts": [found[p] for p in pids], "labels": labels,
                               "kinds": ["pos" if y else "neg" for y in labels]}
                              for qid, pids, labels in zip(rows["qid"], rows["pids"],
                                                           rows["labels"], strict=True))
                    write_groups_parquet(folder / f"part-{n:05d}.parquet", groups)
                    progress.update(len(rows["qid"]))
                pending.clear()

            for parts, rows in enumerate(_row_parts(ids, o.part_groups), start=1):
                n = parts - 1
                if (folder / f"part-{n:05d}.parquet").is_file():
                    progress.update(len(rows["qid"]))
                    continue
                count = sum(map(len, rows["pids"]))
                if pending and size + count > o.join_chunk:
                    flush()
                    size = 0
                pending.append((n, rows))
                size += count
            flush()
            progress.close()
            if parts == 0:
                write_groups_parquet(folder / "part-00000.parquet", [])
            return {"groups": ids.metadata.num_rows, "parts": max(parts, 1)}

        return self._part(source, key, build)

    def _done_key(self, part: str) -> str:
        return json.loads(self._marker(part).read_text())["key"]


def _row_parts(pf: pq.ParquetFile, size: int) -> Iterator[dict]:
    """The file's rows as column dicts of `size` rows each (the last one shorter)."""
    buffer: dict[str, list] = {name: [] for name in pf.schema_arrow.names}
    for batch in pf.iter_batches():
        for name, values in batch.to_pydict().items():
            buffer[name].extend(values)
        while len(buffer["qid"]) >= size:
            yield {name: values[:size] for name, values in buffer.items()}
            buffer = {name: values[size:] for name, values in buffer.items()}
    if buffer["qid"]:
        yield buffer


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open_binary(path) as fobj:
        yield from iter_raw_lines(fobj, path)


def _collection_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """(pid, text) of a collection already validated by the `collection` part (no checks)."""
    for _, raw in _iter_lines(path):
        pid, _, text = raw.partition(b"\t")
        yield pid.decode("utf-8"), text.decode("utf-8")


def prepare_msmarco(options: PrepareOptions, echo: Callable[[str], None] = print,
                    progress_every: float = 30.0) -> PrepareReport:
    """Run every part that is not done yet; see the module docstring."""
    return Preparer(options, echo=echo, progress_every=progress_every).run()


__all__ = ["OFFICIAL_NAMES", "SOURCES", "TEACHER_FILE", "IdSet", "PrepareOptions",
           "PrepareReport", "Preparer", "find_official", "prepare_msmarco"]

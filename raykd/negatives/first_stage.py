"""First-stage candidates shared by re-ranking and cross-encoder training.

    stage = first_stage(dataset, "dev", depth=100, model="minilm", cache_dir="outputs/...")
    stage.union["q1"]        # BM25 top-100 and dense top-100 interleaved, deduplicated

BM25 comes from `bm25_rankings`. Dense retrieval encodes the corpus with a
`BiEncoderTeacher`-equivalent encoder on a Ray Data actor pool (`encode_corpus`) and keeps the
embeddings on disk (`CorpusEmbeddings`, keyed by the bi-encoder teacher's fingerprint and the
corpus file's hash), so a second split, a rerun or a training job pays only for its queries.

The same stored embeddings serve the bi-encoder *teacher*: `ReusePassageEmbeddings` wraps a
`make_teacher` factory so that every `bi_encoder` teacher inside the built teacher (an
ensemble's members included) whose fingerprint equals the store's reads passage vectors from
it instead of running the encoder. The scores are the ones the teacher would compute (same
model, options and passage text); only the forward passes are saved. Dense first-stage scores
and bi-encoder teacher scores are therefore the same numbers.

`union` here is the set union of the sources' top-`depth` lists (up to 2 x depth candidates
per query, in round-robin order, BM25 first at each rank), unlike `union_rankings`, which cuts
the interleave at `depth`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raykd.data.records import passage_text
from raykd.errors import ConfigError
from raykd.fingerprint import file_sha256
from raykd.negatives.mining import Rankings, bm25_rankings, iter_corpus_rows
from raykd.negatives.sampling import interleave_rankings

log = logging.getLogger(__name__)

FIRST_STAGE_SOURCES = ("bm25", "dense", "union")
DEFAULT_EMBEDDING_CACHE = "outputs/embedding_cache"


def text_hash(text: str) -> int:
    """64-bit hash of a passage text (the embedding store's lookup key)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class CorpusEmbeddings:
    """Passage vectors of a whole corpus made by one bi-encoder (named by its fingerprint)."""

    fingerprint: str
    pids: list[str]
    hashes: np.ndarray  # uint64 text_hash(passage_text) per row
    vectors: np.ndarray  # float32 [n, dim]
    _rows: dict[int, int] | None = field(default=None, repr=False)

    FILES = ("meta.json", "pids.json", "hashes.npy", "vectors.npy")

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the store atomically (a temporary folder renamed into place)."""
        folder = Path(folder)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "meta.json").write_text(json.dumps({"fingerprint": self.fingerprint,
                                                   "count": len(self.pids),
                                                   "dim": int(self.vectors.shape[1])}))
        (tmp / "pids.json").write_text(json.dumps(self.pids))
        np.save(tmp / "hashes.npy", self.hashes.astype(np.uint64))
        np.save(tmp / "vectors.npy", self.vectors.astype(np.float32))
        if folder.exists():  # another process finished first; theirs is the same
            for name in self.FILES:
                (tmp / name).unlink()
            tmp.rmdir()
            return folder
        os.replace(tmp, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> CorpusEmbeddings:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        return cls(meta["fingerprint"], json.loads((folder / "pids.json").read_text()),
                   np.load(folder / "hashes.npy"), np.load(folder / "vectors.npy"))

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        return all((Path(folder) / name).is_file() for name in CorpusEmbeddings.FILES)

    def lookup(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, dim], found [n] bool) for passage texts; rows not found are zeros."""
        if self._rows is None:
            self._rows = {int(h): i for i, h in enumerate(self.hashes.tolist())}
        texts = list(texts)
        rows = np.array([self._rows.get(text_hash(t), -1) for t in texts], dtype=np.int64)
        found = rows >= 0
        out = np.zeros((len(texts), self.vectors.shape[1]), dtype=np.float32)
        out[found] = self.vectors[rows[found]]
        return out, found

    def index(self):
        """A flat inner-product faiss index over the vectors."""
        from raykd.index.faiss_index import DenseIndex

        index = DenseIndex(int(self.vectors.shape[1]), kind="flat")
        index.add(self.pids, self.vectors)
        return index


def bi_encoder_teacher(model: str, query_max_length: int = 64, passage_max_length: int = 256):
    """The frozen bi-encoder whose passage vectors the store holds (built on CPU)."""
    from raykd.teachers.bi_encoder import BiEncoderTeacher

    return BiEncoderTeacher(model, query_max_length=query_max_length,
                            passage_max_length=passage_max_length, device="cpu")


def embeddings_folder(cache_dir: str | os.PathLike, fingerprint: str,
                      corpus_path: str | os.PathLike) -> Path:
    return Path(cache_dir) / f"{fingerprint}-corpus-{file_sha256(corpus_path)[:16]}"


def corpus_embeddings(corpus_path: str | os.PathLike, teacher, *,
                      cache_dir: str | os.PathLike = DEFAULT_EMBEDDING_CACHE,
                      concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64
                      ) -> tuple[CorpusEmbeddings, Path]:
    """The corpus encoded by `teacher`'s encoder: loaded from `cache_dir`, else computed on a
    Ray Data actor pool (`raykd.index.encode.encode_corpus`) and stored there."""
    from raykd.data.ray_datasets import corpus_dataset
    from raykd.index.encode import encode_corpus
    from raykd.students.bundled import resolve_model

    folder = embeddings_folder(cache_dir, teacher.fingerprint, corpus_path)
    if CorpusEmbeddings.exists(folder):
        log.info("corpus embeddings from %s", folder)
        return CorpusEmbeddings.load(folder), folder
    opts = teacher.options
    student_options = {"pooling": opts.pooling, "similarity": opts.similarity,
                       "scale": opts.scale, "query_max_length": opts.query_max_length,
                       "passage_max_length": opts.passage_max_length}
    start = time.perf_counter()
    encoded = encode_corpus(corpus_dataset(corpus_path), resolve_model(teacher.model_name),
                            concurrency=concurrency, num_gpus=num_gpus, batch_size=batch_size,
                            student_options=student_options)
    vectors: dict[str, np.ndarray] = {}
    for batch in encoded.iter_batches(batch_size=4096, batch_format="numpy"):
        for pid, vec in zip(batch["pid"].tolist(), np.asarray(batch["embedding"]), strict=True):
            vectors[str(pid)] = vec
    # Texts are streamed once more for their hashes only (the driver keeps no passage text).
    pids, hashes = [], []
    for row in iter_corpus_rows(corpus_path):
        pids.append(row["pid"])
        hashes.append(text_hash(passage_text(row["title"], row["text"])))
    missing = [p for p in pids if p not in vectors]
    if missing or len(vectors) != len(pids):
        raise RuntimeError(f"corpus encoding returned {len(vectors)} vectors for {len(pids)} "
                           f"passages (missing e.g. {missing[:3]})")
    store = CorpusEmbeddings(teacher.fingerprint, pids, np.array(hashes, dtype=np.uint64),
                             np.stack([vectors[p] for p in pids]).astype(np.float32))
    store.save(folder)
    log.info("encoded %d passages in %.0fs -> %s", len(pids), time.perf_counter() - start, folder)
    return store, folder


@dataclass
class FirstStage:
    """One split's first-stage rankings (`bm25`, `dense`, `union`, whichever were asked for)."""

    split: str
    depth: int
    rankings: dict[str, Rankings]
    embeddings: Path | None = None  # the stored corpus vectors, when dense ran
    fingerprint: str | None = None  # of the bi-encoder that made them
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def union(self) -> Rankings:
        return self.rankings["union"]

    def get(self, source: str) -> Rankings:
        if source not in self.rankings:
            raise ConfigError("first_stage.source",
                              f"{source!r} was not computed; have {sorted(self.rankings)}")
        return self.rankings[source]


def first_stage(dataset, split: str, *, depth: int = 100, source: str = "union",
                model: str = "minilm", query_max_length: int = 64,
                passage_max_length: int = 256,
                cache_dir: str | os.PathLike = DEFAULT_EMBEDDING_CACHE,
                concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 64,
                queries: Mapping[str, str] | None = None) -> FirstStage:
    """BM25 and/or dense top-`depth` for the queries of `split` (`dataset`: a `BeirDataset`),
    plus their set union when `source="union"`. Dense needs Ray (`raykd.runtime.init_ray`)."""
    if source not in FIRST_STAGE_SOURCES:
        raise ConfigError("first_stage.source", f"{source!r} is not one of {FIRST_STAGE_SOURCES}")
    if depth < 1:
        raise ConfigError("first_stage.depth", f"must be >= 1, got {depth}")
    queries = dict(queries if queries is not None else dataset.queries(split))
    qids = list(queries)
    out = FirstStage(split, depth, {})
    if source in ("bm25", "union"):
        start = time.perf_counter()
        out.rankings["bm25"] = bm25_rankings(dataset.corpus_path, queries, depth)
        out.seconds["bm25"] = time.perf_counter() - start
    if source in ("dense", "union"):
        start = time.perf_counter()
        teacher = bi_encoder_teacher(model, query_max_length, passage_max_length)
        store, folder = corpus_embeddings(dataset.corpus_path, teacher, cache_dir=cache_dir,
                                          concurrency=concurrency, num_gpus=num_gpus,
                                          batch_size=batch_size)
        out.seconds["corpus_embeddings"] = time.perf_counter() - start
        start = time.perf_counter()
        vectors = teacher.encode_queries([queries[q] for q in qids])
        _, ids = store.index().search(vectors, depth)
        out.rankings["dense"] = {q: list(row) for q, row in zip(qids, ids, strict=True)}
        out.embeddings, out.fingerprint = folder, teacher.fingerprint
        out.seconds["dense_search"] = time.perf_counter() - start
    if source == "union":
        out.rankings["union"] = {q: interleave_rankings([out.rankings["bm25"].get(q, []),
                                                         out.rankings["dense"].get(q, [])])
                                 for q in qids}
    return out


# ------------------------------------------------------------------ teacher-side reuse


def _bi_encoders(teacher) -> Iterable:
    """Every `bi_encoder` teacher inside `teacher` (itself, or an ensemble's members)."""
    if getattr(teacher, "kind", None) == "bi_encoder":
        yield teacher
    for member in getattr(teacher, "members", None) or []:
        yield from _bi_encoders(member)


def attach_passage_embeddings(teacher, store: CorpusEmbeddings) -> int:
    """Let the bi-encoders in `teacher` with the store's fingerprint read passage vectors from
    it (texts it does not hold are encoded as usual). Returns how many were attached."""
    attached = 0
    for member in _bi_encoders(teacher):
        if member.fingerprint != store.fingerprint:
            continue
        encode = member.encode_passages

        def from_store(texts, _encode=encode):
            texts = list(texts)
            vectors, found = store.lookup(texts)
            if not found.all():
                missing = np.flatnonzero(~found)
                vectors[missing] = _encode([texts[i] for i in missing])
            return vectors

        member.encode_passages = from_store  # instance attribute: `_score` calls this
        attached += 1
    return attached


class ReusePassageEmbeddings:
    """Picklable `make_teacher` wrapper: build the teacher, then attach the stored passage
    vectors at `folder` to its matching bi-encoders (see `attach_passage_embeddings`)."""

    def __init__(self, make_teacher, folder: str | os.PathLike):
        self.make_teacher = make_teacher
        self.folder = str(folder)

    def __call__(self):
        teacher = self.make_teacher()
        if any(True for _ in _bi_encoders(teacher)):
            attach_passage_embeddings(teacher, CorpusEmbeddings.load(self.folder))
        return teacher

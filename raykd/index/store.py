"""The one on-disk store of corpus embeddings.

    store = corpus_embeddings("minilm", corpus_path, cache_dir="outputs/embedding_cache")
    store.index()                 # faiss index for retrieval and dense mining
    store.lookup(texts)           # vectors by passage text, for a bi-encoder teacher

A store is named by what decides its vectors: the encoder's weights (sha256, so a copy of a
folder hits the same entry), the options that change a passage vector (pooling, normalisation,
towers, layers, passage length; not the score scale or the query length) and the corpus
file's sha256. Evaluation, dense mining, first-stage retrieval and the bi-encoder teacher all
read the same entry, so a corpus is encoded once per encoder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raykd.fingerprint import text_hash
from raykd.progress import Progress
from raykd.storage import atomic_path

log = logging.getLogger(__name__)

STORE_FILES = ("meta.json", "pids.json", "hashes.npy", "vectors.npy")


def encoder_key(model_path: str | os.PathLike, options) -> str:
    """Names the passage vectors an encoder makes: its weights and the options that shape them.

    `options`: a resolved `BiEncoderOptions` (what `BiEncoder.from_pretrained` settled on).
    """
    from raykd.fingerprint import stable_hash, weights_sha256

    model = Path(model_path)
    return stable_hash({
        "weights": weights_sha256(model) if model.is_dir() else str(model_path),
        "pooling": options.pooling,
        "normalized": options.similarity == "cosine",
        "shared": options.shared,
        "num_layers": options.num_layers,
        "passage_max_length": options.passage_max_length,
    })


def store_size(folder: str | os.PathLike) -> int:
    """The passage count of a stored encoding, from its meta file (no vectors read)."""
    return int(json.loads((Path(folder) / "meta.json").read_text())["count"])


def store_folder(cache_dir: str | os.PathLike, encoder: str,
                 corpus_path: str | os.PathLike) -> Path:
    return Path(cache_dir) / f"{encoder}-corpus-{_corpus_sha(corpus_path)[:16]}"


def _corpus_sha(corpus_path) -> str:
    from raykd.fingerprint import file_sha256, stable_hash

    corpus = Path(corpus_path)
    if corpus.is_file():
        return file_sha256(corpus)
    return stable_hash([file_sha256(f) for f in sorted(corpus.rglob("corpus*")) if f.is_file()])


@dataclass
class EmbeddingStore:
    """Passage vectors of a whole corpus under one encoder (`encoder`: its `encoder_key`)."""

    encoder: str
    pids: list[str]
    hashes: np.ndarray  # uint64 text_hash(passage_text) per row
    vectors: np.ndarray  # float32 [n, dim]
    _rows: dict[int, int] | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the store atomically (a temporary folder renamed into place)."""
        folder = Path(folder)
        with atomic_path(folder) as tmp:  # a folder finished first by another process stays
            tmp.mkdir()
            (tmp / "meta.json").write_text(json.dumps({"encoder": self.encoder,
                                                       "count": len(self.pids), "dim": self.dim}))
            (tmp / "pids.json").write_text(json.dumps(self.pids))
            np.save(tmp / "hashes.npy", self.hashes.astype(np.uint64))
            np.save(tmp / "vectors.npy", self.vectors.astype(np.float32))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = False) -> EmbeddingStore:
        """Read a store; `mmap` maps the vectors and hashes instead of reading them."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        mode = "r" if mmap else None
        return cls(meta["encoder"], json.loads((folder / "pids.json").read_text()),
                   np.load(folder / "hashes.npy", mmap_mode=mode),
                   np.load(folder / "vectors.npy", mmap_mode=mode))

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        return all((Path(folder) / name).is_file() for name in STORE_FILES)

    def lookup(self, texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, dim], found [n] bool) for passage texts; rows not found are zeros."""
        if self._rows is None:
            self._rows = {int(h): i for i, h in enumerate(self.hashes.tolist())}
        texts = list(texts)
        rows = np.array([self._rows.get(text_hash(t), -1) for t in texts], dtype=np.int64)
        found = rows >= 0
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[found] = self.vectors[rows[found]]
        return out, found

    def index(self, kind: str = "flat", *, nprobe: int | None = None, seed: int = 0,
              **index_options):
        """A faiss index (inner product) over the vectors, named by pid. ``ivf`` (or ``auto``
        on a large corpus) gets `ivf_nlist` lists, k-means trained on a `seed`ed sample."""
        from raykd.index.faiss_index import (
            DEFAULT_NPROBE,
            DenseIndex,
            ivf_nlist,
            resolve_kind,
            training_rows,
        )

        kind = resolve_kind(kind, len(self.pids))
        if kind == "ivf":
            index_options.setdefault("nlist", ivf_nlist(len(self.pids)))
            index_options["nprobe"] = DEFAULT_NPROBE if nprobe is None else nprobe
        index = DenseIndex(self.dim, kind=kind, **index_options)
        if kind == "ivf" and self.pids:
            index.train(self.vectors[training_rows(len(self.pids), index.nlist, seed)])
        for start in range(0, len(self.pids), 8192):
            index.add(self.pids[start:start + 8192], self.vectors[start:start + 8192])
        return index


def corpus_embeddings(model_path: str | os.PathLike, corpus_path: str | os.PathLike, *,
                      student_options: dict | None = None,
                      cache_dir: str | os.PathLike | None = None, concurrency: int = 2,
                      num_gpus: float = 0.0, batch_size: int = 64, load: bool = True
                      ) -> tuple[EmbeddingStore | None, Path | None]:
    """The corpus encoded by a bi-encoder: read from `cache_dir` when it holds this encoder's
    vectors, else encoded on a Ray Data actor pool (and stored there). Returns the store and
    its folder (None without a cache).

    The vectors stream from the actors to disk, so encoding holds no per-passage state in this
    process. `load=False` (needs `cache_dir`) returns ``(None, folder)`` without reading the
    store here, for callers that search it elsewhere (e.g. in an actor).
    """
    from raykd.students import BiEncoder
    from raykd.students.bundled import resolve_model

    model_path = resolve_model(str(model_path))
    options = BiEncoder.resolve_options(model_path, **(student_options or {}))
    encoder = encoder_key(model_path, options)
    if not load and cache_dir is None:
        raise ValueError("corpus_embeddings(load=False) needs a cache_dir to store into")
    folder = store_folder(cache_dir, encoder, corpus_path) if cache_dir else None
    if folder is not None and EmbeddingStore.exists(folder):
        log.debug("corpus embeddings from %s", folder)
        return (EmbeddingStore.load(folder) if load else None), folder
    start = time.perf_counter()
    if folder is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="raykd-store-") as tmp:
            built = _encode_into(Path(tmp) / "store", encoder, model_path, corpus_path,
                                 student_options, concurrency, num_gpus, batch_size)
            store = EmbeddingStore.load(built)
    else:
        _encode_into(folder, encoder, model_path, corpus_path, student_options, concurrency,
                     num_gpus, batch_size)
        store = EmbeddingStore.load(folder) if load else None
    log.info("encoded %s in %.0fs%s", corpus_path, time.perf_counter() - start,
             f" -> {folder}" if folder else "")
    return store, folder


def _encode_into(folder: Path, encoder: str, model_path: str, corpus_path, student_options,
                 concurrency: int, num_gpus: float, batch_size: int) -> Path:
    """Encode the corpus on Ray Data and write the store files as the batches arrive (raw
    vectors and hashes appended to temporary files, pids streamed into JSON), atomically."""
    from raykd.data.ray_datasets import corpus_dataset
    from raykd.index.encode import encode_corpus

    # Counted first (a cheap read pass): the progress lines' total, and the check below.
    expected = corpus_dataset(corpus_path).count()
    encoded = encode_corpus(corpus_dataset(corpus_path), str(model_path),
                            concurrency=concurrency, num_gpus=num_gpus, batch_size=batch_size,
                            student_options=student_options)
    with atomic_path(folder) as tmp:  # a folder finished first by another process stays
        tmp.mkdir()
        count, dim = 0, None
        with open(tmp / "vectors.f32", "wb") as vec_out, open(tmp / "hashes.u64", "wb") as hash_out, \
                open(tmp / "pids.json", "w") as pid_out, \
                Progress("encoding corpus", total=expected, unit="passages") as progress:
            pid_out.write("[")
            # Block by block as the actors finish them (a few hundred passages each), so that
            # the progress lines move; an empty block adds nothing.
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                if not len(batch["pid"]):
                    continue
                vectors = np.ascontiguousarray(batch["embedding"], dtype=np.float32)
                if vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim):
                    raise RuntimeError(f"corpus encoding returned vectors of shape {vectors.shape}")
                dim = vectors.shape[1]
                vec_out.write(vectors.tobytes())
                hash_out.write(np.ascontiguousarray(batch["hash"], dtype=np.uint64).tobytes())
                pids = [str(p) for p in batch["pid"].tolist()]
                pid_out.write((", " if count else "") + ", ".join(json.dumps(p) for p in pids))
                count += len(pids)
                progress.update(len(pids))
            pid_out.write("]")
        # Every passage once: the read tasks reject duplicate ids, so equal counts mean a bijection.
        if count != expected:
            raise RuntimeError(f"corpus encoding returned {count} vectors for {expected} passages")
        dim = dim or 0
        _raw_to_npy(tmp / "vectors.f32", tmp / "vectors.npy", np.float32, (count, dim))
        _raw_to_npy(tmp / "hashes.u64", tmp / "hashes.npy", np.uint64, (count,))
        (tmp / "meta.json").write_text(json.dumps({"encoder": encoder, "count": count, "dim": dim}))
    return folder


def _raw_to_npy(raw: Path, npy: Path, dtype, shape: tuple, chunk: int = 1 << 20) -> None:
    """Prefix a raw little-endian array file with a .npy header, then delete it. A buffered
    copy, not a memory map: mapped pages count in this process's RSS (a 1M x 32 store added
    208 MiB to the driver's peak), read/written ones do not."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
              "fortran_order": False, "shape": tuple(shape)}
    with open(npy, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        with open(raw, "rb") as source:
            shutil.copyfileobj(source, out, chunk)
    raw.unlink()

"""A token-level (late-interaction) index of a corpus, and retrieval over it.

    index, encoder = corpus_token_index("minilm", corpus_path, {"similarity": "l2"},
                                        cache_dir="outputs/embedding_cache")
    ranked = retrieve(index, encoder, {"q1": "query text"}, k=100)   # {qid: [(pid, score)]}

Every indexed passage token keeps its vector (float16), its token id and its passage, so the
same index serves retrieval (faiss over token vectors gives candidate passages, exact MaxSim
re-ranks them) and CollectiveKD's pseudo-relevance feedback (nearest tokens of a centroid, and
the IDF of token ids over the collection). The corpus is encoded on a Ray Data actor pool; with
a `cache_dir` the index is stored once per encoder (weights and the options that shape passage
vectors) and corpus, next to the bi-encoder embedding store.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from raykd.data.records import passage_text
from raykd.errors import ConfigError
from raykd.storage import atomic_path

log = logging.getLogger(__name__)

TOKEN_STORE_FILES = ("meta.json", "pids.json", "offsets.npy", "token_ids.npy", "vectors.npy")
FAISS_FILE = "tokens.faiss"
TokenIndexKind = Literal["auto", "flat", "ivfpq"]
TOKEN_INDEX_KINDS = ("auto", "flat", "ivfpq")
# Above this many tokens `auto` uses IVF-PQ (ColBERT's choice): a flat float32 copy of a
# million 384-d tokens would be 1.5 GB next to the float16 vectors kept for exact MaxSim.
FLAT_MAX_TOKENS = 300_000
RERANK_CHUNK_TOKENS = 1 << 20


# ---- encoding -------------------------------------------------------------------------------

def passage_tokens(model, texts: list[str], batch_size: int = 32
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text, (token ids int32 [n], vectors float16 [n, dim]) of its MaxSim-visible tokens."""
    import torch

    device = next(model.parameters()).device
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out: list = [None] * len(texts)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            inputs = model.tokenize_passages([texts[i] for i in idx])
            inputs = {k: v.to(device) for k, v in inputs.items()}
            vectors, mask = model.embed_passages(inputs)
            vectors = vectors.float().cpu().numpy().astype(np.float16)
            mask, ids = mask.cpu().numpy(), inputs["input_ids"].cpu().numpy()
            for row, i in enumerate(idx):
                keep = mask[row]
                out[i] = (ids[row][keep].astype(np.int32), vectors[row][keep])
    return out


def query_tokens(model, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """Per query, its MaxSim tokens as float32 [n, dim] (with augmentation, [MASK]s too)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            inputs = model.tokenize_queries(texts[start:start + batch_size])
            inputs = {k: v.to(device) for k, v in inputs.items()}
            vectors, mask = model.embed_queries(inputs)
            vectors, mask = vectors.float().cpu().numpy(), mask.cpu().numpy()
            out.extend(vectors[row][mask[row]] for row in range(len(vectors)))
    return out


class TokenEncoder:
    """Ray Data actor: loads a late-interaction encoder once; rows -> token ids and vectors."""

    def __init__(self, model_path: str, batch_size: int = 32, encoder_options: dict | None = None):
        import torch

        from raykd.students.late_interaction import LateInteractionEncoder

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = LateInteractionEncoder.from_pretrained(
            model_path, **(encoder_options or {})).to(self.device).eval()
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [passage_text(str(t), str(x)) for t, x in zip(batch["title"], batch["text"],
                                                              strict=True)]
        encoded = passage_tokens(self.model, texts, self.batch_size)
        return {"pid": np.asarray(batch["pid"]),
                "token_ids": np.array([ids.tobytes() for ids, _ in encoded], dtype=object),
                "vectors": np.array([vec.tobytes() for _, vec in encoded], dtype=object)}


# ---- the index ------------------------------------------------------------------------------

@dataclass
class TokenIndex:
    """All MaxSim-visible passage tokens of a corpus: passage `r` owns rows
    `offsets[r]:offsets[r + 1]` of `token_ids` and `vectors` (float16, L2-normalised)."""

    key: str
    pids: list[str]
    offsets: np.ndarray  # int64 [N + 1]
    token_ids: np.ndarray  # int32 [T]
    vectors: np.ndarray  # float16 [T, dim]
    kind: TokenIndexKind = "auto"
    nprobe: int = 32
    folder: Path | None = None
    _faiss: object = field(default=None, repr=False)
    _doc_of_token: np.ndarray | None = field(default=None, repr=False)
    _idf: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in TOKEN_INDEX_KINDS:
            raise ConfigError("index.kind", f"{self.kind!r} is not one of {TOKEN_INDEX_KINDS}")

    def __len__(self) -> int:
        return len(self.pids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def doc_of_token(self) -> np.ndarray:
        """Passage row of every token row (int32 [T])."""
        if self._doc_of_token is None:
            self._doc_of_token = np.repeat(np.arange(len(self.pids), dtype=np.int32),
                                           np.diff(self.offsets))
        return self._doc_of_token

    def doc_vectors(self, row: int) -> np.ndarray:
        """Token vectors (float32 [n, dim]) of passage row `row`."""
        return np.asarray(self.vectors[self.offsets[row]:self.offsets[row + 1]], np.float32)

    def idf(self) -> np.ndarray:
        """IDF per token id (float64 [max id + 1]): log((1 + N) / (df + 1)), df counted over
        the indexed passages (a token id once per passage)."""
        if self._idf is None:
            vocab = int(self.token_ids.max()) + 1 if self.num_tokens else 1
            pairs = np.unique(self.doc_of_token.astype(np.int64) * vocab + self.token_ids)
            df = np.bincount(pairs % vocab, minlength=vocab)
            self._idf = np.log((1.0 + len(self.pids)) / (df + 1.0))
        return self._idf

    # ---- faiss over token vectors ------------------------------------------------------

    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if self.num_tokens <= FLAT_MAX_TOKENS else "ivfpq"

    def faiss_index(self):
        """Inner product over token vectors (= L2 order for unit vectors); built on first use,
        read from / written to the store folder when there is one."""
        if self._faiss is not None:
            return self._faiss
        kind = self.resolved_kind()
        cached = self.folder / f"{kind}-{FAISS_FILE}" if self.folder is not None else None
        if cached is not None and cached.exists():
            self._faiss = faiss.read_index(str(cached))
        else:
            start = time.perf_counter()
            self._faiss = self._build(kind)
            log.info("faiss %s over %d tokens in %.0fs", kind, self.num_tokens,
                     time.perf_counter() - start)
            if cached is not None:
                with atomic_path(cached) as tmp:
                    faiss.write_index(self._faiss, str(tmp))
        if hasattr(self._faiss, "nprobe"):
            self._faiss.nprobe = min(self.nprobe, self._faiss.nlist)
        return self._faiss

    def _build(self, kind: str):
        if self.num_tokens == 0:
            raise ValueError("a token index over no tokens")
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
            self._add_chunks(index)
            return index
        # IVF-PQ: ~4 sqrt(T) partitions (a power of two), 8 dims per PQ sub-quantizer.
        nlist = int(2 ** round(np.log2(max(4 * np.sqrt(self.num_tokens), 16))))
        nlist = min(nlist, max(self.num_tokens // 64, 1))
        m = next(m for m in (self.dim // 8, self.dim // 4, self.dim // 2, 1)
                 if m >= 1 and self.dim % m == 0)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        sample_size = min(self.num_tokens, max(64 * nlist, 256 * 40))
        rows = np.sort(np.random.default_rng(0).choice(self.num_tokens, sample_size,
                                                       replace=False))
        index.train(np.asarray(self.vectors[rows], np.float32))
        self._add_chunks(index)
        return index

    def _add_chunks(self, index, chunk: int = 1 << 17) -> None:
        for start in range(0, self.num_tokens, chunk):
            index.add(np.ascontiguousarray(self.vectors[start:start + chunk], np.float32))

    def nearest_tokens(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """Token rows [n, k'] nearest to each vector (-1 where fewer were found)."""
        k = min(k, self.num_tokens)
        _, rows = self.faiss_index().search(np.ascontiguousarray(vectors, np.float32), k)
        return rows

    # ---- retrieval ---------------------------------------------------------------------

    def candidates(self, q_tokens: np.ndarray, depth: int) -> np.ndarray:
        """Passage rows holding any of each query token's `depth` nearest tokens (sorted)."""
        rows = self.nearest_tokens(q_tokens, depth).ravel()
        return np.unique(self.doc_of_token[rows[rows >= 0]])

    def maxsim(self, q_tokens: np.ndarray, docs: np.ndarray, similarity: str) -> np.ndarray:
        """Exact MaxSim of one query (float32 [Lq, dim]) against passage rows `docs` [C]."""
        from raykd.students.late_interaction import LI_SIMILARITIES

        if similarity not in LI_SIMILARITIES:
            raise ConfigError("similarity", f"{similarity!r} is not one of {LI_SIMILARITIES}")
        q = np.asarray(q_tokens, np.float32)
        out = np.zeros(len(docs), dtype=np.float32)
        lengths = self.offsets[docs + 1] - self.offsets[docs]
        start = 0
        while start < len(docs):  # chunks of about RERANK_CHUNK_TOKENS tokens
            stop = start + max(1, int(np.searchsorted(np.cumsum(lengths[start:]),
                                                      RERANK_CHUNK_TOKENS)))
            chunk = docs[start:stop]
            rows = np.concatenate([np.arange(self.offsets[d], self.offsets[d + 1])
                                   for d in chunk])
            d = np.asarray(self.vectors[rows], np.float32)
            sim = q @ d.T  # [Lq, tokens of the chunk]
            if similarity == "l2":
                sim = 2.0 * sim - (q * q).sum(1)[:, None] - (d * d).sum(1)[None, :]
            bounds = np.concatenate([[0], np.cumsum(lengths[start:stop])[:-1]])
            nonempty = lengths[start:stop] > 0
            best = np.maximum.reduceat(sim, bounds[nonempty], axis=1) if nonempty.any() else None
            scores = np.zeros(len(chunk), np.float32)
            if best is not None:
                scores[nonempty] = best.sum(0)
            out[start:stop] = scores
            start = stop
        return out

    def search(self, q_tokens: np.ndarray, k: int, similarity: str, depth: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(passage rows, scores) of the top-k by exact MaxSim among faiss candidates.
        `depth`: nearest tokens per query token (default: max(k, 32))."""
        docs = self.candidates(q_tokens, depth or max(k, 32))
        scores = self.maxsim(q_tokens, docs, similarity)
        top = np.lexsort((docs, -scores))[:k]
        return docs[top], scores[top]

    # ---- storage -----------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically (a temporary folder renamed into place)."""
        folder = Path(folder)
        with atomic_path(folder) as tmp:  # a folder finished first by another process stays
            tmp.mkdir()
            (tmp / "meta.json").write_text(json.dumps({"key": self.key, "count": len(self.pids),
                                                       "tokens": self.num_tokens,
                                                       "dim": self.dim}))
            (tmp / "pids.json").write_text(json.dumps(self.pids))
            np.save(tmp / "offsets.npy", self.offsets.astype(np.int64))
            np.save(tmp / "token_ids.npy", self.token_ids.astype(np.int32))
            np.save(tmp / "vectors.npy", self.vectors.astype(np.float16))
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **options) -> TokenIndex:
        """Read a saved index; token vectors are memory-mapped."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        return cls(meta["key"], json.loads((folder / "pids.json").read_text()),
                   np.load(folder / "offsets.npy"), np.load(folder / "token_ids.npy"),
                   np.load(folder / "vectors.npy", mmap_mode="r"), folder=folder, **options)

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        return all((Path(folder) / name).is_file() for name in TOKEN_STORE_FILES)


def token_index_key(model_path: str | os.PathLike, encoder) -> str:
    """Names the token vectors an encoder makes: weights, depth and passage-side options."""
    from raykd.fingerprint import stable_hash, weights_sha256

    model = Path(model_path)
    options = encoder.options
    return stable_hash({
        "kind": "late_interaction",
        "weights": weights_sha256(model) if model.is_dir() else str(model_path),
        "num_layers": int(encoder.encoder.config.num_hidden_layers),
        "projection_dim": options.projection_dim,
        "passage_max_length": options.passage_max_length,
        "mask_punctuation": options.mask_punctuation,
    })


def build_token_index(rows, key: str, dim: int, **options) -> TokenIndex:
    """A `TokenIndex` from an iterable of numpy batches (`pid`, `token_ids`, `vectors` bytes)."""
    pids, ids, vecs, lengths = [], [], [], []
    for batch in rows:
        for pid, tid, vec in zip(batch["pid"].tolist(), batch["token_ids"], batch["vectors"],
                                 strict=True):
            token_ids = np.frombuffer(tid, dtype=np.int32)
            pids.append(str(pid))
            ids.append(token_ids)
            vecs.append(np.frombuffer(vec, dtype=np.float16).reshape(len(token_ids), dim))
            lengths.append(len(token_ids))
    offsets = np.zeros(len(pids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    token_ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float16)
    return TokenIndex(key, pids, offsets, token_ids, vectors, **options)


def corpus_token_index(model_path: str, corpus_path: str | os.PathLike,
                       encoder_options: dict | None = None, *, cache_dir: str | None = None,
                       concurrency: int = 2, num_gpus: float = 0.0, batch_size: int = 32,
                       kind: TokenIndexKind = "auto"):
    """(TokenIndex, encoder): the corpus under a late-interaction encoder, read from
    `cache_dir` when stored there, else encoded on a Ray Data actor pool (and stored).
    The encoder (loaded here for the key, and for encoding queries) is returned on CPU."""
    import ray

    from raykd.data.ray_datasets import corpus_dataset
    from raykd.index.store import store_folder
    from raykd.runtime import fit_actor_pool
    from raykd.students.bundled import resolve_model
    from raykd.students.late_interaction import LateInteractionEncoder

    model_path = resolve_model(str(model_path))
    encoder = LateInteractionEncoder.from_pretrained(model_path, **(encoder_options or {}))
    encoder.eval()
    key = token_index_key(model_path, encoder)
    folder = store_folder(cache_dir, f"tokens-{key}", corpus_path) if cache_dir else None
    if folder is not None and TokenIndex.exists(folder):
        log.info("token index from %s", folder)
        return TokenIndex.load(folder, kind=kind), encoder
    start = time.perf_counter()
    encoded = corpus_dataset(corpus_path).map_batches(
        TokenEncoder,
        fn_constructor_kwargs={"model_path": model_path, "batch_size": batch_size,
                               "encoder_options": encoder_options},
        batch_size=batch_size * 4,
        compute=ray.data.ActorPoolStrategy(
            size=fit_actor_pool(concurrency, 0 if num_gpus else 1, "token encoding")),
        num_gpus=num_gpus,
        num_cpus=0 if num_gpus else 1,
    )
    index = build_token_index(encoded.iter_batches(batch_size=256, batch_format="numpy"),
                              key, encoder.dim, kind=kind)
    if folder is not None:
        index.save(folder)
        index = TokenIndex.load(folder, kind=kind)  # memory-mapped from here on
    log.info("token index: %d passages, %d tokens in %.0fs", len(index), index.num_tokens,
             time.perf_counter() - start)
    return index, encoder


def retrieve(index: TokenIndex, encoder, queries: Mapping[str, str], k: int, *,
             depth: int | None = None, batch_size: int = 64) -> dict[str, list[tuple[str, float]]]:
    """Top-k (pid, MaxSim score) per query, best first, with the encoder's similarity."""
    qids = list(queries)
    tokens = query_tokens(encoder, [queries[q] for q in qids], batch_size)
    similarity = encoder.options.similarity
    out = {}
    for qid, q in zip(qids, tokens, strict=True):
        docs, scores = index.search(q, k, similarity, depth)
        out[qid] = [(index.pids[d], float(s)) for d, s in zip(docs, scores, strict=True)]
    return out

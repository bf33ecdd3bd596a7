"""BM25 as a teacher that scores ARBITRARY (query, text) pairs.

A bm25s index can only score the passages it indexed, but dark examples (ADAM) are new texts.
This teacher keeps only the corpus statistics (N, document frequency per term, average
document length) and scores any text against them, with `raykd.index.BM25Index`'s tokenisation
(bm25s's regex splitter, lowercasing, English stopwords, English Snowball stemmer) and bm25s's
default "lucene" formula, so a passage that is in the corpus gets exactly its bm25s score:

    score(q, d) = sum over query tokens t (repeats count) of
                  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

|d| counts the tokens left after stopword removal. bm25s's lucene term-frequency part has no
(k1 + 1) factor (it only rescales every score by the same constant); we follow bm25s. A term
absent from the corpus has df = 0: it still scores in a new text that contains it, whereas
bm25s (which cannot see such texts) drops it.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from raykd.errors import ConfigError
from raykd.teachers.base import Teacher

TOKENIZE_CHUNK = 4096


class BM25Teacher(Teacher):
    """BM25 over fixed corpus statistics; `score` accepts texts inside or outside the corpus."""

    kind = "bm25"

    def __init__(self, corpus: Iterable[tuple[str, str]], *, k1: float = 1.5, b: float = 0.75,
                 stopwords: str | None = "en", stemmer: str | None = "english",
                 source: dict | None = None):
        """Gather statistics from (pid, text) pairs (streamed: only the vocabulary is kept).

        `source` describes where the corpus came from (for logs); the fingerprint is computed
        from the statistics themselves, so any two identical corpora share cached scores.
        """
        super().__init__()
        import Stemmer

        if k1 <= 0:
            raise ConfigError("teacher.k1", f"must be > 0, got {k1}")
        if not 0 <= b <= 1:
            raise ConfigError("teacher.b", f"must be in [0, 1], got {b}")
        self.k1, self.b = float(k1), float(b)
        self.stopwords, self.stemmer_name = stopwords, stemmer
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        self.source = source or {"source": "pairs"}
        self.df: Counter = Counter()
        self.num_docs = 0
        total_length = 0
        for chunk in _chunks((text for _, text in corpus), TOKENIZE_CHUNK):
            for tokens in self.tokenize(chunk):
                self.num_docs += 1
                total_length += len(tokens)
                self.df.update(set(tokens))
        if self.num_docs == 0:
            raise ConfigError("teacher.corpus", "the BM25 corpus is empty")
        self.avgdl = total_length / self.num_docs
        if self.avgdl == 0:
            raise ConfigError("teacher.corpus", "no corpus passage has an indexable token")
        self._stats_hash = self._hash_statistics()

    @classmethod
    def from_corpus_path(cls, path: str | os.PathLike, **kwargs) -> BM25Teacher:
        """A BEIR folder or corpus file (`corpus.jsonl[.gz]`, or parquet with pid/title/text);
        passage text is `passage_text(title, text)`, as everywhere in raykd."""
        from raykd.data.ray_datasets import iter_corpus_rows
        from raykd.data.records import passage_text

        corpus_file = _corpus_file(path)
        rows = iter_corpus_rows(corpus_file)
        pairs = ((row["pid"], passage_text(row["title"], row["text"])) for row in rows)
        stat = corpus_file.stat()
        source = {"source": str(corpus_file), "size": stat.st_size}
        return cls(pairs, source=source, **kwargs)

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        """Stemmed tokens per text, as `BM25Index.tokenize` produces them (as strings)."""
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer,
                              return_ids=False, show_progress=False)

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1.0 + (self.num_docs - df + 0.5) / (df + 0.5))

    def _hash_statistics(self) -> str:
        digest = hashlib.sha256(f"{self.num_docs}\t{self.avgdl!r}\n".encode())
        for term in sorted(self.df):
            digest.update(f"{term}\t{self.df[term]}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "method": "lucene",
            "k1": self.k1,
            "b": self.b,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer_name,
            "corpus_stats_sha256": self._stats_hash,
            "num_docs": self.num_docs,
        }

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        uq = list(dict.fromkeys(queries))
        q_tokens = dict(zip(uq, self.tokenize(uq), strict=True))
        up = list(dict.fromkeys(passages))
        p_counts = {text: Counter(tokens)
                    for text, tokens in zip(up, self.tokenize(up), strict=True)}
        p_lengths = {text: sum(counts.values()) for text, counts in p_counts.items()}
        idf_cache: dict[str, float] = {}
        k1, b, avgdl = self.k1, self.b, self.avgdl
        out = np.zeros(len(queries), dtype=np.float64)
        for i, (q, p) in enumerate(zip(queries, passages, strict=True)):
            counts = p_counts[p]
            norm = k1 * (1.0 - b + b * p_lengths[p] / avgdl)
            total = 0.0
            for term in q_tokens[q]:
                tf = counts.get(term, 0)
                if tf:
                    if term not in idf_cache:
                        idf_cache[term] = self.idf(term)
                    total += idf_cache[term] * tf / (tf + norm)
            out[i] = total
        self.forward_calls += 1
        return out.astype(np.float32)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _corpus_file(path: str | os.PathLike) -> Path:
    root = Path(path)
    if root.is_dir():
        from raykd.data.beir import BeirDataset

        return Path(BeirDataset.from_dir(root).corpus_path)
    if not root.is_file():
        raise ConfigError("teacher.corpus", f"{root} is neither a BEIR folder nor a corpus file")
    return root

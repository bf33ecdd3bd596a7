"""BM25 with bm25s: English stopwords and the Snowball stemmer, over title + text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import bm25s
import numpy as np
import Stemmer


class BM25Index:
    """A bm25s index over (pid, text) pairs; `search` returns scores and passage ids."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en",
                 stemmer: str | None = "english"):
        self.k1, self.b, self.stopwords = k1, b, stopwords
        self.stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        self.ids: list[str] = []
        self._retriever = bm25s.BM25(k1=k1, b=b)

    def tokenize(self, texts: Sequence[str], show_progress: bool = False):
        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self.stemmer,
                              show_progress=show_progress)

    def index(self, passages: Iterable[tuple[str, str]], show_progress: bool = True) -> BM25Index:
        """Index (pid, text) pairs. bm25s builds its sparse matrix in memory."""
        ids, texts = [], []
        for pid, text in passages:
            ids.append(str(pid))
            texts.append(text)
        self.ids = ids
        self._retriever.index(self.tokenize(texts, show_progress), show_progress=show_progress)
        return self

    def search(self, queries: Sequence[str], k: int, show_progress: bool = True
               ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k scores [n, k'] and passage ids per query."""
        k = min(k, len(self.ids))
        rows, scores = self._retriever.retrieve(self.tokenize(queries), k=k,
                                                show_progress=show_progress, n_threads=0)
        ids = [[self.ids[r] for r in row] for row in rows]
        return np.asarray(scores, dtype=np.float32), ids

"""Indexes for retrieval: faiss dense indexes, BM25, and corpus encoding on Ray Data."""

from raykd.index.bm25 import BM25Index
from raykd.index.faiss_index import DenseIndex, gpu_available

__all__ = ["BM25Index", "DenseIndex", "gpu_available"]

"""Evaluation: IR metrics, run files, and full-retrieval evaluation of students and BM25."""

from raykd.eval.metrics import DEFAULT_MEASURES, evaluate_run, read_trec_run, write_trec_run

__all__ = ["DEFAULT_MEASURES", "evaluate_run", "read_trec_run", "write_trec_run"]

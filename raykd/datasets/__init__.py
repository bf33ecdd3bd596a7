"""Small real data shipped with raykd."""

from __future__ import annotations

from pathlib import Path

DATASETS_DIR = Path(__file__).resolve().parent


def scifact_dir() -> Path:
    """Folder of the bundled BEIR SciFact copy (corpus, queries, qrels/{train,dev,test}.tsv)."""
    return DATASETS_DIR / "scifact"

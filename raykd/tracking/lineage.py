"""Lineage: where a run's inputs came from (dataset hashes, git commit, teachers, candidates)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from raykd.fingerprint import file_sha256


def dataset_hashes(root: str | Path) -> dict[str, str]:
    """sha256 of every data file of a BEIR-layout dataset, keyed by relative path."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in
                   {".jsonl", ".gz", ".tsv", ".parquet"})
    return {str(p.relative_to(root)): file_sha256(p) for p in files}


def git_commit(start: str | Path | None = None) -> str:
    """The commit of the code that runs (with '-dirty' when the tree has changes), or 'unknown'."""
    cwd = Path(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")

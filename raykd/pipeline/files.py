"""The pipeline's file names and the readers of the candidate-group folders it writes."""

from __future__ import annotations

from pathlib import Path

from raykd.eval.retrieval import RUN_FILE

MINING_MARKER = "_mining.yaml"  # written last by every candidate writer
GROUPS_FILE = "groups.parquet"
STUDENT_DIR = "student"  # a trained student's folder (a stage's, and the run's final one)
STAGES_DIR = "stages"  # a run's stage folders: stages/<NN>-<stage name>/


def eval_dir_name(split: str) -> str:
    """The folder an evaluation on `split` is saved in (in a stage's folder and in the run's)."""
    return f"eval-{split}"


def last_stage_run(run_dir: str | Path, split: str = "dev") -> Path | None:
    """A run's last stage's ranking of `split` (`stages/*/eval-<split>/run.trec`), or None
    where no stage evaluated on it."""
    found = sorted(Path(run_dir).glob(f"{STAGES_DIR}/*/{eval_dir_name(split)}/{RUN_FILE}"))
    return found[-1] if found else None


def group_files(path: str | Path) -> list[Path]:
    """The files of a candidate-group path: the file itself, or a folder's parquet files."""
    return sorted(Path(path).glob("*.parquet")) if Path(path).is_dir() else [Path(path)]


def iter_scored(path: str | Path):
    """The candidate groups of a parquet file, or of every parquet file in a folder."""
    from raykd.data.groups import iter_groups

    for file in group_files(path):
        yield from iter_groups(file)


def sample_groups(path: str | Path, limit: int) -> list[dict]:
    """The first `limit` groups of `path`."""
    out = []
    for group in iter_scored(path):
        out.append(group)
        if len(out) >= limit:
            break
    return out


def plain_group(row: dict) -> dict:
    """A Ray Data row as a plain candidate group (lists, no null optional fields)."""
    out = {}
    for key, value in row.items():
        if value is None:
            continue
        out[key] = value.tolist() if hasattr(value, "tolist") else value
    return out

"""Carve the fixed, seeded SciFact `dev` split out of the original BEIR train qrels.

Reproduce the shipped files from the original BEIR `qrels/train.tsv`:

    python -m raykd.datasets.make_dev_split ORIGINAL_TRAIN_TSV OUT_QRELS_DIR

The original train queries are sorted by id (as strings), shuffled with `random.Random(SEED)`,
and the first `DEV_SIZE` become `dev.tsv`; the rest stay in `train.tsv`. Rows keep file order.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

SEED = 2024
DEV_SIZE = 100


def split_qids(train_qids: list[str], seed: int = SEED, dev_size: int = DEV_SIZE) -> set[str]:
    """The dev query ids: a seeded sample of `dev_size` of the sorted unique train ids."""
    unique = sorted(set(train_qids))
    if dev_size >= len(unique):
        raise ValueError(f"dev_size={dev_size} must be below the {len(unique)} train queries")
    return set(random.Random(seed).sample(unique, dev_size))


def main(original: str, out_dir: str) -> None:
    lines = Path(original).read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    dev = split_qids([row.split("\t")[0] for row in rows])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, keep in (("train.tsv", False), ("dev.tsv", True)):
        chosen = [row for row in rows if (row.split("\t")[0] in dev) == keep]
        (out / name).write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
        print(f"{out / name}: {len(chosen)} pairs, {len({r.split(chr(9))[0] for r in chosen})} queries")


if __name__ == "__main__":
    main(*sys.argv[1:3])

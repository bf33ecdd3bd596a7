"""Cross-fitted teacher: each query is scored by the teacher of its fold, one trained without
that fold's queries (`raykd.data.folds`), so the scores of a training query come from a model
that never saw its label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from raykd.data.folds import FOLD_RULE, fold_of
from raykd.errors import ConfigError
from raykd.teachers.base import Teacher


class CrossFitTeacher(Teacher):
    """`folds[i]` scores the candidate groups of the queries in fold i."""

    kind = "cross_fit"

    def __init__(self, folds: Sequence[Teacher]):
        super().__init__()
        if len(folds) < 2:
            raise ConfigError("teacher.folds", f"a cross_fit teacher needs at least 2 fold "
                                               f"teachers, got {len(folds)}")
        self.folds = list(folds)

    def describe(self) -> dict:
        return {"kind": self.kind, "folds": [t.fingerprint for t in self.folds],
                "rule": FOLD_RULE}

    def score_groups(self, groups: Sequence[dict]) -> list[np.ndarray]:
        groups = list(groups)
        by_fold: dict[int, list[int]] = {}
        for i, group in enumerate(groups):
            if group.get("qid") is None:
                raise ValueError("a cross_fit teacher picks its fold by the query id; this "
                                 "group has none")
            by_fold.setdefault(fold_of(group["qid"], len(self.folds)), []).append(i)
        out: list[np.ndarray | None] = [None] * len(groups)
        for fold, positions in sorted(by_fold.items()):
            scores = self.folds[fold].score_groups([groups[i] for i in positions])
            for i, s in zip(positions, scores, strict=True):
                out[i] = np.asarray(s, dtype=np.float32)
        self.forward_calls += 1
        return out

    def _score(self, queries: list[str], passages: list[str]) -> np.ndarray:
        raise ValueError("a cross_fit teacher scores candidate groups (it needs each query's "
                         "id to pick its fold), not loose pairs")

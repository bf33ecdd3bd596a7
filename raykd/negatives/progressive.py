"""PROD's data-progressive selection: the training queries that still confuse the student.

A query is *confusing* when the teacher ranks one of its labelled positives first among the
candidates it re-ranks, while the student's dense retrieval puts its first labelled positive at
rank 2 to 15 (1-based; METHODS.md 3(d), step 4). Training continues on those queries only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def first_positive_rank(ranking: Sequence[str], positives: Mapping[str, int],
                        min_rel: int = 1) -> int | None:
    """1-based rank of the first labelled positive in a ranking (None when absent)."""
    for rank, pid in enumerate(ranking, start=1):
        if positives.get(pid, 0) >= min_rel:
            return rank
    return None


def teacher_top_is_positive(pids: Sequence[str], scores: Sequence[float],
                            positives: Mapping[str, int], min_rel: int = 1) -> bool:
    """Whether the teacher's highest-scored candidate is a labelled positive (ties: first)."""
    if not pids:
        return False
    best = max(range(len(pids)), key=lambda i: (scores[i], -i))
    return positives.get(pids[best], 0) >= min_rel


def confusing_queries(student_rankings: Mapping[str, Sequence[str]],
                      teacher_groups: Mapping[str, tuple[Sequence[str], Sequence[float]]],
                      qrels: Mapping[str, Mapping[str, int]], window: tuple[int, int] = (2, 15),
                      min_rel: int = 1) -> list[str]:
    """Query ids where the teacher ranks a positive first and the student's first positive
    sits inside `window` (inclusive, 1-based); sorted for determinism."""
    low, high = window
    chosen = []
    for qid, ranking in student_rankings.items():
        positives = qrels.get(qid, {})
        rank = first_positive_rank(ranking, positives, min_rel)
        if rank is None or not low <= rank <= high or qid not in teacher_groups:
            continue
        pids, scores = teacher_groups[qid]
        if teacher_top_is_positive(pids, scores, positives, min_rel):
            chosen.append(qid)
    return sorted(chosen)

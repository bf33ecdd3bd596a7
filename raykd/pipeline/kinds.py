"""What the pipeline needs to know of a student or teacher kind, as registries: steps ask these,
never a kind by name.

A student kind names its full retrieval (how a stage evaluates it) and whether it is a
bi-encoder (its vectors mine negatives, pick PROD's confusing queries and draw the score plot).
A teacher kind whose scores need inputs made for the training queries (CollectiveKD's PRF
expansions) is registered as query-bound: it cannot score a dev sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raykd.config import Recipe


@dataclass(frozen=True)
class StudentKind:
    """How a student kind retrieves a split, and whether it is a bi-encoder."""

    retrieval: Callable  # (student, dataset, split, **options) -> retrieval result
    bi_encoder: bool


STUDENT_KINDS: dict[str, StudentKind] = {}
QUERY_BOUND_TEACHERS: set[str] = set()


def register_student_kind(kind: str, retrieval: Callable, *, bi_encoder: bool) -> None:
    if kind in STUDENT_KINDS:
        raise ValueError(f"student kind {kind!r} is already registered")
    STUDENT_KINDS[kind] = StudentKind(retrieval, bi_encoder)


def register_query_bound_teacher(kind: str) -> None:
    """Mark a teacher kind whose scores exist for the training queries only."""
    QUERY_BOUND_TEACHERS.add(kind)


def student_kind(recipe: Recipe) -> StudentKind:
    kind = recipe.student.kind
    if kind not in STUDENT_KINDS:
        raise ValueError(f"no pipeline support for student kind {kind!r}; known: "
                         f"{', '.join(sorted(STUDENT_KINDS))}")
    return STUDENT_KINDS[kind]


def _dense_retrieval(*args, **kwargs):
    """Faiss over passage vectors."""
    from raykd.eval.retrieval import dense_retrieval

    return dense_retrieval(*args, **kwargs)


def _late_interaction_retrieval(*args, **kwargs):
    """Faiss over token vectors, then exact MaxSim."""
    from raykd.eval.late_interaction import late_interaction_retrieval

    return late_interaction_retrieval(*args, **kwargs)


register_student_kind("bi_encoder", _dense_retrieval, bi_encoder=True)
register_student_kind("late_interaction", _late_interaction_retrieval, bi_encoder=False)

"""PROD's data-progressive selection rule on hand-made rankings."""

from raykd.negatives.progressive import confusing_queries, first_positive_rank

QRELS = {"a": {"p": 1}, "b": {"p": 1}, "c": {"p": 1}, "d": {"p": 1}, "e": {"p": 1, "p2": 1}}


def test_first_positive_rank_is_one_based_and_none_when_missing():
    """Guards off-by-one: rank 1 is the top, a missing positive is None (not 0)."""
    assert first_positive_rank(["p", "x"], {"p": 1}) == 1
    assert first_positive_rank(["x", "y", "p"], {"p": 1}) == 3
    assert first_positive_rank(["x"], {"p": 1}) is None
    assert first_positive_rank(["x", "p"], {"p": 1}, min_rel=2) is None


def test_confusing_means_teacher_top1_positive_and_student_rank_2_to_15():
    """Guards the rule: only teacher-right, student-slightly-wrong queries are kept."""
    negs = [f"n{i}" for i in range(20)]
    student = {
        "a": ["p", *negs],             # student already right (rank 1): not confusing
        "b": ["n0", "p", *negs[1:]],   # rank 2, teacher right: confusing
        "c": [*negs[:14], "p"],        # rank 15, teacher right: confusing (inclusive)
        "d": [*negs[:15], "p"],        # rank 16: too far
        "e": ["n0", "n1", "p2"],       # rank 3 through the second positive, teacher wrong
    }
    teacher = {
        "a": (["p", "n0"], [5.0, 1.0]),
        "b": (["p", "n0"], [5.0, 1.0]),
        "c": (["n3", "p"], [1.0, 2.0]),
        "d": (["p", "n0"], [5.0, 1.0]),
        "e": (["p", "n0", "p2"], [1.0, 3.0, 2.0]),
    }
    assert confusing_queries(student, teacher, QRELS) == ["b", "c"]
    assert confusing_queries(student, teacher, QRELS, window=(2, 16)) == ["b", "c", "d"]


def test_teacher_ties_go_to_the_first_candidate():
    """Guards tie handling: a tie between a negative listed first and the positive is not a win."""
    student = {"b": ["n0", "p"]}
    assert confusing_queries(student, {"b": (["n0", "p"], [2.0, 2.0])}, QRELS) == []
    assert confusing_queries(student, {"b": (["p", "n0"], [2.0, 2.0])}, QRELS) == ["b"]

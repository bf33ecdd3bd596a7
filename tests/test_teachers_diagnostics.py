"""Teacher calibration diagnostics on hand-made scored groups."""

from __future__ import annotations

import logging
import math

import pytest

from raykd.teachers.diagnostics import log_diagnostics, teacher_diagnostics


def _group(scores, labels, qid="q"):
    return {"qid": qid, "teacher_scores": scores, "labels": labels}


def test_collapsed_logit_scale_teacher_is_flagged_with_a_higher_temperature():
    """Guards the classic silent failure: cross-encoder logits at T = 1 give one-hot targets."""
    groups = [_group([20.0, 0.0, -5.0, 1.0], [1, 0, 0, 0], "a"),
              _group([-3.0, 18.0, 2.0, 0.0], [0, 1, 0, 0], "b")]
    stats = teacher_diagnostics(groups, temperature=1.0)
    assert stats["verdict"] == "collapsed"
    assert stats["mean_max_prob"] > 0.99
    assert stats["top1_positive_rate"] == 1.0
    assert "raise the temperature" in stats["message"]
    assert stats["suggested_temperature"] > 1.0
    # At the suggested temperature the targets are no longer one-hot.
    softer = teacher_diagnostics(groups, temperature=stats["suggested_temperature"])
    assert softer["verdict"] == "ok"


def test_flat_cosine_scale_teacher_is_flagged_with_a_lower_temperature():
    """Guards the opposite failure: cosine scores in a narrow band give near-uniform targets."""
    groups = [_group([0.81, 0.80, 0.79, 0.80], [1, 0, 0, 0])]
    stats = teacher_diagnostics(groups, temperature=1.0)
    assert stats["verdict"] == "flat"
    assert stats["mean_normalized_entropy"] > 0.98
    assert "lower the temperature" in stats["message"]
    assert stats["suggested_temperature"] < 1.0


def test_margins_entropy_and_summary_statistics_match_hand_values():
    """Guards the numbers themselves: margins over positives/negatives, entropy in nats,
    normalised entropy, max probability, population std and the histogram."""
    ln2 = math.log(2.0)
    groups = [
        # Softmax of [ln 2, 0] = [2/3, 1/3]; margin pos - best neg = ln 2.
        _group([ln2, 0.0], [1, 0], "a"),
        # Two positives [3, 1], negatives [2, 0]: mean(pos - best neg) = mean(1, -1) = 0;
        # mean(pos) - mean(neg) = 2 - 1 = 1.
        _group([3.0, 2.0, 1.0, 0.0], [1, 0, 1, 0], "b"),
    ]
    stats = teacher_diagnostics(groups, temperature=1.0, bins=4)
    assert stats["num_groups"] == 2 and stats["num_scores"] == 6
    assert stats["margin_pos_best_neg"] == pytest.approx((ln2 + 0.0) / 2)
    assert stats["margin_pos_mean_neg"] == pytest.approx((ln2 + 1.0) / 2)
    h_a = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    z = sum(math.exp(s) for s in (3, 2, 1, 0))
    p_b = [math.exp(s) / z for s in (3, 2, 1, 0)]
    h_b = -sum(p * math.log(p) for p in p_b)
    assert stats["mean_entropy"] == pytest.approx((h_a + h_b) / 2)
    assert stats["mean_normalized_entropy"] == pytest.approx((h_a / ln2 + h_b / math.log(4)) / 2)
    assert stats["mean_max_prob"] == pytest.approx((2 / 3 + p_b[0]) / 2)
    assert stats["top1_positive_rate"] == 1.0
    values = [ln2, 0.0, 3.0, 2.0, 1.0, 0.0]
    mean = sum(values) / 6
    assert stats["mean"] == pytest.approx(mean)
    assert stats["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 6))
    assert (stats["min"], stats["max"]) == (0.0, 3.0)
    assert stats["histogram"]["counts"] == [3, 1, 1, 1]  # {0, 0, ln 2}, {1}, {2}, {3}
    assert stats["histogram"]["edges"] == pytest.approx([0.0, 0.75, 1.5, 2.25, 3.0])
    assert stats["verdict"] == "ok"


def test_temperature_scales_the_softmax_and_top1_counts_misses():
    """Guards the temperature actually being applied, and top-1 counting a negative on top."""
    groups = [_group([2.0, 0.0], [0, 1])]
    cold = teacher_diagnostics(groups, temperature=0.5)
    warm = teacher_diagnostics(groups, temperature=2.0)
    assert cold["mean_max_prob"] == pytest.approx(1 / (1 + math.exp(-4.0)))
    assert warm["mean_max_prob"] == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert cold["top1_positive_rate"] == 0.0
    assert cold["margin_pos_best_neg"] == pytest.approx(-2.0)


def test_bad_inputs_fail_loudly_and_summary_is_logged(caplog):
    """Guards garbage in: missing or non-finite teacher scores and a bad temperature raise; the
    log line carries the verdict."""
    with pytest.raises(ValueError, match="no teacher_scores"):
        teacher_diagnostics([{"qid": "x", "labels": [1]}])
    with pytest.raises(ValueError, match="non-finite"):
        teacher_diagnostics([_group([float("nan"), 1.0], [1, 0])])
    with pytest.raises(ValueError, match="temperature"):
        teacher_diagnostics([_group([1.0, 0.0], [1, 0])], temperature=0.0)
    stats = teacher_diagnostics([_group([1.0, 0.0], [1, 0])])
    logger = logging.getLogger("test.teacher.diagnostics")
    with caplog.at_level(logging.INFO, logger="test.teacher.diagnostics"):
        text = log_diagnostics(stats, logger)
    assert "[ok]" in text and text in caplog.text


def test_scale_check_compares_student_and_teacher_margins(tiny_encoder_dir):
    """Guards the scale diagnostic: margins are the student's own scaled scores against the
    teacher's, and scaling the teacher by 2 halves the ratio."""
    import numpy as np

    from raykd.students import BiEncoder
    from raykd.teachers.diagnostics import scale_check

    student = BiEncoder.from_pretrained(tiny_encoder_dir, similarity="cosine", scale=20.0)
    texts = ["cells divide by mitosis", "rivers flow to the sea", "banks raise rates"]
    groups = [{"query": "how do cells divide", "texts": texts, "labels": [1, 0, 0],
               "kinds": ["pos", "neg", "neg"], "teacher_scores": [2.0, 0.0, -1.0]}]
    check = scale_check(student, groups)
    s = 20.0 * (student.encode_queries(["how do cells divide"]) @
                student.encode_passages(texts).T)[0]
    assert check["groups"] == 1
    assert check["student_margin"] == pytest.approx(s[0] - s[1:].mean(), rel=1e-5)
    assert check["teacher_margin"] == pytest.approx(2.5)
    doubled = [{**groups[0], "teacher_scores": list(2 * np.asarray(groups[0]["teacher_scores"]))}]
    assert scale_check(student, doubled)["ratio"] == pytest.approx(check["ratio"] / 2)
    assert scale_check(student, [{**groups[0], "labels": [0, 0, 0]}]) == {"groups": 0}

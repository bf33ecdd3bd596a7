"""Paired statistics over test queries: hand-computed t-test, bootstrap, seed means, per_query."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from raykd.eval.paired import (
    PairedDiff,
    compare_systems,
    mean_sd,
    paired_difference,
    per_query,
    seed_means,
)

A = {"q1": 0.5, "q2": 0.7, "q3": 0.2, "q4": 0.9, "q5": 0.4, "q6": 0.6}
B = {"q1": 0.4, "q2": 0.5, "q3": 0.3, "q4": 0.6, "q5": 0.4, "q6": 0.3}


def test_paired_difference_matches_hand_computation():
    """delta = mean(d); CI = delta +- t_{0.975, n-1} * sd / sqrt(n); p = 2 * P(T > |t|)."""
    d = [A[q] - B[q] for q in A]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    p = 2 * stats.t.sf(abs(mean / se), n - 1)

    got = paired_difference(A, B)
    assert got.n == 6
    assert got.mean_a == pytest.approx(sum(A.values()) / n, abs=1e-9)
    assert got.mean_b == pytest.approx(sum(B.values()) / n, abs=1e-9)
    assert got.delta == pytest.approx(mean, abs=1e-9)
    assert got.ci_low == pytest.approx(mean - half, abs=1e-9)
    assert got.ci_high == pytest.approx(mean + half, abs=1e-9)
    assert got.p_value == pytest.approx(p, abs=1e-9)
    assert got.significant == (mean - half > 0)


def test_confidence_level_changes_the_t_interval():
    d = [A[q] - B[q] for q in A]
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    got = paired_difference(A, B, confidence=0.8)
    assert got.ci_high - mean == pytest.approx(stats.t.ppf(0.9, n - 1) * sd / math.sqrt(n),
                                               abs=1e-9)


def test_identical_systems():
    got = paired_difference(A, dict(A))
    assert (got.delta, got.p_value, got.ci_low, got.ci_high) == (0.0, 1.0, 0.0, 0.0)
    assert (got.boot_low, got.boot_high) == (0.0, 0.0)
    assert not got.significant


def test_bootstrap_is_seeded_and_contains_delta():
    one = paired_difference(A, B, n_boot=2000, seed=7)
    two = paired_difference(dict(A), dict(B), n_boot=2000, seed=7)
    other = paired_difference(A, B, n_boot=2000, seed=8)
    assert (one.boot_low, one.boot_high) == (two.boot_low, two.boot_high)
    assert (one.boot_low, one.boot_high) != (other.boot_low, other.boot_high)
    assert one.boot_low <= one.delta <= one.boot_high
    assert one.boot_low < one.boot_high


def test_input_order_does_not_matter():
    reversed_a = dict(reversed(list(A.items())))
    assert paired_difference(reversed_a, B, n_boot=500) == paired_difference(A, B, n_boot=500)


def test_mismatched_qids_name_the_missing_query():
    b = {q: v for q, v in B.items() if q != "q3"}
    with pytest.raises(ValueError, match="missing from b: q3"):
        paired_difference(A, b)
    with pytest.raises(ValueError, match="missing from a: q3"):
        paired_difference(b, A)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no queries"):
        paired_difference({}, {})
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(A, B, confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        paired_difference(A, B, n_boot=0)


def test_constant_difference_and_single_query():
    base = {"q1": 0.5, "q2": 0.25, "q3": 0.125, "q4": 0.0}  # exact in binary floating point
    got = paired_difference({q: v + 0.25 for q, v in base.items()}, base)
    assert got.delta == pytest.approx(0.25)
    assert got.p_value == 0.0 and got.significant
    one = paired_difference({"q1": 0.5}, {"q1": 0.2})
    assert one.n == 1 and one.delta == pytest.approx(0.3)
    assert math.isnan(one.ci_low) and math.isnan(one.p_value) and not one.significant


def test_format():
    diff = PairedDiff(n=10, mean_a=0.5, mean_b=0.4877, delta=0.0123, ci_low=0.004,
                      ci_high=0.0206, p_value=0.004, boot_low=0.0041, boot_high=0.02)
    assert diff.format() == "+0.0123 [+0.0040, +0.0206] p=0.004"
    small = PairedDiff(n=10, mean_a=0.4, mean_b=0.5, delta=-0.1, ci_low=-0.15, ci_high=-0.05,
                       p_value=3.2e-5, boot_low=-0.14, boot_high=-0.06)
    assert small.format() == "-0.1000 [-0.1500, -0.0500] p=3.2e-05"
    assert small.significant


def test_per_query_hand_computed_ndcg():
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d2": 1}, "q3": {"d3": 1}}
    run = {"q1": {"d9": 2.0, "d1": 1.0}, "q2": {"d2": 5.0, "d7": 1.0}, "q9": {"d3": 1.0}}
    got = per_query(qrels, run)
    assert set(got) == {"q1", "q2", "q3"}
    assert got["q1"] == pytest.approx(1 / math.log2(3), abs=1e-6)  # one relevant doc at rank 2
    assert got["q2"] == pytest.approx(1.0)
    assert got["q3"] == 0.0  # absent from the run


def test_per_query_rel_level_and_empty_run():
    qrels = {"q1": {"d1": 1, "d2": 2}}
    run = {"q1": {"d1": 2.0, "d2": 1.0}}
    assert per_query(qrels, run, "RR@10")["q1"] == pytest.approx(1.0)
    assert per_query(qrels, run, "RR@10", rel=2)["q1"] == pytest.approx(0.5)
    assert per_query(qrels, {}, "RR@10") == {"q1": 0.0}


def test_mean_sd_by_hand():
    mean, sd = mean_sd([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5, abs=1e-12)
    assert sd == pytest.approx(math.sqrt(((0.3**2) + (0.1**2) + (0.4**2)) / 2), abs=1e-12)
    assert mean_sd([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_sd([])


def test_seed_means_and_compare_systems():
    seeds = [{"q1": 0.2, "q2": 0.6}, {"q1": 0.4, "q2": 0.8}, {"q1": 0.3, "q2": 1.0}]
    assert seed_means(seeds) == pytest.approx({"q1": 0.3, "q2": 0.8})
    with pytest.raises(ValueError, match="missing from seed 1: q2"):
        seed_means([{"q1": 0.2, "q2": 0.6}, {"q1": 0.4}])
    with pytest.raises(ValueError):
        seed_means([])
    baseline = [{"q1": 0.1, "q2": 0.5}, {"q1": 0.3, "q2": 0.5}]
    got = compare_systems(baseline, seeds, n_boot=200)
    want = paired_difference(seed_means(seeds), seed_means(baseline), n_boot=200)
    assert got == want
    assert got.delta == pytest.approx(((0.3 - 0.2) + (0.8 - 0.5)) / 2)

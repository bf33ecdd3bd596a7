"""Paired statistics over test queries: per-query metrics, paired t-test, bootstrap, seed means.

Two systems are compared on the same queries, query by query: ``delta`` is the mean of
``a - b``, with a paired t confidence interval (scipy.stats.t), a two-sided paired t-test
(scipy.stats.ttest_rel) and a percentile bootstrap interval that resamples queries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import ir_measures
import numpy as np
from scipy import stats

from raykd.eval.metrics import Qrels, Run, parse_measures

PerQuery = Mapping[str, float]

_BOOT_CELLS = 1 << 22  # resampled values drawn per bootstrap chunk (bounds memory)


def per_query(qrels: Qrels, run: Run, measure: str = "nDCG@10", rel: int = 1) -> dict[str, float]:
    """``{qid: value}`` of one measure for every qid of ``qrels`` (0.0 when the run lacks it).

    Queries of ``run`` absent from ``qrels`` are ignored, so two systems evaluated on the same
    qrels always align on the same query set.
    """
    parsed = parse_measures([measure], rel)[0]
    qrels = {str(q): dict(d) for q, d in qrels.items()}
    run = {str(q): dict(d) for q, d in run.items() if str(q) in qrels and d}
    values = dict.fromkeys(qrels, 0.0)
    if run:
        for metric in ir_measures.iter_calc([parsed], qrels, run):
            if metric.query_id in values:
                values[metric.query_id] = float(metric.value)
    return values


@dataclass(frozen=True)
class PairedDiff:
    """The paired difference ``a - b`` over ``n`` queries.

    ``ci_*``: paired t interval of the mean difference; ``boot_*``: percentile bootstrap
    interval; both at ``confidence``. With one query the t interval is NaN.
    """

    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    boot_low: float
    boot_high: float
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """The t interval excludes zero."""
        return self.ci_low > 0.0 or self.ci_high < 0.0

    def format(self) -> str:
        """``+0.0123 [+0.0040, +0.0206] p=0.004`` (p under 0.001 in exponent form)."""
        p = f"{self.p_value:.3f}" if not self.p_value < 1e-3 else f"{self.p_value:.1e}"
        return f"{self.delta:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}] p={p}"


def _check_same_qids(a: PerQuery, b: PerQuery, names: tuple[str, str] = ("a", "b")) -> None:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if not only_a and not only_b:
        return
    parts = []
    for missing, where in ((only_a, names[1]), (only_b, names[0])):
        if missing:
            shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10
                                                else "")
            parts.append(f"{len(missing)} qid(s) missing from {where}: {shown}")
    raise ValueError("per-query values do not cover the same queries; " + "; ".join(parts))


def _t_interval(va: np.ndarray, vb: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(ci_low, ci_high, p_value) of the paired t-test of ``va`` against ``vb``."""
    diffs = va - vb
    n = len(diffs)
    delta = float(diffs.mean())
    if not np.any(diffs):
        return 0.0, 0.0, 1.0
    if n < 2:
        return math.nan, math.nan, math.nan
    sd = float(diffs.std(ddof=1))
    if sd == 0.0:  # a constant, non-zero difference
        return delta, delta, 0.0
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    p_value = float(stats.ttest_rel(va, vb).pvalue)
    return delta - half, delta + half, p_value


def _bootstrap(diffs: np.ndarray, confidence: float, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean difference over queries resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = len(diffs)
    rows = max(1, _BOOT_CELLS // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(start + rows, n_boot)
        means[start:stop] = diffs[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def paired_difference(a: PerQuery, b: PerQuery, *, confidence: float = 0.95,
                      n_boot: int = 10000, seed: int = 0) -> PairedDiff:
    """Compare ``a`` against ``b`` query by query (``delta > 0``: ``a`` is better).

    Raises ValueError naming the qids when ``a`` and ``b`` do not have the same keys. The
    p-value is 1.0 when every difference is zero.
    """
    _check_same_qids(a, b)
    if not a:
        raise ValueError("no queries to compare")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot!r}")
    qids = sorted(a)
    va = np.array([float(a[q]) for q in qids])
    vb = np.array([float(b[q]) for q in qids])
    diffs = va - vb
    ci_low, ci_high, p_value = _t_interval(va, vb, confidence)
    boot_low, boot_high = _bootstrap(diffs, confidence, n_boot, seed)
    return PairedDiff(n=len(qids), mean_a=float(va.mean()), mean_b=float(vb.mean()),
                      delta=float(diffs.mean()), ci_low=ci_low, ci_high=ci_high,
                      p_value=p_value, boot_low=boot_low, boot_high=boot_high,
                      confidence=confidence)


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1); the sd is 0.0 for a single value."""
    arr = np.array([float(v) for v in values])
    if arr.size == 0:
        raise ValueError("mean_sd needs at least one value")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd


def seed_means(per_seed: Sequence[PerQuery]) -> dict[str, float]:
    """Per-query mean over seeds of one system; every seed must cover the same qids."""
    if not per_seed:
        raise ValueError("seed_means needs at least one seed")
    first = per_seed[0]
    for i, other in enumerate(per_seed[1:], start=1):
        _check_same_qids(first, other, ("seed 0", f"seed {i}"))
    return {q: float(np.mean([float(s[q]) for s in per_seed])) for q in sorted(first)}


def compare_systems(baseline_seeds: Sequence[PerQuery], system_seeds: Sequence[PerQuery],
                    **kw) -> PairedDiff:
    """Seed-averaged system against seed-averaged baseline (``a`` = system, ``b`` = baseline).

    Keyword arguments go to :func:`paired_difference`.
    """
    return paired_difference(seed_means(system_seeds), seed_means(baseline_seeds), **kw)

"""Teacher calibration diagnostics: is the teacher's target distribution usable at this
temperature?

Distillation losses turn each group's teacher scores into softmax(t / T). Scores on a scale of
tens (cross-encoder logits, ColBERT MaxSim sums) collapse that to a one-hot at T = 1; scores
squeezed into a narrow range (cosine similarities) make it nearly uniform. Either way the
student learns little beyond the labels. `teacher_diagnostics` measures this on scored
candidate groups and says which way to move the temperature.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np

COLLAPSED_MAX_PROB = 0.99
FLAT_NORMALIZED_ENTROPY = 0.98

_log = logging.getLogger(__name__)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def teacher_diagnostics(groups_with_scores: Iterable[Mapping], temperature: float = 1.0,
                        bins: int = 20) -> dict:
    """Score scale, margins and softmax sharpness of scored candidate groups.

    Each group needs `teacher_scores` and `labels` (1 = labelled positive). Returns:

    * `num_groups`, `num_scores`, `temperature`;
    * `mean`, `std` (population), `min`, `max` over all scores; `histogram` (`counts`, `edges`);
    * `margin_pos_best_neg`: mean over groups with positives and negatives of (the mean over
      positives of positive - best negative); `margin_pos_mean_neg`: mean of
      (mean positive - mean negative);
    * over softmax(scores / temperature) per group: `mean_entropy` (nats),
      `mean_normalized_entropy` (entropy / log m, groups with m >= 2), `mean_max_prob`,
      `top1_positive_rate` (groups with a positive whose top candidate is a positive);
    * `suggested_temperature`: the median per-group score std (logits of unit spread);
    * `verdict`: `collapsed` (mean max prob > 0.99), `flat` (mean normalised entropy > 0.98)
      or `ok`, and a human-readable `message`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    all_scores: list[np.ndarray] = []
    best_margins, mean_margins = [], []
    entropies, norm_entropies, max_probs, top1_pos, spreads = [], [], [], [], []
    for n, group in enumerate(groups_with_scores):
        qid = group.get("qid", f"#{n}")
        if group.get("teacher_scores") is None:
            raise ValueError(f"group {qid!r} has no teacher_scores")
        scores = np.asarray(group["teacher_scores"], dtype=np.float64)
        labels = np.asarray(group["labels"], dtype=np.int64)
        if scores.shape != labels.shape or scores.ndim != 1 or scores.size == 0:
            raise ValueError(f"group {qid!r}: {scores.size} teacher_scores for "
                             f"{labels.size} labels")
        if not np.isfinite(scores).all():
            raise ValueError(f"group {qid!r} has non-finite teacher scores")
        all_scores.append(scores)
        pos, neg = scores[labels == 1], scores[labels != 1]
        if pos.size and neg.size:
            best_margins.append(float((pos - neg.max()).mean()))
            mean_margins.append(float(pos.mean() - neg.mean()))
        p = _softmax(scores / temperature)
        h = _entropy(p)
        entropies.append(h)
        if scores.size >= 2:
            norm_entropies.append(h / math.log(scores.size))
            spreads.append(float(scores.std()))
        max_probs.append(float(p.max()))
        if pos.size:
            top1_pos.append(float(labels[int(np.argmax(scores))] == 1))
    if not all_scores:
        raise ValueError("teacher_diagnostics needs at least one scored group")
    flat = np.concatenate(all_scores)
    counts, edges = np.histogram(flat, bins=bins)
    positive_spreads = [s for s in spreads if s > 0]
    stats = {
        "num_groups": len(all_scores),
        "num_scores": int(flat.size),
        "temperature": float(temperature),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "margin_pos_best_neg": _mean(best_margins),
        "margin_pos_mean_neg": _mean(mean_margins),
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "mean_entropy": _mean(entropies),
        "mean_normalized_entropy": _mean(norm_entropies),
        "mean_max_prob": _mean(max_probs),
        "top1_positive_rate": _mean(top1_pos),
        "suggested_temperature": (float(np.median(positive_spreads))
                                  if positive_spreads else None),
    }
    stats["verdict"], stats["message"] = _verdict(stats)
    return stats


def _verdict(stats: dict) -> tuple[str, str]:
    t = stats["temperature"]
    suggestion = stats["suggested_temperature"]
    hint = (f" (the median per-query score std, {suggestion:.3g}, is a good start)"
            if suggestion is not None else "")
    if stats["mean_max_prob"] > COLLAPSED_MAX_PROB:
        return "collapsed", (
            f"teacher targets collapse to one-hot at temperature {t:g} (mean max probability "
            f"{stats['mean_max_prob']:.4f} > {COLLAPSED_MAX_PROB}): scores span "
            f"[{stats['min']:.3g}, {stats['max']:.3g}]; raise the temperature{hint}")
    norm_h = stats["mean_normalized_entropy"]
    if norm_h is not None and norm_h > FLAT_NORMALIZED_ENTROPY:
        return "flat", (
            f"teacher targets are nearly uniform at temperature {t:g} (mean normalised entropy "
            f"{norm_h:.4f} > {FLAT_NORMALIZED_ENTROPY}): scores have std {stats['std']:.3g}; "
            f"lower the temperature{hint}")
    return "ok", (f"teacher targets are informative at temperature {t:g} (mean max probability "
                  f"{stats['mean_max_prob']:.3f}, mean normalised entropy "
                  f"{(norm_h if norm_h is not None else float('nan')):.3f})")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def format_diagnostics(stats: Mapping) -> str:
    """A compact, multi-line summary of `teacher_diagnostics` output."""
    return (
        f"teacher diagnostics [{stats['verdict']}] groups={stats['num_groups']} "
        f"scores={stats['num_scores']} T={stats['temperature']:g}\n"
        f"  scores mean={_fmt(stats['mean'])} std={_fmt(stats['std'])} "
        f"min={_fmt(stats['min'])} max={_fmt(stats['max'])}\n"
        f"  margins pos-best_neg={_fmt(stats['margin_pos_best_neg'])} "
        f"pos-mean_neg={_fmt(stats['margin_pos_mean_neg'])}\n"
        f"  softmax entropy={_fmt(stats['mean_entropy'])} "
        f"normalised={_fmt(stats['mean_normalized_entropy'])} "
        f"max_prob={_fmt(stats['mean_max_prob'])} "
        f"top1_positive={_fmt(stats['top1_positive_rate'])}\n"
        f"  {stats['message']}"
    )


def log_diagnostics(stats: Mapping, logger: logging.Logger | None = None) -> str:
    """Log (at INFO) and return `format_diagnostics(stats)`."""
    text = format_diagnostics(stats)
    (logger or _log).info(text)
    return text


def scale_check(student, groups: Iterable[Mapping], limit: int = 64) -> dict:
    """The student's own positive-minus-mean-negative margin next to the teacher's on the
    same scored groups (the first `limit` with both). Margin-MSE pulls the student's margins
    to the teacher's, and a KL at one temperature for both compares their sharpness, so a
    ratio far from 1 means the teacher's scale (ensemble weights, temperature) wants tuning.

    `student`: a `raykd.students.BiEncoder`."""
    student_margins, teacher_margins = [], []
    for group in groups:
        labels = np.asarray(group["labels"])
        kinds = group.get("kinds")
        negative = (np.array([k == "neg" for k in kinds]) if kinds is not None
                    else labels == 0)
        positive = labels > 0
        if not positive.any() or not negative.any():
            continue
        q = student.encode_queries([group["query"]])
        p = student.encode_passages(list(group["texts"]))
        s = student.options.scale * (q @ p.T)[0]
        t = np.asarray(group["teacher_scores"], dtype=np.float64)
        student_margins.append(float(s[positive].mean() - s[negative].mean()))
        teacher_margins.append(float(t[positive].mean() - t[negative].mean()))
        if len(student_margins) >= limit:
            break
    if not student_margins:
        return {"groups": 0}
    s_m, t_m = float(np.mean(student_margins)), float(np.mean(teacher_margins))
    return {"groups": len(student_margins), "student_margin": s_m, "teacher_margin": t_m,
            "ratio": s_m / t_m if t_m else math.inf}

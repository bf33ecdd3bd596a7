"""Why (or whether) distillation helps: the teacher on the training lists, next to the labels.

    python bench/kd_diagnosis.py --scored outputs/corpus-kd-scifact/stages/00-distill/scored

Reads a stage's scored candidate groups and scores the same lists with the student before
training (the recipe's student, its training lengths). For the labelled lists it reports how
often the teacher ranks the labelled positive first, the positive's probability under the
teacher and the student at the loss's temperature, and the gradient each loss term sends to
the student's scores: listwise KL, d/ds = (softmax(s/T) - softmax(t/T)) / T, and InfoNCE on the
label, d/ds = softmax(s) - y. A KL gradient that lowers the positive's score (the teacher gives
the positive less mass than the student already does) teaches against the label; the report
counts those lists, and repeats the numbers for the teacher corrected by the labels
(`positive_margin`, `raykd.losses.common.lift_positives`). For pseudo-query lists (no label)
it reports how often the teacher ranks the query's source passage first. For the KL over the
negatives only (`exclude_positives`) it counts the lists where that KL raises the student's
hardest negative, the one InfoNCE lowers most. `--student` scores the lists with a trained
model instead, to see them as they are late in training. Results go to
`outputs/bench/kd_diagnosis.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def lift(teacher: np.ndarray, positive: np.ndarray, margin: float) -> np.ndarray:
    """One list through `raykd.losses.common.lift_positives`, the correction the loss applies."""
    import torch

    from raykd.losses.common import lift_positives

    t = torch.as_tensor(teacher, dtype=torch.float64)[None]
    pos = torch.as_tensor(positive, dtype=torch.bool)[None]
    return lift_positives(t, pos, torch.ones_like(pos), margin)[0].numpy()


def list_terms(s: np.ndarray, t: np.ndarray, positive: np.ndarray, temperature: float) -> dict:
    """One labelled list: the teacher's view of the positive and the two gradients."""
    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    g_kl = (p_s - p_t) / temperature
    y = positive / positive.sum()
    g_ce = softmax(s) - y
    cos = float(g_kl @ g_ce / (np.linalg.norm(g_kl) * np.linalg.norm(g_ce) + 1e-12))
    # KL over the negatives only (`exclude_positives`): its gradient on the student's hardest
    # negative, the one InfoNCE pushes down most, and its agreement with InfoNCE there.
    neg = ~positive
    g_neg = softmax(s[neg] / temperature) - softmax(t[neg] / temperature)
    hardest = int(np.argmax(s[neg]))
    cos_neg = float(g_neg @ g_ce[neg] / (np.linalg.norm(g_neg) * np.linalg.norm(g_ce[neg])
                                         + 1e-12))
    order = np.argsort(-t, kind="stable")
    return {"teacher_top1_positive": float(positive[order[0]]),
            "teacher_positive_rank": float(np.flatnonzero(positive[order])[0] + 1),
            "teacher_p_positive": float(p_t[positive].sum()),
            "student_p_positive": float(p_s[positive].sum()),
            "kl_lowers_positive": float(g_kl[positive].sum() > 0),
            "kl_grad_norm": float(np.linalg.norm(g_kl)),
            "ce_grad_norm": float(np.linalg.norm(g_ce)),
            "kl_ce_cosine": cos,
            "neg_kl_raises_hardest_negative": float(g_neg[hardest] < 0),
            "neg_kl_ce_cosine": cos_neg}


def diagnose(groups: list[dict], student_scores: list[np.ndarray], temperature: float,
             margins: list[float]) -> dict:
    labelled = [(g, s) for g, s in zip(groups, student_scores, strict=True)
                if any(g["labels"])]
    pseudo = [(g, s) for g, s in zip(groups, student_scores, strict=True)
              if not any(g["labels"])]
    out: dict = {"temperature": temperature, "labelled_lists": len(labelled),
                 "pseudo_lists": len(pseudo)}
    for name, margin in [("teacher", None)] + [(f"lifted_{m:g}", m) for m in margins]:
        rows = []
        for group, s in labelled:
            t = np.asarray(group["teacher_scores"], dtype=np.float64)
            positive = np.asarray(group["labels"]) > 0
            rows.append(list_terms(s, t if margin is None else lift(t, positive, margin),
                                   positive, temperature))
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}
    if labelled:
        t_std = [float(np.std(g["teacher_scores"])) for g, _ in labelled]
        s_std = [float(np.std(s)) for _, s in labelled]
        out["calibration"] = {"teacher_list_std": float(np.mean(t_std)),
                              "student_list_std": float(np.mean(s_std)),
                              "std_ratio_student_over_teacher":
                                  float(np.mean(s_std) / max(np.mean(t_std), 1e-12))}
    if pseudo:
        top1, p_source = [], []
        for group, _ in pseudo:
            t = np.asarray(group["teacher_scores"], dtype=np.float64)
            source = np.asarray([k == "source" for k in group["kinds"]])
            top1.append(float(source[int(np.argmax(t))]))
            p_source.append(float(softmax(t / temperature)[source].sum()))
        out["pseudo"] = {"teacher_top1_source": float(np.mean(top1)),
                         "teacher_p_source": float(np.mean(p_source))}
    return out


def student_list_scores(groups: list[dict], recipe) -> list[np.ndarray]:
    """The student's scores (scale x similarity) on every list, texts encoded once each."""
    from raykd.students import BiEncoder, resolve_model

    student = BiEncoder.from_pretrained(resolve_model(recipe.student.model),
                                        **recipe.student.options())
    queries = sorted({g["query"] for g in groups})
    passages = sorted({t for g in groups for t in g["texts"]})
    print(f"[kd_diagnosis] encoding {len(queries)} queries and {len(passages)} passages",
          flush=True)
    q_vec = dict(zip(queries, student.encode_queries(queries, batch_size=64), strict=True))
    p_vec = dict(zip(passages, student.encode_passages(passages, batch_size=64), strict=True))
    return [np.asarray(student.options.scale * np.stack([p_vec[t] for t in g["texts"]])
                       @ q_vec[g["query"]], dtype=np.float64) for g in groups]


def table(report: dict) -> str:
    keys = ["teacher_top1_positive", "teacher_positive_rank", "teacher_p_positive",
            "student_p_positive", "kl_lowers_positive", "kl_grad_norm", "ce_grad_norm",
            "kl_ce_cosine", "neg_kl_raises_hardest_negative", "neg_kl_ce_cosine"]
    targets = [k for k in report if k == "teacher" or k.startswith("lifted_")]
    lines = ["| target | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for target in targets:
        lines.append(f"| {target} | " + " | ".join(f"{report[target][k]:.3f}" for k in keys)
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from raykd.config import load_recipe
    from raykd.data.groups import iter_groups

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scored", required=True, help="a stage's scored candidate groups folder")
    p.add_argument("--recipe", default=str(ROOT / "raykd" / "recipes" / "corpus_kd.yaml"),
                   help="the recipe whose student scores the lists")
    p.add_argument("--student", default=None,
                   help="score the lists with this student instead of the recipe's (e.g. a "
                        "trained run's outputs/<run>/student, to see the lists late in training)")
    p.add_argument("--passage-max-length", type=int, default=None,
                   help="the student's passage length (default: the recipe's)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--margins", default="0,1,2", help="positive_margin values to compare")
    p.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "kd_diagnosis.json"))
    args = p.parse_args(argv)
    files = sorted(Path(args.scored).glob("*.parquet"))
    if not files:
        p.error(f"{args.scored}: no scored parquet files")
    groups = [g for f in files for g in iter_groups(f)]
    print(f"[kd_diagnosis] {len(groups)} scored lists from {args.scored}", flush=True)
    overrides = ([f"student.model={args.student}"] if args.student else []) + (
        [f"student.passage_max_length={args.passage_max_length}"]
        if args.passage_max_length else [])
    recipe = load_recipe(args.recipe, overrides)
    report = diagnose(groups, student_list_scores(groups, recipe), args.temperature,
                      [float(m) for m in args.margins.split(",") if m])
    report["scored"] = str(args.scored)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(json.dumps({k: v for k, v in report.items() if k in ("calibration", "pseudo",
                                                                 "labelled_lists",
                                                                 "pseudo_lists")}, indent=2))


if __name__ == "__main__":
    main()

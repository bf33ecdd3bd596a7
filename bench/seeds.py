"""Seeded, paired comparison of recipes on SciFact: mean +- sd over seeds, and each row's
per-query paired difference to the contrastive baseline on test (and on dev, from each run's
last-stage dev run file, where both rows have one).

    python bench/seeds.py --rows contrastive-all,corpus-kd --seeds 13,14,15   # run what is missing
    python bench/seeds.py --table                                            # recorded runs only
    python bench/seeds.py --table --fixed BM25=outputs/eval/bm25-test/run.trec  # + a seedless system

A seed S sets every seeded choice of a run: the sampled queries and pseudo-queries, the
negatives, the data order and dropout (`data.seed`, `data.pseudo.seed`, `dark.seed`,
`train.seed`); seed 13 is the recipes' default, so `<row>-s13` is the recipe as shipped. Each
run is `outputs/<row>-s<S>/` (a finished one is read, not rerun). The paired statistics pair
the seed-averaged per-query nDCG@10 of a row with the baseline's over the same test queries
(paired t-test and its 95% interval, a seeded bootstrap interval beside it;
`raykd.eval.paired`). Results: `outputs/bench/seeds.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from raykd.config import seed_overrides

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "outputs" / "bench" / "seeds.json"
BASELINE = "contrastive-all"
DEFAULT_SEED = 13


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    job: str
    overrides: tuple[str, ...] = ()

    def args(self, seed: int) -> list[str]:
        seeded = [] if seed == DEFAULT_SEED else seed_overrides(seed)
        own = [o.format(seed=seed) for o in self.overrides]  # `{seed}`: this seed's runs
        return [self.job, "--name", run_name(self.key, seed), *own, *seeded]

    def command(self, seed: int) -> str:
        return "python " + " ".join(shlex.quote(a) for a in self.args(seed))


def run_name(key: str, seed: int) -> str:
    return f"{key}-s{seed}"


# Every row on all 709 labelled train queries (the budget dev chose for the baseline), lr 5e-5.
ALL = ("train.lr=5e-5", "data.max_queries=null")
# A second stage that starts from the contrastive student of the same seed; the candidates
# are mined with the bundled MiniLM as in stage 1 (the same lists for every row).
CONTINUE = ("student.model=outputs/contrastive-all-s{seed}/student",
            "data.negatives_model=minilm", "train.lr=2e-5")
TEACHER3 = "teacher=bench/recipes/teachers/bm25_bi_li.yaml"
TEACHER_XF = "teacher=bench/recipes/teachers/xf_bm25_bi_li.yaml"
TEACHER3_256 = "teacher=bench/recipes/teachers/bm25_bi256_li.yaml"
TEACHER_NEURAL = "teacher=bench/recipes/teachers/bi256_li.yaml"
TEACHER_E3 = "teacher=bench/recipes/teachers/bm25_li_e3.yaml"
TEACHER_LO3 = "teacher=bench/recipes/teachers/bm25_lo3_e3.yaml"
TEACHER_ST2 = "teacher=bench/recipes/teachers/bm25_st2_3.yaml"
# A second stage from the label-only student at its best budget (three passes, 256 tokens);
# the dense half of the candidates mined by that student (the recipes' default mining model).
STAGE2 = ("student.model=outputs/contrastive-len256-e3-s{seed}/student",
          "student.passage_max_length=256", "train.lr=2e-5")
LABELS = "loss.params.label_weight=1"  # + InfoNCE on the labelled lists
# KL over the negatives only: the labels place the positive, the teacher orders the rest.
DECOUPLED = ("loss.params.exclude_positives=true", "loss.params.positive_margin=null")
# ADAM's own loss decoupled the same way: its KL over the mined negatives and dark examples,
# the CE at full weight places the positive (the bundled recipe's loss since session 16).
ADAM_DECOUPLED = ("loss.params.exclude_positives=true", "loss.params.ce_weight=1.0")
# ADAM's loss before that (the paper's reconstruction): KL over the whole list, CE weight 0.1.
ADAM_WHOLE_LIST = ("loss.params.exclude_positives=false", "loss.params.ce_weight=0.1")
ROWS = [
    Row(BASELINE, "contrastive (InfoNCE on the labels, no teacher)", "jobs/contrastive.py", ALL),
    Row("corpus-kd", "KL on labelled + 709 corpus pseudo-queries, teacher lifted by the labels",
        "jobs/corpus_kd.py"),
    # The classic pipeline: the strongest teacher the labels allow (BM25 + the contrastive
    # student of seed 13, weights chosen on dev by jobs/rerank.py), distilled into a fresh
    # MiniLM on the labelled and the pseudo-queries. Needs outputs/contrastive-all-s13 first.
    Row("ft-kd", "KL on labelled + 709 pseudo-queries from BM25 + the contrastive student "
        "(0.9 / 1.7), lifted by the labels", "jobs/corpus_kd.py",
        ("teacher.members.1.model=outputs/contrastive-all-s13/student",
         "teacher.weights=[0.9,1.7]")),
    Row("ft-kl-labelled", "the same teacher and KL on the 709 labelled queries only (no "
        "pseudo-queries)", "jobs/corpus_kd.py",
        ("teacher.members.1.model=outputs/contrastive-all-s13/student",
         "teacher.weights=[0.9,1.7]", "data.queries=labelled")),
    Row("ft-ckl", "CKL (+ InfoNCE on the labels) from the same teacher, labelled queries",
        "jobs/ckl.py", ALL + ("teacher.members.1.model=outputs/contrastive-all-s13/student",
                              "teacher.weights=[0.9,1.7]")),
    # Two stages of one pipeline per seed: the contrastive student of seed S (stage 1) goes
    # on, from its own weights, with KL to BM25 + itself on the labelled queries and 709
    # pseudo-queries (stage 2). Its control `cont-ict` goes on the same way on the same lists
    # with InfoNCE and the pseudo-query's source passage as its positive (no teacher): the
    # teacher's share, apart from the extra queries' and steps'. Needs contrastive-all-s<S>.
    Row("cont-kd", "stage 2 from the contrastive student: KL to BM25 + that student on "
        "labelled + 709 pseudo-queries", "jobs/corpus_kd.py", CONTINUE + (
            "teacher.members.1.model=outputs/contrastive-all-s{seed}/student",
            "teacher.weights=[0.9,1.7]")),
    Row("cont-ict", "stage 2 from the contrastive student, no teacher: InfoNCE on the same "
        "lists, a pseudo-query's source passage its positive", "jobs/contrastive.py",
        CONTINUE + ("data.max_queries=null", "data.queries=both", "data.pseudo.count=709",
                    "data.pseudo.source_as_positive=true")),
    # The three-member teacher (BM25 + the contrastive bi-encoder + the MaxSim model, both
    # fine-tuned on the labels with seed 13; weights chosen on dev): bench/recipes/teachers/
    # bm25_bi_li.yaml. Needs contrastive-all-s13 and li-contrastive-all-s13 first.
    Row("kd3-both", "KL + InfoNCE on the labelled queries, KL alone on 709 pseudo-queries, "
        "from BM25 + bi-encoder + MaxSim", "jobs/corpus_kd.py", (TEACHER3, LABELS)),
    Row("kd3-labelled", "KL + InfoNCE from BM25 + bi-encoder + MaxSim, labelled queries only",
        "jobs/corpus_kd.py", (TEACHER3, LABELS, "data.queries=labelled")),
    Row("cont-kd3", "stage 2 from the contrastive student: KL to BM25 + bi-encoder + MaxSim "
        "on labelled + 709 pseudo-queries", "jobs/corpus_kd.py", CONTINUE + (TEACHER3,)),
    # Hard candidates: negatives sampled from the union's top 30 instead of its top 100, where
    # unlabelled relevant passages (false negatives for InfoNCE) are common and the teacher's
    # soft scores can tell them apart; the label-only control at the same depth beside it.
    Row("contrastive-d30", "contrastive, negatives from the union top-30", "jobs/contrastive.py",
        ALL + ("data.depth=30",)),
    Row("kd3-d30", "KL + InfoNCE from BM25 + bi-encoder + MaxSim, labelled queries, negatives "
        "from the union top-30", "jobs/corpus_kd.py",
        (TEACHER3, LABELS, "data.queries=labelled", "data.depth=30")),
    # Longer training: three passes over the labelled lists (264 steps), where soft targets may
    # keep helping after the labels alone overfit; the label-only control at the same budget.
    Row("contrastive-e3", "contrastive, 3 epochs", "jobs/contrastive.py",
        ALL + ("train.epochs=3",)),
    Row("kd3-e3", "KL + InfoNCE from BM25 + bi-encoder + MaxSim, labelled queries, 3 epochs",
        "jobs/corpus_kd.py", (TEACHER3, LABELS, "data.queries=labelled", "train.epochs=3")),
    # Training at the evaluation length: 98% of SciFact passages are longer than the 128
    # training tokens (median 318 MiniLM tokens), while the teacher and the evaluation read 256.
    Row("contrastive-len256", "contrastive, passages at 256 tokens in training",
        "jobs/contrastive.py", ALL + ("student.passage_max_length=256",)),
    Row("kd3-len256", "KL + InfoNCE from BM25 + bi-encoder + MaxSim, labelled queries, "
        "passages at 256 tokens in training", "jobs/corpus_kd.py",
        (TEACHER3, LABELS, "data.queries=labelled", "student.passage_max_length=256")),
    # The same teacher cross-fitted (bench/recipes/teachers/xf_bm25_bi_li.yaml): each labelled
    # query scored by members trained without its fold, so the teacher does not restate its
    # label. Needs the four fold members named in that file first.
    Row("xf-kd3-len256", "KL + InfoNCE from the cross-fitted BM25 + bi-encoder + MaxSim, "
        "labelled queries, passages at 256 tokens in training", "jobs/corpus_kd.py",
        (TEACHER_XF, LABELS, "data.queries=labelled", "student.passage_max_length=256")),
    # Decoupled KD (`loss.params.exclude_positives`): InfoNCE places the positive, the KL only
    # orders the negatives, so the teacher can no longer pull a positive down; teachers with the
    # bi-encoder trained at 256 tokens, with and without BM25 (weights on dev).
    Row("dkd3-len256", "InfoNCE + KL over the negatives from BM25 + bi-encoder (256) + MaxSim, "
        "labelled queries, 256 tokens", "jobs/corpus_kd.py",
        (TEACHER3_256, LABELS, *DECOUPLED, "data.queries=labelled",
         "student.passage_max_length=256")),
    Row("dkd-neural-len256", "InfoNCE + KL over the negatives from bi-encoder (256) + MaxSim "
        "(no BM25), labelled queries, 256 tokens", "jobs/corpus_kd.py",
        (TEACHER_NEURAL, LABELS, *DECOUPLED, "data.queries=labelled",
         "student.passage_max_length=256")),
    # Three passes at the evaluation length (264 steps): a teacher's soft targets are harder to
    # fit than labels and may pay only on a longer schedule, where labels alone begin to overfit;
    # the label-only control gets the same budget.
    Row("contrastive-len256-e3", "contrastive, 256 tokens, 3 epochs", "jobs/contrastive.py",
        ALL + ("student.passage_max_length=256", "train.epochs=3")),
    Row("dkd3-len256-e3", "InfoNCE + KL over the negatives from BM25 + bi-encoder (256) + "
        "MaxSim, labelled queries, 256 tokens, 3 epochs", "jobs/corpus_kd.py",
        (TEACHER3_256, LABELS, *DECOUPLED, "data.queries=labelled",
         "student.passage_max_length=256", "train.epochs=3")),
    # The same, from the teacher rebuilt on the seed-13 three-pass students (BM25 + MaxSim +
    # both students): at equal re-ranking depth it is about 0.02 above either student alone.
    Row("dkd-e3t-len256-e3", "InfoNCE + KL over the negatives from BM25 + MaxSim + the two "
        "three-pass students, labelled queries, 256 tokens, 3 epochs", "jobs/corpus_kd.py",
        (TEACHER_E3, LABELS, *DECOUPLED, "data.queries=labelled",
         "student.passage_max_length=256", "train.epochs=3")),
    # The shipped methods at the same budget and teacher as `dkd3-len256-e3` (issue 15's table):
    # each recipe's own loss and data, only the teacher, the budget and the length set here.
    *(Row(f"{key}-len256-e3", f"{label}, teacher BM25 + bi-encoder (256) + MaxSim, 256 tokens, "
          "3 epochs", job, ALL + (TEACHER3_256, "student.passage_max_length=256",
                                  "train.epochs=3", *extra))
      for key, label, job, extra in (
          ("adam", "ADAM (dark examples + self-paced), whole-list KL", "jobs/adam.py",
           ADAM_WHOLE_LIST),
          ("adam-no-dark", "ADAM without dark examples, whole-list KL", "jobs/adam.py",
           ("dark.enabled=false", *ADAM_WHOLE_LIST)),
          ("adam-no-sp", "ADAM without self-paced selection (rho 1), whole-list KL",
           "jobs/adam.py", ("loss.params.rho=1.0", *ADAM_WHOLE_LIST)),
          ("adam-dkd", "ADAM, its KL over the non-positives + CE weight 1", "jobs/adam.py",
           ADAM_DECOUPLED),
          ("margin-mse", "Margin-MSE", "jobs/margin_mse.py", ()),
          ("ckl", "CKL (+ InfoNCE)", "jobs/ckl.py", ()))),
    Row("kl-lifted", "KL on the labelled queries only, teacher lifted by the labels",
        "jobs/corpus_kd.py", ("data.queries=labelled",)),
    Row("ckl-all", "CKL (+ InfoNCE)", "jobs/ckl.py", ALL),
    Row("margin-mse-all", "Margin-MSE", "jobs/margin_mse.py", ALL),
    Row("adam-all", "ADAM (dark examples + self-paced), whole-list KL + CE 0.1", "jobs/adam.py",
        ALL + ADAM_WHOLE_LIST),
    Row("adam-all-no-dark", "ADAM without dark examples, whole-list KL", "jobs/adam.py",
        ALL + ("dark.enabled=false", *ADAM_WHOLE_LIST)),
    Row("adam-all-no-sp", "ADAM without self-paced selection (rho 1: every query kept), "
        "whole-list KL", "jobs/adam.py", ALL + ("loss.params.rho=1.0", *ADAM_WHOLE_LIST)),
    Row("adam-dkd-all", "ADAM, its KL over the non-positives + CE weight 1 (decoupled; "
        "`make run`)", "jobs/adam.py", ALL + ADAM_DECOUPLED),
    Row("adam-dkd-all-no-dark", "ADAM decoupled, without dark examples", "jobs/adam.py",
        ALL + ADAM_DECOUPLED + ("dark.enabled=false",)),
    Row("adam-dkd-all-no-sp", "ADAM decoupled, without self-paced selection (rho 1)",
        "jobs/adam.py", ALL + ADAM_DECOUPLED + ("loss.params.rho=1.0",)),
    # The decoupled ADAM from a teacher that knows more than the one-pass labels: BM25 + the
    # label-only student of the same seed (0.9 / 1.7, chosen on dev; re-ranking test 0.7628
    # against the student's 0.7205), so the dark examples carry a fine-tuned teacher's scores.
    Row("adam-dkd-ft-all", "ADAM decoupled, teacher BM25 + the label-only student (0.9 / 1.7)",
        "jobs/adam.py", ALL + ADAM_DECOUPLED + (
            "teacher.members.1.model=outputs/contrastive-all-s{seed}/student",
            "teacher.weights=[0.9,1.7]")),
    # `python jobs/adam.py --long` as shipped (the bundled teacher, the decoupled loss): the
    # documented preset for the label-only student's best budget (256 tokens, three passes).
    Row("adam-dkd-long", "ADAM decoupled, the bundled teacher, 256 tokens, 3 epochs (`--long`)",
        "jobs/adam.py", ALL + ADAM_DECOUPLED + ("student.passage_max_length=256",
                                                "train.epochs=3")),
    # ADAM's own question at its best budget (three passes, `--long`): the same recipe without
    # dark examples, and without self-paced selection (rho 1: every query kept).
    Row("adam-dkd-long-no-dark", "ADAM decoupled `--long`, without dark examples",
        "jobs/adam.py", ALL + ADAM_DECOUPLED + ("student.passage_max_length=256",
                                                "train.epochs=3", "dark.enabled=false")),
    Row("adam-dkd-long-no-sp", "ADAM decoupled `--long`, without self-paced selection (rho 1)",
        "jobs/adam.py", ALL + ADAM_DECOUPLED + ("student.passage_max_length=256",
                                                "train.epochs=3", "loss.params.rho=1.0")),
    # Stage 2 from the label-only student at its best budget (`contrastive-len256-e3` of the
    # same seed): one more pass over the labelled queries at lr 2e-5, the candidates mined by
    # that student itself (its own confusions). The KD row learns from the seed ensemble (BM25 +
    # the three label-only students), the control goes on with InfoNCE on the same lists.
    Row("st2-dkd-lo3", "stage 2 from the three-pass label-only student: InfoNCE + KL over the "
        "negatives from BM25 + the three label-only students", "jobs/corpus_kd.py",
        STAGE2 + (TEACHER_LO3, LABELS, *DECOUPLED, "data.queries=labelled")),
    Row("st2-cont", "stage 2 from the three-pass label-only student, no teacher: InfoNCE on "
        "the same lists", "jobs/contrastive.py", STAGE2 + ("data.max_queries=null",)),
    # The teacher only where no label is: InfoNCE on the labelled lists (as the control) and
    # KL to the seed ensemble over 709 corpus pseudo-queries, queries no member was trained on.
    Row("st2-kl-lo3-pseudo", "stage 2 from the three-pass label-only student: InfoNCE on the "
        "labelled lists, KL to BM25 + the three label-only students on 709 pseudo-queries",
        "jobs/corpus_kd.py", STAGE2 + (TEACHER_LO3, LABELS, "loss.params.positive_margin=null",
                                       "loss.params.unlabelled_only=true", "data.queries=both")),
    # The same decoupled KD from a teacher one stage on: BM25 + the three `st2-cont` students
    # (re-ranking test 0.8234, the lo3 ensemble's 0.8160). The student's budget is the
    # control's (one pass from the three-pass student); the teacher's members cost their own.
    Row("st2-dkd-st2", "stage 2 from the three-pass label-only student: InfoNCE + KL over the "
        "negatives from BM25 + the three stage-2 label-only students", "jobs/corpus_kd.py",
        STAGE2 + (TEACHER_ST2, LABELS, *DECOUPLED, "data.queries=labelled")),
    # The ADAM sweep's best on dev (session 20, one seed): `make run`'s recipe plus 708 corpus
    # pseudo-queries, their source passage as the positive (177 steps; KD's own extra data).
    Row("adam-dkd-all-pseudo", "ADAM decoupled + pseudo-queries from 709 corpus passages "
        "(source passage as the positive)", "jobs/adam.py", ALL + ADAM_DECOUPLED + (
            "data.queries=both", "data.pseudo.count=709", "data.pseudo.source_as_positive=true")),
]


def needs_baseline(row: Row) -> bool:
    """A row built on the baseline's student of the same seed (as teacher or as start)."""
    return any(f"outputs/{BASELINE}-s" in o for o in row.overrides)


def run_dir(key: str, seed: int) -> Path:
    return ROOT / "outputs" / run_name(key, seed)


def run(row: Row, seed: int) -> None:
    """Run one seed of a row as a subprocess (its log in outputs/bench/), timed end to end."""
    print(f"[seeds] {row.key} seed {seed}: {row.command(seed)}", flush=True)
    log = ROOT / "outputs" / "bench" / f"{run_name(row.key, seed)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, *row.args(seed)], cwd=ROOT, env=env, stdout=out,
                               stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"[seeds] {row.key} seed {seed} failed (exit {code}); see {log}")
    (run_dir(row.key, seed) / "wall.json").write_text(json.dumps(
        {"wall_s": round(time.perf_counter() - start, 1), "command": row.command(seed),
         "machine": f"{platform.machine()}, {os.cpu_count()} cores"}) + "\n")


def finished(key: str, seed: int) -> bool:
    return (run_dir(key, seed) / "eval-test" / "run.trec").exists()


def measured(key: str, seed: int, qrels: dict, dev_qrels: dict) -> dict:
    """One finished run: test metrics, dev nDCG@10 of its last stage, per-query test values
    and, where the last stage left its dev run, per-query dev values."""
    from raykd.eval.metrics import read_trec_run
    from raykd.eval.paired import per_query
    from raykd.pipeline.files import last_stage_run

    folder = run_dir(key, seed)
    dev = last_stage_run(folder, "dev")
    results = json.loads((folder / "results.json").read_text())
    wall = folder / "wall.json"
    stage = results["stages"][-1]
    return {"test": results["test"], "dev_ndcg10": stage["metrics"].get("nDCG@10"),
            "steps": sum(s["steps"] for s in results["stages"]),
            "stage_seconds": round(sum(sum(s["seconds"].values()) for s in results["stages"])),
            "wall_s": json.loads(wall.read_text())["wall_s"] if wall.exists() else None,
            "per_query": per_query(qrels, read_trec_run(folder / "eval-test" / "run.trec")),
            "dev_per_query": per_query(dev_qrels, read_trec_run(dev)) if dev else None}


def paired(diff, seeds: list[int]) -> dict:
    """The record of one paired difference against the reference, over `seeds`."""
    return {"seeds": seeds, "delta": diff.delta, "ci": [diff.ci_low, diff.ci_high],
            "bootstrap_ci": [diff.boot_low, diff.boot_high], "p_value": diff.p_value,
            "text": diff.format(), "significant": diff.significant}


def paired_dev(base: dict, got: dict, seeds: list[int]) -> dict | None:
    """The paired dev Δ over `seeds`, where every run of both rows has its dev run file."""
    from raykd.eval.paired import compare_systems

    if any(r[s]["dev_per_query"] is None for r in (base, got) for s in seeds):
        return None
    return paired(compare_systems([base[s]["dev_per_query"] for s in seeds],
                                  [got[s]["dev_per_query"] for s in seeds]), seeds)


def fixed_system(label: str, run_path: Path, qrels: dict, base: dict) -> dict:
    """A system without seeds (BM25, the zero-shot model, a teacher's re-ranking) from its test
    run file, paired against the seed-averaged reference like any row."""
    from raykd.eval.metrics import evaluate_run, read_trec_run
    from raykd.eval.paired import compare_systems, per_query

    run = read_trec_run(run_path)
    metrics = evaluate_run(qrels, run, ("nDCG@10", "R@100"))
    entry = {"label": label, "seeds": [], "test_ndcg10": (metrics["nDCG@10"], None),
             "dev_ndcg10": None, "test_r100": (metrics["R@100"], None), "steps": [],
             "stage_seconds": [], "wall_s": [], "command": str(run_path),
             "per_seed_test": [metrics["nDCG@10"]]}
    if base:
        entry["vs_baseline"] = paired(compare_systems(
            [m["per_query"] for m in base.values()], [per_query(qrels, run)]), sorted(base))
    return entry


def summarise(rows: list[Row], seeds: list[int], reference: str = BASELINE,
              fixed: dict[str, Path] | None = None) -> dict:
    """Each row's seed means, and its paired Δ against the `reference` row over their common
    seeds (the contrastive baseline, or e.g. a row's own control); `fixed` systems (label to
    test run file) come first, paired against the reference's seed means."""
    from raykd.data.beir import BeirDataset
    from raykd.datasets import scifact_dir
    from raykd.eval.paired import compare_systems, mean_sd

    data = BeirDataset.from_dir(scifact_dir())
    qrels, dev_qrels = data.qrels("test"), data.qrels("dev")
    runs = {r.key: {s: measured(r.key, s, qrels, dev_qrels) for s in seeds if finished(r.key, s)}
            for r in rows}
    base = runs.get(reference, {})
    out = {label: fixed_system(label, path, qrels, base) for label, path in (fixed or {}).items()}
    for row in rows:
        got = runs[row.key]
        if not got:
            continue
        test = [m["test"]["nDCG@10"] for m in got.values()]
        dev = [m["dev_ndcg10"] for m in got.values() if m["dev_ndcg10"] is not None]
        entry = {"label": row.label, "seeds": sorted(got), "test_ndcg10": mean_sd(test),
                 "dev_ndcg10": mean_sd(dev) if dev else None,
                 "test_r100": mean_sd([m["test"]["R@100"] for m in got.values()]),
                 "steps": sorted({m["steps"] for m in got.values()}),
                 "stage_seconds": [m["stage_seconds"] for m in got.values()],
                 "wall_s": [m["wall_s"] for m in got.values()],
                 "command": row.command(DEFAULT_SEED), "per_seed_test": test}
        paired_seeds = sorted(set(got) & set(base))
        if row.key != reference and paired_seeds:
            diff = compare_systems([base[s]["per_query"] for s in paired_seeds],
                                   [got[s]["per_query"] for s in paired_seeds])
            entry["vs_baseline"] = paired(diff, paired_seeds)
            entry["dev_vs_baseline"] = paired_dev(base, got, paired_seeds)
        out[row.key] = entry
    return out


def table(summary: dict, reference: str = BASELINE) -> str:
    def ms(pair):
        if pair is None:
            return "-"
        return f"{pair[0]:.4f}" if pair[1] is None else f"{pair[0]:.4f} ± {pair[1]:.4f}"

    versus = "contrastive" if reference == BASELINE else f"`{reference}`"
    def delta(key, vs):
        if key == reference:
            return "baseline" if reference == BASELINE else "reference"
        return "-" if vs is None else vs["text"] + ("" if vs["significant"] else " (CI spans 0)")

    lines = [f"| recipe | seeds | dev nDCG@10 | test nDCG@10 | test R@100 | Δ test vs {versus} "
             "[95% CI], p | Δ dev [95% CI], p | steps | wall per run | command (seed 13) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, e in summary.items():
        walls = [w for w in e["wall_s"] if w] or [s for s in e["stage_seconds"] if s]
        wall = f"{sum(walls) / len(walls) / 60:.1f} min" if walls else "-"
        lines.append(f"| {e['label']} | {len(e['seeds']) or '-'} | {ms(e['dev_ndcg10'])} | "
                     f"{ms(e['test_ndcg10'])} | {ms(e['test_r100'])} | "
                     f"{delta(key, e.get('vs_baseline'))} | "
                     f"{delta(key, e.get('dev_vs_baseline'))} | "
                     f"{'/'.join(map(str, e['steps'])) or '-'} | {wall} | `{e['command']}` |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=",".join(r.key for r in ROWS),
                   help=f"comma-separated keys: {','.join(r.key for r in ROWS)}")
    p.add_argument("--seeds", default="13,14,15", help="comma-separated seeds")
    p.add_argument("--table", action="store_true", help="no runs: summarise what is recorded")
    p.add_argument("--versus", default=BASELINE,
                   help="the row every Δ is paired against (default: the contrastive baseline)")
    p.add_argument("--fixed", action="append", default=[], metavar="LABEL=RUN",
                   help="a system without seeds, from its test run file (e.g. "
                        "BM25=outputs/eval/bm25-test/run.trec), paired like a row; repeatable")
    args = p.parse_args(argv)
    fixed = {}
    for item in args.fixed:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            p.error(f"--fixed takes LABEL=RUN, got {item!r}")
        if not Path(path).is_file():  # before any run starts
            p.error(f"--fixed {label}: no run file {path}")
        fixed[label] = Path(path)
    keys = [k for k in args.rows.split(",") if k]
    known = {r.key: r for r in ROWS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        p.error(f"unknown rows {unknown}; known: {sorted(known)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    rows = [known[k] for k in keys]
    if not args.table:
        if any(needs_baseline(r) for r in rows):  # its student is their teacher or start
            rows = [known[BASELINE]] + [r for r in rows if r.key != BASELINE]
        for seed in seeds:  # seed-major: an interrupted sweep leaves whole seeds behind
            for row in rows:
                if not finished(row.key, seed):
                    run(row, seed)
    if args.versus not in known:
        p.error(f"unknown --versus {args.versus!r}; known: {sorted(known)}")
    rows_for_table = [r for r in ROWS if r.key in keys or r.key in (BASELINE, args.versus)]
    summary = summarise(rows_for_table, seeds, args.versus, fixed)
    record = RECORD if args.versus == BASELINE else RECORD.with_name(f"seeds-vs-{args.versus}.json")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({k: {kk: vv for kk, vv in v.items()} for k, v in
                                  summary.items()}, indent=2) + "\n")
    print(table(summary, args.versus))


if __name__ == "__main__":
    main()

"""The methods table: every distillation method on SciFact test, same student, same budget.

    python bench/methods.py                       # every row, one after the other
    python bench/methods.py --rows adam,ckl       # some rows (others keep their last result)
    python bench/methods.py --table               # print the table of the recorded rows

Each row is one job command (printed in the table), run as a subprocess and timed end to end
(wall time includes Ray start-up, mining, teacher scoring, training and evaluation; caches of
earlier rows, such as the corpus encoding of the zero-shot MiniLM, are reused as a user's
second run would). Results are recorded in `outputs/bench/methods.json`, so rows can be run
separately and the table is always assembled from what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "outputs" / "bench" / "methods.json"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    args: tuple[str, ...]  # the job and its arguments, relative to the repository root
    results: str  # where the job leaves its test metrics

    def command(self) -> str:
        return "python " + " ".join(shlex.quote(a) for a in self.args)


# ADAM's loss before session 16 (KL over the whole list, CE weight 0.1), that its rows ran with.
WHOLE_LIST = ("loss.params.exclude_positives=false", "loss.params.ce_weight=0.1")


def _recipe_row(key: str, label: str, job: str, name: str, *overrides: str) -> Row:
    """A recipe job; an ablation (with overrides) runs under its own name."""
    if overrides:
        name = f"{name}-{key}"
        return Row(key, label, (job, "--name", name, *overrides), f"outputs/{name}/results.json")
    return Row(key, label, (job,), f"outputs/{name}/results.json")


ROWS = [
    Row("bm25", "BM25 (bm25s)", ("jobs/evaluate.py", "--model", "bm25", "--split", "test",
                                 "--out", "outputs/table-bm25"), "outputs/table-bm25/metrics.json"),
    Row("zero-shot", "MiniLM zero-shot (the student before training)",
        ("jobs/evaluate.py", "--split", "test", "--out", "outputs/table-zero-shot"),
        "outputs/table-zero-shot/metrics.json"),
    Row("teacher", "Teacher: BM25 + MiniLM ensemble, re-ranking the union top-100",
        ("jobs/rerank.py", "--teacher", "ensemble", "--split", "test",
         "--out", "outputs/table-teacher"), "outputs/table-teacher/metrics.json"),
    _recipe_row("contrastive", "Contrastive baseline (InfoNCE, no teacher)",
                "jobs/contrastive.py", "contrastive-scifact"),
    _recipe_row("margin-mse", "Margin-MSE", "jobs/margin_mse.py", "margin-mse-scifact"),
    _recipe_row("ckl", "CKL (contrastively weighted KL)", "jobs/ckl.py", "ckl-scifact"),
    _recipe_row("prod", "PROD, teacher- and data-progressive", "jobs/prod.py", "prod-scifact"),
    # The ablation without the data-progressive stage is the same run's student before that
    # stage (what `jobs/prod.py stages.2.repeat=0` trains, with the same seeds), evaluated on
    # test: a paired comparison, free of run-to-run noise in the shared stages. Run after `prod`.
    Row("prod-tp", "PROD, teacher-progressive only (the prod run before its data stage)",
        ("jobs/evaluate.py", "--model", "outputs/prod-scifact/stages/01-tpd-ensemble/student",
         "--split", "test", "--query-max-length", "64", "--out", "outputs/table-prod-tp"),
        "outputs/table-prod-tp/metrics.json"),
    Row("collective-zero-shot", "MiniLM zero-shot as a late-interaction model (CollectiveKD's "
        "student before training)",
        ("jobs/evaluate.py", "--late-interaction", "--similarity", "l2", "--mask-punctuation",
         "--query-max-length", "64", "--split", "test",
         "--out", "outputs/table-collective-zero-shot"),
        "outputs/table-collective-zero-shot/metrics.json"),
    _recipe_row("collective-kd", "CollectiveKD (late interaction, PRF teacher)",
                "jobs/collective_kd.py", "collective-kd-scifact"),
    # The ADAM rows were measured with WHOLE_LIST; it keeps their commands reproducing them.
    _recipe_row("adam", "ADAM (dark examples + self-paced)", "jobs/adam.py", "adam-scifact",
                *WHOLE_LIST),
    # The ADAM sweep's best values on dev (raykd/recipes/spaces/adam_scifact.yaml: lr 5e-5, temperature
    # and CE weight at their defaults), at the shared budget and on every train query.
    _recipe_row("adam-tuned", "ADAM, tuned on dev (lr 5e-5)", "jobs/adam.py", "adam-scifact",
                "train.lr=5e-5", *WHOLE_LIST),
    _recipe_row("adam-tuned-all", "ADAM, tuned on dev, all 709 train queries (88 steps)",
                "jobs/adam.py", "adam-scifact", "train.lr=5e-5", "data.max_queries=null",
                *WHOLE_LIST),
    _recipe_row("adam-no-dark", "ADAM without dark examples", "jobs/adam.py", "adam-scifact",
                "dark.enabled=false", *WHOLE_LIST),
    _recipe_row("adam-no-sp", "ADAM without self-paced selection", "jobs/adam.py",
                "adam-scifact", "loss.params.rho=1.0", *WHOLE_LIST),
]


def _metrics(row: Row) -> dict:
    data = json.loads((ROOT / row.results).read_text())
    return data.get("test") or data.get("metrics") or {}


def run_row(row: Row) -> dict:
    print(f"[methods] {row.key}: {row.command()}", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_path = ROOT / "outputs" / "bench" / f"{row.key}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh run of the row (a rerun of a finished run name would only resume); the shared
    # caches (candidates, teacher scores, corpus encodings) stay.
    results = ROOT / row.results
    if results.name == "results.json" and results.parent.is_dir():
        shutil.rmtree(results.parent)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.call([sys.executable, *row.args], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"[methods] {row.key} failed (exit {code}); see {log_path}")
    metrics = _metrics(row)
    print(f"[methods] {row.key}: nDCG@10 {metrics.get('nDCG@10', float('nan')):.4f} "
          f"R@100 {metrics.get('R@100', float('nan')):.4f} in {wall / 60:.1f} min", flush=True)
    return {"label": row.label, "command": row.command(), "wall_s": round(wall, 1),
            "nDCG@10": metrics.get("nDCG@10"), "R@100": metrics.get("R@100"),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU"}


def load_record() -> dict:
    return json.loads(RECORD.read_text()) if RECORD.exists() else {}


def table(record: dict) -> str:
    lines = ["| method | test nDCG@10 | test R@100 | wall time | command |",
             "|---|---|---|---|---|"]
    for row in ROWS:
        r = record.get(row.key)
        if r is None:
            continue
        lines.append(f"| {r['label']} | {r['nDCG@10']:.4f} | {r['R@100']:.4f} | "
                     f"{r['wall_s'] / 60:.1f} min | `{r['command']}` |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=None,
                   help=f"comma-separated keys, run in the given order (default: all): "
                        f"{','.join(r.key for r in ROWS)}")
    p.add_argument("--table", action="store_true", help="print the recorded table and exit")
    args = p.parse_args(argv)
    record = load_record()
    if not args.table:
        keys = args.rows.split(",") if args.rows else [r.key for r in ROWS]
        unknown = set(keys) - {r.key for r in ROWS}
        if unknown:
            p.error(f"unknown rows {sorted(unknown)}; known: {[r.key for r in ROWS]}")
        failed = []
        for row in sorted((r for r in ROWS if r.key in keys), key=lambda r: keys.index(r.key)):
            try:
                record[row.key] = run_row(row)
            except SystemExit as err:  # one failed row does not lose the others
                print(err, flush=True)
                failed.append(row.key)
                continue
            RECORD.parent.mkdir(parents=True, exist_ok=True)
            RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))
    if not args.table and failed:
        raise SystemExit(f"[methods] failed rows: {', '.join(failed)}")


if __name__ == "__main__":
    main()

"""`raykd evaluate` / jobs/evaluate.py: the split's qrels are checked against the corpus before
any work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ) if env is None else env)


def _toy_with_unknown_doc(toy_beir_dir: str, tmp_path: Path) -> Path:
    data = tmp_path / "toy"
    shutil.copytree(toy_beir_dir, data)
    qrels = data / "qrels" / "test.tsv"
    lines = qrels.read_text().splitlines()
    first_query = lines[1].split("\t")[0]
    lines[3:3] = [f"{first_query}\tno-such-doc\t1", f"{first_query}\tnor-this-one\t1"]
    qrels.write_text("\n".join(lines) + "\n")
    return data


@pytest.mark.parametrize("how", [["-m", "raykd", "evaluate"], ["jobs/evaluate.py"]])
def test_evaluate_refuses_qrels_that_name_unknown_docs_before_any_work(toy_beir_dir, tmp_path,
                                                                         how):
    """Guards evaluate's input check: a qrels line naming a passage that is not in the corpus
    is one line (the qrels file, its line, the first such id), exit 2, nothing written, for
    both the dense and the BM25 model (no Ray, no model load before it)."""
    data = _toy_with_unknown_doc(toy_beir_dir, tmp_path)
    for model in ("bm25", "minilm"):
        out = tmp_path / f"out-{model}"
        done = _run(*how, "--model", model, "--data", str(data), "--split", "test",
                    "--out", str(out))
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.strip().splitlines()
        qrels = data / "qrels" / "test.tsv"
        assert line.startswith(f"error: {qrels}:4: field 'corpus-id':"), line
        assert "'no-such-doc'" in line and "nor-this-one" not in line
        assert not out.exists()


def test_evaluate_bm25_on_clean_qrels_still_runs(toy_beir_dir, tmp_path):
    from raykd.commands.evaluate import main

    metrics = main(["--model", "bm25", "--data", toy_beir_dir, "--split", "test", "--k", "10",
                    "--out", str(tmp_path / "bm25")])
    assert 0 < metrics["nDCG@10"] <= 1
    assert (tmp_path / "bm25" / "metrics.json").is_file()


@pytest.mark.parametrize("args,message", [
    (["--split", "nope"], "no qrels for split 'nope'; available splits: dev, test, train"),
    (["--data", "/no/such/beir"], "/no/such/beir: not a BEIR folder"),
])
def test_evaluate_bad_folder_or_split_is_one_line(toy_beir_dir, tmp_path, capsys, args, message):
    from raykd.commands.evaluate import main

    with pytest.raises(SystemExit) as done:
        main(["--model", "bm25", "--data", toy_beir_dir, "--out", str(tmp_path / "o"), *args])
    assert done.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "o").exists()


# What a job's default output must not show (Ray Data's status blocks and plans, faiss's
# loader, transformers' bars) and what `--verbose` brings back (raykd/runtime.py).
NOISE = ("logging_progress.py", "Execution plan of Dataset", "Starting execution of Dataset",
         "Progress bars disabled", "faiss.loader", "Loading faiss", "Successfully loaded faiss",
         "Loading weights")


def test_evaluate_job_output_is_for_people_unless_verbose(toy_beir_dir, tiny_encoder_dir,
                                                          tmp_path):
    """Guards the quiet default (issue 16): a dense `jobs/evaluate.py` run, which encodes the
    corpus on Ray Data and searches with faiss, prints raykd's own progress line and its
    table, and none of the third-party noise; `--verbose` brings Ray Data's lines back."""
    args = ["jobs/evaluate.py", "--model", tiny_encoder_dir, "--data", toy_beir_dir, "--split",
            "test", "--k", "10", "--concurrency", "1", "--embedding-cache", ""]
    env = {k: v for k, v in os.environ.items() if k != "RAYKD_VERBOSE"}
    quiet = _run(*args, "--out", str(tmp_path / "quiet"), env=env)
    output = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, output
    assert [n for n in NOISE if n in output] == [], output
    assert "[raykd] encoding corpus: " in quiet.stdout and " passages in " in quiet.stdout
    assert "nDCG@10" in quiet.stdout

    loud = _run(*args, "--verbose", "--out", str(tmp_path / "loud"), env=env)
    output = loud.stdout + loud.stderr
    assert loud.returncode == 0, output
    assert "logging_progress.py" in output and "Execution plan of Dataset" in output

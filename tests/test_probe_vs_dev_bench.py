"""bench/probe_vs_dev.py: the sweep's probe computed from a student's full dev run file, and
the probe's query draw it shares with `raykd.train.probe`."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_probe_vs_dev",
                                                  ROOT / "bench" / "probe_vs_dev.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_probe_reranks_the_candidates_by_the_run_and_puts_unretrieved_ones_last(bench):
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    candidates = {"q1": ["d2", "d1", "d3"], "q2": ["d3", "d2", "d1"]}
    # q1: the run puts d1 above d2 (d3 unretrieved, last): d1 first, nDCG 1.
    # q2: d3 unretrieved, so below d2 and d1 whatever BM25 said: third, nDCG 1 / log2(4).
    run = {"q1": {"d1": 0.9, "d2": 0.5}, "q2": {"d2": 0.7, "d1": 0.6}}
    assert bench.probe_value(run, candidates, qrels) == pytest.approx((1 + 1 / math.log2(4)) / 2)


def test_probe_sample_is_a_seeded_draw_of_the_judged_queries_with_text():
    """Guards the draw the sweep's probe and this bench share (`raykd.train.probe`)."""
    from raykd.train.probe import probe_sample

    qrels = {f"q{i}": {"d": 1} for i in range(10)}
    queries = {q: "text" for q in qrels if q != "q9"}  # a judged query without text is out
    qids = sorted(q for q in qrels if q != "q9")
    drawn = probe_sample(qrels, queries, 4)
    assert drawn == sorted(random.Random(13).sample(qids, 4))
    assert drawn != probe_sample(qrels, queries, 4, seed=14)
    assert probe_sample(qrels, queries, None) == qids == probe_sample(qrels, queries, 50)


def test_fewer_than_three_runs_is_one_line_before_any_work(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--outputs", str(tmp_path)])
    assert "0 finished run(s) with a dev run file" in capsys.readouterr().err

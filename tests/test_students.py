"""Bi-encoder student: options, truncation, and a save layout that other libraries load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raykd.errors import ConfigError
from raykd.students import BiEncoder

TEXTS = ["Cells divide by mitosis.", "Vitamin D lowers the risk of fractures in older adults."]


def _mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


@pytest.mark.parametrize("pooling,similarity", [("mean", "cosine"), ("cls", "dot")])
def test_saved_shared_student_loads_in_transformers_and_sentence_transformers(
        tmp_path, tiny_encoder_dir, pooling, similarity):
    """Guards the export: AutoModel and SentenceTransformer must give the student's embeddings."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    student = BiEncoder.from_pretrained(tiny_encoder_dir, pooling=pooling, similarity=similarity,
                                        passage_max_length=32)
    ours = student.encode_passages(TEXTS)
    out = student.save(tmp_path / "student")

    model, tok = AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    batch = tok(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    hf = hidden[:, 0] if pooling == "cls" else _mean_pool(hidden, batch["attention_mask"])
    if similarity == "cosine":
        hf = torch.nn.functional.normalize(hf, dim=-1)
    np.testing.assert_allclose(hf.numpy(), ours, atol=1e-5)

    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(TEXTS, convert_to_numpy=True), ours, atol=1e-5)
    assert st.similarity_fn_name == similarity

    again = BiEncoder.from_pretrained(out)
    assert again.options.pooling == pooling and again.options.similarity == similarity
    np.testing.assert_allclose(again.encode_passages(TEXTS), ours, atol=1e-6)


def test_separate_towers_save_and_route_queries_and_passages(tmp_path, tiny_encoder_dir):
    """Guards untied towers: each side keeps its own weights through save/load and in ST's Router."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    student = BiEncoder.from_pretrained(tiny_encoder_dir, shared=False, pooling="cls",
                                        query_max_length=16, passage_max_length=32)
    with torch.no_grad():
        for p in student.passage_encoder.parameters():
            p.add_(0.05)
    q, p = student.encode_queries(TEXTS), student.encode_passages(TEXTS)
    assert not np.allclose(q, p, atol=1e-4)
    out = student.save(tmp_path / "untied")
    assert AutoModel.from_pretrained(out / "query").config.hidden_size == 32
    assert AutoModel.from_pretrained(out / "passage").config.hidden_size == 32

    again = BiEncoder.from_pretrained(out)
    assert again.passage_encoder is not None
    np.testing.assert_allclose(again.encode_queries(TEXTS), q, atol=1e-5)
    np.testing.assert_allclose(again.encode_passages(TEXTS), p, atol=1e-5)

    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode_query(TEXTS), q, atol=1e-5)
    np.testing.assert_allclose(st.encode_document(TEXTS), p, atol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_serving_lengths_reach_sentence_transformers_and_training_lengths_stay(
        tmp_path, tiny_encoder_dir, shared):
    """Guards the saved student's lengths: a run trains at 8 passage tokens and evaluates at 32;
    plain SentenceTransformer must then encode at 32 (as raykd measured it), while raykd's own
    reload keeps training at 8."""
    from sentence_transformers import SentenceTransformer

    from raykd.students import set_serving_lengths

    long_texts = [" ".join(["mitosis"] + ["cell"] * 40), " ".join(["bank"] + ["rate"] * 40)]
    student = BiEncoder.from_pretrained(tiny_encoder_dir, shared=shared, pooling="mean",
                                        query_max_length=8, passage_max_length=8)
    out = student.save(tmp_path / "student")
    set_serving_lengths(out, query_max_length=32, passage_max_length=32)

    served = BiEncoder.from_pretrained(out, query_max_length=32, passage_max_length=32)
    st = SentenceTransformer(str(out), device="cpu")
    encode = st.encode_document if not shared else st.encode
    np.testing.assert_allclose(encode(long_texts), served.encode_passages(long_texts), atol=1e-5)
    assert not np.allclose(served.encode_passages(long_texts), student.encode_passages(long_texts),
                           atol=1e-3)  # 32 tokens really differ from 8 on these texts
    again = BiEncoder.from_pretrained(out)
    assert (again.options.query_max_length, again.options.passage_max_length) == (8, 8)


def test_num_layers_truncates_the_encoder(minilm_path):
    """Guards layer truncation: a 2-layer student from the 6-layer MiniLM keeps its first layers."""
    student = BiEncoder.from_pretrained(minilm_path, num_layers=2)
    assert student.query_encoder.config.num_hidden_layers == 2
    assert len(student.query_encoder.encoder.layer) == 2
    full = BiEncoder.from_pretrained(minilm_path)
    torch.testing.assert_close(student.query_encoder.encoder.layer[1].output.dense.weight,
                               full.query_encoder.encoder.layer[1].output.dense.weight)
    with pytest.raises(ConfigError, match="num_layers"):
        BiEncoder.from_pretrained(minilm_path, num_layers=12)


def test_minilm_defaults_come_from_its_sentence_transformers_config(minilm_path):
    """Guards zero-shot fidelity: the bundled MiniLM is mean-pooled, normalised, 256 tokens."""
    student = BiEncoder.from_pretrained(minilm_path)
    assert (student.options.pooling, student.options.similarity) == ("mean", "cosine")
    assert student.options.passage_max_length == 256
    emb = student.encode_passages(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_scores_use_the_scale_and_lists(tiny_encoder_dir):
    """Guards score shapes and the similarity scale."""
    student = BiEncoder.from_pretrained(tiny_encoder_dir, similarity="cosine", scale=20.0)
    q = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(3, 4, 32), dim=-1)
    lists = student.score_lists(q, p)
    assert lists.shape == (3, 4)
    torch.testing.assert_close(lists[1, 2], 20.0 * (q[1] @ p[1, 2]))
    assert student.score(q, p[:, 0]).shape == (3, 3)


@pytest.mark.parametrize("field,value", [("pooling", "max"), ("similarity", "l2"), ("scale", 0.0)])
def test_bad_options_name_the_field(tiny_encoder_dir, field, value):
    """Guards config errors: a bad option names the student field at fault."""
    with pytest.raises(ConfigError, match=f"student.{field}"):
        BiEncoder.from_pretrained(tiny_encoder_dir, **{field: value})


def test_a_relative_model_folder_resolves_absolute_and_a_hub_id_stays(tmp_path, monkeypatch):
    """Guards `student.model: outputs/run/student`: Ray Train workers run in another working
    directory, so a local folder must reach them as an absolute path; a Hub id is left as is."""
    from raykd.students import resolve_model

    (tmp_path / "outputs" / "run" / "student").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("outputs/run/student") == str(tmp_path / "outputs" / "run" / "student")
    assert resolve_model("sentence-transformers/msmarco-bert-base") == \
        "sentence-transformers/msmarco-bert-base"

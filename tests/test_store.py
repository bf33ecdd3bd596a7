"""The shared corpus-embedding store: one entry per encoder, read by retrieval and teachers."""

import json
from pathlib import Path

import numpy as np
import pytest

from raykd.data.records import passage_text
from raykd.index.store import EmbeddingStore, corpus_embeddings, encoder_key
from raykd.students import BiEncoder
from raykd.teachers.bi_encoder import BiEncoderTeacher, StoredPassages, encode_teacher_corpus


def _corpus_texts(root) -> dict[str, str]:
    rows = [json.loads(line) for line in Path(root, "corpus.jsonl").read_text().splitlines()]
    return {r["_id"]: passage_text(r["title"], r["text"]) for r in rows}


def test_encoder_key_names_what_shapes_a_passage_vector(tiny_encoder_dir):
    """Score scale and query length leave passage vectors alone; pooling, normalisation and
    passage length change them."""
    def key(**options):
        return encoder_key(tiny_encoder_dir, BiEncoder.resolve_options(tiny_encoder_dir, **options))

    base = key(pooling="mean", similarity="cosine", passage_max_length=64)
    assert key(pooling="mean", similarity="cosine", passage_max_length=64, scale=20.0,
               query_max_length=16) == base
    assert key(pooling="cls", similarity="cosine", passage_max_length=64) != base
    assert key(pooling="mean", similarity="dot", passage_max_length=64) != base
    assert key(pooling="mean", similarity="cosine", passage_max_length=32) != base


def test_teacher_reads_store_and_scores_the_same(ray_local, toy_beir_dir, tiny_encoder_dir,
                                                 tmp_path):
    """Guards teacher-side reuse: with the corpus stored, a bi-encoder teacher (inside an
    ensemble too) encodes only queries and unseen texts, and its scores do not change."""
    from raykd.config import teacher_spec
    from raykd.teachers.factory import build_teacher

    corpus = Path(toy_beir_dir) / "corpus.jsonl"
    texts = _corpus_texts(toy_beir_dir)
    member = teacher_spec(kind="bi_encoder", model=tiny_encoder_dir, similarity="cosine",
                          scale=20.0, passage_max_length=64, batch_size=4)
    spec = teacher_spec(kind="ensemble", members=[teacher_spec(kind="bm25"), member])
    (folder,) = encode_teacher_corpus(spec, corpus, tmp_path / "emb", concurrency=1)
    assert EmbeddingStore.exists(folder)
    assert len(EmbeddingStore.load(folder).pids) == len(texts)

    passages = list(texts.values())[:6] + ["a dark example nobody stored"]
    queries = ["cells divide"] * len(passages)
    plain = build_teacher(member).score(queries, passages)
    stored = StoredPassages(lambda: build_teacher(member), tmp_path / "emb", corpus)()
    assert stored.store is not None
    np.testing.assert_allclose(stored.score(queries, passages), plain, atol=1e-4)
    # one query batch and one batch for the single unstored text
    assert stored.forward_calls == 2

    ensemble = StoredPassages(lambda: build_teacher(spec, toy_beir_dir), tmp_path / "emb", corpus)()
    assert ensemble.members[1].store is not None


def test_store_is_shared_by_retrieval_and_teacher(ray_local, toy_beir_dir, tiny_encoder_dir,
                                                  tmp_path, monkeypatch):
    """A student evaluated with the teacher's encoder options reads the teacher's entry."""
    import raykd.index.encode as encode

    corpus = Path(toy_beir_dir) / "corpus.jsonl"
    store, folder = corpus_embeddings(tiny_encoder_dir, corpus, cache_dir=tmp_path / "emb",
                                      student_options={"passage_max_length": 64},
                                      concurrency=1)
    monkeypatch.setattr(encode, "encode_corpus", lambda *a, **k: pytest.fail("encoded again"))
    teacher = BiEncoderTeacher(tiny_encoder_dir, passage_max_length=64, scale=5.0)
    assert teacher.encoder_key == store.encoder
    again, same = corpus_embeddings(tiny_encoder_dir, corpus, cache_dir=tmp_path / "emb",
                                    student_options={"passage_max_length": 64, "scale": 5.0},
                                    concurrency=1)
    assert same == folder and again.pids == store.pids


def test_use_store_refuses_another_encoders_vectors(tiny_encoder_dir):
    teacher = BiEncoderTeacher(tiny_encoder_dir, pooling="mean")
    other = EmbeddingStore("not-this-encoder", ["d1"], np.zeros(1, np.uint64),
                           np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="not of this teacher"):
        teacher.use_store(other)


def test_raw_vectors_become_the_npy_file_np_save_writes(tmp_path):
    """Guards the store's last encoding step, now a buffered copy instead of a memory map (whose
    pages counted in the driver's RSS: +208 MiB at 1M x 32): the .npy is byte for byte what
    np.save writes, and the raw file is gone."""
    from raykd.index.store import _raw_to_npy

    vectors = np.random.default_rng(0).random((1000, 32), dtype=np.float32)
    raw = tmp_path / "v.f32"
    raw.write_bytes(vectors.tobytes())
    _raw_to_npy(raw, tmp_path / "v.npy", np.float32, vectors.shape, chunk=4096)
    np.save(tmp_path / "expected.npy", vectors)
    assert (tmp_path / "v.npy").read_bytes() == (tmp_path / "expected.npy").read_bytes()
    assert not raw.exists()

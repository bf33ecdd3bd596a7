"""Teacher kinds: each scores a toy set, matches a reference computation, and fingerprints
exactly what changes its scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from raykd.config import TEACHER_SPECS, teacher_spec
from raykd.errors import ConfigError, DataError
from raykd.teachers import (
    TEACHER_BUILDERS,
    BiEncoderTeacher,
    BM25Teacher,
    CrossEncoderTeacher,
    EnsembleTeacher,
    LateInteractionTeacher,
    MissingScoreError,
    PrecomputedTeacher,
    Teacher,
    build_teacher,
    weights_sha256,
)

QUERIES = ["what lowers fracture risk", "how do cells divide"]
PASSAGES = [
    "Vitamin D lowers the risk of fractures in older adults.",
    "Cells divide by mitosis, a process of nuclear division.",
    "The stock market fell sharply on Monday.",
]
CORPUS = [
    ("d1", "Vitamin D lowers the risk of fractures in older adults."),
    ("d2", "Cells divide by mitosis; mitosis is nuclear division of cells."),
    ("d3", "The stock market fell sharply on Monday after the announcement."),
    ("d4", "Calcium and vitamin D supplements and hip fracture risk in women."),
    ("d5", "Meiosis produces gametes; cells divide twice in meiosis."),
    ("d6", "Bone density, falls and fracture risk: a cohort study of older adults."),
]


def _pairs():
    return [q for q in QUERIES for _ in PASSAGES], [p for _ in QUERIES for p in PASSAGES]


# ---------------------------------------------------------------- cross-encoder


def test_cross_encoder_equals_plain_hf_forward_and_cuts_only_the_passage(tiny_cross_encoder_dir):
    """Guards pair tokenisation: scores must be the model's logit on (query, passage) with the
    passage (never the query) truncated to query_max_length + passage_max_length tokens."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher = CrossEncoderTeacher(tiny_cross_encoder_dir, query_max_length=8,
                                  passage_max_length=8, batch_size=4, device="cpu")
    queries, passages = _pairs()
    scores = teacher.score(queries, passages)
    assert scores.dtype == np.float32 and scores.shape == (6,)

    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir).eval()
    batch = tok(queries, passages, truncation="only_second", max_length=16, padding=True,
                return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-5)

    enc = teacher._tokenize([QUERIES[0]], [PASSAGES[0] * 5])
    ids = enc["input_ids"][0].tolist()
    query_ids = tok(QUERIES[0], add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and ids[1:1 + len(query_ids)] == query_ids


def test_cross_encoder_batching_does_not_change_scores(tiny_cross_encoder_dir):
    """Guards length-sorted batching and padding: batch size must not change any score, and the
    output must come back in input order."""
    queries, passages = _pairs()
    one = CrossEncoderTeacher(tiny_cross_encoder_dir, batch_size=1, device="cpu")
    four = CrossEncoderTeacher(tiny_cross_encoder_dir, batch_size=4, device="cpu")
    np.testing.assert_allclose(one.score(queries, passages), four.score(queries, passages),
                               atol=1e-5)
    assert one.forward_calls == 6 and four.forward_calls == 2
    assert one.fingerprint == four.fingerprint  # batch size does not change scores


def test_cross_encoder_rejects_lengths_beyond_the_model(tiny_cross_encoder_dir):
    """Guards a late CUDA index error: a max length past the model's limit fails at build time."""
    with pytest.raises(ConfigError, match="passage_max_length"):
        CrossEncoderTeacher(tiny_cross_encoder_dir, query_max_length=64, passage_max_length=500)


# ---------------------------------------------------------------- bi-encoder


def test_bi_encoder_teacher_equals_biencoder_scores(tiny_encoder_dir):
    """Guards the dense teacher against drifting from the student's scoring (scale * sim)."""
    from raykd.students import BiEncoder

    teacher = BiEncoderTeacher(tiny_encoder_dir, pooling="mean", similarity="cosine", scale=20.0,
                               query_max_length=16, passage_max_length=32, device="cpu")
    queries, passages = _pairs()
    scores = teacher.score(queries, passages)
    model = BiEncoder.from_pretrained(tiny_encoder_dir, pooling="mean", similarity="cosine",
                                      scale=20.0, query_max_length=16, passage_max_length=32)
    q = torch.from_numpy(model.encode_queries(QUERIES))
    p = torch.from_numpy(model.encode_passages(PASSAGES))
    expected = model.score(q, p).numpy().reshape(-1)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    emb = teacher.encode_passages(PASSAGES)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- late interaction


def test_late_interaction_teacher_is_maxsim_of_the_encoder(tiny_encoder_dir):
    """Guards the teacher wrapper: its score must be the encoder's MaxSim, per pair, in order."""
    from raykd.students.late_interaction import LateInteractionEncoder

    teacher = LateInteractionTeacher(tiny_encoder_dir, projection_dim=8, query_max_length=12,
                                     passage_max_length=24, query_augmentation=True,
                                     batch_size=2, device="cpu")
    queries, passages = _pairs()
    scores = teacher.score(queries, passages)
    enc = LateInteractionEncoder.from_pretrained(tiny_encoder_dir, projection_dim=8,
                                                 query_max_length=12, passage_max_length=24,
                                                 query_augmentation=True).eval()
    with torch.no_grad():
        for i, (q, p) in enumerate(zip(queries, passages, strict=True)):
            qt, qm = enc.embed_queries(enc.tokenize_queries([q]))
            pt, pm = enc.embed_passages(enc.tokenize_passages([p]))
            assert qm.shape == (1, 12)  # [MASK]-augmented to full length
            expected = (qt[0] @ pt[0].T).max(-1).values.sum().item()
            assert scores[i] == pytest.approx(expected, abs=1e-4)
    assert teacher.forward_calls == 3


# ---------------------------------------------------------------- bm25


def test_bm25_teacher_equals_bm25s_on_corpus_passages():
    """Guards the re-implemented formula (idf, length normalisation, tokenisation, repeated
    query terms): for indexed passages it must give bm25s's own scores."""
    from raykd.index.bm25 import BM25Index

    index = BM25Index().index(CORPUS, show_progress=False)
    teacher = BM25Teacher(CORPUS)
    texts = dict(CORPUS)
    queries = ["vitamin D fracture risk", "cells divide divide mitosis", "older adults falls",
               "market"]
    scores, ids = index.search(queries, k=len(CORPUS), show_progress=False)
    checked = 0
    for q, row_scores, row_ids in zip(queries, scores, ids, strict=True):
        ours = teacher.score([q] * len(row_ids), [texts[pid] for pid in row_ids])
        np.testing.assert_allclose(ours, row_scores, atol=1e-4)
        checked += int((row_scores > 0).sum())
    assert checked >= 8


def test_bm25_teacher_scores_new_texts_and_reads_a_beir_corpus(tmp_path):
    """Guards dark examples: a text outside the corpus is scored from corpus statistics (an
    unseen term has df = 0), and a BEIR corpus file gives the same statistics as pairs."""
    from raykd.data.beir import write_corpus

    corpus = [("a", "apple banana"), ("b", "banana cherry"), ("c", "cherry date")]
    teacher = BM25Teacher(corpus, k1=1.5, b=0.75)
    # "kiwi" is unseen: df = 0, N = 3; the text has 2 tokens, avgdl = 2.
    idf_kiwi = np.log(1 + (3 - 0 + 0.5) / (0 + 0.5))
    idf_banana = np.log(1 + (3 - 2 + 0.5) / (2 + 0.5))
    tf_part = 1 / (1 + 1.5 * (1 - 0.75 + 0.75 * 2 / 2))
    got = teacher.score(["kiwi banana"], ["kiwi banana"])[0]
    assert got == pytest.approx((idf_kiwi + idf_banana) * tf_part, abs=1e-5)

    write_corpus(tmp_path / "corpus.jsonl", [{"pid": p, "title": "", "text": t} for p, t in corpus])
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    from_file = BM25Teacher.from_corpus_path(tmp_path)
    assert from_file.fingerprint == teacher.fingerprint
    assert BM25Teacher(corpus, k1=1.2).fingerprint != teacher.fingerprint


# ---------------------------------------------------------------- ensemble


class TableTeacher(Teacher):
    """A stub member whose score is a fixed number per passage text."""

    kind = "table"

    def __init__(self, table: dict[str, float]):
        super().__init__()
        self.table = table

    def describe(self) -> dict:
        return {"kind": self.kind, "table": self.table}

    def _score(self, queries, passages):
        return np.asarray([self.table[p] for p in passages], dtype=np.float32)


GROUP = {"qid": "q1", "query": "q", "pids": ["a", "b", "c"], "texts": ["a", "b", "c"]}
MEMBER_A = TableTeacher({"a": 1.0, "b": 2.0, "c": 3.0})
MEMBER_B = TableTeacher({"a": 10.0, "b": 10.0, "c": 40.0})


@pytest.mark.parametrize("normalization,weights,expected", [
    # A: mean 2, population std sqrt(2/3) -> [-1.2247449, 0, 1.2247449];
    # B: mean 20, std sqrt(200) -> [-0.7071068, -0.7071068, 1.4142136]; 0.25 A + 0.75 B.
    ("zscore", [0.25, 0.75], [-0.8365163, -0.5303301, 1.3668464]),
    # A -> [0, 0.5, 1], B -> [0, 0, 1]; default weights 1/2 each.
    ("minmax", None, [0.0, 0.25, 1.0]),
    # Ranks A [3, 2, 1]; B [2, 3, 1] (10 vs 10: list order). 0.5/(60+r) summed.
    ("rrf", None, [0.5 / 63 + 0.5 / 62, 0.5 / 62 + 0.5 / 63, 1 / 61]),
    # Raw mean (Hofstatter's T2).
    ("none", None, [5.5, 6.0, 21.5]),
])
def test_ensemble_matches_hand_computed_normalisation(normalization, weights, expected):
    """Guards per-query normalisation (population std, min-max, 1-based stable RRF ranks)."""
    teacher = EnsembleTeacher([MEMBER_A, MEMBER_B], weights=weights,
                              normalization=normalization)
    (got,) = teacher.score_groups([GROUP])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Loose pairs sharing a query are one list: same numbers.
    np.testing.assert_allclose(teacher.score(["q"] * 3, ["a", "b", "c"]), expected, atol=1e-6)


def test_ensemble_constant_member_normalises_to_zero_and_fingerprints_settings():
    """Guards division by zero on a constant list, and fingerprints that ignore weights or
    normalisation (a stale cache would then serve another ensemble's scores)."""
    flat = TableTeacher({"a": 5.0, "b": 5.0, "c": 5.0})
    for norm in ("zscore", "minmax"):
        (got,) = EnsembleTeacher([flat], normalization=norm).score_groups([GROUP])
        np.testing.assert_array_equal(got, [0.0, 0.0, 0.0])
    base = EnsembleTeacher([MEMBER_A, MEMBER_B])
    assert base.weights == [0.5, 0.5]
    assert base.fingerprint == EnsembleTeacher([MEMBER_A, MEMBER_B]).fingerprint
    assert base.fingerprint != EnsembleTeacher([MEMBER_A, MEMBER_B], weights=[0.3, 0.7]).fingerprint
    assert base.fingerprint != EnsembleTeacher([MEMBER_A, MEMBER_B], normalization="minmax").fingerprint
    assert base.fingerprint != EnsembleTeacher([MEMBER_A, flat]).fingerprint


# ---------------------------------------------------------------- precomputed

IDS_TSV = "8.0\t2.0\tq1\tp1\tp2\n8.0\t4.5\tq1\tp1\tp3\n\n7\t1\tq2\tp9\tp8\n"


def test_precomputed_ids_aligns_by_key_and_names_a_missing_key(tmp_path):
    """Guards alignment by (qid, pid) and the silent-zero failure: a key absent from the file
    must raise a KeyError naming qid, pid and file."""
    path = tmp_path / "scores.tsv"
    path.write_text(IDS_TSV)
    teacher = PrecomputedTeacher(path, "hofstatter_ids")
    assert len(teacher) == 5
    groups = [{"qid": "q2", "query": "x", "pids": ["p8", "p9"], "texts": ["t", "u"]},
              {"qid": "q1", "query": "y", "pids": ["p3", "p1", "p2"], "texts": ["t", "u", "v"]}]
    got = teacher.score_groups(groups)
    np.testing.assert_array_equal(got[0], [1.0, 7.0])
    np.testing.assert_array_equal(got[1], [4.5, 8.0, 2.0])
    with pytest.raises(KeyError) as info:
        teacher.score_groups([{"qid": "q1", "query": "y", "pids": ["p1", "p7"], "texts": ["t", "u"]}])
    assert isinstance(info.value, MissingScoreError)
    message = str(info.value)
    assert "'q1'" in message and "'p7'" in message and str(path) in message
    with pytest.raises(ConfigError, match="qid, pid"):
        teacher.score(["y"], ["t"])


def test_precomputed_conflicting_scores_name_both_lines(tmp_path):
    """Guards a corrupted or concatenated score file: one key with two scores is an error that
    names both (physical) lines."""
    path = tmp_path / "scores.tsv"
    path.write_text("8.0\t2.0\tq1\tp1\tp2\n\n7.5\t1\tq1\tp1\tp3\n")
    with pytest.raises(DataError) as info:
        PrecomputedTeacher(path, "hofstatter_ids")
    assert info.value.line == 3 and "line 1" in str(info.value) and "'p1'" in str(info.value)


def test_precomputed_text_form_and_group_files(tmp_path):
    """Guards the text-keyed Hofstatter form (usable on loose pairs) and JSONL / parquet group
    files, which must agree with each other."""
    from raykd.data.groups import write_groups_jsonl, write_groups_parquet

    text_path = tmp_path / "text.tsv"
    text_path.write_text("8.0\t2.0\twhat is d\tvitamin d\tstocks fell\n")
    teacher = PrecomputedTeacher(text_path, "hofstatter_text")
    np.testing.assert_array_equal(teacher.score(["what is d", "what is d"],
                                                ["stocks fell", "vitamin d"]), [2.0, 8.0])
    with pytest.raises(MissingScoreError, match="not in the file"):
        teacher.score(["what is d"], ["cells divide"])

    groups = [{"qid": "q1", "query": "a", "pids": ["p1", "p2"], "texts": ["x", "y"],
               "labels": [1, 0], "teacher_scores": [3.5, -1.25]}]
    write_groups_jsonl(tmp_path / "g.jsonl", groups)
    write_groups_parquet(tmp_path / "g.parquet", groups)
    for name in ("g.jsonl", "g.parquet"):
        t = build_teacher(teacher_spec(kind="precomputed", path=str(tmp_path / name)))
        np.testing.assert_array_equal(t.score_groups(groups)[0], [3.5, -1.25])
    with pytest.raises(ConfigError, match="format"):
        PrecomputedTeacher(text_path)  # .tsv is ambiguous without `format`


def test_precomputed_fingerprint_follows_the_file(tmp_path):
    """Guards stale cache hits after a score file is rewritten."""
    path = tmp_path / "scores.tsv"
    path.write_text(IDS_TSV)
    first = PrecomputedTeacher(path, "hofstatter_ids").fingerprint
    assert PrecomputedTeacher(path, "hofstatter_ids").fingerprint == first
    path.write_text(IDS_TSV + "1\t0\tq3\tp1\tp2\n")
    assert PrecomputedTeacher(path, "hofstatter_ids").fingerprint != first


# ---------------------------------------------------------------- fingerprints and factory


def test_model_fingerprints_follow_weights_and_lengths(tmp_path, tiny_cross_encoder_dir):
    """Guards the score-cache key: the same spec twice gives one fingerprint; other weights or
    max lengths give another."""
    spec = teacher_spec(kind="cross_encoder", model=tiny_cross_encoder_dir, query_max_length=8,
                        passage_max_length=16)
    a, b = build_teacher(spec), build_teacher(spec)
    assert a.fingerprint == b.fingerprint
    longer = spec.model_copy(update={"passage_max_length": 32})
    assert build_teacher(longer).fingerprint != a.fingerprint

    copy = tmp_path / "copy"
    shutil.copytree(tiny_cross_encoder_dir, copy)
    same_weights = build_teacher(spec.model_copy(update={"model": str(copy)}))
    assert same_weights.describe()["weights_sha256"] == a.describe()["weights_sha256"]
    model = same_weights.model
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(copy)
    changed = build_teacher(spec.model_copy(update={"model": str(copy)}))
    assert changed.describe()["weights_sha256"] != a.describe()["weights_sha256"]
    assert weights_sha256(copy) == changed.describe()["weights_sha256"]


def test_factory_registry_covers_every_kind_and_builds_recursively(tmp_path, tiny_encoder_dir):
    """Guards the registry (no if-chains) against a kind the config allows but nobody builds,
    a bm25 teacher without corpus statistics, and ensembles whose members are not built."""
    assert set(TEACHER_BUILDERS) == set(TEACHER_SPECS)
    with pytest.raises(ConfigError, match="scores in-batch during training"):
        build_teacher(teacher_spec(kind="collective", model=tiny_encoder_dir))
    with pytest.raises(ConfigError, match="corpus_path"):
        build_teacher(teacher_spec(kind="bm25"))

    from raykd.data.beir import write_corpus

    write_corpus(tmp_path / "corpus.jsonl", [{"pid": p, "title": "", "text": t} for p, t in CORPUS])
    spec = teacher_spec(kind="ensemble", normalization="minmax", weights=[0.5, 0.5], members=[
        teacher_spec(kind="bm25"),
        teacher_spec(kind="bi_encoder", model=tiny_encoder_dir, similarity="cosine"),
    ])
    teacher = build_teacher(spec, corpus_path=str(tmp_path / "corpus.jsonl"))
    assert [m.kind for m in teacher.members] == ["bm25", "bi_encoder"]
    (scores,) = teacher.score_groups([{"qid": "q", "query": QUERIES[0], "pids": ["1", "2", "3"],
                                       "texts": PASSAGES}])
    assert scores.shape == (3,) and 0.0 <= scores.min() and scores.max() <= 1.0


def test_factory_resolves_minilm_and_keeps_saved_options():
    """Guards `model: minilm` and that spec defaults do not override a folder's own pooling /
    normalisation (MiniLM is a mean-pooled, normalised sentence-transformers model)."""
    teacher = build_teacher(teacher_spec(kind="bi_encoder", model="minilm", batch_size=8))
    assert teacher.options.pooling == "mean" and teacher.options.similarity == "cosine"
    assert teacher.describe()["model"] == "minilm"
    scores = teacher.score([QUERIES[0], QUERIES[0]], PASSAGES[:2])
    assert scores[0] > scores[1]  # the fracture passage answers the fracture query


@pytest.mark.parametrize("kind,extra", [("bi_encoder", {"similarity": "cosine"}),
                                        ("late_interaction", {"projection_dim": 8})])
def test_dense_fingerprints_are_stable_and_follow_lengths_and_options(tiny_encoder_dir, kind,
                                                                      extra):
    """Guards cache keys of the dense kinds: equal across constructions of one spec, different
    when a max length or a scoring option changes."""
    spec = teacher_spec(kind=kind, model=tiny_encoder_dir, query_max_length=8,
                        passage_max_length=16, **extra)
    first = build_teacher(spec)
    assert build_teacher(spec).fingerprint == first.fingerprint
    assert first.fingerprint.startswith(f"{kind}-")
    assert build_teacher(spec.model_copy(update={"query_max_length": 9})).fingerprint \
        != first.fingerprint
    other = {"bi_encoder": {"scale": 20.0}, "late_interaction": {"query_augmentation": True}}[kind]
    changed = teacher_spec(**{**spec.model_dump(exclude_unset=True), **other})
    assert build_teacher(changed).fingerprint != first.fingerprint
    queries, passages = _pairs()
    np.testing.assert_array_equal(build_teacher(spec).score(queries, passages),
                                  first.score(queries, passages))


def test_three_member_ensemble_with_a_maxsim_member_equals_the_formula(tmp_path,
                                                                     tiny_encoder_dir):
    """Guards the BM25 + dense + MaxSim teacher: its list score is sum_i w_i zscore(member_i),
    each member scored on its own, so a MaxSim member that is built but dropped, or weights
    applied to the wrong member, fail."""
    from raykd.data.beir import write_corpus
    from raykd.teachers.ensemble import zscore

    write_corpus(tmp_path / "corpus.jsonl", [{"pid": p, "title": "", "text": t} for p, t in CORPUS])
    members = [teacher_spec(kind="bm25"),
               teacher_spec(kind="bi_encoder", model=tiny_encoder_dir, similarity="cosine"),
               teacher_spec(kind="late_interaction", model=tiny_encoder_dir, similarity="cosine")]
    weights = [0.5, 0.3, 0.2]
    spec = teacher_spec(kind="ensemble", normalization="zscore", weights=weights, members=members)
    corpus = str(tmp_path / "corpus.jsonl")
    teacher = build_teacher(spec, corpus_path=corpus)
    assert [m.kind for m in teacher.members] == ["bm25", "bi_encoder", "late_interaction"]
    group = {"qid": "q", "query": QUERIES[0], "pids": ["1", "2", "3"], "texts": PASSAGES}
    (got,) = teacher.score_groups([group])
    by_hand = sum(w * zscore(build_teacher(m, corpus_path=corpus).score([QUERIES[0]] * 3,
                                                                        PASSAGES))
                  for w, m in zip(weights, members, strict=True))
    np.testing.assert_allclose(got, by_hand, rtol=1e-5, atol=1e-6)
    alone = [zscore(build_teacher(m, corpus_path=corpus).score([QUERIES[0]] * 3, PASSAGES))
             for m in members]
    assert not np.allclose(alone[2], 0) and not np.allclose(got, 0.5 * alone[0] + 0.3 * alone[1])

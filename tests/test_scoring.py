"""The teacher-scoring stage and the score cache: exactly-once scores, caching, resume, faults."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.data.groups import write_groups_jsonl
from raykd.errors import ScoreAlignmentError
from raykd.teachers.cache import ScoreCache, candidate_key
from raykd.teachers.scoring import TeacherScorer, score_candidate_groups, score_dataset
from raykd.teachers.toy import (
    FlakyOverlapTeacher,
    GroupwiseOverlapTeacher,
    HashTeacher,
    LexicalOverlapTeacher,
)
from raykd.teachers.verification import scored_pairs, verify_scored_shards

WORDS = "cell protein gene vitamin bone insulin sleep memory coral ocean drug dose".split()


def make_groups(n: int = 24, m: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    groups = []
    for q in range(n):
        query = " ".join(rng.choice(WORDS, 3, replace=False))
        pids = [f"p{(q * 7 + j) % 60}" for j in range(m)]  # pids shared across queries
        texts = [" ".join(rng.choice(WORDS, 2 + (q + j) % 6)) for j in range(m)]
        groups.append({"qid": f"q{q}", "query": query, "pids": pids, "texts": texts,
                       "labels": [1] + [0] * (m - 1), "kinds": ["pos"] + ["neg"] * (m - 1)})
    return groups


def expected_scores(groups, teacher=None) -> dict[tuple[str, str], float]:
    teacher = teacher or LexicalOverlapTeacher()
    return {(g["qid"], p): float(s) for g in groups
            for p, s in zip(g["pids"], teacher.score([g["query"]] * len(g["texts"]), g["texts"]),
                            strict=True)}


@pytest.fixture
def groups_file(tmp_path):
    groups = make_groups()
    path = tmp_path / "candidates" / "groups.jsonl"
    write_groups_jsonl(path, groups)
    return path, groups


def _run(ray_local, groups, make_teacher, cache, **kw):
    ds = ray_local.data.from_arrow([pa.Table.from_pylist(groups[i:i + 4])
                                    for i in range(0, len(groups), 4)])  # 6 blocks, 2 actors
    out = score_dataset(ds, make_teacher, None, cache=cache, groups_per_batch=4, batch_size=8,
                        **kw)
    return pa.concat_tables(list(out.iter_batches(batch_size=None, batch_format="pyarrow")))


def test_scorer_buckets_by_length_and_scores_each_pair_once(tmp_path):
    """Guards the actor's batching: teacher calls of `batch_size` pairs sorted by passage
    length, a pair repeated in a batch scored once, scores aligned back to their groups."""
    groups = make_groups(6, 4)
    groups[1]["pids"][2], groups[1]["texts"][2] = groups[1]["pids"][1], groups[1]["texts"][1]
    calls = []

    class Spy(LexicalOverlapTeacher):
        def _score(self, queries, passages):
            calls.append([len(p) for p in passages])
            return super()._score(queries, passages)

    scorer = TeacherScorer(Spy, batch_size=5)
    out = scorer(pa.Table.from_pylist(groups))
    sizes = [len(c) for c in calls]
    assert sizes == [5, 5, 5, 5, 3] and sum(sizes) == 23  # 24 slots, one repeated pair
    flat = [n for c in calls for n in c]
    assert flat == sorted(flat, reverse=True)
    want = expected_scores(groups)
    for row in out.to_pylist():
        assert row["teacher_scores"] == [want[(row["qid"], p)] for p in row["pids"]]
    assert sum(out.column("pairs_scored").to_pylist()) == 23
    assert sum(out.column("teacher_calls").to_pylist()) == 5


def test_cache_rerun_does_zero_forward_passes_and_new_fingerprint_rescores(ray_local, tmp_path):
    """Guards the score cache across processes and reruns: run 1 scores every pair; run 2 in
    fresh actors with the same fingerprint scores none (per-row counters and teacher calls are
    0) and returns identical scores; a different fingerprint scores everything again."""
    groups = make_groups()
    cache = str(tmp_path / "cache")
    first = _run(ray_local, groups, LexicalOverlapTeacher, cache, concurrency=2)
    n_pairs = sum(len(g["pids"]) for g in groups)
    assert sum(first.column("pairs_scored").to_pylist()) == n_pairs
    assert sum(first.column("teacher_calls").to_pylist()) > 0
    second = _run(ray_local, groups, LexicalOverlapTeacher, cache, concurrency=2)
    assert sum(second.column("pairs_scored").to_pylist()) == 0
    assert sum(second.column("teacher_calls").to_pylist()) == 0
    assert sum(second.column("pairs_cached").to_pylist()) == n_pairs
    by_qid = {r["qid"]: r["teacher_scores"] for r in first.to_pylist()}
    assert all(by_qid[r["qid"]] == r["teacher_scores"] for r in second.to_pylist())
    other = _run(ray_local, groups, functools.partial(LexicalOverlapTeacher, bias=1.0), cache,
                 concurrency=1)
    assert sum(other.column("pairs_scored").to_pylist()) == n_pairs
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {
        LexicalOverlapTeacher().fingerprint, LexicalOverlapTeacher(bias=1.0).fingerprint}


def test_fully_cached_batch_never_loads_the_teacher(tmp_path):
    """Guards rerun cost: with the fingerprint known and every pair cached, an actor serves the
    batch without building (loading) the teacher at all; a miss builds it."""
    groups = make_groups(4, 3)
    cache = str(tmp_path / "cache")
    fp = LexicalOverlapTeacher().fingerprint
    TeacherScorer(LexicalOverlapTeacher, fp, cache=cache)(pa.Table.from_pylist(groups))

    def unbuildable():
        raise AssertionError("the teacher was built although every pair is cached")

    out = TeacherScorer(unbuildable, fp, cache=cache)(pa.Table.from_pylist(groups))
    assert sum(out.column("pairs_cached").to_pylist()) == 12
    lazy = TeacherScorer(LexicalOverlapTeacher, fp, cache=cache)
    assert lazy.teacher is None
    lazy(pa.Table.from_pylist(make_groups(5, 3)))
    assert lazy.teacher is not None


def test_cache_keys_dark_examples_by_text_hash(tmp_path):
    """Guards dark examples (no stable pid): a regenerated dark passage under a reused pid must
    not be served the old passage's score; the same text is."""
    cache = ScoreCache(tmp_path, HashTeacher().fingerprint)
    old = candidate_key("dark:q1:0", "masked [MASK] text", "dark_mask")
    assert old.startswith("sha1:") and candidate_key("p1", "any", "neg") == "p1"
    cache.put(["q1"], [old], [0.25])
    fresh = ScoreCache(tmp_path, HashTeacher().fingerprint)
    new = candidate_key("dark:q1:0", "another mix of words", "dark_mix")
    got = fresh.lookup(["q1", "q1"], [old, new])
    assert got[0] == np.float32(0.25) and np.isnan(got[1])


def test_cache_parts_are_partitioned_by_qid_bucket_and_compact(tmp_path):
    """Guards bounded memory and file growth: a lookup loads only the buckets of its qids, an
    eviction bound is honoured, and compaction merges parts without losing a score."""
    cache = ScoreCache(tmp_path, "toy-fp", num_buckets=8, max_resident_pairs=10)
    qids = [f"q{i}" for i in range(40)]
    for start in range(0, 40, 10):
        cache.put(qids[start:start + 10], ["p"] * 10, np.arange(start, start + 10))
    reader = ScoreCache(tmp_path, "toy-fp", max_resident_pairs=10)
    assert reader.lookup(["q3"], ["p"])[0] == 3.0
    assert list(reader._buckets) == [reader.bucket_of("q3")]
    np.testing.assert_array_equal(reader.lookup(qids, ["p"] * 40), np.arange(40))
    assert sum(len(b.hashes) for b in reader._buckets.values()) <= 40
    before = cache.stats()
    assert cache.compact() > 0
    after = cache.stats()
    assert after["pairs"] == before["pairs"] == 40 and after["parts"] <= 8
    np.testing.assert_array_equal(ScoreCache(tmp_path, "toy-fp").lookup(qids, ["p"] * 40),
                                  np.arange(40))


def test_groupwise_teacher_is_scored_and_cached_a_whole_group_at_a_time(tmp_path):
    """Guards per-group teachers (ensemble-like normalisation): scores equal the teacher's own
    `score_groups`, and a group is never assembled from a partial cache hit."""
    groups = make_groups(4, 5)
    cache = str(tmp_path / "cache")
    out = TeacherScorer(GroupwiseOverlapTeacher, cache=cache)(pa.Table.from_pylist(groups))
    want = GroupwiseOverlapTeacher().score_groups(groups)
    for row, w in zip(out.to_pylist(), want, strict=True):
        np.testing.assert_allclose(row["teacher_scores"], w, rtol=1e-6)
    groups[0]["pids"][4], groups[0]["texts"][4] = "new", "brand new words"
    again = TeacherScorer(GroupwiseOverlapTeacher, cache=cache)(pa.Table.from_pylist(groups))
    assert again.column("pairs_scored").to_pylist() == [5, 0, 0, 0]


def test_fingerprint_mismatch_refuses_to_score(tmp_path):
    """Guards cache poisoning: a job scoring for fingerprint A must not run a teacher B."""
    with pytest.raises(ValueError, match="refusing to mix"):
        TeacherScorer(LexicalOverlapTeacher, fingerprint="cross_encoder-0123456789abcdef")


def test_interrupted_job_resumes_only_the_missing_shard(ray_local, groups_file, tmp_path):
    """Guards resume after interruption: with one committed shard lost, a rerun recomputes
    that shard only and the output still holds exactly one score per (qid, pid)."""
    path, groups = groups_file
    out = tmp_path / "scored"
    fp = LexicalOverlapTeacher().fingerprint
    first = score_candidate_groups(path, out, LexicalOverlapTeacher, fp, num_shards=4,
                                   groups_per_batch=4)
    assert first.shards_written == 4 and first.pairs_scored == first.pairs == 120
    victim = out / "shard-00002-of-00004.parquet"
    lost = pq.read_table(victim)
    victim.unlink()
    (out / ".shard-00002-of-00004.parquet.tmp-1-dead").write_bytes(b"half a file")
    second = score_candidate_groups(path, out, LexicalOverlapTeacher, fp, num_shards=4,
                                    groups_per_batch=4)
    assert (second.shards_written, second.shards_skipped) == (1, 3)
    assert second.pairs_scored == sum(len(p) for p in lost.column("pids").to_pylist())
    assert scored_pairs(out) == expected_scores(groups)
    assert not list(out.glob(".shard-*"))
    third = score_candidate_groups(path, out, LexicalOverlapTeacher, fp, num_shards=4)
    assert third.shards_written == 0 and third.pairs_scored == 0
    with pytest.raises(ValueError, match="fingerprint"):
        score_candidate_groups(path, out, HashTeacher, HashTeacher().fingerprint, num_shards=4)


def test_actor_killed_mid_job_still_yields_every_pair_exactly_once(ray_local, groups_file,
                                                                   tmp_path):
    """Guards fault tolerance: the scoring actor's process dies on its 3rd teacher call (once,
    marker file), Ray restarts it and retries the batch; the output has each (qid, pid) exactly
    once with the right score, and the cache written before the crash does not duplicate it."""
    path, groups = groups_file
    marker = tmp_path / "crashed"
    make = functools.partial(FlakyOverlapTeacher, marker=str(marker), crash_on_call=3)
    report = score_candidate_groups(
        path, tmp_path / "scored", make, LexicalOverlapTeacher().fingerprint, num_shards=3,
        concurrency=1, groups_per_batch=2, batch_size=4, cache=str(tmp_path / "cache"),
        ray_remote_args={"max_restarts": 2, "max_task_retries": 4})
    assert marker.exists(), "the injected crash never happened"
    assert report.shards_written == 3
    assert scored_pairs(tmp_path / "scored") == expected_scores(groups)


def test_verification_names_lost_and_duplicated_keys(ray_local, groups_file, tmp_path):
    """Guards the final check: an output shard missing a pair or holding one twice is an
    error naming the (qid, pid), never a silently short or padded score file."""
    path, _ = groups_file
    out = tmp_path / "scored"
    score_candidate_groups(path, out, HashTeacher, None, num_shards=2)
    shard = out / "shard-00000-of-00002.parquet"
    table = pq.read_table(shard)
    rows = table.to_pylist()
    victim = rows[0]
    rows[0] = {**victim, "pids": victim["pids"][:-1], "texts": victim["texts"][:-1],
               "labels": victim["labels"][:-1], "kinds": victim["kinds"][:-1],
               "teacher_scores": victim["teacher_scores"][:-1]}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    with pytest.raises(ScoreAlignmentError, match=rf"missing 1: \('{victim['qid']}', "
                                                  rf"'{victim['pids'][-1]}'\)"):
        verify_scored_shards(path, out, 2)
    pq.write_table(pa.concat_tables([table, table.slice(1, 1)]), shard)
    dup = table.slice(1, 1).to_pylist()[0]
    with pytest.raises(ScoreAlignmentError, match=rf"duplicated {len(dup['pids'])}"):
        verify_scored_shards(path, out, 2)
    shutil.rmtree(out)

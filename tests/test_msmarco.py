"""MS MARCO without the data: `raykd prepare-msmarco` on a tiny fixture in the official layout
(its outputs, resume, bad inputs named by file, line and field), the MS MARCO recipes as
shipped (every field, Hub ids, resources against the RayJob) and each recipe end to end on the
prepared fixture with tiny local models swapped in by override."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raykd.config import load_recipe
from raykd.data.beir import BeirDataset
from raykd.data.groups import iter_groups
from raykd.data.msmarco_prepare import IdSet, PrepareOptions, prepare_msmarco
from raykd.errors import DataError
from raykd.recipes import bundled_file, bundled_path, family_names, recipe_names

ROOT = Path(__file__).resolve().parents[1]
RECIPES = family_names("msmarco")
RAYJOB = ROOT / "cluster" / "kuberay" / "rayjob-msmarco.yaml"

TOPICS = {
    "cells": "cell mitosis division chromosome spindle nucleus membrane protein",
    "vitamin": "vitamin supplement fracture bone calcium elderly dose deficiency",
    "rivers": "river water mountain sea flow delta basin flood",
    "banks": "bank interest rate inflation central money loan credit",
    "virus": "virus infection immune vaccine antibody fever cough spread",
    "heart": "heart cardiac artery blood pressure stroke pulse vessel",
    "brain": "brain neuron memory cortex synapse learning sleep signal",
    "insulin": "insulin glucose diabetes sugar pancreas obesity diet meal",
}
RAW_FILES = {"collection": "collection.tsv", "queries": "queries.train.tsv",
             "qrels": "qrels.train.tsv", "run": "run.bm25.train.tsv",
             "triples": "qidpidtriples.train.tsv", "scores": "scores_ids.tsv"}


def write_msmarco_fixture(root, passages_per_topic: int = 40, train_per_topic: int = 4,
                          dev_per_topic: int = 1, seed: int = 0) -> Path:
    """A tiny MS MARCO-layout folder (320 passages, 32 train and 8 dev queries): collection,
    queries, qrels, a BM25 run (30 ranks per query), id triples (12 per query) and a Hofstatter
    id-form score file, shuffled as the published one is. Numeric ids, as MS MARCO's."""
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    collection, by_topic = [], {}
    for topic, vocab in TOPICS.items():
        for _ in range(passages_per_topic):
            pid = str(len(collection))
            text = f"{topic} " + " ".join(rng.choice(vocab.split()) for _ in range(14))
            collection.append((pid, text))
            by_topic.setdefault(topic, []).append(pid)
    queries, qrels = {"train": [], "dev": []}, {"train": [], "dev": []}
    qid = 1000
    for topic, vocab in TOPICS.items():
        for split, n in (("train", train_per_topic), ("dev", dev_per_topic)):
            for _ in range(n):
                qid += 1
                queries[split].append((str(qid), " ".join(rng.sample(vocab.split(), 3))))
                qrels[split].append((str(qid), rng.choice(by_topic[topic])))

    def write(name, lines):
        (root / name).write_text("".join(lines))

    write("collection.tsv", (f"{p}\t{t}\n" for p, t in collection))
    write("queries.train.tsv", (f"{q}\t{t}\n" for q, t in queries["train"]))
    write("queries.dev.small.tsv", (f"{q}\t{t}\n" for q, t in queries["dev"]))
    write("qrels.train.tsv", (f"{q}\t0\t{p}\t1\n" for q, p in qrels["train"]))
    write("qrels.dev.small.tsv", (f"{q}\t0\t{p}\t1\n" for q, p in qrels["dev"]))
    pids = [p for p, _ in collection]
    run, triples, scores = [], [], []
    for q, pos in qrels["train"]:
        ranked = rng.sample(pids, 30)
        if pos not in ranked:
            ranked[rng.randrange(10)] = pos
        run += [f"{q}\t{p}\t{r}\n" for r, p in enumerate(ranked, start=1)]
        negatives = [p for p in ranked if p != pos][:12]
        triples += [f"{q}\t{pos}\t{n}\n" for n in negatives]
        s_pos = round(rng.uniform(4, 9), 4)
        scores += [f"{s_pos}\t{round(rng.uniform(-6, 3), 4)}\t{q}\t{pos}\t{n}\n"
                   for n in negatives]
    rng.shuffle(scores)
    write("run.bm25.train.tsv", run)
    write("qidpidtriples.train.tsv", triples)
    write("scores_ids.tsv", scores)
    return root


def options(raw: Path, out: Path, **extra) -> PrepareOptions:
    return PrepareOptions.from_raw(
        raw, out, run=raw / RAW_FILES["run"], triples=raw / RAW_FILES["triples"],
        teacher_scores=raw / RAW_FILES["scores"], **{"num_negatives": 7, **extra})


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    return write_msmarco_fixture(tmp_path_factory.mktemp("msmarco_raw"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, raw_dir) -> Path:
    """The fixture prepared once for the module: every source, 7 negatives per query."""
    out = tmp_path_factory.mktemp("msmarco") / "prepared"
    prepare_msmarco(options(raw_dir, out), echo=quiet)
    return out


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- preparation


def test_prepare_writes_a_beir_folder_candidates_and_the_teacher_file(prepared, raw_dir):
    """Guards what the recipes read: a BEIR folder that the pipeline loads (train and dev
    qrels), candidate groups whose positives are the qrels' and whose negatives come from
    their source (the run's top ranks, the triples, the scored pairs), with the collection's
    texts, and a score file that a `precomputed` teacher reads for every scored group."""
    from raykd.teachers.precomputed import PrecomputedTeacher

    raw = raw_dir
    collection = dict(read_tsv(raw / "collection.tsv"))
    dataset = BeirDataset.from_dir(prepared)
    assert dataset.splits() == ["dev", "train"]
    qrels = dataset.qrels("train")
    assert len(qrels) == 32 and len(dataset.qrels("dev")) == 8
    assert {r["pid"] for r in dataset.iter_corpus()} == set(collection)  # no --max-passages
    dataset.check_qrels_against_corpus("dev")
    run = {}
    for q, p, rank in read_tsv(raw / RAW_FILES["run"]):
        run.setdefault(q, {})[p] = int(rank)
    triples = {tuple(row) for row in read_tsv(raw / RAW_FILES["triples"])}
    teacher = PrecomputedTeacher(prepared / "teacher" / "scores.tsv", "hofstatter_ids")
    for source in ("bm25", "triples", "scored"):
        groups = [g for f in sorted((prepared / "candidates" / source).glob("*.parquet"))
                  for g in iter_groups(f)]
        assert len(groups) == 32, source
        for g in groups:
            positives = [p for p, y in zip(g["pids"], g["labels"], strict=True) if y]
            negatives = [p for p, y in zip(g["pids"], g["labels"], strict=True) if not y]
            assert positives == list(qrels[g["qid"]]) and g["labels"][0] == 1
            assert len(negatives) == len(set(negatives)) == 7
            assert not set(negatives) & set(qrels[g["qid"]])
            assert g["texts"] == [collection[p] for p in g["pids"]]
            assert g["kinds"] == ["pos" if y else "neg" for y in g["labels"]]
            if source == "bm25":
                assert all(p in run[g["qid"]] for p in negatives)
            else:
                assert all((g["qid"], positives[0], n) in triples for n in negatives)
            if source == "scored":
                scores = teacher.score_groups([g])[0]
                assert len(scores) == len(g["pids"])
    assert len(read_tsv(prepared / "teacher" / "scores.tsv")) == 32 * 7
    summary = yaml.safe_load((prepared / "prepared.json").read_text())
    assert summary["counts"]["corpus"]["passages"] == 320
    assert summary["teacher_scores"] == str((prepared / "teacher" / "scores.tsv").resolve())


def test_prepare_slices_queries_and_passages_keeping_every_referenced_passage(tmp_path):
    """Guards `--max-queries` / `--max-passages`: the first N queries of each qrels file, and a
    corpus that still holds every positive and candidate (so no group points outside it)."""
    raw = write_msmarco_fixture(tmp_path / "raw")
    out = tmp_path / "out"
    prepare_msmarco(options(raw, out, max_queries=5, max_dev_queries=2, max_passages=60,
                            num_negatives=3), echo=quiet)
    dataset = BeirDataset.from_dir(out)
    train_qids = [row[0] for row in read_tsv(raw / "qrels.train.tsv")][:5]
    assert list(dataset.qrels("train")) == train_qids and len(dataset.qrels("dev")) == 2
    corpus = {r["pid"] for r in dataset.iter_corpus()}
    referenced = {p for split in ("train", "dev") for docs in dataset.qrels(split).values()
                  for p in docs}
    for source in ("bm25", "triples", "scored"):
        for f in (out / "candidates" / source).glob("*.parquet"):
            for g in iter_groups(f):
                assert g["qid"] in train_qids
                referenced |= set(g["pids"])
    assert referenced <= corpus and len(corpus) == max(60, len(referenced))


def test_prepare_resumes_skipping_finished_parts(tmp_path):
    """Guards resumability: a rerun with the same inputs does nothing; a candidate part lost in
    an interrupted join is written again alone; other options redo what they change."""
    raw = write_msmarco_fixture(tmp_path / "raw")
    out = tmp_path / "out"
    first = prepare_msmarco(options(raw, out, part_groups=8, join_chunk=20), echo=quiet)
    assert "collection" in first.ran and first.skipped == []
    parts = sorted((out / "candidates" / "bm25").glob("part-*.parquet"))
    assert len(parts) == 4
    again = prepare_msmarco(options(raw, out, part_groups=8, join_chunk=20), echo=quiet)
    assert again.ran == [] and "bm25" in again.skipped
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    parts[2].unlink()  # a join interrupted after writing parts 0, 1 and 3
    (out / "_prepare" / "bm25.json").unlink()
    resumed = prepare_msmarco(options(raw, out, part_groups=8, join_chunk=20), echo=quiet)
    assert resumed.ran == ["bm25"]
    assert parts[2].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in parts if p != parts[2])
    changed = prepare_msmarco(options(raw, out, part_groups=8, join_chunk=20, num_negatives=3),
                              echo=quiet)
    assert set(changed.ran) == {"bm25-ids", "triples-ids", "scored-ids", "corpus", "bm25",
                                "triples", "scored"}
    groups = [g for f in sorted((out / "candidates" / "triples").glob("*.parquet"))
              for g in iter_groups(f)]
    assert {len(g["pids"]) for g in groups} == {4}


def test_prepare_prints_progress_lines_with_a_rate(tmp_path):
    raw = write_msmarco_fixture(tmp_path / "raw")
    lines: list[str] = []
    prepare_msmarco(options(raw, tmp_path / "out"), echo=lines.append, progress_every=0.0)
    final = [line for line in lines if " in " in line]
    assert any(line.startswith("[raykd] collection collection.tsv: 320 passages in ")
               for line in final), lines
    assert all(re.search(r"[\d,.]+/s$", line) for line in final), final
    assert any(line.startswith("[raykd] run run.bm25.train.tsv:") for line in lines)
    assert any(line.startswith("[raykd] bm25 candidates: 32/32 groups") for line in lines)


def test_id_set_is_exact_for_numeric_and_string_ids():
    """Guards the collection's id set: numbers are kept as int64 but `007` is not `7`, and a
    non-numeric id switches the whole set to strings."""
    numeric = IdSet.build(["7", "12", "0", "3"])
    assert numeric.numeric and "7" in numeric and "0" in numeric
    assert "007" not in numeric and "8" not in numeric and "x" not in numeric
    mixed = IdSet.build(["7", "doc-1", "12"])
    assert not mixed.numeric and {"7", "doc-1", "12"} <= set(mixed) and "007" not in mixed


# ---------------------------------------------------------------- bad inputs

# (file, how to break it, the line, the field, words of the message)
BAD_INPUTS = [
    ("collection", lambda ls: ls.insert(5, "5000 no tab here"), 6, "text", "missing column"),
    ("collection", lambda ls: ls.insert(9, "5000\t   "), 10, "text", "empty text"),
    ("collection", lambda ls: ls.insert(3, ls[1]), 4, "pid", "duplicate pid '1'"),
    ("queries", lambda ls: ls.insert(2, "2001\t"), 3, "query", "empty text"),
    ("qrels", lambda ls: ls.insert(4, "1001\t0\t99999\t1"), 5, "pid", "not in the collection"),
    ("qrels", lambda ls: ls.insert(1, "424242\t0\t3\t1"), 2, "qid", "not in the queries"),
    ("qrels", lambda ls: ls.insert(7, "1001\t0\t3\tone"), 8, "rel", "expected an integer"),
    ("run", lambda ls: ls.insert(12, "1001\t3"), 13, "rank", "missing column"),
    ("run", lambda ls: ls.__setitem__(12, "1001\t99999\t13"), 13, "pid", "not in the collection"),
    ("run", lambda ls: ls.__setitem__(12, "1001\t3\tfirst"), 13, "rank", "expected an integer"),
    ("run", lambda ls: ls.append(ls[0]), 961, "qid", "sort it by qid"),
    ("triples", lambda ls: ls.insert(20, "1001\t3"), 21, "pid_neg", "missing column"),
    ("triples", lambda ls: ls.__setitem__(20, ls[20].rsplit("\t", 1)[0] + "\t99999"), 21,
     "pid_neg", "not in the collection"),
    ("scores", lambda ls: ls.__setitem__(30, "nan\t" + ls[30].split("\t", 1)[1]), 31,
     "score_pos", "not finite"),
    ("scores", lambda ls: ls.__setitem__(30, "\t".join([*ls[30].split("\t")[:2], "77",
                                                        *ls[30].split("\t")[3:]])), 31,
     "qid", "not in the queries"),
    ("scores", lambda ls: ls.__setitem__(30, "1.5\t-2\t1001\t3"), 31, "pid_neg",
     "missing column"),
    ("scores", lambda ls: ls.__setitem__(30, "\t".join([*ls[30].split("\t")[:3], "0",
                                                        ls[30].split("\t")[4]])), 31,
     "pid_pos", "not a labelled positive"),
]


@pytest.mark.parametrize("name,mutate,line,field,words", BAD_INPUTS,
                         ids=[f"{b[0]}-{b[3]}-{b[4].split()[0]}" for b in BAD_INPUTS])
def test_a_bad_input_line_is_one_error_naming_file_line_and_field(tmp_path, name, mutate, line,
                                                                  field, words):
    """Guards validation of every input format: a malformed row, an unknown id, a NaN score
    or an empty passage stops the job with one DataError naming the file, the line and the
    field (nothing is written as done)."""
    raw = write_msmarco_fixture(tmp_path / "raw")
    path = raw / RAW_FILES[name]
    lines = path.read_text().splitlines()
    mutate(lines)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        prepare_msmarco(options(raw, tmp_path / "out"), echo=quiet)
    err = caught.value
    assert (Path(err.path).name, err.line, err.field) == (path.name, line, field), str(err)
    assert words in str(err) and "\n" not in str(err)
    assert str(err).startswith(f"{path}:{line}: field '{field}':")
    assert not (tmp_path / "out" / "prepared.json").exists()


def test_the_command_prints_one_error_line_and_exits_2(tmp_path):
    raw = write_msmarco_fixture(tmp_path / "raw")
    scores = raw / RAW_FILES["scores"]
    lines = scores.read_text().splitlines()
    lines[4] = "NaN\t" + lines[4].split("\t", 1)[1]
    scores.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "jobs/prepare_msmarco.py", "--raw", str(raw), "--out",
                           str(tmp_path / "out"), "--teacher-scores", str(scores)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {scores}:5: field 'score_pos': score is not finite: 'NaN'"]


# ---------------------------------------------------------------- the recipes as shipped

KNOWN_BARE_IDS = {"bert-base-uncased", "bert-large-uncased", "distilbert-base-uncased"}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
RESOURCES = re.compile(r"^# resources: (\d+) GPUs?, (\d+) h \(an estimate, not run")


def header(name: str) -> str:
    lines = bundled_path(name).read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, x in enumerate(lines)
                                                    if not x.startswith("#"))])


def hub_ids(recipe) -> list[str]:
    ids = [recipe.student.model]
    for stage in recipe.stages:
        for part in stage.teacher.parts() if stage.teacher is not None else ():
            if getattr(part, "model", None):
                ids.append(part.model)
        if stage.data.negatives_model:
            ids.append(stage.data.negatives_model)
    return ids


def rayjob() -> dict:
    (job,) = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d and d["kind"] == "RayJob"]
    return job


def test_the_msmarco_recipes_are_the_seed_methods_and_run_by_name():
    """Guards `raykd run msmarco/<method>`: one recipe per seed method, found by family name
    (`msmarco/ckl`, with or without `.yaml`), listed by `raykd run`, packaged with raykd."""
    assert RECIPES == ["msmarco/adam", "msmarco/ckl", "msmarco/collective_kd",
                       "msmarco/margin_mse", "msmarco/prod"]
    assert set(RECIPES) <= set(recipe_names())
    for name in RECIPES:
        assert bundled_file(name) == bundled_file(f"{name}.yaml") == bundled_path(name)
    assert bundled_file("msmarco/nope") is None and bundled_file("other/ckl") is None
    package_data = (ROOT / "pyproject.toml").read_text()
    assert '"msmarco/*.yaml"' in package_data


@pytest.mark.parametrize("name", RECIPES)
def test_each_msmarco_recipe_validates_as_shipped(name):
    """Guards the recipe files: every field validates; every model is a well-formed Hub id
    (`org/name`) or a known bare one; the header says what it reproduces, the paper's number
    (or "see paper") and the resources it was sized for; the data is the prepared folder the
    RayJob mounts; MS MARCO's evaluation is dev at depth 1000 with RR@10."""
    recipe = load_recipe(bundled_path(name))
    assert recipe.model_dump(mode="json")["name"] == recipe.name
    for model in hub_ids(recipe):
        assert HUB_ID.match(model) or model in KNOWN_BARE_IDS, model
    text = header(name)
    assert "Reproduces:" in text and "Paper:" in text
    assert re.search(r"MRR@10 (\.\d{3}|see paper)", text), text
    assert len(text.splitlines()[0]) <= 77  # one line in `raykd --help`
    for stage in recipe.stages:
        assert stage.data.dataset == "/data/msmarco"
        assert stage.data.candidates is None or stage.data.candidates.startswith(
            "/data/msmarco/candidates/")
        assert stage.eval.split == "dev" and stage.eval.k == 1000 and "RR@10" in stage.eval.measures
        if stage.teacher is not None and stage.teacher.kind == "precomputed":
            assert stage.teacher.path == "/data/msmarco/teacher/scores.tsv"
    assert recipe.test_split is None and not recipe.teacher_corpus_store


PAPER_NUMBERS = {"msmarco/margin_mse": ".323", "msmarco/prod": ".393"}


@pytest.mark.parametrize("name", RECIPES)
def test_each_msmarco_recipe_fits_the_rayjob(name):
    """Guards the resources: the GPUs a recipe's header was sized for are its trainers (one GPU
    each, bf16) and fit the RayJob's autoscaling GPU group; each trainer's CPUs fit a worker
    pod; the data lives where the RayJob mounts its volume."""
    recipe = load_recipe(bundled_path(name))
    (resources,) = [line for line in header(name).splitlines() if line.startswith("# resources")]
    gpus, hours = map(int, RESOURCES.match(resources).groups())
    job = rayjob()
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    container = group["template"]["spec"]["containers"][0]
    per_pod = int(container["resources"]["limits"]["nvidia.com/gpu"])
    pod_cpus = int(container["resources"]["limits"]["cpu"])
    assert job["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    assert gpus == max(s.train.num_workers for s in recipe.stages if s.repeat)
    assert gpus <= per_pod * group["maxReplicas"] and hours * 3600 <= job["spec"][
        "activeDeadlineSeconds"]
    for stage in recipe.stages:
        assert stage.train.use_gpu and stage.train.precision == "bf16"
        assert stage.train.cpus_per_worker <= pod_cpus
    assert recipe.teacher_num_gpus <= per_pod
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in group["template"]["spec"]["volumes"]}
    claims = {d["metadata"]["name"] for d in yaml.safe_load_all(RAYJOB.read_text())
              if d and d["kind"] == "PersistentVolumeClaim"}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] in claims
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert f"msmarco/{env['RAYKD_RECIPE']}" in RECIPES
    assert name.split("/")[1] in job_header_recipes()
    if name in PAPER_NUMBERS:
        assert f"MRR@10 {PAPER_NUMBERS[name]}" in header(name).replace("\n# ", " ")


def job_header_recipes() -> str:
    return " ".join(line for line in RAYJOB.read_text().splitlines() if line.startswith("#"))


def test_raykd_run_prints_an_msmarco_recipe_pointed_at_a_prepared_folder(prepared):
    """Guards the command line: `raykd run msmarco/margin_mse` resolves the family recipe and
    checks its inputs before any work (the shipped /data path is refused by name here)."""
    cmd = [sys.executable, "-m", "raykd", "run", "msmarco/margin_mse", "--print-recipe"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert "stages.0.data.candidates" in done.stderr and "/data/msmarco" in done.stderr
    ok = subprocess.run([*cmd, f"data.dataset={prepared}",
                         f"data.candidates={prepared}/candidates/scored",
                         f"teacher.path={prepared}/teacher/scores.tsv"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert f"recipe: {bundled_path('msmarco/margin_mse')}" in ok.stderr
    assert '"name": "msmarco-margin-mse"' in ok.stdout


# ---------------------------------------------------------------- end to end, tiny models


def tiny_overrides(recipe, prepared: Path, encoder: str, cross_encoder: str,
                   storage: Path) -> list[str]:
    """Overrides that swap every model for a tiny local one and shrink the budget (CPU, one
    worker, 2 steps, 12/24-token texts), the data for the prepared fixture; nothing else."""
    out = [f"storage={storage}", "embedding_cache=null", "tracking.enabled=false",
           "teacher_num_gpus=0",
           "teacher_concurrency=1", f"student.model={encoder}", "student.query_max_length=12",
           "student.passage_max_length=24"]
    if recipe.student.num_layers:
        out.append("student.num_layers=null")
    for i, stage in enumerate(recipe.stages):
        p = f"stages.{i}"
        out += [f"{p}.data.dataset={prepared}", f"{p}.train.use_gpu=false",
                f"{p}.train.num_workers=1", f"{p}.train.precision=fp32",
                f"{p}.train.cpus_per_worker=1", f"{p}.train.batch_size=4",
                f"{p}.train.max_steps=2", f"{p}.train.checkpoint_every=null",
                f"{p}.train.log_every=1", f"{p}.eval.k=10", f"{p}.eval.passage_max_length=24",
                f"{p}.eval.query_max_length=12", f"{p}.data.mining_concurrency=1",
                f"{p}.data.mining_gpus_per_actor=0", f"{p}.data.mining_search_cpus=1"]
        if stage.data.candidates:
            out.append(f"{p}.data.candidates={prepared}/candidates/"
                       f"{Path(stage.data.candidates).name}")
        else:
            out += [f"{p}.data.max_queries=8", f"{p}.data.depth=20"]
        if stage.data.negatives_model:
            out.append(f"{p}.data.negatives_model={encoder}")
        teacher = stage.teacher
        if teacher is None:
            continue
        if teacher.kind == "precomputed":
            out.append(f"{p}.teacher.path={prepared}/teacher/scores.tsv")
            continue
        model = cross_encoder if teacher.kind == "cross_encoder" else encoder
        out += [f"{p}.teacher.model={model}", f"{p}.teacher.query_max_length=12",
                f"{p}.teacher.passage_max_length=24", f"{p}.teacher.batch_size=32"]
        if teacher.kind == "cross_encoder":
            out.append(f"{p}.teacher.label_index=0")
        if stage.data.query_filter == "confusing":
            # a random tiny teacher ranks no labelled positive first, so the confusing-query
            # rule would leave nothing to train on (the rule itself: tests/test_driver.py)
            out.append(f"{p}.data.query_filter=all")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_each_msmarco_recipe_runs_end_to_end_on_the_prepared_fixture(
        name, ray_local, prepared, tiny_encoder_dir, tiny_cross_encoder_dir, tmp_path):
    """Guards the recipes' wiring at MS MARCO's layout: each shipped recipe, its models swapped
    for tiny local ones and its budget for 2 steps a stage, reads the prepared folder (the
    candidate groups, the precomputed scores, mining over corpus.jsonl), trains every stage
    and evaluates on dev."""
    from raykd.pipeline.runner import RecipeRunner

    shipped = load_recipe(bundled_path(name))
    recipe = load_recipe(bundled_path(name), tiny_overrides(
        shipped, prepared, tiny_encoder_dir, tiny_cross_encoder_dir, tmp_path / "out"))
    summary = RecipeRunner(recipe, echo=quiet).run()
    assert [s["name"] for s in summary["stages"]] == [s.name for s in shipped.stages]
    assert all(s["steps"] == 2 for s in summary["stages"])
    assert all("RR@10" in s["metrics"] for s in summary["stages"])
    assert Path(summary["student"]).is_dir()

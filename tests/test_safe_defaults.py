"""Safe defaults: no remote code unless a recipe asks, nothing unpickled from score or candidate
files, and the servers raykd starts or documents bind to 127.0.0.1."""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raykd.config import student_spec, teacher_spec
from raykd.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("raykd", "jobs", "bench") for p in (ROOT / d).rglob("*.py"))
LOADERS = {"from_pretrained", "SentenceTransformer", "CrossEncoder", "pipeline"}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            yield name, node


# ------------------------------------------------------------------ remote code


def test_no_model_loader_hardcodes_trust_remote_code():
    """Every from_pretrained / SentenceTransformer call passes the recipe's flag (a name or an
    attribute), a **kwargs built from it, or nothing (transformers' default is False): never a
    literal True. A function taking `trust_remote_code` requires it or defaults it to False."""
    offenders, loaders = [], 0
    for path in SOURCES:
        for name, call in _calls(path):
            if name not in LOADERS:
                continue
            loaders += 1
            for kw in call.keywords:
                if kw.arg == "trust_remote_code" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False) and \
                        not isinstance(kw.value, (ast.Name, ast.Attribute)):
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = fn.args.args + fn.args.kwonlyargs
                defaults = ([None] * (len(fn.args.args) - len(fn.args.defaults))
                            + list(fn.args.defaults) + list(fn.args.kw_defaults))
                for arg, default in zip(args, defaults, strict=True):
                    if arg.arg == "trust_remote_code" and default is not None and not (
                            isinstance(default, ast.Constant) and default.value is False):
                        offenders.append(f"{path.relative_to(ROOT)}:{fn.lineno} ({fn.name})")
    assert loaders > 10, "the audit found no model loaders: it is looking in the wrong place"
    assert not offenders, offenders


def test_recipe_specs_default_to_no_remote_code():
    assert student_spec().trust_remote_code is False
    assert teacher_spec(kind="cross_encoder", model="minilm").trust_remote_code is False


EVIL_CONFIG = '''
import os
from transformers import PretrainedConfig

open(os.environ["RAYKD_EVIL_MARKER"], "w").write("remote code ran")


class EvilConfig(PretrainedConfig):
    model_type = "raykd-evil"
'''


@pytest.fixture
def evil_model(tmp_path, minilm_path, monkeypatch):
    """A model folder whose config asks for custom code that writes a marker when imported."""
    folder = tmp_path / "evil-model"
    folder.mkdir()
    for name in os.listdir(minilm_path):
        if name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(Path(minilm_path) / name, folder / name)
    (folder / "configuration_evil.py").write_text(EVIL_CONFIG)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "raykd-evil",
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModel": "configuration_evil.EvilConfig",
                     "AutoModelForSequenceClassification": "configuration_evil.EvilConfig"}}))
    marker = tmp_path / "remote-code-ran"
    monkeypatch.setenv("RAYKD_EVIL_MARKER", str(marker))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    return str(folder), marker


def _loaders(path: str, trust: bool):
    from raykd.students import BiEncoder
    from raykd.students.late_interaction import LateInteractionEncoder
    from raykd.teachers.factory import build_teacher

    yield "BiEncoder", lambda: BiEncoder.from_pretrained(path, trust_remote_code=trust)
    yield "LateInteractionEncoder", lambda: LateInteractionEncoder.from_pretrained(
        path, trust_remote_code=trust)
    for kind in ("cross_encoder", "bi_encoder", "late_interaction"):
        spec = teacher_spec(kind=kind, model=path, trust_remote_code=trust)
        yield f"{kind} teacher", lambda spec=spec: build_teacher(spec)


def test_models_never_run_remote_code_unless_the_recipe_says(evil_model):
    """Guards arbitrary code execution from a model folder: with the default flag every raykd
    loader refuses the custom code (the marker is never written); with the recipe's
    `trust_remote_code: true` the same folder does run it (so the probe can see execution)."""
    path, marker = evil_model
    for name, load in _loaders(path, trust=False):
        with pytest.raises(Exception):  # noqa: B017 - transformers' own refusal
            load()
        assert not marker.exists(), f"{name} ran the model folder's code by default"
    name, load = next(_loaders(path, trust=True))
    try:
        load()
    except Exception:  # the config class is not a model: loading fails after the import
        pass
    assert marker.exists(), "with trust_remote_code the probe's code should have run"


# ------------------------------------------------------------------ pickles

UNPICKLERS = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\bcloudpickle\.loads?\("), "cloudpickle.load"),
    (re.compile(r"\bread_pickle\("), "pandas.read_pickle"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"\bjoblib\.load\("), "joblib.load"),
    (re.compile(r"\bdill\.loads?\("), "dill.load"),
    (re.compile(r"set_auto_load\(\s*True"), "pyarrow PyExtensionType auto-load"),
]


def test_nothing_in_raykd_unpickles_files():
    """No unpickling call anywhere in raykd, its jobs or benches, and every torch.load passes
    weights_only=True (tensors only)."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for pattern, what in UNPICKLERS:
            for m in pattern.finditer(text):
                found.append(f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
                             f" {what}")
        for name, call in _calls(path):
            if name == "load" and isinstance(call.func, ast.Attribute) and \
                    getattr(call.func.value, "id", None) == "torch":
                flag = {kw.arg: kw.value for kw in call.keywords}.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    found.append(f"{path.relative_to(ROOT)}:{call.lineno} torch.load")
    assert not found, found


class _Payload:
    """Unpickling this creates the marker file: proof that something unpickled it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_parquet(path: Path, marker: Path) -> Path:
    """Candidate groups whose `qid` column claims pyarrow's pickled extension type: a reader
    that honoured it would unpickle the payload."""
    payload = pickle.dumps(_Payload(marker))
    field = pa.field("qid", pa.binary(), metadata={
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": payload})
    table = pa.table({"qid": pa.array([b"q1"]), "query": ["a"], "pids": [["p"]],
                      "texts": [["t"]], "labels": pa.array([[1]], pa.list_(pa.int32())),
                      "teacher_scores": [[1.0]]})
    table = table.cast(pa.schema([field, *list(table.schema)[1:]]))
    pq.write_table(table, path)
    return path


def _readers():
    from raykd.data import groups
    from raykd.teachers.precomputed import PrecomputedTeacher

    yield "iter_groups_parquet", lambda p: list(groups.iter_groups_parquet(p))
    yield "iter_groups_jsonl", lambda p: list(groups.iter_groups_jsonl(p))
    yield "PrecomputedTeacher", PrecomputedTeacher
    yield "PrecomputedTeacher(hofstatter_ids)", lambda p: PrecomputedTeacher(
        p, format="hofstatter_ids")


def test_pickle_payloads_in_score_and_candidate_files_are_never_executed(tmp_path):
    """Guards code execution through data files: a parquet whose column claims the pickled
    extension type, and a raw pickle saved as .jsonl / .tsv, are rejected with a DataError (or
    read as plain bytes) and the payload never runs."""
    marker = tmp_path / "unpickled"
    files = {"iter_groups_parquet": _pickle_parquet(tmp_path / "g.parquet", marker),
             "PrecomputedTeacher": tmp_path / "g.parquet"}
    raw = tmp_path / "g.jsonl"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    files["iter_groups_jsonl"] = raw
    tsv = tmp_path / "scores.tsv"
    tsv.write_bytes(pickle.dumps(_Payload(marker)) + b"\n")
    files["PrecomputedTeacher(hofstatter_ids)"] = tsv
    for name, read in _readers():
        with pytest.raises(DataError) as info:
            read(files[name])
        assert str(files[name]) in str(info.value), (name, info.value)
        assert not marker.exists(), f"{name} unpickled a payload from {files[name]}"
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is live: it does create it
    assert marker.exists()


def test_score_cache_ignores_pickled_extension_metadata(tmp_path):
    """The score cache reads parquet parts written by raykd; a part crafted with a pickled
    extension column must not be unpickled either."""
    from raykd.teachers.cache import ScoreCache

    marker = tmp_path / "unpickled"
    cache = ScoreCache(tmp_path / "cache", "fp")
    cache.put(["q"], ["p"], [1.0])
    part = next((tmp_path / "cache").rglob("part-*.parquet"))
    table = pq.read_table(part)
    first = table.schema.field(0)
    evil = pa.field(first.name, first.type, metadata={
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": pickle.dumps(_Payload(marker))})
    pq.write_table(table.cast(pa.schema([evil, *list(table.schema)[1:]])), part)
    try:
        ScoreCache(tmp_path / "cache", "fp").lookup(["q"], ["p"])
    except Exception:  # noqa: S110 - refusing the part is fine; running the payload is not
        pass
    assert not marker.exists()


# ------------------------------------------------------------------ servers


def test_local_ray_binds_its_dashboard_to_loopback(monkeypatch):
    """raykd.runtime.init_ray on a laptop starts Ray's dashboard on 127.0.0.1 only (nothing
    listens on other interfaces beyond Ray's own ports), and under RAY_ADDRESS only connects
    (starts no server)."""
    import ray

    from raykd import runtime

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv(runtime.RAY_MODE_ENV, "local")  # init_ray sets it: restored after
    runtime.init_ray(num_cpus=2)
    local = calls[-1]
    assert local.get("dashboard_host") == "127.0.0.1"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    runtime.init_ray()
    remote = calls[-1]
    assert "include_dashboard" not in remote and "dashboard_host" not in remote


def test_every_ray_init_in_raykd_keeps_the_dashboard_local():
    """Every ray.init in raykd, its jobs and benches either turns the dashboard off, binds it
    to 127.0.0.1, or only connects to an existing cluster (no num_cpus: it starts nothing)."""
    bad = []
    for path in SOURCES:
        for name, call in _calls(path):
            if name != "init" or getattr(getattr(call.func, "value", None), "id", None) != "ray":
                continue
            kw = {k.arg: k.value for k in call.keywords}
            starts = "num_cpus" in kw or ("address" in kw and getattr(
                kw["address"], "value", None) == "local")
            off = isinstance(kw.get("include_dashboard"), ast.Constant) and \
                kw["include_dashboard"].value is False
            host = kw.get("dashboard_host")
            local = isinstance(host, ast.Constant) and host.value in ("127.0.0.1", "localhost")
            if starts and not (off or local):
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not bad, bad


def test_documented_mlflow_ui_binds_to_localhost():
    """The README's `mlflow ui` command sets no host, so it serves on mlflow's default, which
    must be 127.0.0.1; a documented --host must be 127.0.0.1 too."""
    import mlflow.cli

    host = next(p for p in mlflow.cli.server.params if p.name == "host")
    assert host.default == "127.0.0.1"
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"mlflow (?:ui|server)[^`\n|]*", readme)
    assert commands, "the README documents no mlflow ui command"
    for command in commands:
        m = re.search(r"--host[ =](\S+)", command)
        assert m is None or m.group(1) == "127.0.0.1", command


def test_test_suite_mlflow_server_binds_to_localhost():
    """The suite's own MLflow server (tests/conftest.py) listens on 127.0.0.1 only."""
    text = (ROOT / "tests" / "conftest.py").read_text()
    assert '"--host", "127.0.0.1"' in text and "0.0.0.0" not in text


def test_a_recipe_that_trusts_remote_code_passes_it_to_the_student_loader():
    """Guards the one opt-in: `student.trust_remote_code: true` reaches `from_pretrained`
    (and is absent, so False, otherwise)."""
    from raykd.config import student_spec

    assert "trust_remote_code" not in student_spec().options()
    assert student_spec(trust_remote_code=True).options()["trust_remote_code"] is True
    late = student_spec(kind="late_interaction", trust_remote_code=True)
    assert late.options()["trust_remote_code"] is True

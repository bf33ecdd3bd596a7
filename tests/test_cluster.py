"""A real two-node Ray cluster on 127.0.0.1 (`ray start --head` + `ray start --address`), jobs
submitted through the Ray Jobs CLI, outputs on a `file://` storage URI (the pyarrow URI code
path: Ray Train checkpoints and MLflow artefacts written there directly, the driver's files
synced through a local mirror), and stop / resubmit resuming from a checkpoint (marked
``slow``: ``make test-full``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               # bound to 127.0.0.1 and the same with or without a token in ~/.ray
               RAY_AUTH_MODE="disabled",
               # Ray gives the head's dashboard 60 s to come up; on two busy cores it took
               # longer and `ray start` failed (the suite beside a benchmark)
               RAY_DASHBOARD_STARTUP_TIMEOUT_S="240")
    env.update(extra)
    return env


def _node_args(ports: list[int]) -> list[str]:
    """Every port a node binds, chosen free, so that other Ray instances on this machine (on
    the default ports) are never touched."""
    agent, grpc, runtime_env, metrics = ports
    return ["--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={grpc}", f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}", "--num-gpus=0", "--disable-usage-stats",
            "--block"]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _stop(procs: list[subprocess.Popen], temp_dir: str) -> None:
    """Scoped teardown: signal the process groups of our own `ray start --block` processes
    (never `ray stop`, which ends every Ray on the machine), then anything left that runs
    under our temp dir."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(scope="module")
def ray_cluster():
    """`ray start --head` (3 CPUs) plus a second node with `ray start --address` (2 CPUs), on
    free ports and a temp dir of their own; yields the dashboard (Jobs API) address."""
    temp_dir = tempfile.mkdtemp(prefix="rkd-", dir="/tmp")  # short: Ray's unix sockets
    gcs, dashboard, client, *rest = _free_ports(7)
    logs = Path(temp_dir) / "launch"
    logs.mkdir()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
             "--dashboard-host=127.0.0.1", "--include-dashboard=true",
             f"--ray-client-server-port={client}", "--num-cpus=3", f"--temp-dir={temp_dir}",
             *_node_args(rest[:4])],
            env=_env(), start_new_session=True, stdout=open(logs / "head.log", "w"),
            stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{dashboard}"
        _wait(lambda: _get_json(f"{url}/api/version"), 300, "the head's dashboard",
              logs / "head.log")

        def two_nodes():
            nodes = _get_json(f"{url}/api/v0/nodes")["data"]["result"]["result"]
            return sum(n["state"] == "ALIVE" for n in nodes) == 2 or None

        def join(attempt: int) -> tuple[subprocess.Popen, str, Path]:
            worker_dir, log = f"{temp_dir}/w{attempt}", logs / f"worker{attempt}.log"
            worker = subprocess.Popen(
                # its own temp dir: two nodes on one machine must not share runtime_resources
                # (a node's runtime-env agent deletes the packages only the other one uses)
                [RAY, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                 f"--temp-dir={worker_dir}", *_node_args(_free_ports(4))],
                env=_env(), start_new_session=True, stdout=open(log, "w"),
                stderr=subprocess.STDOUT)
            procs.append(worker)
            return worker, worker_dir, log

        _start_until_ready(join, two_nodes, "the second node")
        yield url
    finally:
        _stop(procs, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_until_ready(start, ready, what: str, attempts: int = 3, timeout: float = 300) -> int:
    """`start(attempt)` -> (process, its temp dir, its log), until `ready()` holds; returns the
    attempt that made it. Ray gives a joining raylet a fixed 30 s to register with the GCS,
    after which `ray start` exits (on two busy cores that ran out once in CI): a process that
    exits is cleared away and started again, on fresh ports and a fresh temp dir."""
    for attempt in range(attempts):
        process, temp_dir, log = start(attempt)
        if _wait(ready, timeout, what, log, unless_exited=process):
            return attempt
        _stop([process], temp_dir)
    raise RuntimeError(f"{what}: its start exited {attempts} times\n{log.read_text()[-3000:]}")


def test_a_node_start_that_exits_is_started_again_then_given_up(tmp_path):
    """Guards the cluster fixture's restart: a start whose process exits before the node is
    ready is stopped and tried again (the second, lasting one is kept); one that exits every
    time fails with its log's tail, after `attempts` tries and without waiting out the timeout."""
    started = []

    def start(attempt, exits=lambda attempt: attempt == 0):
        log = tmp_path / f"start{attempt}.log"
        log.write_text(f"attempt {attempt}\n")
        script = "exit 1" if exits(attempt) else "sleep 60"
        process = subprocess.Popen(["sh", "-c", script], start_new_session=True)
        started.append(process)
        return process, str(tmp_path / f"t{attempt}"), log

    def ready():
        return len(started) == 2 and started[1].poll() is None

    began = time.time()
    assert _start_until_ready(start, ready, "a node", timeout=30) == 1
    assert started[0].returncode == 1 and started[1].poll() is None
    _stop([started[1]], str(tmp_path / "t1"))
    started.clear()
    with pytest.raises(RuntimeError, match="exited 3 times\nattempt 2"):
        _start_until_ready(lambda a: start(a, exits=lambda _: True), lambda: None, "a node",
                           timeout=30)
    assert len(started) == 3 and time.time() - began < 30


def _wait(probe, timeout: float, what: str, log: Path | None = None,
          unless_exited: subprocess.Popen | None = None):
    """Poll `probe` until it returns a true value (returned); None at once if the process
    `unless_exited` ends first; TimeoutError with the log's tail after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, KeyError, ValueError):
            pass
        if unless_exited is not None and unless_exited.poll() is not None:
            return None
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready in {timeout:.0f}s\n{tail}")


def _jobs(address: str, *args: str, check: bool = True) -> str:
    command, *rest = args  # --address before any `--` entrypoint
    out = subprocess.run([RAY, "job", command, "--address", address, *rest], env=_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise RuntimeError(f"ray job {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout + out.stderr


def _submit(address: str, recipe: Path, storage: str, mirror: Path, job_id: str) -> None:
    """`ray job submit --working-dir .` of jobs/adam.py on the recipe (the repository travels,
    .venv and outputs stay behind)."""
    runtime_env = {"env_vars": {"RAYKD_LOCAL_DIR": str(mirror)}}
    _jobs(address, "submit", "--no-wait", "--submission-id", job_id, "--working-dir", ".",
          "--runtime-env-json", json.dumps(runtime_env), "--",
          "python", "jobs/adam.py", "--recipe", str(recipe), "--storage", storage)


def _status(address: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(job_id).value)


def _wait_job(address: str, job_id: str, want: str, timeout: float = 600) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = _status(address, job_id)
        if status in ("STOPPED", "SUCCEEDED", "FAILED"):
            break
        time.sleep(1)
    from ray.job_submission import JobSubmissionClient

    logs = JobSubmissionClient(address).get_job_logs(job_id)
    assert status == want, f"job {job_id} is {status}, not {want}:\n{logs[-5000:]}"
    return logs


def _recipe(path: Path, name: str, toy_beir_dir: str, tiny_encoder_dir: str, tracking: str,
            max_steps: int, checkpoint_every: int) -> Path:
    recipe = {
        "name": name, "method": "adam", "test_split": None,
        "teacher_concurrency": 1, "teacher_corpus_store": False,
        "student": {"model": tiny_encoder_dir, "pooling": "mean", "similarity": "dot",
                    "passage_max_length": 24, "query_max_length": 12},
        "tracking": {"tracking_uri": tracking, "experiment": "cluster"},
        "stages": [{
            "name": "distill",
            "teacher": {"kind": "bm25"},
            "data": {"dataset": toy_beir_dir, "split": "train", "negatives_from": "bm25",
                     "depth": 10, "num_negatives": 3},
            "dark": {"enabled": True, "k": 1},
            "loss": {"name": "adam", "params": {"rho": 0.5}},
            "train": {"num_workers": 1, "batch_size": 4, "max_steps": max_steps, "lr": 1e-3,
                      "log_every": 1, "checkpoint_every": checkpoint_every},
            "eval": {"split": "dev", "k": 10},
        }],
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def _steps(logs: str, stage: str) -> list[int]:
    return [int(s) for s in re.findall(rf"\[raykd\] {stage} step (\d+)/", logs)]


def _storage(tmp_path: Path) -> tuple[Path, str, str, Path]:
    """The store folder, its file:// URI (resolved through pyarrow.fs, as s3:// would be), an
    MLflow tracking URI and the job's local mirror."""
    store = tmp_path / "store"
    return store, store.as_uri(), f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "mirror"


def test_a_submitted_job_runs_on_a_two_node_cluster_with_uri_storage(
        ray_cluster, toy_beir_dir, tiny_encoder_dir, tmp_path):
    """Guards running on a cluster: a job submitted with `ray job submit` reaches SUCCEEDED
    with its checkpoints, scores and MLflow artefacts under the storage URI and its run in
    MLflow."""
    from mlflow.tracking import MlflowClient

    store, storage, tracking, mirror = _storage(tmp_path)
    quick = _recipe(tmp_path / "quick.yaml", "quick", toy_beir_dir, tiny_encoder_dir,
                    tracking, max_steps=4, checkpoint_every=2)
    _submit(ray_cluster, quick, storage, mirror, "raykd-quick")
    logs = _wait_job(ray_cluster, "raykd-quick", "SUCCEEDED")
    assert "[raykd] quick: 1 stage(s)" in logs
    assert _steps(logs, "distill") == [1, 2, 3, 4]  # each progress line once
    assert list((store / "quick" / "train").glob("quick-distill/checkpoint_*"))
    assert (store / "quick" / "stages" / "00-distill" / "done.json").exists()
    assert (store / "quick" / "student" / "config.json").exists()
    assert list((store / "score_cache").glob("bm25-*/bucket=*/part-*.parquet"))
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("cluster")
    assert experiment.artifact_location == (store / "mlartifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id], "tags.`raykd.run` = 'quick'")
    parent = next(r for r in runs if r.data.tags["raykd.stage"] == "")
    child = next(r for r in runs if r.data.tags["raykd.stage"] == "distill")
    assert parent.info.status == child.info.status == "FINISHED"
    assert "dev/nDCG_at_10" in child.data.metrics
    assert child.data.tags["lineage.score_cache"] == f"{storage}/score_cache"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == \
        [1, 2, 3, 4]
    # the student, an MLflow model of the run, under the storage URI (a sqlite run store)
    assert list((store / "mlartifacts").glob(
        "models/*/artifacts/model.sentence_transformer/config.json"))


@pytest.mark.slow
def test_a_stopped_job_resumes_from_its_uri_checkpoint(ray_cluster, toy_beir_dir,
                                                       tiny_encoder_dir, tmp_path):
    """Guards resuming on a cluster: a job stopped with `ray job stop` after a checkpoint,
    resubmitted under the same name with an empty local mirror, resumes from the URI at its
    checkpoint's step, not at step 0, in the same MLflow run."""
    from mlflow.tracking import MlflowClient

    store, storage, tracking, mirror = _storage(tmp_path)
    # Long enough that `ray job stop` lands well before the end (a checkpoint every 4 steps
    # costs seconds; the stop follows the first one), short enough to keep the suite fast.
    total = 48
    long = _recipe(tmp_path / "long.yaml", "long", toy_beir_dir, tiny_encoder_dir, tracking,
                   max_steps=total, checkpoint_every=4)
    _submit(ray_cluster, long, storage, mirror, "raykd-long-1")
    train_dir = store / "long" / "train" / "long-distill"
    # Two checkpoint folders: the first is then complete and registered by Ray Train (a
    # folder that is still being uploaded is not a checkpoint to resume from).
    _wait(lambda: len({p.parent for p in train_dir.glob("checkpoint_*/*")}) >= 2, 600,
          "two checkpoints of the long job")
    _jobs(ray_cluster, "stop", "raykd-long-1")
    first = _wait_job(ray_cluster, "raykd-long-1", "STOPPED", timeout=60)
    stopped_at = max(_steps(first, "distill"))
    assert 8 <= stopped_at < total
    shutil.rmtree(mirror)  # the resubmission sees only the URI, as on another node

    _submit(ray_cluster, long, storage, mirror, "raykd-long-2")
    second = _wait_job(ray_cluster, "raykd-long-2", "SUCCEEDED")
    assert "storage: pulled" in second
    resumed = _steps(second, "distill")
    assert resumed[-1] == total
    assert resumed[0] > 4 and resumed[0] % 4 == 1, \
        f"resubmission started at step {resumed[0]}, not after a checkpoint"
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("cluster")
    runs = client.search_runs([experiment.experiment_id], "tags.`raykd.run` = 'long'")
    child = next(r for r in runs if r.data.tags["raykd.stage"] == "distill")
    steps = {m.step for m in client.get_metric_history(child.info.run_id, "train/loss")}
    assert steps >= set(range(resumed[0], total + 1)) and 1 in steps  # one MLflow run, both halves
    assert next(r for r in runs if r.data.tags["raykd.stage"] == "").info.status == "FINISHED"


def _readme_local_head() -> list[str]:
    """The README's local-head commands (the indented block after "A local head works")."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("A local head works"):].split("\n\n")[1]
    assert all(line.startswith("    ") for line in block.splitlines()), block
    return [line[4:] for line in block.splitlines()]


def _descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (by parent pid), from /proc."""
    parent = {}
    for pid in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent[int(pid)] = int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, grew = set(roots), True
    while grew:
        more = {p for p, pp in parent.items() if pp in found} - found
        found |= more
        grew = bool(more)
    return found


def _in_group(pgid: int) -> set[int]:
    out = set()
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.getpgid(int(pid)) == pgid:
                out.add(int(pid))
        except OSError:
            continue
    return out


@pytest.mark.slow
def test_the_readme_local_head_commands_run_a_quick_job(tmp_path):
    """Guards the README's "Running on a cluster" local-head commands, run as written by bash
    in a copy of the checkout (its `.venv` linked): the venv activated, the auth token, token
    auth kept on, `ray start --head` with 2 CPUs, `ray job submit` of `jobs/adam.py --quick`.
    Only free ports and a temp dir are added to `ray start` (and `--num-cpus=2`, the head this
    machine has), and the dashboard port in `--address`; no other environment variable is set
    and the venv is not on PATH. The job succeeds, and the student and its MLflow run are under
    the `--storage` it names, not in Ray's session folder."""
    from mlflow.tracking import MlflowClient

    repo = tmp_path / "raykd"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        if (ROOT / rel).is_file() and not (ROOT / rel).is_symlink():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    (repo / ".venv").symlink_to(BIN.parent)
    temp_dir = tempfile.mkdtemp(prefix="rkd-", dir="/tmp")
    gcs, dashboard, client, *rest = _free_ports(7)
    agent, grpc, runtime_env, metrics = rest
    own = (f" --port={gcs} --dashboard-port={dashboard} --ray-client-server-port={client}"
           f" --dashboard-agent-listen-port={agent} --dashboard-agent-grpc-port={grpc}"
           f" --runtime-env-agent-port={runtime_env} --metrics-export-port={metrics}"
           f" --temp-dir={temp_dir} --num-cpus=2 --num-gpus=0")
    lines = []
    for line in _readme_local_head():
        if line.startswith("ray start --head"):
            line = line.split("#")[0].rstrip() + own
        lines.append(line.replace("127.0.0.1:8265", f"127.0.0.1:{dashboard}"))
    assert any(line.startswith("ray job submit") for line in lines)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "RAYKD_", "MLFLOW_")) and k != "VIRTUAL_ENV"}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":")
                           if p and Path(p).resolve() != BIN.resolve())
    log = tmp_path / "commands.log"
    script = "set -eu\n" + "\n".join(lines) + "\n"
    proc = subprocess.Popen(["bash", "-c", script], cwd=repo, env=env, start_new_session=True,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        rc = proc.wait(timeout=1500)
        out = log.read_text()
        assert rc == 0, f"the README's commands failed ({rc}):\n{out[-6000:]}"
    finally:
        ours = _descendants(_in_group(proc.pid) | {proc.pid})
        for pid in ours:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        time.sleep(5)
        for pid in _descendants(ours) | _in_group(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _stop([], temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    store = repo / "outputs"
    assert "Job 'raysubmit_" in out and "succeeded" in out
    assert f"student: {store / 'adam-quick' / 'student'}" in out
    assert (store / "adam-quick" / "student" / "config.json").exists()
    assert (store / "adam-quick" / "results.json").exists()
    assert (store / ".rayignore").exists()  # created by the job: never uploaded
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = [r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id], "tags.`raykd.run` = 'adam-quick'")]
    assert runs and all(r.info.status == "FINISHED" for r in runs)

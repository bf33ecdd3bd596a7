"""cluster/ is validated, not just present: the launcher YAML against Ray's own schema, the
KubeRay manifests against a Kubernetes schema, the runtime envs by Ray's RuntimeEnv."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
K8S_VERSION = "1.30"

# The part of KubeRay's ray.io/v1 CRDs (RayCluster, RayJob) that raykd's manifests use, strict:
# an unknown or misspelt field, a wrong type or a non-string rayStartParams value fails. Pod
# templates are checked separately against Kubernetes' own PodTemplateSpec schema.
_GROUP_COMMON = {
    "rayStartParams": {"type": "object", "additionalProperties": {"type": "string"}},
    "template": {"type": "object"},
}
_HEAD = {"type": "object", "additionalProperties": False, "required": ["template"],
         "properties": {**_GROUP_COMMON,
                        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "enableIngress": {"type": "boolean"}}}
_WORKER = {"type": "object", "additionalProperties": False, "required": ["groupName", "template"],
           "properties": {**_GROUP_COMMON,
                          "groupName": {"type": "string", "minLength": 1},
                          "replicas": {"type": "integer", "minimum": 0},
                          "minReplicas": {"type": "integer", "minimum": 0},
                          "maxReplicas": {"type": "integer", "minimum": 0},
                          "numOfHosts": {"type": "integer", "minimum": 1},
                          "idleTimeoutSeconds": {"type": "integer"},
                          "suspend": {"type": "boolean"}}}
RAY_CLUSTER_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["headGroupSpec"],
    "properties": {"rayVersion": {"type": "string"},
                   "enableInTreeAutoscaling": {"type": "boolean"},
                   "autoscalerOptions": {"type": "object"},
                   "headGroupSpec": _HEAD,
                   "workerGroupSpecs": {"type": "array", "items": _WORKER},
                   "suspend": {"type": "boolean"}}}
_METADATA = {"type": "object", "required": ["name"],
             "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                            "labels": {"type": "object",
                                       "additionalProperties": {"type": "string"}}}}
KUBERAY = {
    "RayCluster": {"type": "object", "additionalProperties": False,
                   "required": ["apiVersion", "kind", "metadata", "spec"],
                   "properties": {"apiVersion": {"const": "ray.io/v1"},
                                  "kind": {"const": "RayCluster"},
                                  "metadata": _METADATA, "spec": RAY_CLUSTER_SPEC}},
    "RayJob": {"type": "object", "additionalProperties": False,
               "required": ["apiVersion", "kind", "metadata", "spec"],
               "properties": {"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayJob"},
                              "metadata": _METADATA,
                              "spec": {"type": "object", "additionalProperties": False,
                                       "required": ["entrypoint"],
                                       "properties": {
                                           "entrypoint": {"type": "string", "minLength": 1},
                                           "runtimeEnvYAML": {"type": "string"},
                                           "submissionMode": {"enum": ["K8sJobMode",
                                                                       "HTTPMode",
                                                                       "InteractiveMode",
                                                                       "SidecarMode"]},
                                           "shutdownAfterJobFinishes": {"type": "boolean"},
                                           "ttlSecondsAfterFinished": {"type": "integer",
                                                                       "minimum": 0},
                                           "activeDeadlineSeconds": {"type": "integer",
                                                                     "minimum": 1},
                                           "backoffLimit": {"type": "integer", "minimum": 0},
                                           "suspend": {"type": "boolean"},
                                           "rayClusterSpec": RAY_CLUSTER_SPEC,
                                           "clusterSelector": {"type": "object"}}}}},
}


def ray_cluster_specs(doc: dict) -> list[dict]:
    return [doc["spec"]] if doc["kind"] == "RayCluster" else [doc["spec"]["rayClusterSpec"]]


def validate_manifest(doc: dict) -> None:
    """A KubeRay document against the CRD subset and its pod templates against Kubernetes'
    PodTemplateSpec (strict); a built-in kind against Kubernetes' schema (strict)."""
    if doc["kind"] not in KUBERAY:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return
    jsonschema.validate(doc, KUBERAY[doc["kind"]])
    for spec in ray_cluster_specs(doc):
        for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
            kubernetes_validate.validate(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                 "template": group["template"]}, K8S_VERSION, strict=True)
    if doc["kind"] == "RayJob" and "runtimeEnvYAML" in doc["spec"]:
        check_runtime_env(yaml.safe_load(doc["spec"]["runtimeEnvYAML"]))


def check_runtime_env(raw: dict) -> None:
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**{k: v for k, v in raw.items() if k != "working_dir"})  # validates fields
    assert raw["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    if "pip" in raw:
        assert set(raw["pip"]["packages"]) >= project_dependencies(), \
            "the runtime env's pip list lags pyproject.toml"


def project_dependencies() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {d for d in deps if not d.startswith("ray")}


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        out.extend((f"{path.name}:{i}", doc) for i, doc in
                   enumerate(yaml.safe_load_all(path.read_text())) if doc)
    return out


def ray_up_check(config: dict) -> dict:
    """What `ray up` checks before it launches anything: Ray's defaults filled in, then
    `validate_config` against ray/autoscaler/ray-schema.json."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_config_passes_rays_schema():
    """Guards `ray up cluster/aws.yaml`: Ray's schema accepts the file, raw and as `ray up`
    prepares it; a misspelt or mistyped field is refused by the same check."""
    import ray.autoscaler

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = ray_up_check(config)
    assert prepared["available_node_types"]["gpu_worker"]["max_workers"] == 4
    assert prepared["head_node_type"] == "head"
    assert any("make setup" in c for c in config["setup_commands"])
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["min_worker"] = 1  # typo of min_workers
    with pytest.raises(jsonschema.ValidationError):
        ray_up_check(broken)
    broken = copy.deepcopy(config)
    broken["max_workers"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("name,doc", manifests(), ids=[n for n, _ in manifests()])
def test_kuberay_manifests_validate(name, doc):
    """Guards `kubectl apply -f cluster/kuberay/`: every document passes its schema."""
    validate_manifest(doc)


def test_rayjob_runs_adam_and_manifests_cover_the_kinds():
    docs = {doc["kind"]: doc for _, doc in manifests()}
    assert {"RayCluster", "RayJob", "Deployment", "Service"} <= set(docs)
    jobs = {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == "RayJob"}
    assert jobs["raykd-adam"]["spec"]["entrypoint"].startswith("python jobs/adam.py")
    assert "msmarco/$RAYKD_RECIPE" in jobs["raykd-msmarco"]["spec"]["entrypoint"]


@pytest.mark.parametrize("mutate,why", [
    (lambda d: d["spec"]["workerGroupSpecs"][0].update(replicas="two"), "replicas type"),
    (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "rayStartParams values are strings"),
    (lambda d: d["spec"]["headGroupSpec"].update(rayStartParam={}), "unknown field"),
    (lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]
     .update(containerPort="6379"), "a pod template field of the wrong type"),
    (lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
     .update(imagePullPolcy="Always"), "a misspelt container field"),
])
def test_a_broken_manifest_fails_validation(mutate, why):
    """Guards the check itself: a mutated copy of the RayCluster fails (%s)."""
    doc = next(d for _, d in manifests() if d["kind"] == "RayCluster")
    broken = copy.deepcopy(doc)
    mutate(broken)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate_manifest(broken)


def test_a_broken_builtin_manifest_fails_validation():
    doc = next(d for _, d in manifests() if d["kind"] == "Deployment")
    broken = copy.deepcopy(doc)
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(broken)


@pytest.mark.parametrize("name", ["runtime_env.yaml", "runtime_env_pip.yaml"])
def test_runtime_envs_are_valid(name):
    """Guards `--runtime-env cluster/...`: Ray's RuntimeEnv accepts them, the pip list keeps
    up with pyproject.toml, and .venv / outputs never travel with the working dir."""
    raw = yaml.safe_load((CLUSTER / name).read_text())
    check_runtime_env(raw)
    assert raw["working_dir"] == "."
    assert {".venv", "outputs", ".git"} <= set(raw["excludes"])


def _node_offers(spec: dict) -> tuple[dict, dict, int]:
    """(head, worker pod, max workers): each as {"CPU", "GPU", "mounts"} from the manifest."""
    def offer(group: dict, ray_cpus: str | None) -> dict:
        container = group["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        return {"CPU": float(ray_cpus if ray_cpus is not None else limits["cpu"]),
                "GPU": float(limits.get("nvidia.com/gpu", 0)),
                "mounts": {m["mountPath"] for m in container.get("volumeMounts", [])}}

    head = spec["headGroupSpec"]
    (worker,) = spec["workerGroupSpecs"]
    return (offer(head, head["rayStartParams"].get("num-cpus")),
            offer(worker, worker["rayStartParams"].get("num-cpus")), worker["maxReplicas"])


def msmarco_actors(recipe, tmp_path) -> list[tuple[str, int, float, float, bool]]:
    """(what, how many, CPUs each, GPUs each, pinned to the driver's node) for every actor a
    recipe's stages ask for: trainers, the teacher pool, dense encoding (mining and
    evaluation) and the faiss searcher, as the pipeline places them (`RunContext`)."""
    from raykd.pipeline.context import RunContext

    ctx = RunContext(recipe.model_copy(update={"storage": str(tmp_path)}))
    out = []
    for stage in recipe.stages:
        train = stage.train
        out.append((f"{stage.name} trainers", train.num_workers, train.cpus_per_worker,
                    1.0 if train.use_gpu else 0.0, False))
        if stage.teacher is not None and stage.teacher.kind != "precomputed":
            gpus = recipe.teacher_num_gpus
            out.append((f"{stage.name} teacher", recipe.teacher_concurrency,
                        0.0 if gpus else 1.0, gpus, False))
        if recipe.student.kind == "late_interaction":
            continue  # late-interaction evaluation and the collective teacher: out of scope
        mining = ctx.mining_resources(stage)
        gpus, searcher = mining["num_gpus"], mining["searcher"]
        out.append((f"{stage.name} encoders", mining["concurrency"], 0.0 if gpus else 1.0,
                    gpus, False))
        out.append((f"{stage.name} searcher", 1, searcher.cpus, gpus, searcher.pinned))
    return out


@pytest.mark.parametrize("name", ["adam", "ckl", "margin_mse", "prod", "collective_kd"])
def test_the_msmarco_rayjob_hosts_every_actor_its_recipes_ask_for(name, tmp_path):
    """Guards a paper-scale run that cannot start: every actor of an MS MARCO recipe (trainers,
    teacher pool, GPU corpus encoders, the faiss searcher) fits a node of the RayJob (the head
    offers 0 Ray CPUs, so nothing pinned to the driver's node may ask for a CPU), each pool fits
    the GPU group at its largest, and the corpus encodings live on the volume every pod mounts
    (the searcher may then run on a worker)."""
    from raykd.config import load_recipe
    from raykd.recipes import bundled_path

    job = next(d for _, d in manifests() if d["metadata"]["name"] == "raykd-msmarco"
               and d["kind"] == "RayJob")
    head, worker, replicas = _node_offers(job["spec"]["rayClusterSpec"])
    recipe = load_recipe(bundled_path(f"msmarco/{name}"))
    for what, count, cpus, gpus, pinned in msmarco_actors(recipe, tmp_path):
        node = head if pinned else worker
        assert cpus <= node["CPU"] and gpus <= node["GPU"], \
            f"{name}: {what} ({cpus} CPU, {gpus} GPU) fits no {'head' if pinned else 'worker'}"
        assert count * gpus <= replicas * worker["GPU"], f"{name}: {what} GPUs"
        assert count * cpus <= replicas * worker["CPU"], f"{name}: {what} CPUs"
    if recipe.student.kind != "late_interaction":
        cache = recipe.embedding_cache
        assert cache and all(any(cache.startswith(m + "/") for m in n["mounts"])
                             for n in (head, worker)), f"{name}: embedding_cache {cache}"


def test_a_searcher_pinned_to_the_head_does_not_fit(tmp_path):
    """Guards the check itself: without a shared embedding_cache the searcher is pinned to the
    driver's node, whose 0 Ray CPUs cannot host it."""
    from raykd.config import load_recipe
    from raykd.recipes import bundled_path

    recipe = load_recipe(bundled_path("msmarco/adam"), ["embedding_cache=null"])
    job = next(d for _, d in manifests() if d["kind"] == "RayJob"
               and d["metadata"]["name"] == "raykd-msmarco")
    head, _, _ = _node_offers(job["spec"]["rayClusterSpec"])
    (searcher,) = [a for a in msmarco_actors(recipe, tmp_path) if a[0].endswith("searcher")]
    assert searcher[4] and searcher[2] > head["CPU"]

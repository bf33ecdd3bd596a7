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

"""The cluster files as Ray and KubeRay read them: schema-valid, strict, and consistent with the configs."""

from __future__ import annotations

import functools
import gzip
import json
import math
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from raybind.config import load_config
from raybind.runtime import TRAIN_POLL_ENV, TRAIN_POLL_S, worker_env
from raybind.train.plan import worker_resources

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT.parent / "shared" / "kuberay-crds"   # the KubeRay CRDs (Apache-2.0), when this checkout has them
# Their v1 openAPIV3Schema, kept here (gzipped JSON) so a clean clone validates too; see the test below.
VENDORED_SCHEMAS = Path(__file__).with_name("kuberay_v1_schemas.json.gz")
RECIPES = sorted(p.name for p in (ROOT / "configs").glob("*_l14.yaml") if p.name != "languagebind_l14.yaml")


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def test_aws_config_passes_rays_own_validation_which_rejects_unknown_fields():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _yaml(ROOT / "cluster" / "aws.yaml")
    validate_config(prepare_config(config))
    config["available_node_types"]["data"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(config))


def _fits(need: dict[str, float], node: dict[str, float]) -> bool:
    return all(amount <= node.get(kind, 0.0) + 1e-9 for kind, amount in need.items() if amount > 0)


@pytest.mark.parametrize("recipe", RECIPES)
def test_aws_node_types_hold_what_each_recipe_asks_for(recipe):
    types = _yaml(ROOT / "cluster" / "aws.yaml")["available_node_types"]
    train, data = types["train"], types["data"]
    cfg = load_config(ROOT / "configs" / recipe)
    worker = worker_resources(cfg)
    assert cfg.ray.placement.train and cfg.ray.placement.data, "cluster recipes pin their stages"
    assert _fits(worker, train["resources"]) and not _fits(worker, data["resources"])
    per_node = min(math.floor(train["resources"][k] / v) for k, v in worker.items() if v > 0)
    assert math.ceil(cfg.train.num_workers / per_node) <= train["max_workers"]
    decode_task = {"CPU": cfg.data.decode.num_cpus, **cfg.ray.placement.data}
    assert _fits(decode_task, data["resources"]) and not _fits(decode_task, train["resources"])
    pool = cfg.data.synthesis
    if pool.num_gpus > 0:
        assert _fits({"CPU": pool.num_cpus, "GPU": pool.num_gpus, **cfg.ray.placement.train}, train["resources"])
    assert types["head"]["resources"] == {"CPU": 0}   # drivers only
    assert data["min_workers"] == train["min_workers"] == 0


def _strict(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the CRD schema does not declare (the API server would prune them silently)."""
    problems = []
    if isinstance(instance, dict) and schema.get("type") == "object" and "properties" in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, value in instance.items():
            if key not in schema["properties"]:
                problems.append(f"{path}.{key}")
            else:
                problems += _strict(value, schema["properties"][key], f"{path}.{key}")
    elif isinstance(instance, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in instance.items():
            problems += _strict(value, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            problems += _strict(item, schema["items"], f"{path}[{index}]")
    return problems


def _schema_from_crd(name: str) -> dict[str, Any]:
    crd = _yaml(CRDS / name)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


@functools.lru_cache(maxsize=None)
def _crd_schema(name: str) -> dict[str, Any]:
    return json.loads(gzip.decompress(VENDORED_SCHEMAS.read_bytes()))[name]


@pytest.mark.skipif(not CRDS.is_dir(), reason="no ../shared/kuberay-crds in this checkout: the vendored copy is used")
def test_vendored_schemas_are_the_shared_crds():
    for name in ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"):
        assert _crd_schema(name) == _schema_from_crd(name)


MANIFESTS = {"raycluster.yaml": "ray.io_rayclusters.yaml", "rayjob.yaml": "ray.io_rayjobs.yaml",
             "rayjob_sweep.yaml": "ray.io_rayjobs.yaml"}


@pytest.mark.parametrize("manifest, crd", MANIFESTS.items())
def test_kuberay_manifests_validate_strictly_against_the_crds(manifest, crd):
    document, schema = _yaml(ROOT / "cluster" / "kuberay" / manifest), _crd_schema(crd)
    body = {k: v for k, v in document.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.validate(body, schema)
    assert _strict(body, schema) == []
    assert document["apiVersion"] == "ray.io/v1"
    # the strict check is real: a misspelt field is caught although the CRD schema lets it through
    spec = document["spec"].get("rayClusterSpec", document["spec"])
    spec["workerGroupSpecs"][0]["maxReplica"] = 3
    jsonschema.validate(body, schema)
    assert _strict(body, schema) == [f"{'.spec.rayClusterSpec' if 'rayClusterSpec' in document['spec'] else '.spec'}"
                                     ".workerGroupSpecs[0].maxReplica"]


def test_every_cluster_runs_with_token_authentication():
    """Ray 2.60's `ray start` leaves authentication off on a node without a token, so both cluster kinds ask
    for it: every aws.yaml node starts in token mode with the user's token mounted, and KubeRay makes one."""
    config = _yaml(ROOT / "cluster" / "aws.yaml")
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key]
              if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start ") for c in starts), starts
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    for manifest in MANIFESTS:
        document = _yaml(ROOT / "cluster" / "kuberay" / manifest)["spec"]
        assert document.get("rayClusterSpec", document)["authOptions"] == {"mode": "token"}, manifest


def test_kuberay_groups_request_what_they_limit_and_advertise_their_role():
    cluster = _yaml(ROOT / "cluster" / "kuberay" / "raycluster.yaml")["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for group in [cluster["headGroupSpec"], *groups.values()]:
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["requests"] == container["resources"]["limits"]
            assert container["image"].startswith("rayproject/ray:2.60.0")
    assert groups["data"]["resources"] == {"data": groups["data"]["template"]["spec"]["containers"][0]["resources"]
                                           ["limits"]["cpu"]}
    train_limits = groups["train"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert groups["train"]["resources"] == {"train": train_limits["nvidia.com/gpu"]}
    assert all(g["minReplicas"] == 0 < g["maxReplicas"] for g in groups.values())


def _direct_dependencies_less_ray() -> list[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if not d.startswith("ray[")]


@pytest.mark.parametrize("manifest", ["rayjob.yaml", "rayjob_sweep.yaml"])
def test_rayjobs_run_real_jobs_on_the_raycluster_spec(manifest):
    job = _yaml(ROOT / "cluster" / "kuberay" / manifest)["spec"]
    assert job["rayClusterSpec"] == _yaml(ROOT / "cluster" / "kuberay" / "raycluster.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    argv = shlex.split(job["entrypoint"])
    assert argv[0] == "python" and (ROOT / argv[1]).is_file()
    config = argv[argv.index("--config") + 1]
    cfg = load_config(ROOT / config)   # validates, with its `extends:` chain
    assert cfg.ray.address == "auto" and cfg.storage.startswith("s3://")
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["pip"]["packages"] == _direct_dependencies_less_ray()
    # the zips `make cluster-package` builds
    assert [u.rsplit("/", 1)[1] for u in runtime_env["py_modules"]] == ["raybind.zip", "encoders.zip"]
    assert runtime_env["working_dir"].endswith("/working_dir.zip")


def test_runtime_env_ships_both_packages_and_the_pinned_requirements():
    env = _yaml(ROOT / "cluster" / "runtime_env.yaml")
    assert env["py_modules"] == ["platform/raybind", "encoders"]
    assert all((ROOT / m / "__init__.py").is_file() for m in env["py_modules"])
    assert env["pip"]["packages"] == _direct_dependencies_less_ray()
    assert "/platform/" in env["excludes"] and "/encoders/" in env["excludes"]   # shipped once, as modules


def test_train_controller_polls_reports_often_unless_the_driver_says_otherwise():
    # Ray Train's default (2 s) throttles a worker that reports every log step faster than that
    assert float(worker_env("inherit", {})[TRAIN_POLL_ENV]) == float(TRAIN_POLL_S) < 2.0
    assert worker_env("on", {TRAIN_POLL_ENV: "5"})[TRAIN_POLL_ENV] == "5"


def test_hub_offline_is_a_setting_not_a_default():
    assert "HF_HUB_OFFLINE" not in worker_env("inherit", {})        # unset: workers may reach the hub
    assert worker_env("inherit", {"HF_HUB_OFFLINE": "1"})["HF_HUB_OFFLINE"] == "1"
    assert worker_env("on", {})["HF_HUB_OFFLINE"] == "1" and worker_env("off", {"HF_HUB_OFFLINE": "1"})[
        "HF_HUB_OFFLINE"] == "0"

"""A real autoscaling cluster on this machine: the node types of cluster/aws.yaml drive Ray's fake
multi-node provider, and a tiny pretrain submitted with `ray job submit --runtime-env` asks for `data`
and `train` nodes through `ray.placement`. Runs before the shared local Ray of tests/raybind starts
(`ray stop` here would end it)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raybind.data.demo_data import generate

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _node_types() -> dict:
    """aws.yaml's worker node types as the fake provider takes them (resources and counts, no EC2 config)."""
    types = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())["available_node_types"]
    return {name: {"resources": spec["resources"], "min_workers": spec["min_workers"],
                   "max_workers": spec["max_workers"], "node_config": {}}
            for name, spec in types.items() if name != "head"}


def _nodes(env: dict) -> list[dict]:
    """Every node the cluster has known (alive or removed), from a separate driver."""
    script = ("import json, ray; from ray.util.state import list_nodes; "
              "ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "  # dead nodes keep their totals
              "print('NODES', json.dumps([{'alive': n.state == 'ALIVE', 'resources': n.resources_total} "
              "for n in list_nodes(detail=True, limit=1000)]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("NODES "))  # autoscaler events print too
    return json.loads(line.removeprefix("NODES "))


def _role_nodes(nodes: list[dict], role: str, alive: bool | None = None) -> list[dict]:
    return [n for n in nodes if role in n["resources"] and (alive is None or n["alive"] == alive)]


def _fake_cluster_class():
    from ray.cluster_utils import AutoscalingCluster

    class FakeMultiNodeCluster(AutoscalingCluster):
        """`AutoscalingCluster` with its base config written out here: the ray wheel lacks the
        `fake_multi_node/example.yaml` it reads. The fake provider is named as an external module (the
        `fake_multinode` type would load that same missing file as its defaults)."""

        def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
            empty: list = []
            return {
                "cluster_name": "raybind-fake", "max_workers": 20, "upscaling_speed": 1.0,
                "provider": {"type": "external",
                             "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                             "use_node_id_as_ip": True, "disable_node_updaters": True,
                             "disable_launch_config_check": True},
                "available_node_types": {**worker_node_types, "ray.head.default": {
                    "resources": head_resources, "node_config": {}, "max_workers": 0}},
                "head_node_type": "ray.head.default", "auth": {}, "docker": {},
                "initialization_commands": empty, "setup_commands": empty, "head_setup_commands": empty,
                "worker_setup_commands": empty, "head_start_ray_commands": empty, "worker_start_ray_commands": empty,
                "file_mounts": {}, "cluster_synced_files": empty, "file_mounts_sync_continuously": False,
                "rsync_exclude": empty, "rsync_filter": empty, **config_kwargs}

    return FakeMultiNodeCluster


@pytest.fixture(scope="module")
def autoscaling_cluster(tmp_path_factory):
    """One fake autoscaling cluster for this module (each start and shutdown costs ~15 s). The tests below
    run in file order: the token check leaves no nodes behind, and the scaling test starts from zero."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")  # the `ray` CLI of this venv
        env.delenv("RAY_ADDRESS", raising=False)
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):   # a cluster with network: the hub is not forced off
            env.delenv(name, raising=False)
        # Token authentication on, as cluster/aws.yaml starts every node: Ray 2.60's `ray start` turns it on
        # by itself only where a token already exists (~/.ray/auth_token), which a fresh machine lacks. The
        # cluster's own token keeps the test apart from whatever ~/.ray holds.
        token = tmp_path_factory.mktemp("auth") / "auth_token"
        token.write_text(secrets.token_hex(32))
        env.setenv("RAY_AUTH_MODE", "token")
        env.setenv("RAY_AUTH_TOKEN_PATH", str(token))
        env.delenv("RAY_AUTH_TOKEN", raising=False)
        cluster = _fake_cluster_class()(head_resources={"CPU": 0}, worker_node_types=_node_types(),
                                        idle_timeout_minutes=0.1)  # aws.yaml says 5 minutes; a test cannot wait
        cluster.start()   # `ray start --head`, and the fake worker nodes later, all with the token
        try:
            yield dict(os.environ)
        finally:
            cluster.shutdown()


def test_the_cluster_refuses_a_client_without_its_token(autoscaling_cluster):
    env = {k: v for k, v in autoscaling_cluster.items() if k != "RAY_AUTH_TOKEN_PATH"}
    anonymous = subprocess.run([str(BIN / "ray"), "job", "list", "--address", "http://127.0.0.1:8265"],
                               capture_output=True, text=True, env={**env, "RAY_AUTH_MODE": "disabled"}, timeout=60)
    # the dashboard answers 401 and the client says why (its own mode is 'disabled': the server asked)
    assert anonymous.returncode != 0 and "Token authentication is enabled" in anonymous.stderr, anonymous.stderr[-600:]
    member = subprocess.run([str(BIN / "ray"), "job", "list", "--address", "http://127.0.0.1:8265"],
                            capture_output=True, text=True, env=autoscaling_cluster, timeout=60)
    assert member.returncode == 0, member.stderr[-2000:]


def test_a_job_with_the_runtime_env_scales_data_and_train_nodes_up_then_down(autoscaling_cluster, tmp_path):
    env = autoscaling_cluster
    assert _role_nodes(_nodes(env), "data") == [] and _role_nodes(_nodes(env), "train") == []  # min 0
    demo = generate(tmp_path / "demo", train_clips=8, val_clips=4, seed=4)
    # the shipped runtime env, less its pip list: this head's Python already has the pinned packages
    runtime_env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    runtime_env.pop("pip")
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env))
    storage = tmp_path / "runs"
    pretrain = ["python", "jobs/pretrain.py", "--config", "configs/quickstart.yaml", "--set", "ray.address=auto",
                "--set", "ray.num_cpus=null", "--set", f"data.train={demo['train']}", "--set", f"data.val={demo['val']}",
                "--set", f"storage={storage}", "--set", "data.modalities=[video,audio]", "--set", "model.towers={}",
                "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.log_every=1",
                "--set", "data.cache_mb=null",
                "--set", "ray.placement.data={data: 0.01}", "--set", "ray.placement.train={train: 0.01}"]
    show_modules = "import raybind, encoders; print('MODULES', raybind.__file__, encoders.__file__)"
    # a driver with ray.hub_offline left at `inherit` and no HF_HUB_OFFLINE: its workers see the hub online
    # ... and every worker (Ray Train's controller too) polls reports every 0.25 s, not Ray's 2 s
    hub_check = ("import os, ray; from raybind.runtime import start_ray; start_ray(address='auto', verbose=False); "
                 "seen = ray.remote(num_cpus=0)(lambda: (__import__('importlib').import_module('huggingface_hub.constants')"
                 ".HF_HUB_OFFLINE, os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S'))); "
                 "print('WORKER_HUB_OFFLINE %s POLL %s' % ray.get(seen.remote()), flush=True)")
    entrypoint = " && ".join(shlex.join(argv) for argv in (["python", "-c", show_modules],
                                                           ["python", "-c", hub_check], pretrain))
    submit = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", "http://127.0.0.1:8265",
                             "--runtime-env", str(env_file), "--", "bash", "-c", entrypoint],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=360)
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-4000:]
    assert "succeeded" in output
    assert "step 1/2  loss audio" in output and "step 2/2  loss video" in output  # the job's progress lines
    assert "Reporting training result" not in output   # Ray's per-report dumps stay off without --verbose
    assert "WORKER_HUB_OFFLINE False POLL 0.25" in output
    modules = next(line for line in output.splitlines() if line.startswith("MODULES")).split()[1:]
    # both packages came from the runtime env's py_modules, not from the editable install of this checkout
    assert all("runtime_resources" in path and not path.startswith(str(ROOT)) for path in modules), modules
    summary = json.loads((storage / "quickstart" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["rows_in"] == 8
    launched = _nodes(env)
    assert _role_nodes(launched, "data") and _role_nodes(launched, "train"), launched  # the autoscaler added both
    deadline = time.monotonic() + 180
    while _role_nodes(_nodes(env), "data", alive=True) or _role_nodes(_nodes(env), "train", alive=True):
        assert time.monotonic() < deadline, "idle data/train nodes were not removed"

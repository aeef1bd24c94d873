"""Starting Ray beside a head that `ray start --head` runs on the same machine, and a real `ray job submit`
whose relative output would land in Ray's working-dir package."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def head() -> Iterator[dict[str, str]]:
    """A head from `ray start --head --block` in its own Ray temp dir (so the suite's own cluster never sees
    it); the environment that finds it, as a shell on that machine would. Terminating the blocking
    `ray start` stops the head's processes."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")   # short: Ray's socket paths have a length limit
    token = Path(temp) / "auth_token"   # the head's own token, whatever ~/.ray holds
    token.write_text(secrets.token_hex(32))
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")},
           "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    dashboard = _free_port()
    # Every port the head opens is its own: the suite's Ray already holds the defaults (the dashboard agent's
    # 52365 among them), and an agent without its HTTP port leaves job submission "No available agent".
    ports = [f"--{name}={_free_port()}" for name in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port")]
    process = subprocess.Popen(
        [RAY, "start", "--head", *ports, "--num-cpus=1", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats", "--block"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in process.stdout:   # up when it says so (the test's timeout bounds the wait)
        seen.append(line)
        if "Ray runtime started" in line:
            break
    assert process.poll() is None, "".join(seen)
    try:
        yield {**env, "DASHBOARD": f"http://127.0.0.1:{dashboard}"}
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_job_without_an_address_starts_its_own_ray_beside_a_running_head(head):
    plain = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1, include_dashboard=False)"],
                           env=head, capture_output=True, text=True)
    assert plain.returncode != 0 and "num_cpus and num_gpus must not be provided" in plain.stderr   # the trap
    code = ("import ray; from raybind.runtime import start_ray; start_ray(num_cpus=1, dashboard=False, verbose=False); "
            "print(ray.cluster_resources()['CPU'])")
    ours = subprocess.run([sys.executable, "-c", code], env=head, capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert "ray: started a local Ray for this job (1 CPUs" in ours.stderr and float(ours.stdout) == 1.0
    joined = subprocess.run([sys.executable, "-c", code.replace("start_ray(num_cpus=1,", "start_ray('auto',")],
                            env=head, capture_output=True, text=True)
    assert joined.returncode == 0 and "ray: joined the cluster at" in joined.stderr, joined.stderr


def test_a_submitted_job_refuses_a_relative_output_that_ray_would_delete(head, tmp_path):
    work = tmp_path / "job"
    work.mkdir()
    shutil.copy(REPO / "configs" / "quickstart.yaml", work / "quickstart.yaml")
    submit = [RAY, "job", "submit", "--address", head["DASHBOARD"], "--working-dir", str(work), "--",
              sys.executable, "-m", "raybind", "build", "--config", "quickstart.yaml", "--input", "train.jsonl",
              "--output", "built"]
    deadline = time.monotonic() + 120
    while True:   # the head's job agent registers a little after "Ray runtime started"; Ray says to try again
        result = subprocess.run(submit, env=head, capture_output=True, text=True)
        logs = result.stdout + result.stderr
        if "No available agent to submit job" not in logs or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode != 0
    assert "--output: built resolves to" in logs and "_ray_pkg_" in logs and "absolute path or s3://" in logs, logs

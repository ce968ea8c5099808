"""`tasuki job ...` (job_cli.py, jobs.JobClient) against a real head (job_manager.py), end to end:
submit a working directory whose script needs a node the cluster does not have yet, see its demand
at /api/v1/demand (what the operator's autoscaler reads), add that node as an autoscaler would, and
follow the job to SUCCEEDED with its exit code; list, status, logs and stop from the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from conftest import CliCluster, free_port, wait_until

IP = "127.41.1.1"

SCRIPT = """
import tasuki
tasuki.init()
@tasuki.remote(resources={"big": 1})
def square(x):
    return x * x
print("SUM", sum(tasuki.get([square.remote(i) for i in range(20)])), flush=True)
"""


@pytest.fixture
def cluster(tmp_path):
    cluster = CliCluster(tmp_path / "session")
    try:
        cluster.cli("start", "--head", "--port", str(free_port(IP)), "--node-ip-address", IP, "--metrics-port", "0",
                    "--object-store-memory", "128M", "--num-cpus", "1")
        yield cluster
    finally:
        cluster.stop()


def job(cluster: CliCluster, *args: str, **kwargs) -> subprocess.Popen:
    """`tasuki job ARGS` with the cluster's environment: no --address, found from the cluster file."""
    return subprocess.Popen([sys.executable, "-m", "tasuki", "job", *args], env=cluster.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kwargs)


def demand(cluster: CliCluster) -> dict:
    with urllib.request.urlopen(cluster.info["metrics"] + "/api/v1/demand", timeout=10) as answer:
        return json.load(answer)


def test_a_submitted_job_waits_for_the_node_it_needs_then_succeeds(cluster, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "script.py").write_text(textwrap.dedent(SCRIPT))
    submit = job(cluster, "submit", "--working-dir", str(work), "--env", "GREETING=hi", "--", "python", "script.py")
    job_id = submit.stdout.readline().strip()
    assert job_id.startswith("job-"), job_id + submit.stderr.read()
    # its 20 tasks need {"big": 1}, which no node has: the autoscaler sees them in the demand
    wait_until(lambda: any(b["shape"].get("big") for b in demand(cluster).get("pending", ())), 60,
               "the job's tasks to show in /api/v1/demand")
    listed = subprocess.run([sys.executable, "-m", "tasuki", "job", "list"], env=cluster.env, text=True,
                            capture_output=True, timeout=60)
    assert job_id in listed.stdout and "RUNNING" in listed.stdout, listed.stdout + listed.stderr
    cluster.add_node("127.41.1.2", "--num-cpus", "1", "--resources", '{"big": 1}')       # the autoscaler's new node
    out, err = submit.communicate(timeout=120)
    assert submit.returncode == 0, out + err
    assert f"SUM {sum(i * i for i in range(20))}" in out, out + err
    status = subprocess.run([sys.executable, "-m", "tasuki", "job", "status", job_id], env=cluster.env, text=True,
                            capture_output=True, timeout=60)
    assert "SUCCEEDED" in status.stdout, status.stdout + status.stderr
    logs = subprocess.run([sys.executable, "-m", "tasuki", "job", "logs", job_id], env=cluster.env, text=True,
                          capture_output=True, timeout=60)
    assert f"SUM {sum(i * i for i in range(20))}" in logs.stdout       # kept after the driver exited


def test_a_failing_job_gives_its_exit_code_and_a_stopped_one_is_stopped(cluster, tmp_path):
    failed = job(cluster, "submit", "--", "python", "-c", "import sys; print('bad'); sys.exit(3)")
    out, err = failed.communicate(timeout=120)
    assert failed.returncode == 3 and "bad" in out, out + err
    running = subprocess.run([sys.executable, "-m", "tasuki", "job", "submit", "--no-wait", "--", "sleep", "300"],
                             env=cluster.env, text=True, capture_output=True, timeout=60)
    job_id = running.stdout.strip()
    stopped = subprocess.run([sys.executable, "-m", "tasuki", "job", "stop", job_id], env=cluster.env, text=True,
                             capture_output=True, timeout=60)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr

"""The `tasuki` command against real processes: a head on 127.0.0.1 and node agents on 127.0.0.2-4.

One cluster serves the whole module (starting it is the slow part); the tests run in file order
and the last one stops it. Layout: head node {CPU: 1}; node2 {CPU: 1, node2: 1} on 127.0.0.2;
node3 {CPU: 1, node3: 1} on 127.0.0.3; the node-death test adds and kills a fourth.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from conftest import cluster_env, free_port, run_cli, wait_until

import tasuki
from tasuki import cli

MB = 1 << 20


@pytest.fixture(scope="module")
def cluster(cli_cluster):
    cli_cluster.node2 = cli_cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"node2": 1}')
    cli_cluster.node3 = cli_cluster.add_node("127.0.0.3", "--num-cpus", "1", "--resources", '{"node3": 1}')
    return cli_cluster


@tasuki.remote
def where(x):
    return x, tasuki.get_runtime_context().get_node_id()


@tasuki.remote(num_cpus=1)
def slow_where(i, marker_dir, seconds):
    node = tasuki.get_runtime_context().get_node_id()
    with open(os.path.join(marker_dir, f"{i}-{os.getpid()}"), "w") as f:
        f.write(node)
    time.sleep(seconds)
    return i * 10, tasuki.get_runtime_context().get_node_id()


def node_ids_by_ip() -> dict:
    return {n["NodeManagerAddress"]: n["NodeID"] for n in tasuki.nodes() if n["Alive"]}


# --- pure parts -----------------------------------------------------------------------------------
def test_address_and_size_parsing():
    assert cli.normalize_address("10.0.0.5:6390") == "tcp://10.0.0.5:6390"
    assert cli.normalize_address("tasuki://head.ns.svc") == "tcp://head.ns.svc:6380"
    with pytest.raises(cli.CliError, match="HOST:PORT"):
        cli.normalize_address("head:port")
    assert cli.parse_bytes("512M", "--x") == 512 * MB
    assert cli.parse_bytes("2GiB", "--x") == 2 << 30
    assert cli.parse_bytes("1000", "--x") == 1000
    with pytest.raises(cli.CliError, match="not a size"):
        cli.parse_bytes("lots", "--x")


def test_format_status_table():
    node = {"node_id": "abc", "ip": "10.0.0.1", "state": "alive", "is_head_node": True,
            "resources": {"CPU": 4.0, "GPU": 1.0, "ssd": 2.0}, "available": {"CPU": 1.0, "GPU": 1.0, "ssd": 2.0},
            "workers": 4, "busy_workers": 3, "seconds_idle": 0.0,
            "object_store": {"used": 3 * MB, "capacity": 1024 * MB, "objects": 2, "spilled": 0}}
    state = {"version": "0.1.0", "address": "tcp://10.0.0.1:6380", "uptime_s": 5.0, "drivers": 2,
             "nodes": [node], "pending": 2, "pending_by_shape": [{"shape": {"CPU": 1.0, "GPU": 4.0}, "count": 2}],
             "running": 3, "finished": {"succeeded": 7}, "objects": 9}
    demand = {"pending": [{"shape": {"CPU": 1.0, "GPU": 4.0}, "count": 2, "feasible": False}]}
    text = cli.format_status(state, demand)
    assert "abc (head)" in text and "3/4" in text and "0/1" in text and "ssd 0/2" in text
    assert "3.0/1024" in text
    assert "{CPU: 1, GPU: 4}" in text and "no node can fit" in text
    assert "succeeded 7, failed 0" in text and "Running tasks: 3" in text


# --- errors people see ------------------------------------------------------------------------------
def test_errors_for_people(cluster, tmp_path):
    env = cluster_env(str(tmp_path))
    bad = run_cli(env, "start", "--head", "--resources", "{ssd: 1", check=False)
    assert bad.returncode == 1 and "resources must be a JSON object" in bad.stderr
    bad = run_cli({**env, "TASUKI_NUM_CPUS": "many"}, "start", "--head", check=False)
    assert bad.returncode == 1 and "TASUKI_NUM_CPUS='many' is not a number" in bad.stderr
    port = cluster.host_port.rsplit(":", 1)[1]
    busy = run_cli(env, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", port, check=False)
    assert busy.returncode == 1 and f"127.0.0.1:{port} is already in use" in busy.stderr
    assert not os.path.exists(tmp_path / "cluster.json")
    nowhere = f"127.0.0.1:{free_port()}"
    quick = {**env, "TASUKI_CONNECT_TIMEOUT": "1"}
    unreachable = run_cli(quick, "start", "--address", nowhere, "--token", "x", check=False)
    assert unreachable.returncode == 1 and f"cannot reach the tasuki head at {nowhere}" in unreachable.stderr
    assert run_cli(quick, "status", "--address", nowhere, "--token", "x", check=False).returncode == 1
    none = run_cli(env, "status", check=False)
    assert none.returncode == 1 and "tasuki start --head" in none.stderr
    neither = run_cli(env, "start", check=False)
    assert neither.returncode == 1 and "--address" in neither.stderr


# --- a running cluster ------------------------------------------------------------------------------
def test_status_lists_every_node(cluster):
    out = cluster.cli("status").stdout
    rows = [line for line in out.splitlines() if " alive " in line]
    assert len(rows) == 3, out
    for ip, resource in (("127.0.0.1", None), ("127.0.0.2", "node2 0/1"), ("127.0.0.3", "node3 0/1")):
        row = next(r for r in rows if f" {ip} " in r)
        assert resource is None or resource in row
    assert "(head)" in out and "Pending tasks: 0" in out


@pytest.mark.parametrize("how", ["host:port", "auto"])
def test_driver_runs_tasks(cluster, how):
    tasuki.init(address=cluster.host_port if how == "host:port" else "auto")
    try:
        assert sorted(x for x, _ in tasuki.get([where.remote(i) for i in range(20)], timeout=60)) == list(range(20))
        assert tasuki.cluster_resources()["CPU"] == 3
    finally:
        tasuki.shutdown()


def test_custom_resources_steer_tasks(connected):
    ids = node_ids_by_ip()
    for resource, ip in (("node2", "127.0.0.2"), ("node3", "127.0.0.3")):
        results = tasuki.get([where.options(resources={resource: 1}).remote(i) for i in range(3)], timeout=60)
        assert {node for _, node in results} == {ids[ip]}, (resource, results)


@tasuki.remote(resources={"node3": 1})
def summarize(array):
    return float(array.sum()), array.shape, tasuki.get_runtime_context().get_node_id()


@tasuki.remote(resources={"node2": 1})
def produce(n):
    return np.arange(n, dtype=np.float64), tasuki.get_runtime_context().get_node_id()


def test_large_objects_cross_nodes(connected):
    ids = node_ids_by_ip()
    array = np.random.default_rng(0).random(20 * MB // 8)
    ref = tasuki.put(array)                      # in the head node's store: node3 must pull it
    total, shape, node = tasuki.get(summarize.remote(ref), timeout=60)
    assert node == ids["127.0.0.3"] and shape == array.shape and total == pytest.approx(float(array.sum()))
    result, node = tasuki.get(produce.remote(20 * MB // 8), timeout=60)   # written on node2, read here
    assert node == ids["127.0.0.2"]
    assert result.nbytes == 20 * MB and result[0] == 0 and result[-1] == 20 * MB // 8 - 1
    assert np.array_equal(result[:1000], np.arange(1000))


def test_tasks_of_a_killed_node_run_elsewhere(connected, tmp_path):
    # node4 takes its custom resource from the environment and its CPUs from the flag (flags win)
    node4, pid = connected.add_node("127.0.0.4", "--num-cpus", "1",
                                    env={"TASUKI_NUM_CPUS": "3", "TASUKI_RESOURCES": '{"node4": 1}'})
    assert pid in connected.info["node_pids"]
    described = next(n for n in tasuki.nodes() if n["NodeID"] == node4)
    assert described["Resources"] == {"CPU": 1.0, "node4": 1.0, "memory": described["Resources"]["memory"]}
    # its worker is up once a task pinned there has run; then the 4 slow tasks take one node each
    assert tasuki.get(where.options(resources={"node4": 1}).remote(0), timeout=60)[1] == node4
    refs = [slow_where.remote(i, str(tmp_path), 5.0) for i in range(4)]
    started = wait_until(lambda: len(os.listdir(tmp_path)) == 4 and os.listdir(tmp_path), 60,
                         "the 4 tasks to start")
    on_node4 = [name for name in started if (tmp_path / name).read_text() == node4]
    assert len(on_node4) == 1, (started, connected.cli("status").stdout)
    os.killpg(pid, signal.SIGKILL)               # the node agent, its zygote and its workers: a lost machine
    results = tasuki.get(refs, timeout=90)
    assert [value for value, _ in results] == [0, 10, 20, 30]
    retried = int(on_node4[0].split("-")[0])
    assert results[retried][1] != node4
    assert len(os.listdir(tmp_path)) == 5        # the lost task ran a second time, elsewhere
    states = {n["NodeID"]: n["State"] for n in tasuki.nodes()}
    assert states[node4] == "DEAD"


def test_head_refuses_peers_without_the_token(connected):
    from tasuki import protocol as P, transport
    from tasuki.client import Client
    from tasuki.exceptions import ClusterError
    host, port = connected.host_port.rsplit(":", 1)
    context = zmq.Context()
    try:
        # CURVE with keys from another token: the handshake fails, nothing reaches the head's loop
        sock = transport.connect(context, f"tcp://{host}:{port}", "not-the-token", b"Dintruder")
        transport.send(sock, [(P.HELLO, "driver", {"version": tasuki.__version__})])
        assert sock.poll(2000) == 0
        # no CURVE at all
        plain = context.socket(zmq.DEALER)
        plain.linger = 0
        plain.connect(f"tcp://{host}:{port}")
        plain.send(b"\x00" * 64)
        assert plain.poll(2000) == 0
    finally:
        context.destroy(linger=0)
    # raw bytes on TCP: at most zmq's greeting comes back, never an answer
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(256))
        raw.settimeout(2)
        received = b""
        try:
            while len(received) < 4096:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                received += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    assert received == b"" or received.startswith(b"\xff"), received[:80]
    assert len(received) <= 64
    # a driver with the wrong token cannot join
    client = Client(f"tcp://{host}:{port}", "wrong-token", "driver")
    try:
        with pytest.raises(ClusterError, match="token"):
            client.wait_welcome(timeout=2)
    finally:
        client.close()
    # and the head still serves everyone else
    assert tasuki.get(where.remote(7), timeout=60)[0] == 7


def test_block_stays_in_the_foreground_until_sigterm(tmp_path):
    env = cluster_env(str(tmp_path))
    env["TASUKI_TOKEN"] = given = "a-token-from-a-kubernetes-secret"     # as in a pod
    proc = subprocess.Popen([sys.executable, "-m", "tasuki", "start", "--head", "--block", "--port", "0",
                             "--metrics-port", "0", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                             "--object-store-memory", "64M"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        info = wait_until(lambda: (tmp_path / "cluster.json").exists() and
                          json.loads((tmp_path / "cluster.json").read_text()), 60, "the cluster file")
        assert info["cli_pid"] == proc.pid and proc.poll() is None
        assert " alive " in run_cli(env, "status").stdout
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            run_cli(env, "stop", check=False)
    assert proc.returncode == 0 and "stopped on SIGTERM" in out, out
    # a token the head was given (a pod's Secret) never reaches its log: pod logs are read more widely
    assert given not in out and "not printed" in out, out
    assert not (tmp_path / "cluster.json").exists()
    assert not cli.alive(info["head_pid"]) and not any(cli.alive(p) for p in info["node_pids"])


def test_stop_leaves_nothing_behind(cluster):
    from tasuki.api import _get_client
    tasuki.init(address="auto")
    paths = [n["store_path"] for n in _get_client().nodes()]
    tasuki.shutdown()
    assert len(paths) == 4 and any(os.path.exists(p) for p in paths)
    processes = cluster.processes()
    assert len(processes) >= 6                   # head, 3 node agents, their zygotes, workers
    out = cluster.cli("stop").stdout
    assert "Stopped the head" in out and "3 node agents" in out and "SIGKILL" not in out, out
    # `tasuki stop` has waited for the head and nodes; workers SIGKILLed by their zygote may take a moment
    wait_until(lambda: not [p for p in processes if p.is_running() and p.status() != "zombie"], 10,
               f"the cluster's processes to end: {[p.pid for p in processes]}")
    assert cluster.processes() == []
    assert [p for p in paths if os.path.exists(p)] == []
    assert not os.path.exists(os.path.join(cluster.tmpdir, "cluster.json"))
    again = cluster.cli("stop")
    assert "nothing to stop" in again.stdout
    assert cluster.cli("status", check=False).returncode == 1


def test_format_status_shows_identity_memory_labels_and_requests():
    node = {"node_id": "abc", "ip": "10.0.0.1", "state": "alive", "node_name": "demo-worker-x", "group": "cpu",
            "labels": {"zone": "a"}, "resources": {"CPU": 1.5, "memory": 4.0 * 2**30},
            "available": {"CPU": 0.5, "memory": 3.0 * 2**30}, "workers": 2, "busy_workers": 2, "seconds_idle": 0.0,
            "object_store": {"used": 0, "capacity": 64 * MB, "objects": 0, "spilled": 0}}
    state = {"version": "0.1.0", "address": "tcp://10.0.0.1:6380", "uptime_s": 5.0, "drivers": 2,
             "nodes": [node], "pending": 3, "running": 2, "finished": {}, "objects": 0,
             "pending_by_shape": [{"shape": {"CPU": 1.0, "memory": 2.0 * 2**30}, "count": 3,
                                   "label_selector": {"zone": "b"}}]}
    demand = {"pending": [{"shape": {"CPU": 1.0, "memory": 2.0 * 2**30}, "count": 3, "feasible": False,
                           "label_selector": {"zone": "b"}}],
              "requested": [{"shape": {"CPU": 4.0}, "count": 2}]}
    text = cli.format_status(state, demand)
    assert "demo-worker-x" in text and " cpu " in text and "1/1.5" in text and "1/4" in text     # GiB of memory
    assert "abc: zone=a" in text
    assert "{CPU: 1, memory: 2 GiB} on nodes labelled zone=b   (no node can fit" in text
    assert "Requested resources" in text and "2  {CPU: 4}" in text

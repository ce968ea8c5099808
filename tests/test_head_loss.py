"""A head that dies and does not come back takes its cluster with it (issue 12, item 4); one that
comes back at the same address gets its nodes back (issue 17, recovery.py; test_head_recovery.py).

Node agents hear from the head at every heartbeat; after TASUKI_HEAD_RECONNECT_S seconds of silence
(a dead head no one restarted) they stop, with their zygotes and workers, and say why in their log.
`tasuki start --head` after a crash clears what the old cluster left instead of refusing, and still
refuses while a head runs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import CliCluster, free_port, wait_until

HEAD_TIMEOUT_S = 3.0
SLACK_S = 20.0                   # a loaded two-core machine: stopping a node and its workers takes a moment


def start_cluster(tmp_path, head_timeout: float, port: int | None = None) -> CliCluster:
    cluster = CliCluster(tmp_path / "session")
    cluster.env["TASUKI_HEAD_RECONNECT_S"] = str(head_timeout)
    cluster.port = port or free_port()
    start_head(cluster)
    return cluster


def start_head(cluster: CliCluster, check: bool = True):
    return cluster.cli("start", "--head", "--port", str(cluster.port), "--node-ip-address", "127.0.0.1",
                       "--metrics-port", "0", "--num-cpus", "2", "--object-store-memory", "64M", check=check)


def old_processes(cluster: CliCluster) -> list:
    """The node agent, its zygote and its two workers, once all have started (the head excluded)."""
    head = cluster.info["head_pid"]
    return wait_until(lambda: (lambda ps: len(ps) >= 4 and ps)([p for p in cluster.processes() if p.pid != head]),
                      60, "the node agent, its zygote and two workers")


def running(processes: list) -> list[int]:
    return [p.pid for p in processes if p.is_running() and p.status() != "zombie"]


def node_log(cluster: CliCluster) -> str:
    with open(os.path.join(cluster.tmpdir, "logs", "node-head.log")) as f:
        return f.read()


def test_a_dead_heads_node_and_workers_exit_and_a_new_head_starts(tmp_path):
    cluster = start_cluster(tmp_path, HEAD_TIMEOUT_S)
    try:
        old = cluster.info
        processes = old_processes(cluster)
        os.kill(old["head_pid"], signal.SIGKILL)
        killed = time.time()
        wait_until(lambda: not running(processes), HEAD_TIMEOUT_S + SLACK_S,
                   f"the node agent, zygote and workers to exit: {[p.pid for p in processes]}")
        assert time.time() - killed >= HEAD_TIMEOUT_S - 0.5       # they waited for the head, as configured
        log = node_log(cluster)
        assert f"the tasuki head at {old['address']} has not answered for" in log, log
        assert f"TASUKI_HEAD_RECONNECT_S={HEAD_TIMEOUT_S:g}" in log and "Stopping this node agent" in log, log

        again = start_head(cluster)                  # same port, same session directory
        assert f"the cluster at {old['address'].split('://')[1]} recorded in" in again.stderr, again.stderr
        assert f"its head, pid {old['head_pid']}, is gone" in again.stderr, again.stderr
        new = cluster.info
        assert new["address"] == old["address"] and new["head_pid"] != old["head_pid"]
        status = cluster.cli("status").stdout
        assert [line for line in status.splitlines() if " alive " in line] != [] and " dead " not in status, status
    finally:
        cluster.stop()


def test_a_head_restarted_on_the_same_port_gets_the_old_node_back(tmp_path):
    cluster = start_cluster(tmp_path, HEAD_TIMEOUT_S)
    replacement = None
    try:
        old = cluster.info
        processes = old_processes(cluster)
        os.kill(old["head_pid"], signal.SIGKILL)
        # a supervisor restarts the head at once, at the same address with the same token
        replacement = subprocess.Popen([sys.executable, "-m", "tasuki.head", "--address", old["address"]],
                                       env={**cluster.env, "TASUKI_TOKEN": old["token"]}, stdin=subprocess.DEVNULL)
        wait_until(lambda: "rejoining it with" in node_log(cluster), SLACK_S, "the node agent to rejoin the new head")
        status = wait_until(lambda: (lambda out: " alive " in out and out)(cluster.cli("status").stdout), SLACK_S,
                            "the node to be alive at the new head")    # the cluster file names the address and token
        assert replacement.poll() is None and old["node_pids"][0] in running(processes), status
        assert "has not answered for" not in node_log(cluster)
    finally:
        if replacement is not None:
            replacement.kill()
            replacement.wait()
        cluster.stop()


def test_start_head_restarts_a_crashed_head_in_place_and_its_nodes_rejoin(tmp_path):
    cluster = start_cluster(tmp_path, head_timeout=600)      # its nodes keep trying to reach the head
    try:
        refused = start_head(cluster, check=False)
        assert refused.returncode == 1 and "a tasuki cluster started on this machine is running" in refused.stderr
        _, killed_node = cluster.add_node("127.0.0.2", "--num-cpus", "1", "--object-store-memory", "64M")
        old = cluster.info
        node = old["node_pids"][0]
        processes = old_processes(cluster)
        os.kill(killed_node, signal.SIGKILL)              # leaves its store file and socket files
        os.kill(old["head_pid"], signal.SIGKILL)
        wait_until(lambda: killed_node not in running(processes), 30, "the killed node to go")

        again = start_head(cluster)
        assert f"(pid {old['head_pid']}) was gone and its node agents (pid {node}) still run" in again.stderr, \
            again.stderr
        new = cluster.info
        assert new["address"] == old["address"] and new["token"] == old["token"] and new["node_pids"] == [node]
        assert node in running(processes)
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"tasuki-{killed_node}-")]
        status = wait_until(lambda: (lambda out: " alive " in out and out)(cluster.cli("status").stdout), SLACK_S,
                            "the surviving node to rejoin")
        assert len([line for line in status.splitlines() if " alive " in line]) == 1, status
    finally:
        cluster.stop()

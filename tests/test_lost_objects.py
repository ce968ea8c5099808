"""Objects whose node dies or hangs: `get` of one that cannot be recomputed (here: max_retries=0)
raises ObjectLostError (naming the object and the node) as soon as the head declares the node dead,
and its `timeout` bounds the fetch between nodes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tasuki
from conftest import NODE_TIMEOUT_S, CliCluster, cluster_env, wait_until
from tasuki.exceptions import GetTimeoutError, ObjectLostError

MB = 1 << 20
LOST_WITHIN_S = float(NODE_TIMEOUT_S) + 12     # the head's verdict, with room for a loaded machine


def ten_megabytes(seed: int):
    return np.full(10 * MB // 8, float(seed))


def stored_on(resource: str, seed: int = 0):
    """A 10 MB result made on the node that has `resource`: it lives only in that node's store.
    max_retries=0: lost with its node, it cannot be recomputed (test_reconstruction.py: when it can)."""
    ref = tasuki.remote(ten_megabytes).options(resources={resource: 1}, max_retries=0).remote(seed)
    ready, _ = tasuki.wait([ref], timeout=60)
    assert ready, f"the task on the {resource!r} node did not finish within 60 s"
    return ref


def node_state(node_id: str) -> str:
    return next(n["State"] for n in tasuki.nodes() if n["NodeID"] == node_id)


def test_get_of_an_object_lost_with_its_node_raises_object_lost(cli_cluster, driver):
    node, pid = cli_cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"doomed": 1}')
    try:
        in_flight, stale = stored_on("doomed", 1), stored_on("doomed", 2)
    finally:
        os.killpg(pid, signal.SIGKILL)        # the node agent, its zygote and its workers: a lost machine
    # fetched while the head still thinks the node alive: the pull waits on a dead node until the verdict
    started = time.monotonic()
    with pytest.raises(ObjectLostError) as lost:
        tasuki.get(in_flight, timeout=LOST_WITHIN_S + 10)
    elapsed = time.monotonic() - started
    assert elapsed < LOST_WITHIN_S, f"ObjectLostError came after {elapsed:.1f} s"
    assert in_flight.hex() in str(lost.value) and node in str(lost.value), str(lost.value)
    assert "max_retries=0" in str(lost.value), str(lost.value)
    # fetched after the verdict: this driver's copy of the location is stale, the error is immediate
    wait_until(lambda: node_state(node) == "DEAD", 30, f"node {node} to be declared dead")
    started = time.monotonic()
    with pytest.raises(ObjectLostError) as lost:
        tasuki.get(stale, timeout=30)
    assert time.monotonic() - started < 5
    assert stale.hex() in str(lost.value) and node in str(lost.value), str(lost.value)


def test_get_timeout_bounds_a_fetch_from_a_hung_node(cli_cluster, driver):
    node, pid = cli_cluster.add_node("127.0.0.3", "--num-cpus", "1", "--resources", '{"frozen": 1}')
    try:
        ref = stored_on("frozen")
        os.kill(pid, signal.SIGSTOP)          # the node agent hangs: it serves no chunk, sends no heartbeat
        started = time.monotonic()
        with pytest.raises(GetTimeoutError, match=ref.hex()):
            tasuki.get(ref, timeout=1)
        elapsed = time.monotonic() - started
        assert 0.9 < elapsed < 4, f"get(timeout=1) returned after {elapsed:.1f} s"
    finally:
        os.killpg(pid, signal.SIGKILL)


HUNG_LOCAL_NODE = r'''
import os, signal, time
import numpy as np
import tasuki
from tasuki import api
from tasuki.exceptions import GetTimeoutError

tasuki.init(num_cpus=1)
ref = tasuki.remote(lambda: np.ones(10 * 2**20 // 8)).remote()
assert tasuki.wait([ref], timeout=60)[0], "the task did not finish"
node = api._cluster.node.pid
os.kill(node, signal.SIGSTOP)            # the node agent on this machine hangs
started = time.monotonic()
try:
    tasuki.get(ref, timeout=1)
    print("GOT")
except GetTimeoutError as e:
    print(f"TIMEOUT {time.monotonic() - started:.2f} {e}")
finally:
    os.kill(node, signal.SIGCONT)
print("SUM", float(tasuki.get(ref, timeout=60).sum()))   # the node answers again: the value is intact
tasuki.shutdown()
'''


def test_get_timeout_bounds_a_pin_on_a_hung_local_node(tmp_path):
    """The object lies in this machine's store, but its node agent hangs: the pin channel (a plain
    unix socket) must honour get's timeout too, and the node must survive the caller giving up."""
    leftovers = CliCluster(tmp_path)          # finds the driver's processes by their TASUKI_TMPDIR
    try:
        proc = subprocess.run([sys.executable, "-c", HUNG_LOCAL_NODE], env=cluster_env(str(tmp_path)),
                              capture_output=True, text=True, timeout=120)
    finally:
        for process in leftovers.processes():          # a stopped node agent, if the driver hung
            process.kill()
    assert proc.returncode == 0, proc.stderr
    outcome = proc.stdout.split()
    assert outcome[0] == "TIMEOUT", proc.stdout
    assert 0.9 < float(outcome[1]) < 4, proc.stdout
    assert "node agent on this machine" in proc.stdout, proc.stdout
    assert f"SUM {10 * 2**20 // 8:.1f}" in proc.stdout, proc.stdout


LOCAL_NODE_DECLARED_DEAD = r'''
import os, signal, time
import numpy as np
import tasuki
from tasuki import api
from tasuki.exceptions import ClusterError

tasuki.init(num_cpus=1)
node = api._cluster.node
os.kill(node.pid, signal.SIGSTOP)        # the node agent hangs: no heartbeat, no answer to the put's ALLOC
started = time.monotonic()
try:
    tasuki.put(np.ones(4 * 2**20 // 8))
    print("PUT")
except ClusterError as e:
    print(f"ERROR {time.monotonic() - started:.2f} {e}")
os.kill(node.pid, signal.SIGCONT)        # told it was declared dead, it stops
print("NODE EXIT", node.wait(timeout=60))
'''


def test_a_driver_waiting_on_its_node_fails_once_the_head_declares_that_node_dead(tmp_path):
    """A put on a local node agent that stopped answering fails as soon as the head declares that
    node dead (it waited for 300 s before), and the node agent, when it wakes, stops."""
    leftovers = CliCluster(tmp_path)
    try:
        proc = subprocess.run([sys.executable, "-c", LOCAL_NODE_DECLARED_DEAD], env=cluster_env(str(tmp_path)),
                              capture_output=True, text=True, timeout=120)
    finally:
        for process in leftovers.processes():
            process.kill()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outcome = proc.stdout.split()
    assert outcome[0] == "ERROR", proc.stdout
    assert float(NODE_TIMEOUT_S) <= float(outcome[1]) < LOST_WITHIN_S, proc.stdout
    assert "the head declared it dead" in proc.stdout and "tasuki.init()" in proc.stdout, proc.stdout
    assert "NODE EXIT 1" in proc.stdout, proc.stdout + proc.stderr
    assert "declared this node dead and forgot it" in proc.stderr, proc.stderr


def hold_refs_until(release: str, count: int) -> int:
    """A task that puts `count` objects and holds their refs until `release` appears (at most 120 s)."""
    refs = [tasuki.put(np.full(1000, float(i))) for i in range(count)]
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(refs)


def test_refs_held_by_the_workers_of_a_dead_node_are_released(cli_cluster, driver, tmp_path):
    """The head forgets a dead node's workers like any process that left: the objects only they
    held are freed (they stayed in the head's object table for good)."""
    objects = lambda: tasuki.api._get_client().query("status")["objects"]     # noqa: E731
    node, pid = cli_cluster.add_node("127.0.0.4", "--num-cpus", "1", "--resources", '{"holder": 1}')
    before = objects()
    release = str(tmp_path / "never")
    try:
        tasuki.remote(hold_refs_until).options(resources={"holder": 1}).remote(release, 20)
        wait_until(lambda: objects() >= before + 21, 60, "the task's 20 puts to reach the head")
    finally:
        os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: node_state(node) == "DEAD", 30, f"node {node} to be declared dead")
    wait_until(lambda: objects() <= before + 1, 30, "the dead workers' objects to be freed")

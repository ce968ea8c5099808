"""Objects lost with their node (SIGKILL) are recomputed from their lineage (lineage.py), as in Ray:
getters and dependent tasks get correct values; what cannot be rebuilt (a `put`, retries spent)
raises ObjectLostError naming the object and the node, as soon as the head declares the node dead.

Each test starts a node agent `doomed` with a custom resource of its own, makes results there,
starts a second one with it that can run them again, and kills the first. LINEAGE_STRESS_RUNS=20 repeats
the kill-at-a-random-moment scenario (one run in the default suite)."""
from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest

import tasuki
from conftest import NODE_TIMEOUT_S, wait_until
from tasuki.exceptions import ObjectLostError

MB = 1 << 20
LOST_WITHIN_S = float(NODE_TIMEOUT_S) + 12     # the head's verdict, with room for a loaded machine
STRESS_RUNS = int(os.environ.get("LINEAGE_STRESS_RUNS", "1"))
_ips = iter(range(20, 250))


def node(cluster, resource: str) -> tuple[str, int]:
    """A fresh node agent with one CPU and `resource` (each test its own): (node id, pid)."""
    return cluster.add_node(f"127.0.0.{next(_ips)}", "--num-cpus", "1", "--resources", f'{{"{resource}": 1}}')


def kill(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)        # the node agent, its zygote and its workers: a lost machine


def node_state(node_id: str) -> str:
    return next(n["State"] for n in tasuki.nodes() if n["NodeID"] == node_id)


def runs(path: str) -> int:
    return len(open(path).read()) if os.path.exists(path) else 0


def produce(seed: float, log: str):
    """2 MB (stored in the node's store, not inline), and a mark in `log` per run."""
    with open(log, "a") as f:
        f.write("x")
    return np.full(2 * MB // 8, seed)


def double(array, log: str):
    with open(log, "a") as f:
        f.write("x")
    return array * 2


def total(array) -> float:
    return float(array.sum())


def put_inside() -> list:
    """A put made on this node: it lives only in this node's store (the list keeps its ref)."""
    return [tasuki.put(np.ones(2 * MB // 8))]


N = 2 * MB // 8


def test_lost_task_outputs_are_recomputed_for_getters_and_dependent_tasks(cli_cluster, driver, tmp_path):
    doomed, pid = node(cli_cluster, "spot_1")
    log = str(tmp_path / "produce")
    try:
        refs = [tasuki.remote(produce).options(resources={"spot_1": 1}).remote(float(i), log) for i in range(3)]
        assert len(tasuki.wait(refs, num_returns=3, timeout=60)[0]) == 3
    finally:
        node(cli_cluster, "spot_1")                 # somewhere to run them again
        kill(pid)
    sums = [tasuki.remote(total).remote(ref) for ref in refs]          # submitted before the verdict
    assert tasuki.get(sums, timeout=120) == [float(i * N) for i in range(3)]
    assert [float(a[0]) for a in tasuki.get(refs, timeout=60)] == [0.0, 1.0, 2.0]
    assert node_state(doomed) == "DEAD"
    assert runs(log) == 6, "each lost result was made again once"


def test_a_lost_result_whose_argument_was_freed_is_recomputed_transitively(cli_cluster, driver, tmp_path):
    doomed, pid = node(cli_cluster, "spot_2")
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    try:
        arg = tasuki.remote(produce).options(resources={"spot_2": 1}).remote(3.0, first)
        doubled = tasuki.remote(double).options(resources={"spot_2": 1}).remote(arg, second)
        assert tasuki.wait([doubled], timeout=60)[0]
        del arg                           # freed: only its lineage is kept, for `doubled`
    finally:
        node(cli_cluster, "spot_2")
        kill(pid)
    wait_until(lambda: node_state(doomed) == "DEAD", 30, f"node {doomed} to be declared dead")
    assert float(tasuki.get(doubled, timeout=120)[0]) == 6.0
    assert (runs(first), runs(second)) == (2, 2)


def test_a_lost_result_whose_retries_are_spent_raises_object_lost(cli_cluster, driver, tmp_path):
    doomed, pid = node(cli_cluster, "spot_3")
    try:
        ref = tasuki.remote(produce).options(resources={"spot_3": 1}, max_retries=0).remote(1.0, str(tmp_path / "log"))
        assert tasuki.wait([ref], timeout=60)[0]
    finally:
        kill(pid)
    started = time.monotonic()
    with pytest.raises(ObjectLostError) as lost:
        tasuki.get(ref, timeout=LOST_WITHIN_S + 10)
    assert time.monotonic() - started < LOST_WITHIN_S
    message = str(lost.value)
    assert ref.hex() in message and doomed in message and "max_retries=0" in message, message


def test_a_lost_put_object_raises_object_lost_at_once_naming_it_and_its_node(cli_cluster, driver):
    doomed, pid = node(cli_cluster, "spot_4")
    try:
        [inner] = tasuki.get(tasuki.remote(put_inside).options(resources={"spot_4": 1}).remote(), timeout=60)
    finally:
        kill(pid)
    wait_until(lambda: node_state(doomed) == "DEAD", 30, f"node {doomed} to be declared dead")
    started = time.monotonic()
    with pytest.raises(ObjectLostError) as lost:
        tasuki.get(inner, timeout=30)
    assert time.monotonic() - started < 5
    message = str(lost.value)
    assert inner.hex() in message and doomed in message and "`put`" in message, message


def chain_step(array, i: int):
    time.sleep(0.05)
    return array + i


@pytest.mark.parametrize("run", range(STRESS_RUNS))
def test_a_node_killed_at_a_random_moment_loses_no_result(cli_cluster, driver, tmp_path, run):
    """Chains of 2 MB results on two nodes; one of them is killed at a random moment."""
    resource = f"spot_5_{run}"
    doomed, pid = node(cli_cluster, resource)
    _, survivor = node(cli_cluster, resource)
    try:
        log = str(tmp_path / "log")
        ends = []
        for i in range(4):
            ref = tasuki.remote(produce).options(resources={resource: 1}).remote(float(i), log)
            for step in range(3):
                ref = tasuki.remote(chain_step).options(resources={resource: 1}).remote(ref, step)
            ends.append(ref)
        time.sleep(random.uniform(0, 1.0))    # the random moment (not a wait for a condition)
        kill(pid)
        values = tasuki.get(ends, timeout=180)
        assert [float(v[0]) for v in values] == [float(i) + 3 for i in range(4)]
    finally:
        kill(survivor)


class Maker:
    def make(self):
        return np.ones(2 * MB // 8)


def test_a_lost_actor_call_result_raises_object_lost_saying_it_is_not_recomputed(cli_cluster, driver):
    doomed, pid = node(cli_cluster, "spot_6")
    try:
        maker = tasuki.remote(Maker).options(resources={"spot_6": 1}).remote()
        ref = maker.make.remote()
        assert tasuki.wait([ref], timeout=60)[0]
    finally:
        kill(pid)
    wait_until(lambda: node_state(doomed) == "DEAD", 30, f"node {doomed} to be declared dead")
    with pytest.raises(ObjectLostError) as lost:
        tasuki.get(ref, timeout=30)
    message = str(lost.value)
    assert ref.hex() in message and doomed in message and "actor call" in message, message


def test_a_driver_that_reaches_only_the_head_reads_the_recomputed_copy(cli_cluster, tmp_path, monkeypatch):
    """Its reads go through the head (relay.py, client.read_remote): one from the dead node fails,
    and it asks the head again instead of failing."""
    monkeypatch.setenv("TASUKI_VIA_HEAD", "1")
    tasuki.init(address=cli_cluster.host_port)
    try:
        doomed, pid = node(cli_cluster, "spot_7")
        try:
            ref = tasuki.remote(produce).options(resources={"spot_7": 1}).remote(5.0, str(tmp_path / "log"))
            assert tasuki.wait([ref], timeout=60)[0]
        finally:
            _, survivor = node(cli_cluster, "spot_7")
            kill(pid)
        try:
            assert tasuki.api._get_client().ensure_route(), "the driver should work through the head"
            assert float(tasuki.get(ref, timeout=120)[0]) == 5.0
            assert node_state(doomed) == "DEAD"
        finally:
            kill(survivor)
    finally:
        tasuki.shutdown()


def wrap(refs: list):
    """2 MB and the ref it was given: the stored result contains a ref (pinned while the result lives)."""
    return np.full(2 * MB // 8, 1.0), refs[0]


def test_a_recomputed_result_still_holds_the_ref_it_contained(cli_cluster, driver):
    doomed, pid = node(cli_cluster, "spot_8")
    try:
        inner = tasuki.put("inner value")
        ref = tasuki.remote(wrap).options(resources={"spot_8": 1}).remote([inner])
        assert tasuki.wait([ref], timeout=60)[0]
        del inner                     # only the result (and, while it reruns, its task's arguments) pin it
    finally:
        _, survivor = node(cli_cluster, "spot_8")
        kill(pid)
    try:
        wait_until(lambda: node_state(doomed) == "DEAD", 30, f"node {doomed} to be declared dead")
        array, inner = tasuki.get(ref, timeout=120)
        assert float(array[0]) == 1.0 and tasuki.get(inner, timeout=30) == "inner value"
    finally:
        kill(survivor)

"""A node that leaves loses nothing: SIGTERM to a node agent drains it (its tasks finish or are
handed back, its actors move, the objects only it holds are copied away) and it exits 0; the
drain endpoint says what is left and can be cancelled; a node holding only secondary copies is
idle in /api/v1/demand; the head's SIGTERM tells its drivers at once.

The decisions (drain.py) are tested first with plain data, then the whole on real processes: a
head on 127.0.0.1 and node agents started here on 127.0.0.x (so that their exit codes are ours).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import tasuki
from conftest import CliCluster, wait_until
from tasuki import drain as D
from tasuki_operator.head_api import HeadAPI

MB = 1 << 20


# --- the decisions, with plain data -----------------------------------------------------------------
ALIVE, DRAINING, DEAD = "alive", "draining", "dead"
STATES = {"a": ALIVE, "b": ALIVE, "d": DRAINING, "e": DRAINING, "x": DEAD}


@pytest.mark.parametrize("locations, node, moves", [
    (["d"], "d", True),                  # the only copy
    (["d", "a"], "d", False),            # a copy stays on an alive node
    (["d", "e"], "d", True),             # the other copy leaves too
    (["d", "x"], "d", True),             # the other copy is on a dead node
    (["a"], "d", False),                 # not on this node at all
    ([], "d", False),
])
def test_needs_move(locations, node, moves):
    assert D.needs_move(locations, node, STATES) is moves


def test_objects_to_move_and_primary_counts():
    objects = [(b"1", ["d"], 10), (b"2", ["d", "a"], 20), (b"3", ["a"], 30), (b"4", ["a", "b"], 40),
               (b"5", ["d", "e"], 50)]
    assert D.objects_to_move(objects, "d", STATES) == [(b"1", 10), (b"5", 50)]
    # primary: no other alive node holds it; "a" and "b" share #4, so neither is its primary holder
    assert D.primary_counts(objects, STATES) == {"a": 2, "d": 2, "e": 1}


@pytest.mark.parametrize("moves, room, copying, now, expected", [
    # largest first, each to the roomiest node that holds it; room is consumed
    ([(b"s", 10), (b"l", 60)], {"a": 100, "b": 50}, {}, 0, [(b"l", "a"), (b"s", "b")]),
    # fits nowhere: left out
    ([(b"huge", 500)], {"a": 100}, {}, 0, []),
    # under way to a candidate, recently: not asked again
    ([(b"o", 10)], {"a": 100, "b": 100}, {b"o": ("a", 0.0)}, 1.0, []),
    # under way too long: asked of another node
    ([(b"o", 10)], {"a": 100, "b": 100}, {b"o": ("a", 0.0)}, D.COPY_RETRY_S + 1, [(b"o", "b")]),
    # its target is no candidate any more (left, or full): asked again
    ([(b"o", 10)], {"b": 100}, {b"o": ("a", 0.0)}, 1.0, [(b"o", "b")]),
    # no room anywhere
    ([(b"o", 10)], {}, {}, 0, []),
])
def test_choose_targets(moves, room, copying, now, expected):
    assert D.choose_targets(moves, dict(room), copying, now) == expected


@pytest.mark.parametrize("running, actors, moves, drained", [
    (0, 0, [], True),
    (1, 0, [], False),
    (0, 1, [], False),
    (0, 0, [(b"o", 5)], False),
])
def test_answer_drained_only_when_nothing_is_left(running, actors, moves, drained):
    answer = D.answer("n", DRAINING, running, actors, moves, 3, None, 0.0)
    assert answer == {"node_id": "n", "state": DRAINING, "drained": drained, "running_tasks": running,
                      "actors": actors, "objects_to_move": len(moves), "bytes_to_move": sum(s for _, s in moves),
                      "objects": 3}


def test_answer_of_a_leaving_node_says_why_and_how_long():
    drain = D.Drain("n", D.SIGTERM, deadline=12.0, copying={b"o": ("a", 1.0)}, handed_back=2)
    answer = D.answer("n", DRAINING, 0, 0, [(b"o", 7)], 1, drain, 10.0)
    assert (answer["reason"], answer["seconds_left"], answer["copies_under_way"], answer["tasks_handed_back"],
            answer["bytes_to_move"]) == ("sigterm", 2.0, 1, 2, 7)
    assert D.past_deadline(drain, 12.0) and not D.past_deadline(drain, 11.9)
    assert not D.past_deadline(D.Drain("n", D.API), 1e12)


@pytest.mark.parametrize("drain, state, refused_with", [
    (None, ALIVE, None),
    (D.Drain("n", D.API), DRAINING, None),
    (D.Drain("n", D.SIGTERM, 5.0), DRAINING, "SIGTERM"),
    (None, DEAD, "dead"),
])
def test_cancel_refusal(drain, state, refused_with):
    why = D.cancel_refusal("n", drain, state)
    assert (why is None) if refused_with is None else (refused_with in why and "node n" in why)


def test_drain_module_does_no_io():
    """drain.py decides; it imports nothing that reads clocks or opens sockets."""
    import ast
    tree = ast.parse(open(D.__file__).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "dataclasses"}, imported


# --- real processes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head with a 1-CPU node on 127.0.0.1 (a 512 MB store: it takes the copies), this process a driver."""
    cluster = CliCluster(tmp_path_factory.mktemp("tasuki"))
    saved = {k: v for k, v in os.environ.items() if k.startswith("TASUKI_")}
    for key in saved:
        del os.environ[key]
    os.environ["TASUKI_TMPDIR"] = cluster.tmpdir
    try:
        cluster.start_head("--num-cpus", "1", "--object-store-memory", "512M")
        tasuki.init(address=cluster.host_port)
        cluster.api = HeadAPI(cluster.info["metrics"], cluster.info["token"], timeout_s=30.0)
        yield cluster
    finally:
        tasuki.shutdown()
        cluster.stop()
        os.environ.pop("TASUKI_TMPDIR", None)
        os.environ.update(saved)


class Node:
    """A node agent started here (`python -m tasuki.node`): its exit code is ours to read."""

    def __init__(self, cluster: CliCluster, ip: str, *flags: str, drain_timeout: float = 30.0) -> None:
        env = {**cluster.env, "TASUKI_TOKEN": cluster.info["token"], "TASUKI_DRAIN_TIMEOUT_S": str(drain_timeout)}
        self.log = os.path.join(cluster.tmpdir, f"node-{ip}-{time.monotonic_ns()}.log")
        known = {n["NodeID"] for n in tasuki.nodes()}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tasuki.node", "--head", cluster.info["address"], "--node-ip-address", ip,
                 "--object-store-memory", str(256 * MB), *flags],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.node_id = wait_until(lambda: next((n["NodeID"] for n in tasuki.nodes() if n["NodeID"] not in known
                                                and n["NodeManagerAddress"] == ip and n["State"] == "ALIVE"), None),
                                  60, f"the node agent on {ip} to join")

    def leave(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def exit_code(self, timeout: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the node agent did not exit within {timeout:g} s; its log:\n{self.output()}")

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def node_state(node_id: str) -> str:
    return next(n["State"] for n in tasuki.nodes() if n["NodeID"] == node_id)


def node_entry(cluster, node_id: str) -> dict:
    return next(n for n in cluster.api.demand()["nodes"] if n["node_id"] == node_id)


def ten_megabytes(seed: int):
    return np.full(10 * MB // 8, float(seed))


def pause(seconds: float, i: int) -> int:
    time.sleep(seconds)
    return i


def sleep_until(path: str, result=None, limit: float = 120.0):
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return result


def test_sigterm_while_busy_loses_no_task_and_no_object(cluster):
    """The issue's test: 200 tasks run and 20 referenced 10 MB objects live only on the node."""
    node = Node(cluster, "127.0.0.2", "--num-cpus", "2", "--resources", '{"leaving": 20}')
    try:
        make = tasuki.remote(ten_megabytes).options(resources={"leaving": 1})
        objects = [make.remote(i) for i in range(20)]
        assert len(tasuki.wait(objects, num_returns=20, timeout=120)[0]) == 20
        work = tasuki.remote(pause)
        results = [work.remote(0.03, i) for i in range(200)]
        wait_until(lambda: node_entry(cluster, node.node_id)["busy_workers"] > 0, 60,
                   "tasks to run on the leaving node")
        node.leave()
        assert tasuki.get(results, timeout=120) == list(range(200))
        assert node.exit_code() == 0, node.output()
        assert node_state(node.node_id) == "DEAD"
        for i, ref in enumerate(objects):          # read from the copies: the node is gone
            assert float(tasuki.get(ref, timeout=60)[0]) == float(i)
        assert "drained" in node.output()
    finally:
        node.kill()


def who_am_i(path: str) -> str:
    """Sleeps long the first time it runs (it will be handed back), returns at once the second."""
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write("x")
    if first:
        time.sleep(120)
    return tasuki.get_runtime_context().get_node_id()


def test_a_task_past_the_drain_timeout_is_handed_back_without_counting_an_attempt(cluster, tmp_path):
    leaving = Node(cluster, "127.0.0.3", "--num-cpus", "1", "--resources", '{"spot": 1}', drain_timeout=1.0)
    spare = None
    try:
        marker = str(tmp_path / "started")
        ref = tasuki.remote(who_am_i).options(resources={"spot": 1}, max_retries=0).remote(marker)
        wait_until(lambda: os.path.exists(marker), 60, "the task to start on the leaving node")
        spare = Node(cluster, "127.0.0.4", "--num-cpus", "1", "--resources", '{"spot": 1}')
        started = time.monotonic()
        leaving.leave()
        assert tasuki.get(ref, timeout=60) == spare.node_id     # max_retries=0, and yet it ran again
        assert open(marker).read() == "xx"
        assert leaving.exit_code() == 0, leaving.output()
        assert time.monotonic() - started < 30
    finally:
        leaving.kill()
        if spare is not None:
            spare.kill()


@tasuki.remote
class Where:
    def node(self) -> str:
        return tasuki.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()


def test_an_actor_with_restarts_moves_without_using_one_one_without_waits_for_the_deadline(cluster):
    leaving = Node(cluster, "127.0.0.5", "--num-cpus", "1", "--resources", '{"home": 2}', drain_timeout=2.0)
    spare = None
    try:
        mover = Where.options(resources={"home": 1}, max_restarts=1, max_task_retries=2).remote()
        stayer = Where.options(resources={"home": 1}).remote()
        assert tasuki.get([mover.node.remote(), stayer.node.remote()], timeout=60) == [leaving.node_id] * 2
        spare = Node(cluster, "127.0.0.6", "--num-cpus", "1", "--resources", '{"home": 2}')
        leaving.leave()        # (a call sent before the head hears of it may still reach the old place)
        wait_until(lambda: tasuki.get(mover.node.remote(), timeout=60) == spare.node_id, 60, "the actor to move")
        os.kill(tasuki.get(mover.pid.remote(), timeout=60), signal.SIGKILL)     # the move used no restart:
        assert tasuki.get(mover.node.remote(), timeout=60) == spare.node_id     # its one restart is still there
        assert leaving.exit_code() == 0, leaving.output()      # the stayer ended at the deadline
        with pytest.raises(tasuki.exceptions.ActorDiedError, match="may not restart"):
            tasuki.get(stayer.node.remote(), timeout=60)
    finally:
        leaving.kill()
        if spare is not None:
            spare.kill()


def test_drain_answer_cancel_and_idle_with_secondary_copies_only(cluster, tmp_path):
    node = Node(cluster, "127.0.0.7", "--num-cpus", "1", "--resources", '{"g": 1}')
    api = cluster.api
    try:
        obj = tasuki.remote(ten_megabytes).options(resources={"g": 1}).remote(7)
        assert tasuki.wait([obj], timeout=60)[0]
        # its only copy keeps the node busy for the autoscaler
        wait_until(lambda: node_entry(cluster, node.node_id)["object_store"]["objects"] == 1, 30, "a heartbeat")
        assert node_entry(cluster, node.node_id)["seconds_idle"] == 0.0

        # an API drain copies it away; the node is drained once the copy is sealed
        answer = api.drain(node.node_id, if_idle=False)
        assert (answer.state, answer.running_tasks, answer.actors) == ("draining", 0, 0)
        answer = wait_until(lambda: (a := api.drain(node.node_id, if_idle=False)).drained and a, 60, "the copy")
        assert (answer.objects_to_move, answer.bytes_to_move) == (0, 0)

        # cancelled: alive again, holding a secondary copy only: idle for the autoscaler
        answer = api.cancel_drain(node.node_id)
        assert (answer.cancelled, answer.state, answer.refused) == (True, "alive", False)
        wait_until(lambda: node_entry(cluster, node.node_id)["seconds_idle"] > 0, 30, "the node to count as idle")
        assert float(tasuki.get(obj, timeout=60)[0]) == 7.0

        # busy, then SIGTERM: the answer shows what is left, and that drain cannot be cancelled
        release = str(tmp_path / "release")
        task = tasuki.remote(sleep_until).options(resources={"g": 1}).remote(release, "done")
        wait_until(lambda: node_entry(cluster, node.node_id)["busy_workers"] == 1, 60, "the task to start")
        node.leave()
        wait_until(lambda: node_state(node.node_id) == "DRAINING", 30, "the node to drain")
        answer = api.cancel_drain(node.node_id)
        assert answer.refused and not answer.cancelled and "SIGTERM" in answer.message, answer
        request = urllib.request.Request(f"{cluster.info['metrics']}/api/v1/nodes/{node.node_id}/drain",
                                         method="DELETE", headers={"Authorization": f"Bearer {cluster.info['token']}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 409 and json.loads(refused.value.read())["reason"] == "sigterm"
        answer = api.drain(node.node_id, if_idle=False)
        assert (answer.drained, answer.running_tasks, answer.state) == (False, 1, "draining")
        open(release, "w").close()
        assert tasuki.get(task, timeout=60) == "done"
        assert node.exit_code() == 0, node.output()
        answer = api.drain(node.node_id, if_idle=False)
        assert (answer.drained, answer.state, answer.running_tasks) == (True, "dead", 0)
        assert float(tasuki.get(obj, timeout=60)[0]) == 7.0
    finally:
        node.kill()


WAITING_DRIVER = r'''
import sys, time, tasuki
tasuki.init(address=sys.argv[1])
ref = tasuki.remote(time.sleep).remote(600)
print("WAITING", flush=True)
started = time.monotonic()
try:
    tasuki.get(ref)
except tasuki.exceptions.ClusterError as e:
    print(f"RAISED {time.monotonic() - started:.1f} {e}", flush=True)
'''


@pytest.mark.parametrize("block", [False, True], ids=["head", "tasuki-start-block"])
def test_the_heads_sigterm_fails_a_waiting_get_at_once(tmp_path, block):
    other = CliCluster(tmp_path)
    foreground = None
    try:
        if block:        # the head pod's main process: it passes SIGTERM on to the head
            foreground = subprocess.Popen([sys.executable, "-m", "tasuki", "start", "--head", "--port", "0",
                                           "--node-ip-address", "127.0.0.1", "--metrics-port", "0", "--num-cpus", "1",
                                           "--object-store-memory", "256M", "--block"],
                                          env=other.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)
            wait_until(lambda: os.path.exists(os.path.join(other.tmpdir, "cluster.json")), 60, "the cluster file")
        else:
            other.start_head("--num-cpus", "1")
        info = other.info
        env = {**other.env, "TASUKI_TOKEN": info["token"], "TASUKI_HEAD_RECONNECT_S": "300"}
        driver = subprocess.Popen([sys.executable, "-c", WAITING_DRIVER, other.host_port], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert driver.stdout.readline().strip() == "WAITING"
        host = other.host_port.split(":")[0]       # read now: a stopping `start --block` removes the file
        os.kill(foreground.pid if block else info["head_pid"], signal.SIGTERM)
        out, _ = driver.communicate(timeout=60)
        assert out.startswith("RAISED"), out
        seconds = float(out.split()[1])
        assert seconds < 15, out
        assert "shut down (SIGTERM)" in out and host in out, out
        wait_until(lambda: not [p for p in other.processes() if p.pid != driver.pid], 60,
                   "the node agent and its workers to exit")
        if block:
            assert foreground.wait(60) == 0
    finally:
        if foreground is not None and foreground.poll() is None:
            os.killpg(foreground.pid, signal.SIGKILL)
            foreground.wait()
        other.stop()


def test_tasuki_start_block_passes_sigterm_on_and_waits_for_the_drain(cluster, tmp_path):
    """A pod's main process (`tasuki start --block`) gets SIGTERM: its node agent drains first."""
    env = {**cluster.env, "TASUKI_TOKEN": cluster.info["token"]}
    known = {n["NodeID"] for n in tasuki.nodes()}
    block = subprocess.Popen([sys.executable, "-m", "tasuki", "start", "--address", cluster.host_port,
                              "--node-ip-address", "127.0.0.8", "--num-cpus", "1", "--resources", '{"pod": 1}',
                              "--object-store-memory", str(256 * MB), "--block"],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        node_id = wait_until(lambda: next((n["NodeID"] for n in tasuki.nodes() if n["NodeID"] not in known
                                           and n["State"] == "ALIVE"), None), 60, "the pod's node to join")
        release = str(tmp_path / "release")
        task = tasuki.remote(sleep_until).options(resources={"pod": 1}).remote(release, "finished")
        wait_until(lambda: node_entry(cluster, node_id)["busy_workers"] == 1, 60, "the task to start")
        block.send_signal(signal.SIGTERM)
        wait_until(lambda: node_state(node_id) == "DRAINING", 30, "the node to drain")
        assert block.poll() is None          # it waits for the drain: the task still runs
        open(release, "w").close()
        assert tasuki.get(task, timeout=60) == "finished"
        out, _ = block.communicate(timeout=60)
        assert block.returncode == 0, out
        assert "drained and exited" in out, out
    finally:
        if block.poll() is None:
            os.killpg(block.pid, signal.SIGKILL)
            block.wait()

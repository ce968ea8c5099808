"""Actors against real processes: an embedded cluster first, then a CLI-started multi-node one.

Embedded part: one `tasuki.init(num_cpus=2, num_gpus=1, resources={"special": 2})` serves every
test up to the multi-node section (the node agent is told it has a GPU; no CUDA is touched).
Each test kills the actors it made (the `spawned` fixture), so resource checks start from a
clean cluster. Multi-node part (file order matters: it comes last): the head node {CPU: 1} on
127.0.0.1 from conftest's `cli_cluster`, node2 {CPU: 1, node2: 1} on 127.0.0.2 and node3
{CPU: 1, node3: 1} on 127.0.0.3; the node-death test adds two more nodes and kills one. The head
there declares a node dead after TASUKI_NODE_TIMEOUT=3 s without heartbeats.

Waits are conditions with deadlines (`wait_until`, `get(timeout=...)`); the few fixed intervals
(`wait(timeout=...)` to show that something did *not* happen) only ever make a test pass more
slowly, never flakily.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import wait_until

import tasuki
from tasuki import exceptions
from tasuki.exceptions import ActorDiedError

GET_TIMEOUT_S = 60          # a call's result on a loaded two-core machine
_connected = {"to": None}   # which cluster this process is connected to: "embedded" or "multi"


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _disconnect_at_end():
    yield
    tasuki.shutdown()
    _connected["to"] = None


@pytest.fixture
def embedded(_disconnect_at_end):
    """This process connected to the module's embedded cluster {CPU: 2, GPU: 1, special: 2}."""
    if _connected["to"] != "embedded":
        tasuki.shutdown()
        tasuki.init(num_cpus=2, num_gpus=1, resources={"special": 2})
        _connected["to"] = "embedded"
    return tasuki


@pytest.fixture
def spawned():
    """A list the test appends its actor handles to; they are killed after the test."""
    handles: list = []
    yield handles
    if tasuki.is_initialized():
        for handle in handles:
            try:
                tasuki.kill(handle)
            except Exception:
                pass


def free_resources() -> dict:
    available = tasuki.available_resources()          # a resource with nothing free is left out, as in Ray
    return {k: available.get(k, 0.0) for k in ("CPU", "GPU", "special")}


def wait_resources(expected: dict, what: str) -> None:
    wait_until(lambda: free_resources() == expected, 30, f"{what}: available {expected} (now {free_resources()})")


def actor_row(handle) -> dict | None:
    rows = tasuki.api._get_client().query("status")["actors"]
    return next((r for r in rows if r["actor_id"] == handle._actor_id.hex()), None)


def wait_dead(handle) -> dict:
    """The actor's status row once the head has it DEAD. kill() is asynchronous, as in Ray: a call
    made right after it may still reach the process before the kill does."""
    return wait_until(lambda: (r := actor_row(handle)) and r["state"] == "DEAD" and r, 30,
                      f"actor {handle} to be DEAD")


def died(ref, timeout: float = GET_TIMEOUT_S) -> str:
    """The message of the ActorDiedError that getting `ref` raises."""
    with pytest.raises(ActorDiedError) as info:
        tasuki.get(ref, timeout=timeout)
    return str(info.value)


# --- actor classes used by several tests ----------------------------------------------------------
@tasuki.remote
class Counter:
    def __init__(self, start=0):
        self.value = start
        self.seen = []

    def add(self, n=1):
        self.value += n
        return self.value

    def append(self, item):
        self.seen.append(item)
        return len(self.seen)

    def items(self):
        return self.seen

    def pid(self):
        return os.getpid()

    def where(self):
        return tasuki.get_runtime_context().get_node_id(), os.getpid()

    def ids(self):
        return tasuki.get_runtime_context().get_actor_id(), tasuki.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    def fail(self, text):
        raise KeyError(text)

    @tasuki.method(num_returns=2)
    def pair(self):
        return self.value, -self.value

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds

    def crash(self, code):
        os._exit(code)


class Plain:
    """Not decorated: made remote with `tasuki.remote(Plain)`."""

    def __init__(self, tag):
        self.tag = tag

    def tag_of(self):
        return self.tag


@tasuki.remote
def call_counter(counter, n):
    """A task that calls an actor through a handle passed as an argument."""
    return tasuki.get([counter.add.remote(1) for _ in range(n)])[-1]


@tasuki.remote
def call_counters_in_list(counters):
    return [tasuki.get(c.add.remote(100)) for c in counters]


@tasuki.remote
class Relay:
    """An actor that calls another actor it was handed."""

    def __init__(self, target):
        self.target = target

    def forward(self, n):
        return tasuki.get(self.target.add.remote(n))

    def forward_to(self, other, n):
        return tasuki.get(other.add.remote(n))


# === the embedded cluster ==========================================================================
def test_decorated_class_runs_in_its_own_process(embedded, spawned):
    counter = Counter.remote(10)
    spawned.append(counter)
    ref = counter.add.remote(5)
    assert isinstance(ref, tasuki.ObjectRef)
    assert tasuki.get(ref, timeout=GET_TIMEOUT_S) == 15
    assert tasuki.get(counter.add.remote(), timeout=GET_TIMEOUT_S) == 16       # state lives in the actor
    pid = tasuki.get(counter.pid.remote(), timeout=GET_TIMEOUT_S)
    assert pid != os.getpid()
    assert tasuki.get(counter.pid.remote(), timeout=GET_TIMEOUT_S) == pid       # the same dedicated process
    actor_id, _, _ = tasuki.get(counter.ids.remote(), timeout=GET_TIMEOUT_S)
    assert actor_id == counter._actor_id.hex()
    first, second = counter.pair.remote()                                       # @tasuki.method(num_returns=2)
    assert tasuki.get([first, second], timeout=GET_TIMEOUT_S) == [16, -16]
    # a method that raises: the caller gets the original type, the actor lives on
    with pytest.raises(KeyError, match="no such key") as info:
        tasuki.get(counter.fail.remote("no such key"), timeout=GET_TIMEOUT_S)
    assert isinstance(info.value, exceptions.TaskError) and "Counter.fail" in str(info.value)
    assert tasuki.get(counter.add.remote(), timeout=GET_TIMEOUT_S) == 17
    # misuse says what to do
    with pytest.raises(TypeError, match=r"Counter.remote"):
        Counter(1)
    with pytest.raises(TypeError, match=r"\.add\.remote"):
        counter.add(1)
    with pytest.raises(AttributeError, match="no method 'nope'"):
        counter.nope.remote()


def test_remote_on_an_undecorated_class(embedded, spawned):
    PlainActor = tasuki.remote(Plain)
    assert isinstance(PlainActor, tasuki.ActorClass)
    handle = PlainActor.remote("plain")
    spawned.append(handle)
    assert isinstance(handle, tasuki.ActorHandle)
    assert tasuki.get(handle.tag_of.remote(), timeout=GET_TIMEOUT_S) == "plain"
    assert Plain("still a class").tag == "still a class"        # the original class is untouched


def test_options_validate_and_apply(embedded, spawned):
    with pytest.raises(TypeError, match="unknown option"):
        Counter.options(num_cpu=1)
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="num_cpus"):
        Counter.options(num_cpus=-1)
    named = Counter.options(name="opts-counter", num_cpus=0).remote(3)
    spawned.append(named)
    assert tasuki.get(named.add.remote(), timeout=GET_TIMEOUT_S) == 4
    assert tasuki.get_actor("opts-counter") == named
    assert Counter._options["name"] is None                # options() returned a copy


def test_calls_from_one_caller_run_in_submission_order(embedded, spawned):
    counter = Counter.remote()
    spawned.append(counter)
    # sent before the actor is up (queued in this process), then while it runs
    refs = [counter.append.remote(i) for i in range(1000)]
    assert tasuki.get(refs, timeout=GET_TIMEOUT_S) == list(range(1, 1001))
    assert tasuki.get(counter.items.remote(), timeout=GET_TIMEOUT_S) == list(range(1000))


@tasuki.remote
class Gate:
    """Calls wait at a barrier of `parties`: they pass only if that many calls run at the same time."""

    def __init__(self, parties):
        self.barrier = threading.Barrier(parties)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def meet(self, timeout):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return "broken"
        finally:
            with self.lock:
                self.running -= 1

    def most_at_once(self):
        return self.most


def test_max_concurrency_runs_calls_on_a_thread_pool(embedded, spawned):
    gate = Gate.options(max_concurrency=4).remote(4)
    spawned.append(gate)
    results = tasuki.get([gate.meet.remote(30) for _ in range(4)], timeout=GET_TIMEOUT_S)
    assert sorted(results) == [0, 1, 2, 3]         # every call passed the barrier: all 4 ran at once
    assert tasuki.get(gate.most_at_once.remote(), timeout=GET_TIMEOUT_S) == 4


def test_default_actor_runs_one_call_at_a_time(embedded, spawned):
    gate = Gate.remote(2)
    spawned.append(gate)
    # two calls can never meet: the first waits out its timeout alone, then the second does
    results = tasuki.get([gate.meet.remote(0.3), gate.meet.remote(0.3)], timeout=GET_TIMEOUT_S)
    assert results == ["broken", "broken"]
    assert tasuki.get(gate.most_at_once.remote(), timeout=GET_TIMEOUT_S) == 1


@tasuki.remote
class Sleeper:
    def __init__(self):
        self.done = 0

    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        self.done += 1
        return seconds

    async def finished(self):
        return self.done

    def sync_method(self):
        return "sync in an async actor"


def test_async_actor_runs_calls_concurrently(embedded, spawned):
    sleeper = Sleeper.remote()
    spawned.append(sleeper)
    assert tasuki.get(sleeper.finished.remote(), timeout=GET_TIMEOUT_S) == 0      # up and running
    started = time.time()
    results = tasuki.get([sleeper.nap.remote(1) for _ in range(10)], timeout=GET_TIMEOUT_S)
    elapsed = time.time() - started
    assert results == [1] * 10
    assert elapsed < 3, f"ten 1 s async calls took {elapsed:.1f} s: they did not overlap"
    assert tasuki.get(sleeper.finished.remote(), timeout=GET_TIMEOUT_S) == 10
    assert tasuki.get(sleeper.sync_method.remote(), timeout=GET_TIMEOUT_S) == "sync in an async actor"


def test_handles_travel_to_tasks_and_actors(embedded, spawned):
    counter = Counter.remote()
    other = Counter.remote(1000)
    spawned += [counter, other]
    # a task calls the actor directly through a handle passed as an argument, or inside a list
    assert tasuki.get(call_counter.remote(counter, 5), timeout=GET_TIMEOUT_S) == 5
    assert tasuki.get(call_counters_in_list.remote([counter, other]), timeout=GET_TIMEOUT_S) == [105, 1100]
    # an actor holds a handle given to its constructor, and takes another one as a call argument
    relay = Relay.remote(counter)
    spawned.append(relay)
    assert tasuki.get(relay.forward.remote(10), timeout=GET_TIMEOUT_S) == 115
    assert tasuki.get(relay.forward_to.remote(other, 1), timeout=GET_TIMEOUT_S) == 1101
    # every caller reached the same instance
    assert tasuki.get(counter.add.remote(0), timeout=GET_TIMEOUT_S) == 115
    # a handle that went through put/get is still the same actor
    again = tasuki.get(tasuki.put(counter), timeout=GET_TIMEOUT_S)
    assert again == counter and tasuki.get(again.add.remote(1), timeout=GET_TIMEOUT_S) == 116


def test_named_actors_get_actor_and_uniqueness(embedded, spawned):
    first = Counter.options(name="unique").remote(1)
    spawned.append(first)
    assert tasuki.get(first.add.remote(), timeout=GET_TIMEOUT_S) == 2
    with pytest.raises(ValueError, match="'unique' is already taken.*Please use a different name"):
        Counter.options(name="unique").remote()
    same = Counter.options(name="unique", get_if_exists=True).remote(500)
    assert same == first and tasuki.get(same.add.remote(), timeout=GET_TIMEOUT_S) == 3   # not a new one
    with pytest.raises(ValueError, match="get_if_exists=True needs the actor's name"):   # as Ray, at options()
        Counter.options(num_cpus=1, get_if_exists=True)
    with pytest.raises(ValueError, match="needs the actor's name"):
        tasuki.remote(get_if_exists=True)(Counter.__ray_actor_class__)
    found = tasuki.get_actor("unique")
    assert found == first and tasuki.get(found.add.remote(), timeout=GET_TIMEOUT_S) == 4
    # namespaces keep names apart
    elsewhere = Counter.options(name="unique", namespace="other").remote(50)
    spawned.append(elsewhere)
    assert elsewhere != first
    assert tasuki.get(tasuki.get_actor("unique", namespace="other").add.remote(), timeout=GET_TIMEOUT_S) == 51
    assert tasuki.get_actor("unique", namespace="default") == first
    with pytest.raises(ValueError, match="Failed to look up actor with name 'missing' in namespace 'default': no live actor"):
        tasuki.get_actor("missing")
    with pytest.raises(ValueError, match="namespace 'nowhere'"):
        tasuki.get_actor("unique", namespace="nowhere")
    # a dead actor's name is free again
    tasuki.kill(first)
    wait_until(lambda: _lookup("unique") is None, 30, "the killed actor's name to be released")
    reborn = Counter.options(name="unique").remote(7)
    spawned.append(reborn)
    assert reborn != first and tasuki.get(tasuki.get_actor("unique").add.remote(), timeout=GET_TIMEOUT_S) == 8


def _lookup(name, namespace=None):
    try:
        return tasuki.get_actor(name, namespace)
    except ValueError:
        return None


@tasuki.remote
class Blocker:
    def __init__(self, marker=None):
        self.marker = marker

    def block(self, started_file):
        open(started_file, "w").close()
        time.sleep(300)

    def ping(self):
        return "pong"


def test_kill_fails_running_queued_and_future_calls(embedded, spawned, tmp_path):
    blocker = Blocker.remote()
    spawned.append(blocker)
    assert tasuki.get(blocker.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    started = tmp_path / "started"
    running = blocker.block.remote(str(started))
    queued = [blocker.ping.remote() for _ in range(3)]
    wait_until(started.exists, 30, "the blocking call to start")
    tasuki.kill(blocker)
    for ref in [running, *queued, blocker.ping.remote()]:
        assert "killed" in died(ref)
    with pytest.raises(exceptions.RayActorError, match="killed with tasuki.kill"):   # Ray's name catches it
        tasuki.get(blocker.ping.remote(), timeout=GET_TIMEOUT_S)
    with pytest.raises(TypeError, match="ActorHandle"):
        tasuki.kill("not a handle")


def test_a_dead_actor_leaves_no_socket_file(embedded, spawned):
    from tasuki import config
    actor = Fragile.remote()
    spawned.append(actor)
    tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
    sockets = lambda: {n for n in os.listdir(config.session_dir()) if n.startswith("actor-")}
    before = sockets()
    assert before                                         # the embedded cluster's actors listen on IPC
    tasuki.kill(actor)
    wait_dead(actor)
    wait_until(lambda: len(sockets()) < len(before), 30, "the killed actor's socket file to be removed")


@tasuki.remote
class Fragile:
    def __init__(self, fail_with=None):
        if fail_with:
            raise ValueError(fail_with)
        self.calls = 0

    def ping(self):
        self.calls += 1
        return self.calls, os.getpid()

    def crash(self, code):
        os._exit(code)

    def crash_once(self, marker):
        """Crash the process the first time (no marker file yet); return normally after that."""
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        return "survived", os.getpid()


# The table of ways an actor dies: how it is made to die, and what its calls then say.
DEATHS = {
    "killed": ("kill", ["killed with tasuki.kill()"]),
    "crashed": ("exit", ["exited with code 7", "died"]),
    "constructor raised": ("constructor", ["an error was raised in its creation task, tasuki::Fragile.__init__() (pid=",
                                           "in __init__", "ValueError: bad config 42"]),
}


@pytest.mark.parametrize("case", sorted(DEATHS))
def test_a_dead_actor_says_why(embedded, spawned, case):
    how, expected = DEATHS[case]
    actor = Fragile.remote("bad config 42" if how == "constructor" else None)
    spawned.append(actor)
    if how == "kill":
        assert tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)[0] == 1
        tasuki.kill(actor)
        wait_dead(actor)
        pending = actor.ping.remote()
    elif how == "exit":
        assert tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)[0] == 1
        pending = actor.crash.remote(7)
    else:
        pending = actor.ping.remote()              # sent while the constructor runs
    messages = [died(pending)] + [died(actor.ping.remote()) for _ in range(2)]   # every later call too
    for message in messages:
        assert "Fragile" in message
        for text in expected:
            assert text in message, message
    row = wait_dead(actor)
    assert all(text in row["cause"] for text in expected), row


def test_max_restarts_restarts_a_crashed_actor(embedded, spawned):
    actor = Fragile.options(max_restarts=1).remote()
    spawned.append(actor)
    assert tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)[0] == 1
    calls, pid = tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
    assert calls == 2
    # the interrupted call fails (no max_task_retries) and says why
    assert "exited with code 5" in died(actor.crash.remote(5))
    calls, new_pid = tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
    assert calls == 1 and new_pid != pid               # the constructor ran again in a new process
    row = actor_row(actor)
    assert row["restarts"] == 1 and row["state"] == "ALIVE"
    # the one restart is spent: the next crash is final
    assert "exited with code 6" in died(actor.crash.remote(6))
    assert "exited with code 6" in died(actor.ping.remote())


def test_max_task_retries_retries_the_interrupted_call(embedded, spawned, tmp_path):
    marker = str(tmp_path / "crashed-once")
    actor = Fragile.options(max_restarts=1, max_task_retries=1).remote()
    spawned.append(actor)
    _, pid = tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
    result, new_pid = tasuki.get(actor.crash_once.remote(marker), timeout=GET_TIMEOUT_S)
    assert result == "survived" and new_pid != pid and os.path.exists(marker)
    assert actor_row(actor)["restarts"] == 1
    assert tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)[0] == 1      # fresh state after the restart


def test_kill_without_no_restart_lets_the_actor_restart(embedded, spawned):
    actor = Fragile.options(max_restarts=2).remote()
    spawned.append(actor)
    _, pid = tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
    tasuki.kill(actor, no_restart=False)
    # the kill is asynchronous: a call may still reach the old process, or fail while the actor
    # restarts; once it is back it answers from a new process with fresh state
    def restarted():
        try:
            calls, new_pid = tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)
        except ActorDiedError:
            return None
        return new_pid != pid and (calls, new_pid)
    calls, _ = wait_until(restarted, 60, "the killed actor to restart")
    assert calls == 1 and actor_row(actor)["restarts"] == 1
    tasuki.kill(actor)                                  # no_restart=True (the default) is final
    wait_dead(actor)
    assert "killed" in died(actor.ping.remote())


def test_actor_resources_are_held_while_it_lives(embedded, spawned):
    idle = {"CPU": 2.0, "GPU": 1.0, "special": 2.0}
    wait_resources(idle, "before")
    # by default an actor needs a CPU to be placed but holds none while it runs: four fit on 2 CPUs
    light = [Counter.remote(i) for i in range(4)]
    spawned += light
    assert tasuki.get([a.add.remote() for a in light], timeout=GET_TIMEOUT_S) == [1, 2, 3, 4]
    assert free_resources() == idle
    # an actor holds what it asks for
    heavy = Counter.options(num_cpus=1, num_gpus=1, resources={"special": 1}).remote()
    spawned.append(heavy)
    _, gpu_ids, visible = tasuki.get(heavy.ids.remote(), timeout=GET_TIMEOUT_S)
    assert gpu_ids == [0] and visible == "0"
    wait_resources({"CPU": 1.0, "GPU": 0.0, "special": 1.0}, "while the actor lives")
    tasuki.kill(heavy)
    wait_resources(idle, "after the kill")
    # a crashed actor gives them back too
    crashing = Fragile.options(num_cpus=2).remote()
    spawned.append(crashing)
    tasuki.get(crashing.ping.remote(), timeout=GET_TIMEOUT_S)
    wait_resources({**idle, "CPU": 0.0}, "while the 2-CPU actor lives")
    died(crashing.crash.remote(1))
    wait_resources(idle, "after the crash")


def test_placing_an_actor_needs_a_free_cpu_unless_num_cpus_is_0(embedded, spawned):
    wait_resources({"CPU": 2.0, "GPU": 1.0, "special": 2.0}, "before")
    holders = [Counter.options(num_cpus=1).remote(i) for i in (10, 20)]
    spawned += holders
    assert tasuki.get([h.add.remote() for h in holders], timeout=GET_TIMEOUT_S) == [11, 21]
    wait_resources({"CPU": 0.0, "GPU": 1.0, "special": 2.0}, "while two 1-CPU actors live")
    default = Counter.remote(30)                     # needs 1 CPU to be placed: none is free
    zero = Counter.options(num_cpus=0).remote(40)    # needs none
    spawned += [default, zero]
    waiting = default.add.remote()
    assert tasuki.get(zero.add.remote(), timeout=GET_TIMEOUT_S) == 41
    assert tasuki.wait([waiting], timeout=1.0)[0] == []
    assert actor_row(default)["state"] == "PENDING"
    tasuki.kill(holders[0])
    assert tasuki.get(waiting, timeout=GET_TIMEOUT_S) == 31
    wait_resources({"CPU": 1.0, "GPU": 1.0, "special": 2.0}, "once placed, the default actor holds no CPU")


def test_actors_are_placed_by_resources_and_wait_for_them(embedded, spawned):
    # special: 2 on the only node: two actors asking for 1 each fit, a third waits for one to die
    first, second = [Counter.options(resources={"special": 1}).remote(i) for i in (100, 200)]
    spawned += [first, second]
    assert tasuki.get([first.add.remote(), second.add.remote()], timeout=GET_TIMEOUT_S) == [101, 201]
    third = Counter.options(resources={"special": 1}).remote(300)
    spawned.append(third)
    waiting = third.add.remote()
    ready, _ = tasuki.wait([waiting], timeout=1.0)
    assert ready == []
    assert actor_row(third)["state"] == "PENDING"
    tasuki.kill(first)
    assert tasuki.get(waiting, timeout=GET_TIMEOUT_S) == 301
    # an actor no node can hold stays pending; killing it fails its calls at once
    too_big = Counter.options(resources={"special": 5}).remote()
    spawned.append(too_big)
    stuck = too_big.add.remote()
    assert tasuki.wait([stuck], timeout=1.0)[0] == []
    tasuki.kill(too_big)
    assert "killed" in died(stuck)


def test_status_query_lists_actors(embedded, spawned):
    counter = Counter.options(name="listed", namespace="status-ns").remote()
    spawned.append(counter)
    tasuki.get(counter.add.remote(), timeout=GET_TIMEOUT_S)
    row = actor_row(counter)
    node_id = tasuki.get_runtime_context().get_node_id()
    assert row["class_name"] == "Counter" and row["name"] == "listed" and row["namespace"] == "status-ns"
    assert row["state"] == "ALIVE" and row["node_id"] == node_id and row["restarts"] == 0
    tasuki.kill(counter)
    assert "killed" in wait_dead(counter)["cause"]


# === a CLI-started cluster of three nodes ===========================================================
@pytest.fixture(scope="module")
def multi(cli_cluster, _disconnect_at_end):
    tasuki.shutdown()                     # leave the embedded cluster: one cluster per process at a time
    _connected["to"] = None
    cli_cluster.node2 = cli_cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"node2": 1}')
    cli_cluster.node3 = cli_cluster.add_node("127.0.0.3", "--num-cpus", "1", "--resources", '{"node3": 1}')
    return cli_cluster


@pytest.fixture
def connected(multi):
    if _connected["to"] != "multi":
        tasuki.shutdown()
        tasuki.init(address="auto")
        _connected["to"] = "multi"
    return multi


@tasuki.remote(resources={"node3": 1})
def call_from_node3(counter, n):
    return tasuki.get(counter.add.remote(n)), tasuki.get_runtime_context().get_node_id()


def test_actor_on_another_node_is_called_from_the_driver_and_from_a_task(connected, spawned):
    node2, node3 = connected.node2[0], connected.node3[0]
    counter = Counter.options(resources={"node2": 1}).remote()
    spawned.append(counter)
    node, _ = tasuki.get(counter.where.remote(), timeout=GET_TIMEOUT_S)
    assert node == node2
    assert tasuki.get([counter.add.remote() for _ in range(20)], timeout=GET_TIMEOUT_S) == list(range(1, 21))
    value, task_node = tasuki.get(call_from_node3.remote(counter, 100), timeout=GET_TIMEOUT_S)
    assert (value, task_node) == (120, node3)
    row = actor_row(counter)
    assert row["node_id"] == node2 and row["state"] == "ALIVE"


DRIVER = textwrap.dedent("""
    import os, sys
    import tasuki

    @tasuki.remote
    class Keeper:
        def __init__(self):
            self.notes = []

        def note(self, text):
            self.notes.append(text)
            return os.getpid()

        def notes_so_far(self):
            return self.notes

    tasuki.init(address="auto")
    kept = Keeper.options(name="keeper", namespace="jobs", lifetime="detached").remote()
    owned = Keeper.options(name="owned", namespace="jobs").remote()
    pids = tasuki.get([kept.note.remote("from the first driver"), owned.note.remote("x")], timeout=60)
    print("PIDS", *pids, flush=True)
""")


def test_detached_actor_outlives_its_driver(connected, spawned, tmp_path):
    script = tmp_path / "first_driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(script)], env=connected.env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    kept_pid, owned_pid = map(int, proc.stdout.split("PIDS", 1)[1].split())
    # this process is a second driver: the detached actor is still there, with its state
    kept = tasuki.get_actor("keeper", namespace="jobs")
    spawned.append(kept)
    assert tasuki.get(kept.notes_so_far.remote(), timeout=GET_TIMEOUT_S) == ["from the first driver"]
    assert tasuki.get(kept.note.remote("from the second driver"), timeout=GET_TIMEOUT_S) == kept_pid
    # the actor the first driver owned died with it
    wait_until(lambda: _lookup("owned", "jobs") is None, 30, "the exited driver's actor to die")
    row = next(r for r in tasuki.api._get_client().query("status")["actors"] if r["name"] == "owned")
    assert row["state"] == "DEAD" and "driver exited" in row["cause"], row
    wait_until(lambda: not _pid_alive(owned_pid), 30, f"the owned actor's process {owned_pid} to exit")
    assert _pid_alive(kept_pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_tasuki_status_lists_actors(connected, spawned):
    counter = Counter.options(name="shown-in-status", resources={"node3": 1}).remote()
    spawned.append(counter)
    tasuki.get(counter.add.remote(), timeout=GET_TIMEOUT_S)
    out = connected.cli("status").stdout
    line = next((l for l in out.splitlines() if "shown-in-status" in l), None)
    assert line is not None, out
    assert "Counter" in line and connected.node3[0] in line and "ALIVE" in line, out


def test_actor_on_a_killed_node_dies_or_restarts_elsewhere(connected, spawned, tmp_path):
    lost_node, lost_pid = connected.add_node("127.0.0.4", "--num-cpus", "1", "--resources", '{"spot": 2}')
    # both actors need "spot": only the new node has it
    plain = Counter.options(resources={"spot": 1}).remote()
    restartable = Counter.options(resources={"spot": 1}, max_restarts=1).remote(1000)
    spawned += [plain, restartable]
    assert tasuki.get(plain.where.remote(), timeout=GET_TIMEOUT_S)[0] == lost_node
    assert tasuki.get(restartable.where.remote(), timeout=GET_TIMEOUT_S)[0] == lost_node
    assert tasuki.get(restartable.add.remote(), timeout=GET_TIMEOUT_S) == 1001
    # a second node that fits, for the restart
    spare_node, _ = connected.add_node("127.0.0.5", "--num-cpus", "1", "--resources", '{"spot": 1}')
    running = plain.sleep.remote(300)
    os.killpg(lost_pid, 9)           # the node agent, its zygote and its workers: a lost machine
    for ref in (running, plain.add.remote()):
        message = died(ref)
        assert lost_node in message and "node" in message, message
    node, _ = wait_until(lambda: _where_if_back(restartable), 90, "the restartable actor to come back")
    assert node == spare_node
    assert tasuki.get(restartable.add.remote(), timeout=GET_TIMEOUT_S) == 1001     # constructor ran again
    row = actor_row(restartable)
    assert row["restarts"] == 1 and row["node_id"] == spare_node and row["state"] == "ALIVE"


def _where_if_back(handle):
    try:
        return tasuki.get(handle.where.remote(), timeout=GET_TIMEOUT_S)
    except ActorDiedError:
        return None

"""Ray compatibility, issue 15: behaviour Ray's Core tests expect of the runtime around the tasks:
a nearly full object store makes every process collect its reference cycles (Ray's global GC);
an actor call waiting for a ref argument lets other callers' calls go first; max_calls.

Each test starts its own small cluster (the store's size is what is tested). Waits are deadlines.
"""
from __future__ import annotations

import gc
import os

import pytest

import tasuki
from conftest import embedded_cluster, wait_until

MB = 1 << 20


@tasuki.remote
class CycleMaker:
    """Keeps the refs it puts only in reference cycles, with its automatic gc off: the objects stay
    pinned until something runs gc.collect() in this process."""

    def __init__(self):
        self.collections = 0
        gc.disable()
        gc.callbacks.append(self.count)

    def count(self, phase, info):
        if phase == "stop":
            self.collections += 1

    def make_cycle(self, megabytes: int) -> None:
        a, b = [], []
        a.append(b)
        b.append(a)
        a.append(tasuki.put(b"x" * (megabytes * MB)))

    def collected(self) -> int:
        return self.collections


def store_used() -> int:
    return tasuki.nodes()[0]["ObjectStore"]["used"]


def test_a_nearly_full_store_makes_every_process_collect_its_cycles():
    with embedded_cluster(num_cpus=1, object_store_memory=100 * MB):
        maker = CycleMaker.remote()
        for _ in range(3):
            tasuki.get(maker.make_cycle.remote(20))               # 60 % of the store: below the mark
        assert tasuki.get(maker.collected.remote()) == 0
        tasuki.get(maker.make_cycle.remote(20))                   # 80 %: over config.GC_STORE_FRACTION
        # before: never collected; the store stayed 80 % full until the actor ended
        wait_until(lambda: tasuki.get(maker.collected.remote()) > 0, what="a gc.collect() in the actor")
        wait_until(lambda: store_used() < 20 * MB, what="the objects the cycles held to be freed")


# --- an actor call waiting for a ref argument does not hold up other callers' calls ------------
@tasuki.remote
class Gate:
    def __init__(self):
        import asyncio
        self.opened = asyncio.Event()

    async def wait(self):
        await self.opened.wait()

    async def open(self):
        self.opened.set()


@tasuki.remote
def after_gate(gate, value):
    tasuki.get(gate.wait.remote())
    return value


@tasuki.remote
class Echo:
    def echo(self, x):
        return x


@tasuki.remote
def call_with_slow_argument(actor, gate):
    return tasuki.get(actor.echo.remote(after_gate.remote(gate, "slow")))


def test_an_actor_call_waiting_for_its_argument_lets_other_callers_go_first():
    with embedded_cluster(num_cpus=4):
        gate, actor = Gate.remote(), Echo.remote()
        tasuki.get(actor.echo.remote(0))
        held = call_with_slow_argument.remote(actor, gate)          # another caller's call waits aside
        tasuki.wait([held], timeout=0.5)
        assert tasuki.get(actor.echo.remote("fast"), timeout=30) == "fast"   # before: behind the held call
        # one caller's calls keep their order: the call after a waiting one waits too (as Ray)
        first = actor.echo.remote(after_gate.remote(gate, "first"))
        second = actor.echo.remote("second")
        assert tasuki.wait([second], timeout=0.5)[0] == []
        tasuki.get(gate.open.remote())
        assert tasuki.get([held, first, second], timeout=30) == ["slow", "first", "second"]


# --- max_calls: a worker exits after running the function that many times ---------------------
@tasuki.remote
def pid_and_child():
    return os.getpid(), sleepy_zero.remote()


@tasuki.remote
def sleepy_zero():
    return 0


@tasuki.remote(max_calls=2)
def pid_of_worker():
    return os.getpid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_max_calls_ends_the_worker_and_keeps_what_it_returned():
    with embedded_cluster(num_cpus=2):
        once = pid_and_child.options(max_calls=1, max_retries=0)
        results = tasuki.get([once.remote() for _ in range(6)])
        pids = [pid for pid, _ in results]
        assert len(set(pids)) == 6                               # before: max_calls ignored, 2 workers
        assert tasuki.get([ref for _, ref in results]) == [0] * 6   # its child's result outlives it
        wait_until(lambda: not any(alive(pid) for pid in pids), what="the max_calls=1 workers to exit")
        pids = tasuki.get([pid_of_worker.remote() for _ in range(6)])
        assert max(pids.count(pid) for pid in set(pids)) <= 2
        with pytest.raises(ValueError, match="max_calls must be an integer of 0"):
            pid_of_worker.options(max_calls=-1)
        with pytest.raises(TypeError):
            pid_of_worker.options(max_calls="1")

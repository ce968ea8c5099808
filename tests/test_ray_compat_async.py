"""Async code and actor ends as Ray has them (issue 15): what async functions and actors may be, how
an actor that ends itself says so, ObjectRef._on_completed, names of actors.

Ray's documented behaviour, written as our own tests against one embedded cluster {CPU: 2}. Waits
are conditions with deadlines, never bare sleeps.
"""
from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from conftest import embedded_cluster, wait_until

import tasuki
import tasuki.util
from tasuki.actor import exit_actor
from tasuki.exceptions import ActorAlreadyExistsError, ActorDiedError, TaskError

GET_TIMEOUT_S = 60          # a call's result on a loaded two-core machine


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with embedded_cluster(num_cpus=2) as t:
        yield t


@tasuki.remote(num_cpus=0)
class Gate:
    """Holds callers of wait() until open()."""

    def __init__(self):
        self.event = asyncio.Event()

    async def wait(self):
        await self.event.wait()

    def open(self):
        self.event.set()


# --- async functions ---------------------------------------------------------------------------
def test_an_async_function_cannot_be_a_task():
    async def fetch():
        return 1

    with pytest.raises(ValueError, match="'async def' should not be used for remote tasks.*fetch.*asyncio.run"):
        tasuki.remote(fetch)
    with pytest.raises(ValueError, match="async def"):
        tasuki.remote(num_cpus=1)(fetch)


# --- ObjectRef._on_completed -------------------------------------------------------------------
@tasuki.remote
def wait_for(gate):
    return tasuki.get(gate.wait.remote())


@tasuki.remote
def fail():
    raise KeyError("missing")


def test_on_completed_calls_back_with_the_value_once_ready_then_lets_the_callback_go():
    seen = []
    ref = tasuki.put("stored")
    ref._on_completed(seen.append)
    wait_until(lambda: seen == ["stored"], 30, "the callback of a stored object")

    gate = Gate.remote()
    ref = wait_for.remote(gate)
    thread_names = []

    def callback(value):
        thread_names.append(threading.current_thread().name)
        seen.append(value)
    before = sys.getrefcount(callback)
    ref._on_completed(callback)
    assert sys.getrefcount(callback) > before          # held while it waits
    assert len(seen) == 1
    tasuki.get(gate.open.remote(), timeout=GET_TIMEOUT_S)
    wait_until(lambda: len(seen) == 2, 30, "the callback of a task that finished")
    assert seen[1] is None and thread_names != [threading.current_thread().name]
    wait_until(lambda: sys.getrefcount(callback) == before, 30, "the callback to be released after its call")


def test_on_completed_passes_a_failed_tasks_error_and_a_raising_callback_does_not_stop_others():
    seen = []
    ref = fail.remote()
    ref._on_completed(lambda value: 1 / 0)
    ref._on_completed(seen.append)
    wait_until(lambda: seen, 30, "the callback of a failed task")
    assert isinstance(seen[0], TaskError) and isinstance(seen[0], KeyError)


def test_on_completed_may_call_the_actor_whose_call_it_waits_for():
    @tasuki.remote(max_restarts=1)
    class Pid:
        def pid(self):
            import os
            return os.getpid()

    actor = Pid.remote()
    more = []
    first = actor.pid.remote()
    first._on_completed(lambda _: more.append(actor.pid.remote()))      # from the callback thread: no deadlock
    tasuki.get(first, timeout=GET_TIMEOUT_S)
    wait_until(lambda: more, 30, "the callback's own call to be made")
    assert tasuki.get(more[0], timeout=GET_TIMEOUT_S) == tasuki.get(first, timeout=GET_TIMEOUT_S)


# --- an async actor that ends itself -----------------------------------------------------------
def test_exit_actor_in_an_async_actor_mixing_sync_calls_says_intended_user_exit():
    @tasuki.remote
    class Countdown:
        def __init__(self, count):
            self.count = count
            self.event = asyncio.Event()

        async def wait_then_exit(self):
            await self.event.wait()
            exit_actor()

        def tick(self):
            self.count -= 1
            if self.count == 0:
                self.event.set()

    actor = Countdown.remote(50)
    refs = [actor.wait_then_exit.remote()] + [actor.tick.remote() for _ in range(100)]
    with pytest.raises(ActorDiedError, match="INTENDED_USER_EXIT") as info:
        tasuki.get(refs, timeout=GET_TIMEOUT_S)
    assert "exit_actor()" in str(info.value)


@tasuki.remote
class ExitsFromItsOwnTask:
    """Ends itself from an asyncio task it started, not from a call."""

    def __init__(self, folder):
        import atexit
        import pathlib
        self.folder = pathlib.Path(folder)
        atexit.register(lambda: (self.folder / "atexit").touch())

    async def start_exit_task(self, gate):
        asyncio.get_running_loop().create_task(self.exit_later(gate))

    async def exit_later(self, gate):
        await gate.wait.remote()
        exit_actor()
        (self.folder / "after-exit").touch()          # never runs

    def ping(self):
        return "pong"


def test_exit_actor_in_an_asyncio_task_of_the_actor_ends_it_gracefully(tmp_path):
    gate = Gate.remote()
    actor = ExitsFromItsOwnTask.remote(str(tmp_path))
    tasuki.get(actor.start_exit_task.remote(gate), timeout=GET_TIMEOUT_S)
    assert tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    tasuki.get(gate.open.remote(), timeout=GET_TIMEOUT_S)
    wait_until(lambda: (tmp_path / "atexit").exists(), 30, "the actor's atexit handler to run")
    assert not (tmp_path / "after-exit").exists()      # the coroutine stopped at exit_actor(), before atexit
    with pytest.raises(ActorDiedError, match="INTENDED_USER_EXIT"):
        tasuki.get(actor.ping.remote(), timeout=GET_TIMEOUT_S)


# --- names -------------------------------------------------------------------------------------
@tasuki.remote(num_cpus=0)
class Named:
    def ping(self):
        return "pong"


@pytest.mark.parametrize("options, error, match", [
    ({"name": 1}, TypeError, "name must be str"),
    ({"name": ""}, ValueError, "Actor name cannot be an empty string"),
    ({"name": "n", "namespace": ""}, ValueError, '"" is not a valid namespace'),
    ({"name": "n", "namespace": 2}, TypeError, "namespace must be str"),
])
def test_a_bad_name_or_namespace_is_refused_at_the_call(options, error, match):
    with pytest.raises(error, match=match):
        Named._remote(lifetime="detached", **options)


def test_a_taken_name_says_to_use_another_and_a_killed_actors_name_is_not_listed_at_once():
    first = Named.options(name="taken", lifetime="detached").remote()
    assert tasuki.get(first.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    with pytest.raises(ActorAlreadyExistsError, match="'taken' is already taken.*Please use a different name"):
        Named.options(name="taken", lifetime="detached").remote()
    assert issubclass(ActorAlreadyExistsError, ValueError)
    assert "taken" in tasuki.util.list_named_actors()
    tasuki.kill(first)
    assert "taken" not in tasuki.util.list_named_actors()       # no wait: the name is free on kill
    assert "taken" not in [a["name"] for a in tasuki.util.list_named_actors(all_namespaces=True)]
    with pytest.raises(ValueError):
        tasuki.get_actor("taken")


# --- Ray's invocation decorator of an actor method ----------------------------------------------
def split_invocation(invocation):
    """What `.remote(x, **extra)` does: calls the method with (x, x) and returns (ref, extra)."""
    def call(args, kwargs):
        return invocation([args[0], args[0]], {}), kwargs
    return call


def joined(method):
    """The method as the class has it takes (b, c); the actor runs method(b + c)."""
    def run(self, b, c):
        return method(self, b + c)
    run.__ray_invocation_decorator__ = split_invocation
    return run


@tasuki.remote(num_cpus=0)
class Decorated:
    @joined
    def add_one(self, x):
        return x + 1


@tasuki.remote
def call_decorated(actor, x):
    ref, extra = actor.add_one.remote(x, tag="t")
    return tasuki.get(ref), extra


def test_an_invocation_decorator_wraps_remote_and_the_arguments_it_passes_are_checked():
    actor = Decorated.remote()
    ref, extra = actor.add_one.remote(3, kwarg=3)
    assert isinstance(ref, tasuki.ObjectRef) and extra == {"kwarg": 3}
    assert tasuki.get(ref, timeout=GET_TIMEOUT_S) == 7                  # 3 + 3 + 1
    ref, _ = actor.add_one.options(num_returns=1).remote(5)
    assert tasuki.get(ref, timeout=GET_TIMEOUT_S) == 11
    assert tasuki.get(call_decorated.remote(actor, 1), timeout=GET_TIMEOUT_S) == (3, {"tag": "t"})   # a passed handle too
    with pytest.raises(IndexError):                                     # the decorator's own error, at the call
        actor.add_one.remote()

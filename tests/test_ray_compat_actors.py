"""Actors as Ray has them (issue 15): lifetime by handles, ending themselves, retries, cancel, the class.

Each group is Ray's documented behaviour, written as our own tests against one embedded cluster
{CPU: 2}. An actor's end is checked on its process (its pid disappears) or on files its `__del__`,
atexit handlers and methods write. Waits are conditions with deadlines, never bare sleeps; a
`SignalActor` holds a call at a known point.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from conftest import embedded_cluster, wait_until

import tasuki
from tasuki.actor import ActorClassInheritanceException, exit_actor
from tasuki.exceptions import ActorDiedError, TaskCancelledError

GET_TIMEOUT_S = 60          # a call's result on a loaded two-core machine
NAMESPACE = "compat"        # not "default": the workers must use the job's namespace, not a default


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with embedded_cluster(num_cpus=2, namespace=NAMESPACE) as t:
        yield t


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid)


def wait_gone(pid: int, what: str) -> None:
    wait_until(lambda: gone(pid), 30, f"{what} (pid {pid}) to exit")


def actor_row(handle) -> dict | None:
    rows = tasuki.api._get_client().query("status")["actors"]
    return next((r for r in rows if r["actor_id"] == handle._actor_id.hex()), None)


def died(ref) -> str:
    with pytest.raises(ActorDiedError) as info:
        tasuki.get(ref, timeout=GET_TIMEOUT_S)
    return str(info.value)


@tasuki.remote(num_cpus=0)
class SignalActor:
    """Holds callers of wait() until send()."""

    def __init__(self):
        self.event = asyncio.Event()
        self.waiters = 0

    async def wait(self):
        self.waiters += 1
        await self.event.wait()

    async def send(self):
        self.event.set()

    async def count(self):
        return self.waiters


def wait_waiters(signal, n: int) -> None:
    wait_until(lambda: tasuki.get(signal.count.remote(), timeout=GET_TIMEOUT_S) >= n, 30, f"{n} waiter(s)")


@tasuki.remote
class Witness:
    """Writes files when it is destroyed and when its process exits."""

    def __init__(self, directory):
        self.directory = directory
        atexit.register(lambda: open(os.path.join(directory, "atexit"), "w").close())

    def pid(self):
        return os.getpid()

    def slow(self, seconds):
        time.sleep(seconds)
        return seconds

    def ping(self):
        return "pong"

    def __del__(self):
        open(os.path.join(self.directory, "del"), "w").close()


# === 10. an actor class behaves like the class =====================================================
class Grandparent:
    GRANDPARENT = 1

    @staticmethod
    def helper():
        return "static from a base"


@tasuki.remote
class Shape(Grandparent):
    SIDES = 4

    def __init__(self, size=1):
        self.size = size
        self.area = "an attribute named like a method"     # the method still answers calls

    @staticmethod
    def describe():
        return "a shape"

    @classmethod
    def unit(cls):
        return cls(1)

    def area(self):
        return self.size * self.size

    def get_size(self):
        return self.size


def test_class_attributes_static_and_class_methods_are_the_classs():
    assert Shape.SIDES == 4 and Shape.GRANDPARENT == 1
    assert Shape.describe() == "a shape" and Shape.helper() == "static from a base"
    local = Shape.unit()                         # a class method builds a plain local instance
    assert local.get_size() == 1 and type(local) is Shape.__ray_actor_class__
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        Shape.missing
    public = {name for name in dir(Shape) if not name.startswith("_")}
    assert {"SIDES", "describe", "unit", "area", "get_size", "options", "remote"} <= public
    assert "bind" not in public           # Ray's DAG bind() is not supported: it only says so when called
    with pytest.raises(NotImplementedError, match="bind"):
        Shape.bind()


def test_an_actor_class_cannot_be_subclassed_but_its_plain_class_can():
    with pytest.raises(ActorClassInheritanceException, match="Inheriting from actor classes is not currently"):
        class Derived(Shape):
            pass
    assert issubclass(ActorClassInheritanceException, TypeError)

    class Square(Shape.__ray_actor_class__):
        def perimeter(self):
            return 4 * self.size

    square = tasuki.remote(Square).remote(3)
    assert tasuki.get([square.perimeter.remote(), square.area.remote()], timeout=GET_TIMEOUT_S) == [12, 9]


def test_an_instance_attribute_does_not_hide_a_method():
    shape = Shape.remote(5)
    assert tasuki.get(shape.area.remote(), timeout=GET_TIMEOUT_S) == 25
    assert tasuki.get(shape.describe.remote(), timeout=GET_TIMEOUT_S) == "a shape"   # static, called remotely


def test_every_actor_has_rays_builtin_methods():
    shape = Shape.remote(2)
    assert tasuki.get(shape.__ray_ready__.remote(), timeout=GET_TIMEOUT_S) is True
    assert tasuki.get(shape.__ray_call__.remote(lambda self, k: self.size * k, 10), timeout=GET_TIMEOUT_S) == 20
    with pytest.raises(TypeError, match="cannot be called directly"):
        shape.__ray_ready__()
    assert {"__ray_ready__", "__ray_terminate__", "area", "get_size"} <= set(dir(shape))
    assert {name for name in dir(shape) if not name.startswith("_")} == {"area", "describe", "get_size", "helper", "unit"}


# === 2. an actor lives as long as a handle to it =====================================================
def test_dropping_the_last_handle_ends_the_actor_and_runs_del_and_atexit(tmp_path):
    witness = Witness.remote(str(tmp_path))
    pid = tasuki.get(witness.pid.remote(), timeout=GET_TIMEOUT_S)
    row = actor_row(witness)
    del witness
    wait_gone(pid, "the actor whose handle was dropped")
    assert (tmp_path / "del").exists() and (tmp_path / "atexit").exists()
    ended = wait_until(lambda: (r := next(x for x in tasuki.api._get_client().query("status")["actors"]
                                          if x["actor_id"] == row["actor_id"])) and r["state"] == "DEAD" and r, 30,
                       "the actor to be DEAD")
    assert "handles went out of scope" in ended["cause"] and ended["restarts"] == 0


def test_calls_made_before_the_last_handle_went_still_run(tmp_path):
    assert tasuki.get(Witness.remote(str(tmp_path)).ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    witness = Witness.remote(str(tmp_path))
    pid = tasuki.get(witness.pid.remote(), timeout=GET_TIMEOUT_S)
    refs = [witness.slow.remote(0.05) for _ in range(5)]
    del witness
    assert tasuki.get(refs, timeout=GET_TIMEOUT_S) == [0.05] * 5
    wait_gone(pid, "the actor once its calls finished")


@tasuki.remote
def call_after_signal(actor, signal):
    tasuki.get(signal.wait.remote())
    return tasuki.get(actor.ping.remote())


def test_a_handle_passed_to_a_task_keeps_the_actor_alive(tmp_path):
    signal = SignalActor.remote()
    witness = Witness.remote(str(tmp_path))
    pid = tasuki.get(witness.pid.remote(), timeout=GET_TIMEOUT_S)
    result = call_after_signal.remote(witness, signal)
    del witness                              # the task holds the only handle now
    wait_waiters(signal, 1)
    assert not gone(pid)
    tasuki.get(signal.send.remote(), timeout=GET_TIMEOUT_S)
    assert tasuki.get(result, timeout=GET_TIMEOUT_S) == "pong"
    wait_gone(pid, "the actor once the borrowing task ended")


def test_a_handle_inside_a_stored_object_keeps_the_actor_alive(tmp_path):
    witness = Witness.remote(str(tmp_path))
    pid = tasuki.get(witness.pid.remote(), timeout=GET_TIMEOUT_S)
    box = tasuki.put({"actor": witness})
    del witness
    again = tasuki.get(box, timeout=GET_TIMEOUT_S)["actor"]
    assert tasuki.get(again.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    del again, box
    wait_gone(pid, "the actor once the object holding its handle was freed")


def test_named_and_detached_actors_outlive_their_handles_and_kill_frees_the_name_at_once(tmp_path):
    named = Witness.options(name="kept-by-name").remote(str(tmp_path))
    pid = tasuki.get(named.pid.remote(), timeout=GET_TIMEOUT_S)
    del named
    found = tasuki.get_actor("kept-by-name")
    assert tasuki.get(found.pid.remote(), timeout=GET_TIMEOUT_S) == pid
    tasuki.kill(found)
    again = Witness.options(name="kept-by-name").remote(str(tmp_path))   # no wait: the name is free
    assert tasuki.get(again.pid.remote(), timeout=GET_TIMEOUT_S) != pid
    tasuki.kill(again)
    detached = Witness.options(lifetime="detached").remote(str(tmp_path))
    pid = tasuki.get(detached.pid.remote(), timeout=GET_TIMEOUT_S)
    row = actor_row(detached)
    del detached
    tasuki.get(Witness.remote(str(tmp_path)).ping.remote(), timeout=GET_TIMEOUT_S)   # time passes, visibly
    assert not gone(pid)
    tasuki.api._get_client().send_head((tasuki.protocol.KILL_ACTOR, bytes.fromhex(row["actor_id"]), True))


@tasuki.remote(num_cpus=0)
class NamespaceProbe:
    def look(self, name):
        """What this actor sees: its job's namespace, the named actors there, a ping of `name`."""
        context = tasuki.get_runtime_context()
        return (context.namespace, sorted(tasuki.util.list_named_actors()),
                tasuki.get(tasuki.get_actor(name).ping.remote()))

    def ping(self):
        return "pong"


@tasuki.remote(num_cpus=0)
def look_from_a_task(name):
    NamespaceProbe.options(name="made-in-a-task").remote()
    return (tasuki.get_runtime_context().namespace, tasuki.get(tasuki.get_actor(name).ping.remote()))


def test_tasks_and_actors_use_their_jobs_namespace():
    by_driver = NamespaceProbe.options(name="made-by-driver").remote()
    assert tasuki.get(look_from_a_task.remote("made-by-driver"), timeout=GET_TIMEOUT_S) == (NAMESPACE, "pong")
    probe = NamespaceProbe.remote()
    seen = tasuki.get(probe.look.remote("made-in-a-task"), timeout=GET_TIMEOUT_S)
    assert seen == (NAMESPACE, ["made-by-driver", "made-in-a-task"], "pong")
    assert {"name": "made-in-a-task", "namespace": NAMESPACE} in tasuki.util.list_named_actors(all_namespaces=True)
    with pytest.raises(ValueError, match="Failed to look up actor with name 'made-in-a-task' in namespace 'default'"):
        tasuki.get_actor("made-in-a-task", namespace="default")
    for name in ("made-by-driver", "made-in-a-task"):
        tasuki.kill(tasuki.get_actor(name))
    del by_driver


JOB_DEFAULT_LIFETIME = """
import os, signal, time
import tasuki
from tasuki.exceptions import ActorDiedError
tasuki.init(num_cpus=1, job_config=tasuki.JobConfig(default_actor_lifetime="detached"))

@tasuki.remote(num_cpus=0)
class Child:
    def ready(self):
        return "ok"

@tasuki.remote(num_cpus=0)
class Owner:
    def make(self):
        self.children = [Child.remote(), Child.options(lifetime="non_detached").remote()]
        tasuki.get([c.ready.remote() for c in self.children])
        return self.children, os.getpid()

(by_default, non_detached), pid = tasuki.get(Owner.remote().make.remote())
os.kill(pid, signal.SIGKILL)
deadline = time.monotonic() + 60
while True:                    # the owner's death reached the head once its non-detached child is gone
    try:
        tasuki.get(non_detached.ready.remote(), timeout=60)
    except ActorDiedError:
        break
    assert time.monotonic() < deadline, "the non-detached child outlived its owner"
print("default:", tasuki.get(by_default.ready.remote(), timeout=60))
"""


def test_job_config_sets_the_default_actor_lifetime_of_the_jobs_actors():
    proc = subprocess.run([sys.executable, "-c", JOB_DEFAULT_LIFETIME], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "default: ok" in proc.stdout
    with pytest.raises(ValueError, match="default_actor_lifetime must be 'detached' or 'non_detached', got 'forever'"):
        tasuki.JobConfig(default_actor_lifetime="forever")
    with pytest.raises(TypeError, match="job_config must be a tasuki.JobConfig, got dict"):
        tasuki.init(job_config={"default_actor_lifetime": "detached"}, ignore_reinit_error=True)


@tasuki.remote
class Child:
    def __init__(self, dependency=None):
        self.dependency = dependency

    def ping(self):
        return "child"


@tasuki.remote
class Owner:
    def make_child(self):
        self.child = Child.remote()
        return [self.child]

    def make_pending_child(self, signal):
        # its constructor waits for an argument that is never computed while this owner lives
        self.pending = Child.remote(signal.wait.remote())
        return [self.pending]


@tasuki.remote
def make_actor():
    return [Child.remote()]


def test_an_actor_dies_with_the_process_that_created_it():
    owner = Owner.remote()
    child = tasuki.get(owner.make_child.remote(), timeout=GET_TIMEOUT_S)[0]
    assert tasuki.get(child.ping.remote(), timeout=GET_TIMEOUT_S) == "child"
    signal = SignalActor.remote()
    pending = tasuki.get(owner.make_pending_child.remote(signal), timeout=GET_TIMEOUT_S)[0]
    waiting = pending.ping.remote()
    tasuki.kill(owner)            # asynchronous, as in Ray: wait for its children's deaths
    for handle in (child, pending):
        wait_until(lambda: actor_row(handle)["state"] == "DEAD", 30, "the dead owner's actors to be DEAD")
    assert "owner died" in died(child.ping.remote())
    assert "owner died" in died(waiting)           # a pending actor of a dead owner does not hang
    # a task's worker that created an actor is kept while the actor lives (not retired as surplus)
    made = tasuki.get(make_actor.remote(), timeout=GET_TIMEOUT_S)[0]
    tasuki.get([make_actor.remote() for _ in range(4)], timeout=GET_TIMEOUT_S)
    assert tasuki.get(made.ping.remote(), timeout=GET_TIMEOUT_S) == "child"


# === 3. an actor that ends itself ===================================================================
@tasuki.remote(max_restarts=2)
class Quitter:
    def __init__(self, directory, quit_in_constructor=False):
        self.directory = directory
        atexit.register(lambda: open(os.path.join(directory, "atexit"), "w").close())
        if quit_in_constructor:
            exit_actor()

    def quit(self):
        exit_actor()
        open(os.path.join(self.directory, "after"), "w").close()     # never runs

    def quit_with_sys_exit(self):
        sys.exit(0)

    def quit_but_catch(self):
        try:
            exit_actor()
        except SystemExit:
            return "caught"

    def ping(self):
        return "pong"


@pytest.mark.parametrize("method, says", [("quit", "exit_actor()"), ("quit_with_sys_exit", "sys.exit()"),
                                          ("quit_but_catch", "exit_actor()")])
def test_an_actor_that_ends_itself_is_not_restarted(tmp_path, method, says):
    quitter = Quitter.remote(str(tmp_path))
    tasuki.get(quitter.ping.remote(), timeout=GET_TIMEOUT_S)
    ending = getattr(quitter, method).remote()
    queued = quitter.ping.remote()
    assert says in died(ending)
    assert says in died(queued)
    assert says in died(quitter.ping.remote())
    wait_until(lambda: (tmp_path / "atexit").exists(), 30, "the actor's atexit handler")
    row = actor_row(quitter)
    assert row["state"] == "DEAD" and row["restarts"] == 0, row
    assert not (tmp_path / "after").exists()


@tasuki.remote(num_cpus=0)
class Tally:
    def __init__(self):
        self.count = 0

    def next(self):
        self.count += 1
        return self.count - 1


@tasuki.remote(num_cpus=0, max_restarts=1, max_task_retries=1)
class FailingExit:
    def call(self, tally, code):
        if tasuki.get(tally.next.remote()) == 0:
            sys.exit(code)
        return "retried"


def test_sys_exit_with_a_failing_code_is_a_crash_restarted_and_retried():
    """Ray 2.60: sys.exit(1) in a method is a crash: the actor restarts (max_restarts) and the call
    runs again (max_task_retries); sys.exit(0) and exit_actor() end it for good (above)."""
    tally = Tally.remote()
    crasher = FailingExit.remote()
    assert tasuki.get(crasher.call.remote(tally, 1), timeout=GET_TIMEOUT_S) == "retried"
    assert actor_row(crasher)["restarts"] == 1


def test_exit_actor_in_the_constructor(tmp_path):
    quitter = Quitter.remote(str(tmp_path), quit_in_constructor=True)
    assert "exit_actor()" in died(quitter.ping.remote())
    wait_until(lambda: (tmp_path / "atexit").exists(), 30, "the actor's atexit handler")


@tasuki.remote
class AsyncQuitter:
    async def quit(self):
        exit_actor()

    async def ping(self):
        return "pong"


@tasuki.remote
def exit_from_a_task():
    exit_actor()


def test_exit_actor_in_an_async_actor_and_outside_an_actor():
    quitter = AsyncQuitter.remote()
    assert tasuki.get(quitter.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    assert "exit_actor()" in died(quitter.quit.remote())
    assert "exit_actor()" in died(quitter.ping.remote())
    with pytest.raises(TypeError, match="exit_actor API is called on a non-actor worker"):
        exit_actor()
    with pytest.raises(TypeError, match="exit_actor API is called on a non-actor worker"):
        tasuki.get(exit_from_a_task.remote(), timeout=GET_TIMEOUT_S)


def test_ray_terminate_ends_the_actor_gracefully(tmp_path):
    witness = Witness.remote(str(tmp_path))
    pid = tasuki.get(witness.pid.remote(), timeout=GET_TIMEOUT_S)
    assert "__ray_terminate__" in died(witness.__ray_terminate__.remote())
    wait_gone(pid, "the terminated actor")
    assert (tmp_path / "atexit").exists() and (tmp_path / "del").exists()


# === 4. retries per method and per call ===============================================================
@tasuki.remote(max_task_retries=3)
class Flaky:
    def __init__(self):
        self.calls = 0

    @tasuki.method(retry_exceptions=[ConnectionError])
    def fails_twice(self):
        self.calls += 1
        if self.calls % 3:
            raise ConnectionError(f"attempt {self.calls}")
        return self.calls

    def always_fails(self, error_type):
        self.calls += 1
        raise error_type("no")

    @tasuki.method(max_task_retries=1, retry_exceptions=True)
    def once_more(self):
        self.calls += 1
        raise ValueError("no")

    def count(self):
        return self.calls


def test_retry_exceptions_on_an_actor_method_and_per_call():
    flaky = Flaky.remote()
    assert tasuki.get(flaky.fails_twice.remote(), timeout=GET_TIMEOUT_S) == 3
    with pytest.raises(KeyError):          # retry_exceptions not set: no retry
        tasuki.get(flaky.always_fails.remote(KeyError), timeout=GET_TIMEOUT_S)
    assert tasuki.get(flaky.count.remote(), timeout=GET_TIMEOUT_S) == 4
    with pytest.raises(KeyError):          # the listed types only
        tasuki.get(flaky.always_fails.options(retry_exceptions=[ValueError]).remote(KeyError), timeout=GET_TIMEOUT_S)
    assert tasuki.get(flaky.count.remote(), timeout=GET_TIMEOUT_S) == 5
    with pytest.raises(KeyError):          # per call: True, at most the actor's max_task_retries (3) times again
        tasuki.get(flaky.always_fails.options(retry_exceptions=True).remote(KeyError), timeout=GET_TIMEOUT_S)
    assert tasuki.get(flaky.count.remote(), timeout=GET_TIMEOUT_S) == 9
    with pytest.raises(KeyError):          # per call max_task_retries wins over the actor's
        tasuki.get(flaky.always_fails.options(retry_exceptions=True, max_task_retries=1).remote(KeyError),
                   timeout=GET_TIMEOUT_S)
    assert tasuki.get(flaky.count.remote(), timeout=GET_TIMEOUT_S) == 11
    with pytest.raises(ValueError):        # the method's own max_task_retries=1
        tasuki.get(flaky.once_more.remote(), timeout=GET_TIMEOUT_S)
    assert tasuki.get(flaky.count.remote(), timeout=GET_TIMEOUT_S) == 13


def test_method_options_are_checked():
    with pytest.raises(TypeError, match="retry_exceptions must be"):      # a wrong type: TypeError, as Ray
        tasuki.method(retry_exceptions="ValueError")
    with pytest.raises(ValueError, match="max_task_retries must be"):
        Flaky.remote().count.options(max_task_retries=-5)
    with pytest.raises(TypeError, match="unknown option"):
        tasuki.method(retries=3)


@tasuki.remote(max_retries=0)
def count_and_fail(path, error_type, succeed_at):
    n = int(open(path).read()) + 1 if os.path.exists(path) else 1
    with open(path, "w") as f:
        f.write(str(n))
    if n < succeed_at:
        raise error_type(f"attempt {n}")
    return n


def test_retry_exceptions_per_call_on_a_task(tmp_path):
    path = str(tmp_path / "attempts")
    with pytest.raises(ValueError):
        tasuki.get(count_and_fail.remote(path, ValueError, 3), timeout=GET_TIMEOUT_S)
    os.remove(path)
    retried = count_and_fail.options(max_retries=2, retry_exceptions=[ValueError])
    assert tasuki.get(retried.remote(path, ValueError, 3), timeout=GET_TIMEOUT_S) == 3
    os.remove(path)
    with pytest.raises(KeyError):
        tasuki.get(retried.remote(path, KeyError, 3), timeout=GET_TIMEOUT_S)
    assert open(path).read() == "1"


# === 5. cancelling actor calls ==========================================================================
@tasuki.remote
class AsyncWorker:
    def __init__(self):
        self.events = []

    async def wait_for(self, signal):
        try:
            await signal.wait.remote()
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise
        self.events.append("finished")

    async def quick(self):
        return "quick"

    async def check_canceled(self):
        return tasuki.get_runtime_context().is_canceled()

    async def log(self):
        return self.events


@tasuki.remote
class SyncWorker:
    def __init__(self):
        self.seen = []

    def wait_for(self, signal):
        tasuki.get(signal.wait.remote())
        deadline = time.monotonic() + 30       # the cancel may reach this actor after the signal did
        while not tasuki.get_runtime_context().is_canceled() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.seen.append(("canceled" if tasuki.get_runtime_context().is_canceled() else "not canceled"))
        return "finished"

    def record(self, tag):
        self.seen.append(tag)
        return tag

    def log(self):
        return self.seen


def test_cancel_a_running_async_call():
    signal = SignalActor.remote()
    worker = AsyncWorker.remote()
    ref = worker.wait_for.remote(signal)
    wait_waiters(signal, 1)
    tasuki.cancel(ref)
    with pytest.raises(TaskCancelledError, match="was cancelled"):
        tasuki.get(ref, timeout=GET_TIMEOUT_S)
    assert tasuki.get(worker.log.remote(), timeout=GET_TIMEOUT_S) == ["cancelled"]
    assert tasuki.get(worker.quick.remote(), timeout=GET_TIMEOUT_S) == "quick"   # the actor goes on
    with pytest.raises(RuntimeError, match="not supported in an async actor"):
        tasuki.get(worker.check_canceled.remote(), timeout=GET_TIMEOUT_S)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_cancel_a_running_sync_call_and_a_queued_one(concurrency):
    signal = SignalActor.remote()
    worker = SyncWorker.options(max_concurrency=concurrency).remote()
    running = worker.wait_for.remote(signal)
    wait_waiters(signal, 1)
    queued = worker.record.remote("queued") if concurrency == 1 else None
    tasuki.cancel(running)
    if queued is not None:
        tasuki.cancel(queued)
    tasuki.get(signal.send.remote(), timeout=GET_TIMEOUT_S)
    with pytest.raises(TaskCancelledError):     # it ran on (a sync call is not interrupted), its result is dropped
        tasuki.get(running, timeout=GET_TIMEOUT_S)
    if queued is not None:
        with pytest.raises(TaskCancelledError):
            tasuki.get(queued, timeout=GET_TIMEOUT_S)
    assert tasuki.get(worker.log.remote(), timeout=GET_TIMEOUT_S) == ["canceled"]     # "queued" never ran


def test_cancel_a_call_still_queued_at_its_caller():
    too_big = SyncWorker.options(num_cpus=64).remote()       # never placed: its calls wait in this process
    ref = too_big.record.remote("never")
    tasuki.cancel(ref)
    with pytest.raises(TaskCancelledError, match="before it was sent"):
        tasuki.get(ref, timeout=GET_TIMEOUT_S)
    tasuki.kill(too_big)


def test_cancel_rules_for_actor_calls():
    worker = SyncWorker.remote()
    done = worker.record.remote("done")
    assert tasuki.get(done, timeout=GET_TIMEOUT_S) == "done"
    tasuki.cancel(done)                           # finished already: nothing happens
    assert tasuki.get(done, timeout=GET_TIMEOUT_S) == "done"
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        tasuki.cancel(worker.record.remote("x"), force=True)
    with pytest.raises(RuntimeError, match="only available inside a task"):
        tasuki.get_runtime_context().is_canceled()


@tasuki.remote(num_cpus=0)
class Relay:
    """Returns refs of actor calls it made itself: to another actor, and to itself."""

    def __init__(self):
        self.other = NamespaceProbe.remote()

    def via_other(self):
        return self.other.ping.remote()

    def via_self(self):
        return [tasuki.get_runtime_context().current_actor.echo.remote("self")]

    def echo(self, value):
        return value


def test_a_ref_an_actor_call_returns_outlives_the_call():
    """The actor drops its own refs when the method returns, before the caller holds them: the refs
    inside a result must stay alive until the head has pinned them (they were freed before)."""
    relay = Relay.remote()
    for _ in range(20):
        assert tasuki.get(tasuki.get(relay.via_other.remote(), timeout=GET_TIMEOUT_S), timeout=GET_TIMEOUT_S) == "pong"
        [ref] = tasuki.get(relay.via_self.remote(), timeout=GET_TIMEOUT_S)
        assert tasuki.get(ref, timeout=GET_TIMEOUT_S) == "self"

"""Ray compatibility, second round (issue 15): the runtime context's get(), task and function names;
signatures of actor methods checked at .remote(). Each test states Ray's behaviour it checks.
One embedded cluster (2 CPUs) serves the module."""
from __future__ import annotations

import time

import pytest

import tasuki
import conftest
from tasuki.exceptions import TaskCancelledError, WorkerCrashedError

GET_TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with conftest.embedded_cluster(num_cpus=2) as t:
        yield t


# --- the runtime context ---------------------------------------------------------------------------
@tasuki.remote
def context_in_task():
    c = tasuki.get_runtime_context()
    d = c.get()
    return ({k: (v.hex() if hasattr(v, "hex") else v) for k, v in d.items()}, c.get_task_id(), c.get_node_id(),
            c.get_task_name(), c.get_task_function_name())


@tasuki.remote
class ContextActor:
    def sync(self):
        c = tasuki.get_runtime_context()
        d = c.get()
        return ({k: (v.hex() if hasattr(v, "hex") else v) for k, v in d.items()}, c.get_task_id(),
                c.get_actor_id(), c.get_task_name(), c.get_task_function_name())


@tasuki.remote
class AsyncContextActor:
    async def run(self):
        c = tasuki.get_runtime_context()
        return c.get_task_id(), c.get_task_name(), c.get_task_function_name()


def test_get_in_driver_has_job_and_node_but_no_task_or_actor():
    # Ray: get() in a driver has job_id and node_id (ids with .hex()), no task_id, no actor_id
    d = tasuki.get_runtime_context().get()
    assert d["job_id"].hex() == tasuki.get_runtime_context().get_job_id()
    assert d["node_id"].hex() == tasuki.get_runtime_context().get_node_id()
    assert "task_id" not in d and "actor_id" not in d
    assert tasuki.get_runtime_context().get_task_name() is None


def test_get_in_a_task_matches_the_getters_and_names_the_task():
    d, task_id, node_id, name, function = tasuki.get(context_in_task.remote(), timeout=GET_TIMEOUT_S)
    assert d["task_id"] == task_id and task_id is not None
    assert d["node_id"] == node_id and d["job_id"] == tasuki.get_runtime_context().get_job_id()
    assert "actor_id" not in d
    assert name == "context_in_task"                      # Ray: the function's name, or name= of options()
    assert function == f"{__name__}.context_in_task"      # Ray: module.function
    named = tasuki.get(context_in_task.options(name="renamed").remote(), timeout=GET_TIMEOUT_S)
    assert named[3] == "renamed" and named[4] == f"{__name__}.context_in_task"


@pytest.mark.parametrize("concurrency", [1, 2])
def test_actor_call_context_is_the_call(concurrency):
    # Ray: in an actor method, task_id is the call's (one per call), the name is Class.method
    actor = ContextActor.options(max_concurrency=concurrency).remote()
    first = tasuki.get(actor.sync.remote(), timeout=GET_TIMEOUT_S)
    second = tasuki.get(actor.sync.remote(), timeout=GET_TIMEOUT_S)
    d, task_id, actor_id, name, function = first
    assert d["task_id"] == task_id and task_id is not None and task_id != second[1]
    assert d["actor_id"] == actor_id and actor_id is not None
    assert name == "ContextActor.sync"
    assert function == f"{__name__}.ContextActor.sync"


def test_async_actor_call_context():
    actor = AsyncContextActor.remote()
    a, b = tasuki.get([actor.run.remote(), actor.run.remote()], timeout=GET_TIMEOUT_S)
    assert a[0] is not None and a[0] != b[0]
    assert a[1] == "AsyncContextActor.run"
    assert a[2] == f"{__name__}.AsyncContextActor.run"     # Ray: module.<the method's __qualname__>


# --- signatures of actor methods -------------------------------------------------------------------
class Signatures:
    def starkwargs(self, a, b, **kwargs):
        return a, b, kwargs

    def named_and_star(self, a, x="hello", **kwargs):
        return a, x, kwargs

    def anything(self, *args, **kwargs):
        return args, kwargs

    def self_in_args(*args):
        return len(args)

    @staticmethod
    def static(a):
        return a

    @classmethod
    def klass(cls, a):
        return a


SignatureActor = tasuki.remote(Signatures)


@tasuki.remote
def call_in_task(method):
    try:
        method.remote(3)
    except TypeError as e:
        return str(e)
    return None


def test_actor_method_signature_is_checked_at_remote():
    # Ray: a call that does not match the method's signature is a TypeError at .remote(), in the caller
    actor = SignatureActor.remote()
    with pytest.raises(TypeError, match=r"missing a required argument: 'b'"):
        actor.starkwargs.remote(3)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        actor.named_and_star.remote(1, 2, x=3)
    with pytest.raises(TypeError):
        actor.static.remote()
    with pytest.raises(TypeError):
        actor.klass.options(num_returns=1).remote(1, 2)        # options() keeps the check
    local = Signatures()
    calls = [(actor.starkwargs, (1, 2), {"x": 3}), (actor.named_and_star, (1,), {"y": 3}),
             (actor.named_and_star, (1, 2), {"y": 3}), (actor.anything, (1, 2), {"k": 3}),
             (actor.static, (5,), {}), (actor.klass, (6,), {}), (actor.self_in_args, (1, 2), {})]
    for method, args, kwargs in calls:
        expected = getattr(local, method._name)(*args, **kwargs)
        assert tasuki.get(method.remote(*args, **kwargs), timeout=GET_TIMEOUT_S) == expected


def test_actor_method_signature_is_checked_by_a_handle_passed_to_a_task():
    # Ray: the handle carries the signatures, so a task holding it checks its calls too
    actor = SignatureActor.remote()
    message = tasuki.get(call_in_task.remote(actor.starkwargs), timeout=GET_TIMEOUT_S)
    assert message is not None and "Signatures.starkwargs" in message


# --- _remote(), the oversized-function check -------------------------------------------------------
@tasuki.remote
def add(a, b=0):
    return a + b


def test_underscore_remote_is_options_then_remote():
    # Ray: f._remote(args=, kwargs=, **options) is f.options(**options).remote(*args, **kwargs)
    assert tasuki.get(add._remote(args=[1], kwargs={"b": 2}), timeout=GET_TIMEOUT_S) == 3
    assert tasuki.get(add._remote([4], num_cpus=1), timeout=GET_TIMEOUT_S) == 4
    actor = SignatureActor._remote(num_cpus=0)
    refs = actor.starkwargs._remote(args=[1, 2], kwargs={"x": 3})
    assert tasuki.get(refs, timeout=GET_TIMEOUT_S) == (1, 2, {"x": 3})
    with pytest.raises(TypeError):
        actor.starkwargs._remote(args=[1])


def test_oversized_function_and_actor_are_value_errors(monkeypatch):
    # Ray: a remote function or actor class pickled larger than FUNCTION_SIZE_ERROR_THRESHOLD
    # (10**8 bytes unless set) is a ValueError naming it, at .remote()
    monkeypatch.setenv("FUNCTION_SIZE_ERROR_THRESHOLD", str(2**20))
    captured = b"x" * (2 * 2**20)

    @tasuki.remote
    def big():
        return len(captured)

    @tasuki.remote
    class Big:
        def size(self):
            return len(captured)

    with pytest.raises(ValueError, match=r"The remote function .*big is too large \(2 MiB > "
                                         r"FUNCTION_SIZE_ERROR_THRESHOLD=1 MiB\)"):
        big.remote()
    with pytest.raises(ValueError, match="The actor Big is too large"):
        Big.remote()
    monkeypatch.delenv("FUNCTION_SIZE_ERROR_THRESHOLD")
    assert tasuki.get(big.remote(), timeout=GET_TIMEOUT_S) == 2 * 2**20


# --- recursive cancel ------------------------------------------------------------------------------
@tasuki.remote
class Mailbox:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)

    def get(self):
        return list(self.items)


@tasuki.remote(num_cpus=1)
def spinning_child(mailbox):
    mailbox.put.remote("child running")
    while True:
        time.sleep(0.05)


@tasuki.remote(num_cpus=1)
def spinning_parent(mailbox):
    mailbox.put.remote([spinning_child.remote(mailbox)])     # the child's ref, in a list: the driver can cancel it
    while True:
        time.sleep(0.05)


@tasuki.remote(num_cpus=2)
def needs_both_cpus():
    return True


def _start_parent_and_child():
    mailbox = Mailbox.options(num_cpus=0).remote()
    parent = spinning_parent.remote(mailbox)
    conftest.wait_until(lambda: "child running" in tasuki.get(mailbox.get.remote(), timeout=GET_TIMEOUT_S),
                        timeout=GET_TIMEOUT_S, what="the child task to run")
    child = next(i for i in tasuki.get(mailbox.get.remote(), timeout=GET_TIMEOUT_S) if isinstance(i, list))[0]
    return parent, child


@pytest.mark.parametrize("force", [False, True])
def test_cancel_of_a_parent_cancels_its_children(force):
    # Ray: cancel(ref) is recursive by default: the tasks the task submitted are cancelled too,
    # so their CPUs come back (here: a 2-CPU task runs on the 2-CPU cluster afterwards)
    parent, child = _start_parent_and_child()
    tasuki.cancel(parent, force=force)
    with pytest.raises((TaskCancelledError, WorkerCrashedError)):
        tasuki.get(parent, timeout=GET_TIMEOUT_S)
    with pytest.raises((TaskCancelledError, WorkerCrashedError)):
        tasuki.get(child, timeout=GET_TIMEOUT_S)
    assert tasuki.get(needs_both_cpus.remote(), timeout=GET_TIMEOUT_S) is True


def test_cancel_not_recursive_leaves_the_children_running():
    parent, child = _start_parent_and_child()
    tasuki.cancel(parent, recursive=False)
    with pytest.raises(TaskCancelledError):
        tasuki.get(parent, timeout=GET_TIMEOUT_S)
    ready, _ = tasuki.wait([child], timeout=0.5)
    assert ready == []                    # still running
    tasuki.cancel(child)
    with pytest.raises(TaskCancelledError):
        tasuki.get(child, timeout=GET_TIMEOUT_S)


# --- num_returns=0 -----------------------------------------------------------------------------------
@tasuki.remote
def write_marker(path, fail=False):
    with open(path, "w") as f:
        f.write("ran")
    if fail:
        raise ValueError("nobody sees this")
    return "ignored"


@tasuki.remote
class MarkerActor:
    def write(self, path):
        return write_marker._function(path)


def test_num_returns_zero_runs_the_task_and_returns_none(tmp_path):
    """Ray: .options(num_returns=0).remote() returns None and the task (or actor call) still runs."""
    paths = [tmp_path / name for name in ("task", "failing", "method", "underscore")]
    assert write_marker.options(num_returns=0).remote(str(paths[0])) is None
    assert write_marker.options(num_returns=0).remote(str(paths[1]), fail=True) is None
    assert MarkerActor.remote().write.options(num_returns=0).remote(str(paths[2])) is None
    assert write_marker._remote([str(paths[3])], num_returns=0) is None
    conftest.wait_until(lambda: all(p.exists() for p in paths), 60, "the num_returns=0 tasks to run")
    with pytest.raises(ValueError, match=r"num_returns must be an integer of 0 \(no result\) or more, got -1"):
        write_marker.options(num_returns=-1)

"""api.py on a real embedded cluster: remote functions and options, get, wait, put, argument refs,
nested tasks, asyncio, the runtime context, cluster queries, init, worker output and GPUs.

One cluster (2 CPUs, no GPUs) serves the whole module; tests that need a fresh process (auto-init,
worker output reaching a driver that exits) run a small driver script in a subprocess.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import tasuki
import conftest
from conftest import wait_until as wait_for
from tasuki.exceptions import GetTimeoutError, SerializationError, TaskCancelledError

RUNTIME = os.path.dirname(os.path.dirname(os.path.abspath(tasuki.__file__)))


# --- helpers -------------------------------------------------------------------------------------


def run_driver(script: str, timeout: float = 120.0, **env) -> subprocess.CompletedProcess:
    """Run a driver program in a fresh interpreter (its own embedded cluster)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TASUKI_ADDRESS",)}
    environ["PYTHONPATH"] = os.pathsep.join([RUNTIME, *filter(None, [os.environ.get("PYTHONPATH")])])
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=environ, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if tasuki.is_initialized():
        tasuki.shutdown()
    info = tasuki.init(num_cpus=2, num_gpus=0)
    yield info
    tasuki.shutdown()


@pytest.fixture
def gate(tmp_path):
    """A file path a gated task waits for; created (the gate opens) at the end of the test at the latest."""
    path = str(tmp_path / "gate")
    yield path
    open(path, "w").close()
    wait_idle()                   # the gated tasks end before the next test starts


def wait_idle() -> None:
    """Wait until no task is queued or running. (Free resources alone can mislead: a task just
    submitted is queued, and scheduled only after the head has answered the query.)"""
    def idle():
        status = tasuki.api._client.query("status")
        return status["pending"] == 0 and status["running"] == 0
    wait_for(idle, what="no task queued or running")


def open_gate(path: str) -> None:
    open(path, "w").close()


@tasuki.remote
def square(x):
    return x * x


wait_for_file = tasuki.remote(conftest.wait_for_file)     # a task that ends when `path` appears


@tasuki.remote
def fail(message="boom"):
    raise ValueError(message)


# --- remote functions and options -----------------------------------------------------------------
def test_remote_function_returns_a_ref():
    ref = square.remote(7)
    assert isinstance(ref, tasuki.ObjectRef)
    assert tasuki.get(ref) == 49


def test_get_of_a_list_keeps_the_order():
    refs = [square.remote(i) for i in range(30)]
    assert tasuki.get(refs) == [i * i for i in range(30)]
    assert tasuki.get(tuple(refs[:3])) == [0, 1, 4]
    assert tasuki.get([]) == []


def test_get_rejects_what_is_not_a_ref():
    with pytest.raises(TypeError, match="ObjectRef"):
        tasuki.get(5)
    with pytest.raises(TypeError, match="ObjectRef"):
        tasuki.get([square.remote(1), 5])
    with pytest.raises(ValueError, match="timeout"):
        tasuki.get(square.remote(1), timeout=-1)


def test_decorator_forms():
    @tasuki.remote(num_cpus=0.5)
    def half(x):
        return x + 0.5

    def plain(x):
        return -x

    assert tasuki.get(half.remote(1)) == 1.5
    assert tasuki.get(tasuki.remote(plain).remote(3)) == -3
    with pytest.raises(TypeError):
        tasuki.remote(plain, square)
    with pytest.raises(TypeError):
        tasuki.remote(42)


def test_num_returns():
    @tasuki.remote(num_returns=2)
    def split(a, b):
        return divmod(a, b)

    q, r = split.remote(17, 5)
    assert tasuki.get([q, r]) == [3, 2]
    three = split.options(num_returns=3)

    @tasuki.remote
    def triple():
        return "a", "b", "c"

    refs = triple.options(num_returns=3).remote()
    assert len(refs) == 3 and tasuki.get(refs) == ["a", "b", "c"]
    bad = three.remote(17, 5)                            # returns 2 values for 3 refs
    with pytest.raises(ValueError, match="num_returns=3 but returned 2"):
        tasuki.get(bad[0])


def test_options_override_for_one_call_and_leave_the_original_alone():
    @tasuki.remote(num_returns=2)
    def pair():
        return 1, 2

    single = pair.options(num_returns=1)
    assert tasuki.get(single.remote()) == (1, 2)
    assert len(pair.remote()) == 2                       # unchanged
    assert pair.options().remote is not None


def test_the_name_option_names_the_task():
    with pytest.raises(ValueError, match=r"tasuki::custom-name\(\) \(pid="):
        tasuki.get(fail.options(name="custom-name").remote())
    with pytest.raises(ValueError, match=r"tasuki::fail\(\) \(pid="):
        tasuki.get(fail.remote())


@pytest.mark.parametrize("options, error, match", [
    ({"bogus": 1}, TypeError, "unknown option"),
    ({"num_cpus": -1}, ValueError, "num_cpus"),
    ({"num_gpus": "one"}, TypeError, "num_gpus"),              # a wrong type is a TypeError, as in Ray
    ({"num_returns": -1}, ValueError, "num_returns"),
    ({"max_retries": -2}, ValueError, "max_retries"),
    ({"retry_exceptions": "yes"}, TypeError, "retry_exceptions"),
    ({"retry_exceptions": [int]}, ValueError, "retry_exceptions"),
    ({"bogus": 1}, ValueError, "unknown option"),                # Ray's type for it: OptionError is both
    ({"concurrency_groups": {"io": 2}}, ValueError, "does not support concurrency_groups"),
    ({"resources": {"CPU": 1}}, ValueError, "num_cpus"),
    ({"resources": {"ssd": -1}}, ValueError, "non-negative"),
])
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        square.options(**options)
    with pytest.raises(error, match=match):
        tasuki.remote(**options)(lambda: None)


def test_rays_scheduling_options_are_accepted():
    assert tasuki.get(square.options(scheduling_strategy="SPREAD", memory=10**6).remote(3)) == 9


def test_calling_a_remote_function_directly_raises_type_error():
    with pytest.raises(TypeError, match=r"square.remote\(") as info:
        square(3)
    assert "__wrapped__" in str(info.value)
    assert square.__wrapped__(3) == 9
    assert square.__name__ == "square"


def test_lambda_and_closure_as_remote_functions():
    assert tasuki.get(tasuki.remote(lambda x: x * 10).remote(4)) == 40
    offset = 100

    def make(n):
        def add(x):
            return x + n + offset
        return tasuki.remote(add)

    assert tasuki.get([make(1).remote(1), make(2).remote(1)]) == [102, 103]


def test_unpicklable_argument_raises_serialization_error_naming_it():
    lock = threading.Lock()
    with pytest.raises(SerializationError) as info:
        square.remote(lock)
    message = str(info.value)
    assert "positional argument 0 of square()" in message
    assert "lock" in message and "inside the remote function" in message
    assert isinstance(info.value, TypeError)
    with pytest.raises(SerializationError, match="keyword argument 'result' of wait_for_file"):
        wait_for_file.remote("/nonexistent", result=lock)


# --- get timeouts and wait --------------------------------------------------------------------------
def test_get_timeout_raises_get_timeout_error(gate):
    ref = wait_for_file.remote(gate, "done")
    started = time.time()
    with pytest.raises(GetTimeoutError, match="timed out"):
        tasuki.get(ref, timeout=0.3)
    assert 0.25 <= time.time() - started < 15
    with pytest.raises(TimeoutError):                    # Ray code catches the builtin
        tasuki.get([ref], timeout=0)
    open_gate(gate)
    assert tasuki.get(ref, timeout=60) == "done"         # a timed-out get leaves the ref usable
    assert tasuki.get(ref, timeout=0) == "done"


def test_wait_returns_ready_refs_in_input_order(gate):
    fast = [square.remote(i) for i in range(3)]
    tasuki.get(fast)
    slow = wait_for_file.remote(gate)
    refs = [fast[2], slow, fast[0], fast[1]]
    ready, not_ready = tasuki.wait(refs, num_returns=3, timeout=30)
    assert ready == [fast[2], fast[0], fast[1]]
    assert not_ready == [slow]


def test_wait_default_returns_one(gate):
    slow = wait_for_file.remote(gate)
    fast = square.remote(2)
    ready, not_ready = tasuki.wait([slow, fast], timeout=30)
    assert ready == [fast] and not_ready == [slow]


def test_wait_returns_at_most_num_returns():
    refs = [square.remote(i) for i in range(4)]
    tasuki.get(refs)
    ready, not_ready = tasuki.wait(refs, num_returns=2)
    assert ready == refs[:2] and not_ready == refs[2:]
    assert tasuki.wait(refs, num_returns=0) == ([], refs)


def test_wait_timeout(gate):
    slow = wait_for_file.remote(gate)
    started = time.time()
    assert tasuki.wait([slow], timeout=0.3) == ([], [slow])
    assert 0.25 <= time.time() - started < 15
    assert tasuki.wait([slow], timeout=0) == ([], [slow])
    open_gate(gate)
    assert tasuki.wait([slow], timeout=60) == ([slow], [])


def test_wait_counts_a_failed_task_as_ready():
    ref = fail.remote()
    assert tasuki.wait([ref], timeout=60) == ([ref], [])


def test_wait_wakes_up_when_a_result_arrives(gate):
    slow = wait_for_file.remote(gate, "late")
    timer = threading.Timer(0.3, open_gate, args=(gate,))
    timer.start()
    try:
        ready, _ = tasuki.wait([slow], timeout=60)
    finally:
        timer.cancel()
    assert ready == [slow]


def test_wait_rejects_bad_arguments():
    ref = square.remote(1)
    with pytest.raises(TypeError, match="list of ObjectRefs"):
        tasuki.wait(ref)
    with pytest.raises(TypeError):
        tasuki.wait([ref, 3])
    with pytest.raises(ValueError, match="twice"):
        tasuki.wait([ref, ref])
    with pytest.raises(ValueError, match="num_returns"):
        tasuki.wait([ref], num_returns=2)


# --- put, get and argument refs -------------------------------------------------------------------------
class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


VALUES = {
    "none": None, "int": 42, "float": 2.5, "str": "tasuki 襷", "bytes": b"\x00\x01",
    "big-bytes": b"x" * 300_000, "nested": {"a": [1, (2, 3)], "b": {"c": None}}, "set": {1, 2, 3},
    "small-array": np.arange(10), "big-array": np.arange(1_000_000, dtype=np.float32),
    "object": Point(1, 2), "exception": KeyError("k"), "list-of-arrays": [np.ones(100_000), np.zeros(3)],
}


@pytest.mark.parametrize("name", list(VALUES))
def test_put_get_round_trip(name):
    value = VALUES[name]
    got = tasuki.get(tasuki.put(value))
    if isinstance(value, np.ndarray):
        assert got.dtype == value.dtype and np.array_equal(got, value)
    elif name == "list-of-arrays":
        assert all(np.array_equal(a, b) for a, b in zip(got, value))
    elif isinstance(value, BaseException):
        assert type(got) is KeyError and got.args == value.args
    else:
        assert got == value


def test_a_put_value_reaches_a_task():
    ref = tasuki.put(np.arange(500_000))

    @tasuki.remote
    def total(a):
        return int(a.sum())

    assert tasuki.get(total.remote(ref)) == int(np.arange(500_000).sum())


def test_put_of_a_ref_is_refused():
    with pytest.raises(TypeError, match="put"):
        tasuki.put(tasuki.put(1))


@tasuki.remote
def describe(x, y=None):
    """What the task received: top-level refs arrive as values, nested ones stay refs."""
    kind = lambda v: type(v).__name__                   # noqa: E731
    out = {"x": kind(x), "y": kind(y)}
    if isinstance(x, list):
        out["items"] = [kind(v) for v in x]
        out["values"] = tasuki.get([v for v in x if isinstance(v, tasuki.ObjectRef)])
    return out


def test_top_level_ref_arguments_are_resolved_before_the_task_runs():
    out = tasuki.get(describe.remote(tasuki.put(5), y=tasuki.put("five")))
    assert out == {"x": "int", "y": "str"}
    assert tasuki.get(describe.remote(square.remote(3))) == {"x": "int", "y": "NoneType"}


def test_nested_refs_in_a_list_stay_refs():
    inner = [tasuki.put(1), square.remote(4)]
    out = tasuki.get(describe.remote(inner))
    assert out["items"] == ["ObjectRef", "ObjectRef"]
    assert out["values"] == [1, 16]


def test_a_task_waits_for_its_ref_arguments(gate):
    upstream = wait_for_file.remote(gate, 6)
    downstream = square.remote(upstream)
    assert tasuki.wait([downstream], timeout=0.2) == ([], [downstream])
    open_gate(gate)
    assert tasuki.get(downstream, timeout=60) == 36


def test_a_failed_argument_fails_the_task_that_needs_it():
    with pytest.raises(ValueError, match="upstream broke"):
        tasuki.get(square.remote(fail.remote("upstream broke")), timeout=60)


# --- nested tasks ---------------------------------------------------------------------------------
@tasuki.remote
def chain(n):
    if n == 0:
        return 0
    return tasuki.get(chain.remote(n - 1)) + 1


@tasuki.remote
def tree(depth):
    if depth == 0:
        return 1
    return sum(tasuki.get([tree.remote(depth - 1), tree.remote(depth - 1)]))


def test_a_task_submits_and_gets_other_tasks():
    @tasuki.remote
    def fan_out(n):
        return sum(tasuki.get([square.remote(i) for i in range(n)]))

    assert tasuki.get(fan_out.remote(10), timeout=120) == sum(i * i for i in range(10))


def test_a_chain_deeper_than_the_cpus_and_the_worker_cap_does_not_deadlock():
    assert tasuki.get(chain.remote(12), timeout=120) == 12   # 2 CPUs, at most 8 running workers


def test_a_tree_of_nested_tasks_does_not_deadlock():
    assert tasuki.get(tree.remote(4), timeout=120) == 16      # 31 tasks, 15 of them waiting in get


def test_the_pool_shrinks_back_after_nested_tasks():
    tasuki.get(chain.remote(6), timeout=120)
    wait_for(lambda: tasuki.nodes()[0]["Available"]["CPU"] == 2.0, what="the CPUs to come back")


# --- asyncio and futures ----------------------------------------------------------------------------
def test_a_task_given_back_unrun_leaves_its_code_with_the_worker(tmp_path):
    """The head sends a function's code once per worker, with its first task. When that task is
    stolen back before it ran, the worker must keep the code: the next task comes without it."""
    long_gate, short_gate = str(tmp_path / "long"), str(tmp_path / "short")
    held = wait_for_file.remote(long_gate, "long")     # worker A, busy until the end
    short = wait_for_file.remote(short_gate, "short")  # worker B
    wait_for(lambda: tasuki.api._client.query("status")["running"] == 2, what="both workers busy")
    squares = [square.remote(i) for i in range(4)]    # one queued behind each busy worker, with its code
    open_gate(short_gate)                              # B frees up: A's queued square is stolen back
    assert tasuki.get([short] + squares) == ["short", 0, 1, 4, 9]
    open_gate(long_gate)
    assert tasuki.get(held) == "long"
    wait_idle()
    assert tasuki.get([square.remote(i) for i in range(6)]) == [0, 1, 4, 9, 16, 25]   # some run on A


def test_await_an_object_ref():
    async def main():
        one = await square.remote(5)
        many = await asyncio.gather(*[square.remote(i) for i in range(5)])
        with pytest.raises(ValueError, match="async boom"):
            await fail.remote("async boom")
        return one, many

    assert asyncio.run(main()) == (25, [0, 1, 4, 9, 16])


def test_future_of_an_object_ref():
    assert square.remote(6).future().result(timeout=60) == 36
    with pytest.raises(ValueError):
        fail.remote().future().result(timeout=60)


def test_object_ref_identity():
    ref = tasuki.put(1)
    assert ref == tasuki.ObjectRef(ref.binary())
    assert hash(ref) == hash(ref.id) and len({ref, tasuki.ObjectRef(ref.id)}) == 1
    assert ref.hex() in repr(ref)
    task_ref = square.remote(2)
    assert task_ref.task_id() == task_ref.hex()[:-2]


# --- runtime context and cluster queries ---------------------------------------------------------------
def test_runtime_context_in_the_driver(cluster):
    ctx = tasuki.get_runtime_context()
    assert ctx.get_job_id() == cluster["job_id"]
    assert ctx.get_node_id() == tasuki.nodes()[0]["NodeID"]
    assert ctx.get_task_id() is None
    assert ctx.get_worker_id()


def test_runtime_context_in_a_task(cluster):
    @tasuki.remote
    def where():
        ctx = tasuki.get_runtime_context()
        return ctx.get_job_id(), ctx.get_node_id(), ctx.get_task_id(), ctx.get_worker_id(), os.getpid()

    ref = where.remote()
    job, node, task, worker, pid = tasuki.get(ref)
    assert job == cluster["job_id"]
    assert node == tasuki.nodes()[0]["NodeID"]
    assert task == ref.task_id()
    assert worker != tasuki.get_runtime_context().get_worker_id()
    assert pid != os.getpid()


def test_nodes():
    nodes = tasuki.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True and node["State"] == "ALIVE" and node["IsHeadNode"] is True
    assert node["Resources"]["CPU"] == 2.0 and node["Resources"]["memory"] > 0    # bytes: see --memory
    assert set(node["Resources"]) == {"CPU", "memory"}
    assert node["Version"] == tasuki.__version__
    assert node["NodeManagerAddress"] == "127.0.0.1"
    store = wait_for(lambda: tasuki.nodes()[0]["ObjectStore"]["capacity"] and tasuki.nodes()[0]["ObjectStore"],
                     what="the first heartbeat's store figures")
    assert set(store) >= {"used", "capacity", "objects", "spilled"}
    assert re.fullmatch(r"[0-9a-f]+", node["NodeID"])


def test_cluster_and_available_resources(gate):
    memory = tasuki.cluster_resources()["memory"]        # every node advertises memory (tasuki start --memory)
    assert tasuki.cluster_resources() == {"CPU": 2.0, "memory": memory}
    wait_for(lambda: tasuki.available_resources() == {"CPU": 2.0, "memory": memory}, what="an idle cluster")
    ref = wait_for_file.remote(gate)
    wait_for(lambda: tasuki.available_resources() == {"CPU": 1.0, "memory": memory}, what="one CPU in use")
    assert tasuki.cluster_resources() == {"CPU": 2.0, "memory": memory}
    open_gate(gate)
    tasuki.get(ref, timeout=60)
    wait_for(lambda: tasuki.available_resources() == {"CPU": 2.0, "memory": memory}, what="the CPU to come back")


def test_get_gpu_ids_is_empty_without_gpus():
    assert tasuki.get_gpu_ids() == []

    @tasuki.remote
    def ids():
        return tasuki.get_gpu_ids()

    assert tasuki.get(ids.remote()) == []


def test_a_gpu_task_without_gpus_stays_pending_and_warns_once(capfd):
    seen = []

    def stderr_has(text):
        seen.append(capfd.readouterr().err)
        return sum(chunk.count(text) for chunk in seen)

    gpu_task = square.options(num_gpus=1, name="needs-gpu")
    refs = [gpu_task.remote(i) for i in range(3)]
    first = "task needs-gpu asks for {CPU: 1, GPU: 1}, which no node can provide"
    wait_for(lambda: stderr_has(first), timeout=30, what="the infeasible warning")
    # more of the same shape (another name, so a second warning would not look like the first),
    # then a new shape: once its warning is here, any second warning for the first shape would be too
    refs += [square.options(num_gpus=1, name="also-gpu").remote(i) for i in range(2)]
    refs.append(square.options(num_gpus=2, name="needs-two").remote(0))
    wait_for(lambda: stderr_has("{CPU: 1, GPU: 2}"), timeout=30, what="the second shape's warning")
    text = "".join(seen)
    assert text.count("{CPU: 1, GPU: 1}") == 1, text
    assert "nodes offer: {CPU: 2, memory: " in text

    with pytest.raises(GetTimeoutError):
        tasuki.get(refs[0], timeout=0.2)
    status = tasuki.api._client.query("status")
    pending = {tuple(sorted(p["shape"].items())): p["count"] for p in status["pending_by_shape"]}
    assert pending[(("CPU", 1.0), ("GPU", 1.0))] == 5
    assert tasuki.get(square.remote(3)) == 9            # CPU tasks still run beside them

    for ref in refs:
        tasuki.cancel(ref)
    for ref in refs:
        with pytest.raises(TaskCancelledError):
            tasuki.get(ref, timeout=60)
    wait_for(lambda: tasuki.api._client.query("status")["pending"] == 0, what="an empty queue")


# --- init --------------------------------------------------------------------------------------------
def test_init_twice_raises_unless_ignore_reinit_error(cluster):
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        tasuki.init()
    again = tasuki.init(ignore_reinit_error=True)
    assert again["job_id"] == cluster["job_id"]
    assert tasuki.is_initialized()


def test_init_refuses_unknown_arguments():
    with pytest.raises(TypeError, match="bogus"):
        tasuki.init(bogus=1)


def test_get_and_remote_before_init_start_a_cluster():
    out = run_driver("""
        import tasuki
        @tasuki.remote
        def inc(x):
            return x + 1
        assert not tasuki.is_initialized()
        print("result", tasuki.get(inc.remote(1)))
        assert tasuki.is_initialized()
        print("nodes", len(tasuki.nodes()), tasuki.cluster_resources()["CPU"] > 0)
        tasuki.shutdown()
        assert not tasuki.is_initialized()
        print("put", tasuki.get(tasuki.put("auto")))
        tasuki.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["result 2", "nodes 1 True", "put auto"]
    assert "warning" not in out.stderr


def test_worker_output_reaches_the_driver_prefixed_with_task_pid_and_node():
    out = run_driver("""
        import os, sys, tasuki
        tasuki.init(num_cpus=1, num_gpus=0)
        @tasuki.remote
        def loud(n):
            print("to stdout", n)
            print("to stderr", n, file=sys.stderr)
            os.write(1, b"raw fd write\\n")
            return os.getpid()
        pid = tasuki.get(loud.remote(7))
        print("driver", os.getpid(), pid, tasuki.nodes()[0]["NodeID"], flush=True)
        tasuki.get(loud.options(name="renamed").remote(8))    # and exit at once: its output must not be lost
    """)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("driver "))
    driver_pid, pid, node = line.split()[1:]
    assert driver_pid != pid
    prefix = f"(loud pid={pid} node={node})"
    assert f"{prefix} to stdout 7" in out.stdout.splitlines()
    assert f"{prefix} raw fd write" in out.stdout.splitlines()
    assert f"{prefix} to stderr 7" in out.stderr.splitlines()
    assert re.search(rf"^\(renamed pid=\d+ node={node}\) to stdout 8$", out.stdout, re.M), out.stdout
    assert re.search(rf"^\(renamed pid=\d+ node={node}\) to stderr 8$", out.stderr, re.M), out.stderr


# --- GPUs ---------------------------------------------------------------------------------------------------
def _gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@pytest.mark.skipif(_gpu_count() == 0, reason="no NVIDIA GPU here (nvidia-smi -L lists none)")
def test_a_gpu_task_sees_its_gpu():
    out = run_driver("""
        import json, os, subprocess, tasuki
        tasuki.init(num_cpus=2)
        @tasuki.remote(num_gpus=1)
        def on_gpu():
            result = {"ids": tasuki.get_gpu_ids(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
            try:
                import cupy
            except ImportError:
                result["smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
            else:
                result["devices"] = cupy.cuda.runtime.getDeviceCount()
                result["sum"] = float(cupy.arange(1000, dtype=cupy.float32).sum())
            return result
        print(json.dumps({"gpus": tasuki.cluster_resources().get("GPU"), "task": tasuki.get(on_gpu.remote())}))
    """, timeout=300, CUDA_VISIBLE_DEVICES=None)
    assert out.returncode == 0, out.stderr
    import json
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["gpus"] == _gpu_count()
    task = report["task"]
    assert len(task["ids"]) == 1 and task["visible"] == str(task["ids"][0])
    if "devices" in task:
        assert task["devices"] == 1
        assert task["sum"] == sum(range(1000))
    else:
        assert "GPU " in task["smi"]

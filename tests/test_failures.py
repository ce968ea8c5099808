"""Failures: a table of crash cases (as loky tests its executor), retries, cancellation, no orphan
processes or shared memory after a driver is SIGKILLed, version mismatch, and a node agent that
cannot get its shared memory."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

import tasuki
from conftest import wait_until as wait_for
from tasuki.exceptions import (SerializationError, TaskCancelledError, TaskError, TasukiError,
                               VersionMismatchError, WorkerCrashedError)

RUNTIME = os.path.dirname(os.path.dirname(os.path.abspath(tasuki.__file__)))




def python_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TASUKI_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([RUNTIME, *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if tasuki.is_initialized():
        tasuki.shutdown()
    tasuki.init(num_cpus=2, num_gpus=0)
    yield
    tasuki.shutdown()


# --- the crash table ------------------------------------------------------------------------------
class CustomError(Exception):
    """Defined in the test module, which travels to workers by value."""


class TwoArgError(Exception):
    """Its __init__ does not take back its own args: pickle's cls(*args) fails on ("first",)."""

    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


class Unpicklable:
    def __reduce__(self):
        raise TypeError("Unpicklable refuses to be pickled")


class OnlyHere:
    """Unpickles only in the process that pickled it: a stand-in for a class whose module the other
    side cannot import."""

    def __reduce__(self):
        return _rebuild_only_here, (os.getpid(),)


def _rebuild_only_here(pid: int) -> OnlyHere:
    if os.getpid() != pid:
        raise ModuleNotFoundError(f"No module named 'only_here' (OnlyHere was pickled in pid {pid})")
    return OnlyHere()


_LOCK = threading.Lock()
WORKER_ONLY_MODULE = f"worker_only_errors_{os.getpid()}"


def raise_value_error():
    raise ValueError("bad input 42")


def raise_custom_error():
    raise CustomError("custom failure")


def raise_two_arg_error():
    raise TwoArgError("first", "second")


def raise_worker_only_error():
    """Raise an exception whose class only this worker can import (its module is not on the driver's path)."""
    import importlib
    import shutil
    import tempfile
    directory = tempfile.mkdtemp(prefix="tasuki-worker-only-")
    with open(os.path.join(directory, f"{WORKER_ONLY_MODULE}.py"), "w") as f:
        f.write("class WorkerOnlyError(Exception):\n    pass\n")
    sys.path.insert(0, directory)
    try:
        module = importlib.import_module(WORKER_ONLY_MODULE)
    finally:
        sys.path.remove(directory)
        shutil.rmtree(directory)
    raise module.WorkerOnlyError("only the worker can import this")


def raise_unpicklable_exception():
    error = RuntimeError("holds a lock")
    error.lock = threading.Lock()
    raise error


def echo(value):
    return value


def uses_a_lock():
    with _LOCK:
        return 1


def carries_only_here(marker=OnlyHere()):
    return marker


def exit_3():
    os._exit(3)


def sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def segfault():
    ctypes.string_at(0)


def return_unpicklable():
    return Unpicklable()


def return_lock():
    return threading.Lock()


def return_only_here():
    return OnlyHere()


def sys_exit():
    sys.exit(5)


# One row per way a task can fail, in the order of its life (as loky's table): pickling the call
# (driver), unpickling it (worker), running it, pickling the result (worker), unpickling the result
# (driver). (case, function, arguments, the error types raised, text the message must contain:
# "{node}" stands for the node's id.)
CRASH_CASES = [
    ("pickling the function", uses_a_lock, (), (SerializationError,),
     ["cannot pickle", "uses_a_lock", "_thread.lock", "inside it instead"]),
    ("pickling the arguments", echo, (threading.Lock(),), (SerializationError,),
     ["positional argument 0 of echo() cannot be sent to a worker", "_thread.lock"]),
    ("unpickling the function", carries_only_here, (), (TaskError, SerializationError),
     ["tasuki::carries_only_here() (pid=", "node={node})", "the function cannot be unpickled on this worker",
      "ModuleNotFoundError: No module named 'only_here'", "importable on every node"]),
    ("unpickling the arguments", echo, (OnlyHere(),), (TaskError, SerializationError),
     ["tasuki::echo() (pid=", "node={node})", "the arguments cannot be unpickled on this worker",
      "ModuleNotFoundError: No module named 'only_here'", "importable on every node"]),
    ("exception", raise_value_error, (), (TaskError, ValueError),
     ["tasuki::raise_value_error() (pid=", "node={node})", "bad input 42", 'raise ValueError("bad input 42")',
      f'File "{__file__}"', "in raise_value_error"]),
    ("custom exception", raise_custom_error, (), (TaskError, CustomError), ["custom failure"]),
    ("exception whose __init__ takes other arguments", raise_two_arg_error, (), (TaskError, TwoArgError),
     ["tasuki::raise_two_arg_error() (pid=", "node={node})", 'raise TwoArgError("first", "second")',
      "TwoArgError: first"]),
    ("exception only the worker can import", raise_worker_only_error, (), (TaskError,),
     ["tasuki::raise_worker_only_error() (pid=", "node={node})", "raise module.WorkerOnlyError(",
      f"{WORKER_ONLY_MODULE}.WorkerOnlyError: only the worker can import this",
      f"The task raised {WORKER_ONLY_MODULE}.WorkerOnlyError, but it cannot be rebuilt in this process "
      f"(ModuleNotFoundError: No module named '{WORKER_ONLY_MODULE}')", "catch TaskError"]),
    ("unpicklable exception", raise_unpicklable_exception, (), (TaskError,),
     ["holds a lock", "The task raised RuntimeError, but it could not be pickled where it was raised",
      "_thread.lock"]),
    ("os._exit(3)", exit_3, (), (WorkerCrashedError,), ["exit_3", "exited with code 3"]),
    ("SIGKILL", sigkill_self, (), (WorkerCrashedError,), ["SIGKILL(-9)"]),
    ("segfault", segfault, (), (WorkerCrashedError,), ["SIGSEGV(-11)"]),
    ("sys.exit(5)", sys_exit, (), (WorkerCrashedError,), ["task sys_exit called sys.exit(5)", "SystemExit: 5"]),
    ("unpicklable result", return_unpicklable, (), (TaskError, SerializationError),
     ["result of task return_unpicklable cannot be sent back", "Unpicklable refuses"]),
    ("unpicklable lock result", return_lock, (), (TaskError, SerializationError), ["_thread.lock"]),
    ("unpickling the result", return_only_here, (), (TaskError, SerializationError),
     ["cannot be unpickled in this process", "ModuleNotFoundError: No module named 'only_here'",
      "must be importable here too"]),
]


@pytest.mark.parametrize("case, function, args, errors, texts", CRASH_CASES, ids=[c[0] for c in CRASH_CASES])
def test_crash_cases(case, function, args, errors, texts):
    with pytest.raises(errors[0]) as info:
        tasuki.get(tasuki.remote(function).options(max_retries=0).remote(*args), timeout=60)
    for error_type in errors:
        assert isinstance(info.value, error_type), f"{case}: {type(info.value).__mro__} is not a {error_type}"
    assert isinstance(info.value, TasukiError)
    message = str(info.value)
    node = tasuki.nodes()[0]["NodeID"]
    for text in texts:
        assert text.format(node=node) in message, f"{case}: {text.format(node=node)!r} not in {message!r}"


@pytest.mark.parametrize("function, type_name, cause_type", [
    (raise_two_arg_error, f"{__name__}.TwoArgError", TwoArgError),
    (raise_worker_only_error, f"{WORKER_ONLY_MODULE}.WorkerOnlyError", type(None)),
])
def test_a_task_error_carries_the_task_the_node_the_traceback_and_the_type(function, type_name, cause_type):
    with pytest.raises(TaskError) as info:
        tasuki.get(tasuki.remote(function).options(max_retries=0).remote(), timeout=60)
    error = info.value
    assert error.task_name == function.__name__
    assert error.node_id == tasuki.nodes()[0]["NodeID"]
    assert error.cause_type_name == type_name
    assert type(error.cause) is cause_type
    assert error.traceback_str.startswith("Traceback (most recent call last):")
    assert f"in {function.__name__}" in error.traceback_str and type_name.rsplit(".", 1)[1] in error.traceback_str


def test_an_exception_whose_init_takes_other_arguments_keeps_its_state():
    with pytest.raises(TwoArgError) as info:
        tasuki.get(tasuki.remote(raise_two_arg_error).options(max_retries=0).remote(), timeout=60)
    assert info.value.cause.args == ("first",) and info.value.cause.b == "second"


def test_a_function_that_cannot_be_unpickled_fails_the_same_way_every_time():
    """A worker gets a function's code once: the tasks after a failed unpickling come without it."""
    task = tasuki.remote(carries_only_here).options(max_retries=0)
    for _ in range(4):        # more runs than workers: some worker gets it a second time
        with pytest.raises(SerializationError, match="the function cannot be unpickled on this worker"):
            tasuki.get(task.remote(), timeout=60)


def test_a_notebook_cells_traceback_shows_its_source():
    """IPython compiles each cell under a name of its own and keeps its text in linecache only."""
    import linecache
    source = "import os\n\ndef cell_task(n):\n    total = n * 2\n    raise KeyError(f'cell {total}')\n"
    for cell in (f"<ipython-input-3-{os.getpid()}>", f"/tmp/ipykernel_{os.getpid()}/{time.time_ns()}.py"):
        linecache.cache[cell] = (len(source), None, source.splitlines(True), cell)
        namespace = {"__name__": "__main__"}
        exec(compile(source, cell, "exec"), namespace)
        with pytest.raises(KeyError) as info:
            tasuki.get(tasuki.remote(namespace["cell_task"]).options(max_retries=0).remote(4), timeout=60)
        assert f'File "{cell}", line 5, in cell_task' in str(info.value)
        assert "raise KeyError(f'cell {total}')" in str(info.value)
        del linecache.cache[cell]


def test_a_function_is_pickled_once(monkeypatch):
    calls = []
    dumps_function = tasuki.serialization.dumps_function
    monkeypatch.setattr(tasuki.serialization, "dumps_function", lambda f: calls.append(f) or dumps_function(f))
    task = tasuki.remote(echo)
    assert tasuki.get([task.remote(i) for i in range(5)], timeout=60) == list(range(5))
    assert calls == [echo]


def test_except_value_error_catches_a_task_error():
    ref = tasuki.remote(raise_value_error).remote()
    try:
        tasuki.get(ref, timeout=60)
    except ValueError as e:
        assert isinstance(e, TaskError) and isinstance(e, tasuki.exceptions.RayTaskError)
        assert isinstance(e.cause, ValueError) and e.cause.args == ("bad input 42",)
        assert "Traceback" in e.traceback_str and "raise_value_error" in e.traceback_str
    else:
        pytest.fail("no error raised")


def test_the_remote_traceback_names_the_worker():
    with pytest.raises(ValueError) as info:
        tasuki.get(tasuki.remote(raise_value_error).remote(), timeout=60)
    message = str(info.value)
    assert message.startswith("tasuki::raise_value_error() (pid=") and "node=" in message.splitlines()[0]
    assert "worker.py" not in message                            # our frames are trimmed


def test_a_worker_crash_is_reported_after_its_retries():
    @tasuki.remote(max_retries=2)
    def count_and_die(path):
        with open(path, "a") as f:
            f.write("x")
        os._exit(7)

    path = f"/tmp/tasuki-test-attempts-{os.getpid()}-{time.time_ns()}"
    try:
        with pytest.raises(WorkerCrashedError, match="exited with code 7"):
            tasuki.get(count_and_die.remote(path), timeout=120)
        assert open(path).read() == "xxx"                # one run and two retries
    finally:
        os.unlink(path)


def test_max_retries_zero_fails_at_once(tmp_path):
    marker = tmp_path / "runs"

    @tasuki.remote(max_retries=0)
    def die_once(path):
        with open(path, "a") as f:
            f.write("x")
        os._exit(1)

    with pytest.raises(WorkerCrashedError):
        tasuki.get(die_once.remote(str(marker)), timeout=60)
    assert marker.read_text() == "x"


def test_a_task_that_crashes_once_is_retried_transparently(tmp_path):
    marker = tmp_path / "crashed-once"

    @tasuki.remote
    def flaky(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "second time lucky"

    assert tasuki.get(flaky.remote(str(marker)), timeout=60) == "second time lucky"


def test_exceptions_are_not_retried_by_default(tmp_path):
    marker = tmp_path / "runs"

    @tasuki.remote(max_retries=3)
    def always_fails(path):
        with open(path, "a") as f:
            f.write("x")
        raise ValueError("no retry")

    with pytest.raises(ValueError, match="no retry"):
        tasuki.get(always_fails.remote(str(marker)), timeout=60)
    assert marker.read_text() == "x"


@tasuki.remote
def fail_first_times(path, error_name, failures):
    """Raise `error_name` on the first `failures` runs (counted in a file), then succeed."""
    with open(path, "a") as f:
        f.write("x")
    runs = len(open(path).read())
    if runs <= failures:
        raise {"ValueError": ValueError, "KeyError": KeyError}[error_name](f"run {runs}")
    return runs


def test_retry_exceptions_true(tmp_path):
    ref = fail_first_times.options(retry_exceptions=True, max_retries=3).remote(str(tmp_path / "r"), "ValueError", 2)
    assert tasuki.get(ref, timeout=60) == 3


def test_retry_exceptions_gives_up_after_max_retries(tmp_path):
    ref = fail_first_times.options(retry_exceptions=True, max_retries=1).remote(str(tmp_path / "r"), "ValueError", 5)
    with pytest.raises(ValueError, match="run 2"):
        tasuki.get(ref, timeout=60)


def test_retry_exceptions_list_retries_only_those_types(tmp_path):
    listed = fail_first_times.options(retry_exceptions=[KeyError], max_retries=3)
    assert tasuki.get(listed.remote(str(tmp_path / "k"), "KeyError", 1), timeout=60) == 2
    with pytest.raises(ValueError, match="run 1"):
        tasuki.get(listed.remote(str(tmp_path / "v"), "ValueError", 1), timeout=60)


def test_the_pool_replaces_crashed_workers():
    crash = tasuki.remote(sigkill_self).options(max_retries=0)
    crashed = [crash.remote() for _ in range(4)]
    for ref in crashed:
        with pytest.raises(WorkerCrashedError):
            tasuki.get(ref, timeout=60)

    @tasuki.remote
    def pid():
        return os.getpid()

    pids = tasuki.get([pid.remote() for _ in range(20)], timeout=120)
    assert all(psutil.pid_exists(p) for p in set(pids))
    wait_for(lambda: tasuki.available_resources().get("CPU") == 2.0, what="idle CPUs")
    node = tasuki.api._client.query("nodes")[0]
    assert 1 <= node["workers"] and node["busy_workers"] == 0


# --- cancellation ------------------------------------------------------------------------------
@tasuki.remote
def sleeper(started_path, seconds=60.0):
    """Marks that it started, then sleeps in short steps (a cancel interrupts time.sleep)."""
    open(started_path, "w").close()
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.05)
    return "finished"


@tasuki.remote
def gated(path):
    while not os.path.exists(path):
        time.sleep(0.01)
    return os.getpid()


def test_cancel_a_pending_task(tmp_path):
    gate = str(tmp_path / "gate")
    busy = [gated.remote(gate) for _ in range(2)]                 # both CPUs
    wait_for(lambda: "CPU" not in tasuki.available_resources(), what="both CPUs busy")
    pending = gated.remote(gate)
    tasuki.cancel(pending)
    with pytest.raises(TaskCancelledError, match="cancelled"):
        tasuki.get(pending, timeout=30)
    open(gate, "w").close()
    assert len(tasuki.get(busy, timeout=60)) == 2


def test_cancel_a_running_task_interrupts_it(tmp_path):
    started = tmp_path / "started"
    ref = sleeper.remote(str(started))
    wait_for(started.exists, what="the task to start")
    began = time.time()
    tasuki.cancel(ref)
    with pytest.raises(TaskCancelledError):
        tasuki.get(ref, timeout=30)
    assert time.time() - began < 20                                   # not the task's 60 s

    @tasuki.remote
    def alive():
        return "still serving"

    assert tasuki.get([alive.remote() for _ in range(4)], timeout=60) == ["still serving"] * 4


def test_force_cancel_kills_the_worker(tmp_path):
    started = tmp_path / "started"

    @tasuki.remote(max_retries=3)
    def stubborn(path):
        import signal as s
        s.signal(s.SIGINT, s.SIG_IGN)                # ignores a polite interrupt
        open(path, "w").write(str(os.getpid()))
        while True:
            time.sleep(0.05)

    ref = stubborn.remote(str(started))
    wait_for(lambda: started.exists() and started.read_text(), what="the task to start")
    pid = int(started.read_text())
    tasuki.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        tasuki.get(ref, timeout=30)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             what="the worker to die")


def test_cancel_of_a_finished_task_changes_nothing():
    ref = tasuki.remote(lambda: 5).remote()
    assert tasuki.get(ref, timeout=60) == 5
    tasuki.cancel(ref)
    tasuki.cancel(ref, force=True)
    assert tasuki.get(ref, timeout=60) == 5


def test_cancel_rejects_what_is_not_a_ref():
    with pytest.raises(TypeError):
        tasuki.cancel("not a ref")


# --- no orphans ---------------------------------------------------------------------------------------
def test_a_sigkilled_driver_leaves_no_processes_or_shared_memory(tmp_path):
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import os, time, tasuki
        tasuki.init(num_cpus=1, num_gpus=0, object_store_memory=64 * 2**20)
        @tasuki.remote
        def forever(path):
            open(path, "w").close()
            while True:
                time.sleep(0.1)
        ref = forever.remote({str(started)!r})
        big = tasuki.put(b"x" * 1_000_000)                # something in the store
        print("node pid", tasuki.nodes()[0]["NodeID"], flush=True)
        while True:
            time.sleep(1)
    """)
    driver = subprocess.Popen([sys.executable, "-c", script], env=python_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(started.exists, timeout=120, what="the driver's task to start")
        tree = psutil.Process(driver.pid).children(recursive=True)
        cmdlines = [" ".join(p.cmdline()) for p in tree]
        assert any("tasuki.head" in c for c in cmdlines) and any("tasuki.node" in c for c in cmdlines)
        node_pids = [p.pid for p, c in zip(tree, cmdlines) if "tasuki.node" in c]
        head_cmdline = next(p.cmdline() for p, c in zip(tree, cmdlines) if "tasuki.head" in c)
        head_socket = head_cmdline[head_cmdline.index("--address") + 1].split("://", 1)[1]
        assert os.path.exists(head_socket)
        stores = [n for n in os.listdir("/dev/shm") for pid in node_pids if n.startswith(f"tasuki-{pid}-")]
        assert stores, "the node's store file is in /dev/shm"
        assert len(tree) >= 4                                    # head, node, zygote, worker(s)
    finally:
        driver.kill()
        driver.wait(timeout=30)

    def gone():
        return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in tree)

    wait_for(gone, timeout=60, what="every process of the killed driver to exit")
    wait_for(lambda: not any(os.path.exists(os.path.join("/dev/shm", s)) for s in stores), timeout=30,
             what="the store file to be removed")
    wait_for(lambda: not os.path.exists(head_socket), timeout=30, what="the head's socket file to be removed")


def processes_of(address: str) -> list:
    """Live processes of the embedded cluster whose head listens at `address`: its node agent, and the
    zygote and workers forked from it, carry `--head <address>` in their command line."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if address in " ".join(p.info["cmdline"] or ()) and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_a_short_lived_cluster_leaves_no_worker_behind():
    """Workers forked while the cluster shuts down must not outlive it (the zygote can die between
    a fork and the child's request to die with its parent)."""
    script = textwrap.dedent("""
        import tasuki
        for _ in range(6):
            tasuki.init(num_cpus=2, num_gpus=0)
            print(tasuki.api._cluster.address, flush=True)
            tasuki.get(tasuki.put(1))          # no task: shut down while the workers may still start
            tasuki.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", script], env=python_env(), capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    addresses = out.stdout.split()
    assert len(addresses) == 6

    def leftovers():
        return [p for address in addresses for p in processes_of(address)]

    try:
        wait_for(lambda: not leftovers(), timeout=30, what="every process of the clusters to exit")
    finally:
        for p in leftovers():                            # do not leave them running when this fails
            p.kill()


def test_a_driver_whose_head_dies_gets_an_error_not_a_hang():
    script = textwrap.dedent("""
        import os, signal, time
        import tasuki
        from tasuki.exceptions import ClusterError
        tasuki.init(num_cpus=1, num_gpus=0)

        @tasuki.remote
        def forever():
            time.sleep(600)

        ref = forever.remote()
        os.kill(tasuki.api._cluster.head.pid, signal.SIGKILL)
        started = time.time()
        try:
            tasuki.get(ref)
        except ClusterError as e:
            print("ClusterError after", round(time.time() - started), "s:", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], env={**python_env(), "TASUKI_HEAD_RECONNECT_S": "2"},
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "ClusterError after" in out.stdout and "has not answered" in out.stdout, out.stdout + out.stderr


# --- handshake and start-up errors --------------------------------------------------------------------
def test_a_client_with_another_version_is_refused():
    from tasuki.client import Client
    cluster = tasuki.api._cluster
    client = Client(cluster.address, cluster.token, "driver", info={"version": "0.0.0-test"})
    try:
        with pytest.raises(VersionMismatchError) as info:
            client.wait_welcome(timeout=30)
    finally:
        client.close()
    message = str(info.value)
    assert "0.0.0-test" in message and tasuki.__version__ in message
    assert "install tasuki" in message
    assert tasuki.get(tasuki.put("the cluster is fine"), timeout=30) == "the cluster is fine"


def test_a_client_with_another_python_is_refused():
    from tasuki.client import Client
    cluster = tasuki.api._cluster
    client = Client(cluster.address, cluster.token, "driver", info={"python": "2.7"})
    try:
        with pytest.raises(VersionMismatchError, match=r"Python 2\.7"):
            client.wait_welcome(timeout=30)
    finally:
        client.close()


def test_the_node_refuses_to_start_without_enough_shared_memory():
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    out = subprocess.run([sys.executable, "-m", "tasuki.node", "--head", "ipc:///nonexistent/head.sock",
                          "--object-store-memory", str(free * 4 + (1 << 40)), "--num-cpus", "1"],
                         env=python_env(TASUKI_TOKEN="test-token"), capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "/dev/shm" in out.stderr and "--object-store-memory" in out.stderr
    assert "shm-size" in out.stderr and "MiB free" in out.stderr
    assert "Traceback" not in out.stderr

"""tasuki.Executor against real processes, checked against the standard library's ProcessPoolExecutor.

The standard library's executor (fork start method, module-level functions, its two processes
started at once) comes up before the embedded cluster `tasuki.init(num_cpus=2, resources={"slot":
1})`, so it forks a process without the client's threads; tests run the same calls on both and
compare. Calls that must stay running until the test says so wait for a release file (with a
deadline of their own), never for a sleep. Also here: `tasuki.util.as_completed` over plain refs.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import multiprocessing
import operator
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

import tasuki
from conftest import RUNTIME, array_sum_after_release, column_total, embedded_cluster, user_module, wait_for_file, wait_until
from tasuki.exceptions import SerializationError, TaskError, WorkerCrashedError

TIMEOUT_S = 60
MB = 1 << 20


# --- module-level functions, which the standard library's executor can pickle by name --------------
def square(x):
    return x * x


def divide(a, b):
    return a / b


def power(base, exponent=2):
    return base ** exponent


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Celsius:
    """A user class, called to make an instance. (Its instances come back from workers with the class by
    value, which sets the class's attributes anew here: so no case below takes a method of it.)"""

    def __init__(self, degrees):
        self.degrees = degrees

    def __eq__(self, other):
        return type(other) is Celsius and other.degrees == self.degrees


class Adder:
    """A callable object, with methods of each kind. Equal by value, so neither it nor its bound
    methods hash: the executor cannot cache their tasks, and must not need to."""

    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        return x + self.n

    def __eq__(self, other):
        return type(other) is Adder and other.n == self.n

    def add(self, x):
        return x + self.n

    @staticmethod
    def double(x):
        return 2 * x

    @classmethod
    def describe(cls, x):
        return f"{cls.__name__} {x}"


class Counter:
    """A callable object that hashes (by identity), so its task is made once and reused."""

    def __call__(self, x):
        return x + 1


class Locked:
    """A callable object that cannot be pickled."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, x):
        return x



def touch_and_return(path, value):
    open(path, "w").close()
    return value


def alone(busy_path, seconds):
    """False if another call holds `busy_path` (two calls overlapped), else hold it for `seconds`."""
    try:
        fd = os.open(busy_path, os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    try:
        time.sleep(seconds)
    finally:
        os.close(fd)
        os.unlink(busy_path)
    return True


def meet(directory, me, other):
    """Arrive, then wait for the other call to arrive: returns only if both run at once."""
    touch_and_return(os.path.join(directory, me), None)
    return wait_for_file(os.path.join(directory, other), me)


def exit_first_time(directory):
    """Kill the worker on the first attempt; succeed on the next. Returns the attempt number."""
    attempts = len(os.listdir(directory)) + 1
    touch_and_return(os.path.join(directory, f"attempt-{attempts}"), None)
    if attempts == 1:
        os._exit(7)
    return attempts


def raise_first_time(directory):
    attempts = len(os.listdir(directory)) + 1
    touch_and_return(os.path.join(directory, f"attempt-{attempts}"), None)
    if attempts == 1:
        raise ConnectionError("flaky service")
    return attempts






def shut_down_within(executor, seconds: float = TIMEOUT_S) -> None:
    """`executor.shutdown(wait=True)`, which must return: a regression that waits forever fails here."""
    waiting = threading.Thread(target=executor.shutdown, daemon=True)
    waiting.start()
    waiting.join(seconds)
    assert not waiting.is_alive(), f"shutdown(wait=True) still waiting after {seconds} s"


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stdlib():
    """The standard library's executor, its processes forked before this process has client threads."""
    executor = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    try:
        assert list(executor.map(square, range(4))) == [0, 1, 4, 9]      # both processes start now
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def cluster(stdlib):
    with embedded_cluster(num_cpus=2, resources={"slot": 1}) as tasuki_:
        yield tasuki_


@pytest.fixture
def executor(cluster):
    ex = tasuki.Executor()
    yield ex
    shut_down_within(ex)


@pytest.fixture
def local_module(tmp_path, cluster):
    with user_module(tmp_path, "def triple(x):\n    return 3 * x\n") as module:
        yield module


def store_used() -> int:
    """Object store bytes in use on the live nodes, as the nodes last reported (every 0.5 s)."""
    return sum(n["ObjectStore"]["used"] for n in tasuki.nodes() if n["Alive"])


# --- the API against the standard library ------------------------------------------------------------
CASES = {
    "submit": lambda ex: ex.submit(divide, 7, 2).result(TIMEOUT_S),
    "submit_kwargs": lambda ex: ex.submit(power, base=3, exponent=4).result(TIMEOUT_S),
    "submit_default": lambda ex: ex.submit(power, 5).result(TIMEOUT_S),
    "submit_builtin": lambda ex: ex.submit(sorted, [3, 1, 2], reverse=True).result(TIMEOUT_S),
    "map": lambda ex: list(ex.map(square, range(20))),
    "map_two_iterables_uneven": lambda ex: list(ex.map(power, range(10), [1, 2, 3])),
    "map_generator": lambda ex: list(ex.map(square, (i for i in range(15)))),
    "map_chunksize": lambda ex: list(ex.map(divide, range(11), itertools.repeat(4), chunksize=3)),
    "map_chunksize_above_length": lambda ex: list(ex.map(square, range(5), chunksize=100)),
    "map_empty": lambda ex: list(ex.map(square, [])),
    "map_with_timeout": lambda ex: list(ex.map(square, range(6), timeout=TIMEOUT_S)),
    "map_arrays": lambda ex: [int(v) for v in ex.map(np.sum, [np.arange(i) for i in range(5)])],
}


@pytest.mark.parametrize("case", CASES)
def test_results_match_the_standard_library(executor, stdlib, case):
    assert CASES[case](executor) == CASES[case](stdlib)


def test_is_a_concurrent_futures_executor(cluster):
    with tasuki.Executor() as ex:
        assert isinstance(ex, concurrent.futures.Executor)
        assert ex._max_workers == 2                      # the cluster's CPUs
        future = ex.submit(square, 9)
        assert isinstance(future, concurrent.futures.Future) and future.result(TIMEOUT_S) == 81
        assert future.done() and not future.cancelled() and future.exception() is None
    with pytest.raises(ValueError):
        tasuki.Executor(0)
    with pytest.raises(TypeError, match="num_returns"):
        tasuki.Executor(num_returns=2)
    with pytest.raises(TypeError, match="unknown option"):
        tasuki.Executor(num_gpu=1)
    with pytest.raises(TypeError):
        tasuki.Executor().submit(42)


def test_a_failing_call_is_the_futures_exception(executor, stdlib):
    for ex in (stdlib, executor):
        future = ex.submit(divide, 1, 0)
        assert isinstance(future.exception(TIMEOUT_S), ZeroDivisionError)
        with pytest.raises(ZeroDivisionError):
            future.result()
    error = executor.submit(divide, 1, 0).exception(TIMEOUT_S)
    assert isinstance(error, TaskError) and "division by zero" in str(error)


@pytest.mark.parametrize("chunksize", [1, 3])
def test_a_failing_item_in_map_raises_in_turn_like_the_standard_library(executor, stdlib, chunksize):
    def until_error(ex):
        out = []
        with pytest.raises(ZeroDivisionError):
            for value in ex.map(divide, [1] * 10, [1, 2, 4, 8, 0, 1, 1, 1, 1, 1], chunksize=chunksize):
                out.append(value)
        return out
    expected = until_error(stdlib)      # a failing chunk fails whole: the values before the chunk
    assert until_error(executor) == expected == ([1.0, 0.5, 0.25, 0.125] if chunksize == 1 else [1.0, 0.5, 0.25])


# --- every kind of callable, as the standard library runs it -----------------------------------------------
# name: (callable, the argument tuples of its calls); each call goes through submit, map and map in chunks
CALLABLES = {
    "builtin class int": (int, [("12",), ("7", 8)]),
    "builtin class str": (str, [(5,), (b"ab", "ascii")]),
    "dataclass": (Point, [(1,), (3, 4)]),
    "user class": (Celsius, [(1,), (2,)]),
    "builtin function len": (len, [([1, 2, 3],), ("ab",)]),
    "builtin function max": (max, [(3, 9), (4, 1)]),
    "partial": (functools.partial(power, exponent=3), [(2,), (5,)]),
    "callable object": (Adder(5), [(1,), (2,)]),
    "hashable callable object": (Counter(), [(1,), (2,)]),
    "bound method": (Adder(3).add, [(4,), (5,)]),
    "staticmethod": (Adder.double, [(4,), (5,)]),
    "classmethod": (Adder.describe, [(4,), ("x",)]),
    "operator.itemgetter": (operator.itemgetter(1), [("ab",), ([4, 5],)]),
}
# name: (callable, arguments) of a call that raises
FAILING_CALLS = {
    "int of a word": (int, ("x",)),
    "dataclass with a field too many": (Point, (1, 2, 3)),
    "len of an int": (len, (5,)),
    "bound method of a bad argument": (Adder(3).add, ("x",)),
    "partial": (functools.partial(divide, 1), (0,)),
}


def each_way(ex, fn, calls: list) -> list:
    """The calls' values through submit, map and map in chunks of two."""
    by_submit = [ex.submit(fn, *args).result(TIMEOUT_S) for args in calls]
    if len({len(args) for args in calls}) > 1:         # map takes iterables of the same length only
        return by_submit
    columns = list(zip(*calls))
    return by_submit + list(ex.map(fn, *columns, timeout=TIMEOUT_S)) + \
        list(ex.map(fn, *columns, timeout=TIMEOUT_S, chunksize=2))


@pytest.mark.parametrize("kind", CALLABLES)
def test_every_kind_of_callable_gives_the_standard_librarys_results(cluster, stdlib, kind):
    fn, calls = CALLABLES[kind]
    ex = tasuki.Executor()          # its own: shutdown must return (classes once made actors and hung it)
    try:
        assert each_way(ex, fn, calls) == each_way(stdlib, fn, calls)
    finally:
        shut_down_within(ex)


@pytest.mark.parametrize("kind", FAILING_CALLS)
def test_every_kind_of_callable_raises_the_standard_librarys_error(cluster, stdlib, kind):
    fn, args = FAILING_CALLS[kind]
    ex = tasuki.Executor()
    try:
        expected = stdlib.submit(fn, *args).exception(TIMEOUT_S)
        error = ex.submit(fn, *args).exception(TIMEOUT_S)
        assert isinstance(error, type(expected)) and isinstance(error, TaskError)
        assert str(expected) in str(error)
        with pytest.raises(type(expected), match=re.escape(str(expected))):
            list(ex.map(fn, *zip(args), timeout=TIMEOUT_S))
    finally:
        shut_down_within(ex)


def test_calls_of_classes_wait_here_and_are_sent_as_others_finish(cluster, tmp_path):
    release = tmp_path / "release"
    ex = tasuki.Executor(max_workers=1)                      # two calls in the cluster, the rest wait
    try:
        blocked = [ex.submit(wait_for_file, str(release), i) for i in range(2)]
        waiting = [ex.submit(Point, i, -i) for i in range(3)] + [ex.submit(int, "x")]
        assert not any(f.running() for f in waiting)
        release.touch()
        assert [f.result(TIMEOUT_S) for f in blocked + waiting[:3]] == [0, 1] + [Point(i, -i) for i in range(3)]
        assert isinstance(waiting[3].exception(TIMEOUT_S), ValueError)
    finally:
        shut_down_within(ex)


def test_a_callable_that_cannot_be_pickled_raises_at_submit_naming_it(cluster, tmp_path):
    release = tmp_path / "release"
    ex = tasuki.Executor(max_workers=1)
    try:
        blocked = [ex.submit(wait_for_file, str(release), i) for i in range(2)]   # later calls would wait here
        for call in (lambda: ex.submit(Locked(), 1), lambda: ex.map(Locked(), [1, 2])):
            with pytest.raises(SerializationError) as info:
                call()
            text = str(info.value)
            assert "Locked cannot be sent to a worker" in text and "_thread.lock" in text, text
        release.touch()
        assert [f.result(TIMEOUT_S) for f in blocked] == [0, 1]
    finally:
        shut_down_within(ex)


def test_shutdown_returns_when_the_cluster_connection_has_closed(tmp_path):
    """tasuki.shutdown() with calls in flight: their futures fail and shutdown(wait=True) returns
    (in its own process, as it ends the cluster)."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {RUNTIME!r})
        import tasuki
        from tasuki.exceptions import ClusterError
        tasuki.init(num_cpus=1)
        ex = tasuki.Executor(max_workers=1)
        futures = [ex.submit(time.sleep, 30) for _ in range(3)]     # two sent, one waiting here
        tasuki.shutdown()
        ex.shutdown(wait=True)
        print([type(f.exception(0)).__name__ for f in futures])
    """)
    env = {**os.environ, "TASUKI_TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "['ClusterError', 'ClusterError', 'ClusterError']", done.stdout


def test_results_still_awaited_at_shutdown_fail_at_once(tmp_path):
    """tasuki.shutdown() while results are awaited (a ref's future, an Executor future without its
    shutdown, a Pool result, a get in another thread): each fails with ClusterError right away,
    none waits for ever (futures) or for the head's 30 s timeout (get)."""
    script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {RUNTIME!r})
        import tasuki
        from tasuki.exceptions import ClusterError
        tasuki.init(num_cpus=2)
        slow = tasuki.remote(time.sleep)
        ref_future = slow.remote(30).future()
        ex = tasuki.Executor(max_workers=1)
        ex_future = ex.submit(time.sleep, 30)
        pool = tasuki.Pool(1)
        pool_result = pool.apply_async(time.sleep, (30,))
        blocked_ref, outcome = slow.remote(30), {{}}
        def blocked_get():
            try:
                tasuki.get(blocked_ref)
            except ClusterError:
                outcome["get"] = time.monotonic()
        getter = threading.Thread(target=blocked_get)
        getter.start()
        client = tasuki.api._client
        while blocked_ref.id not in client.requested:      # the getter waits in get
            time.sleep(0.01)
        closed = time.monotonic()
        tasuki.shutdown()
        print("future", type(ref_future.exception(20)).__name__)
        print("executor", type(ex_future.exception(20)).__name__)
        try:
            pool_result.get(20)
        except ClusterError as e:
            print("pool ClusterError", "shutdown()" in str(e))
        getter.join(20)
        print("get", "ClusterError" if "get" in outcome and outcome["get"] - closed < 10 else "late")
    """)
    env = {**os.environ, "TASUKI_TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "future ClusterError" in lines and "executor ClusterError" in lines, done.stdout
    assert "get ClusterError" in lines and "pool ClusterError True" in lines, done.stdout


# --- what the standard library cannot do ---------------------------------------------------------------
def test_lambdas_closures_notebook_and_local_module_functions(executor, local_module):
    offset = 100

    def add_offset(x):
        return x + offset

    notebook = {"__name__": "__main__"}
    exec(compile("def cube(x):\n    return x ** 3\n", "<notebook cell 7>", "exec"), notebook)
    cube = notebook["cube"]
    assert executor.submit(lambda a, b=2: a * b, 21).result(TIMEOUT_S) == 42
    assert list(executor.map(add_offset, range(4))) == [100, 101, 102, 103]
    assert list(executor.map(add_offset, range(7), chunksize=3)) == list(range(100, 107))
    assert executor.submit(cube, 3).result(TIMEOUT_S) == 27
    assert list(executor.map(cube, range(5), chunksize=2)) == [0, 1, 8, 27, 64]
    # a function from a module only this process can import travels by value, in a partial (whose
    # own module is functools: this comes first, before the module is known), in batches too
    assert executor.submit(functools.partial(local_module.triple), 7).result(TIMEOUT_S) == 21
    assert list(executor.map(local_module.triple, range(5), chunksize=2)) == [0, 3, 6, 9, 12]
    assert executor.submit(local_module.triple, 5).result(TIMEOUT_S) == 15
    # and a class defined in a function

    @dataclasses.dataclass
    class Local:
        value: int
    assert executor.submit(Local, 3).result(TIMEOUT_S) == Local(3)
    assert list(executor.map(Local, range(3))) == [Local(0), Local(1), Local(2)]


def test_an_unpicklable_argument_raises_at_submit_naming_it(cluster, tmp_path):
    lock = threading.Lock()
    connection = sqlite3.connect(":memory:")
    release = tmp_path / "release"
    with tasuki.Executor(max_workers=1) as ex:
        calls = {
            "positional argument 0 of square()": lambda: ex.submit(square, lock),
            "keyword argument 'exponent' of power()": lambda: ex.submit(power, 2, exponent=connection),
            "of square()": lambda: ex.map(square, [1, 2, lock]),
            "item 2 of square()": lambda: ex.map(square, [1, 2, lock, 4], chunksize=2),
        }
        blocked = [ex.submit(wait_for_file, str(release)) for _ in range(2)]   # the next calls wait here
        calls["positional argument 1 of divide()"] = lambda: ex.submit(divide, 1, connection)
        for where, call in calls.items():
            with pytest.raises(SerializationError) as info:
                call()
            text = str(info.value)
            assert isinstance(info.value, TypeError)
            assert where in text, text
            assert "_thread.lock" in text or "sqlite3.Connection" in text, text
            assert re.search(r"create them inside the (remote )?function", text), text
        release.touch()
        assert [f.result(TIMEOUT_S) for f in blocked] == [None, None]
        assert ex.submit(square, 3).result(TIMEOUT_S) == 9


# --- concurrent.futures helpers, cancel, shutdown ----------------------------------------------------------
def test_as_completed_wait_and_done_callbacks(executor, tmp_path):
    release = tmp_path / "release"
    slow = executor.submit(wait_for_file, str(release), "slow")
    quick = [executor.submit(square, i) for i in range(5)]
    called = []
    quick[0].add_done_callback(called.append)
    done, not_done = concurrent.futures.wait(quick + [slow], timeout=TIMEOUT_S,
                                             return_when=concurrent.futures.FIRST_COMPLETED)
    assert done and slow not in done and slow in not_done
    assert sorted(f.result() for f in itertools.islice(concurrent.futures.as_completed(quick, TIMEOUT_S), 5)) == \
        [0, 1, 4, 9, 16]
    wait_until(lambda: called == [quick[0]], TIMEOUT_S, "the done callback")
    with pytest.raises(TimeoutError):
        next(concurrent.futures.as_completed([slow], timeout=0.1))
    slow.add_done_callback(called.append)
    release.touch()
    order = list(concurrent.futures.as_completed(quick + [slow], timeout=TIMEOUT_S))
    assert set(order) == set(quick + [slow]) and order[-1] is slow
    wait_until(lambda: called == [quick[0], slow], TIMEOUT_S, "the second done callback")
    quick[1].add_done_callback(called.append)       # on a done future: called at once
    assert called[-1] is quick[1]
    done, not_done = concurrent.futures.wait(quick + [slow], return_when=concurrent.futures.ALL_COMPLETED)
    assert not not_done


def test_map_timeout(executor, stdlib, tmp_path):
    for ex, release in ((stdlib, tmp_path / "stdlib"), (executor, tmp_path / "tasuki")):
        results = ex.map(wait_for_file, [str(release)] * 2, timeout=0.2)
        with pytest.raises(TimeoutError):          # concurrent.futures.TimeoutError
            next(results)
        release.touch()                            # the calls already running finish on their own
    assert list(executor.map(square, range(3), timeout=TIMEOUT_S)) == [0, 1, 4]


def test_cancel_a_call_not_yet_sent(cluster, tmp_path):
    release = tmp_path / "release"
    with tasuki.Executor(max_workers=1) as ex:       # two calls in the cluster at once, the rest wait here
        running = [ex.submit(wait_for_file, str(release), i) for i in range(2)]
        waiting = [ex.submit(touch_and_return, str(tmp_path / f"ran-{i}"), i) for i in range(2, 6)]
        assert all(f.running() for f in running) and not any(f.running() for f in waiting)
        assert not running[0].cancel()             # sent: too late, as in the standard library
        assert waiting[1].cancel() and waiting[1].cancelled() and waiting[1].done()
        release.touch()
        assert [f.result(TIMEOUT_S) for f in running] == [0, 1]
        assert [waiting[i].result(TIMEOUT_S) for i in (0, 2, 3)] == [2, 4, 5]
        with pytest.raises(concurrent.futures.CancelledError):
            waiting[1].result()
    assert sorted(p.name for p in tmp_path.glob("ran-*")) == ["ran-2", "ran-4", "ran-5"]


def test_shutdown_cancel_futures_and_submit_after_shutdown(cluster, tmp_path):
    release = tmp_path / "release"
    ex = tasuki.Executor(max_workers=1)
    running = [ex.submit(wait_for_file, str(release), i) for i in range(2)]
    waiting = [ex.submit(touch_and_return, str(tmp_path / f"ran-{i}"), i) for i in range(3)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in waiting)
    assert not any(f.done() for f in running)                # shutdown(wait=False) returned at once
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 2)
    release.touch()
    assert [f.result(TIMEOUT_S) for f in running] == [0, 1]
    assert not list(tmp_path.glob("ran-*"))
    ex.shutdown()                                            # again: harmless


def test_shutdown_wait_lets_queued_calls_finish(cluster, tmp_path):
    release = tmp_path / "release"
    ex = tasuki.Executor(max_workers=1)
    futures = [ex.submit(wait_for_file, str(release), i) for i in range(2)]
    futures += [ex.submit(square, i) for i in range(2, 6)]    # waiting here, sent as the others finish
    ex.shutdown(wait=False)                                   # no cancel: they all still run
    assert not any(f.done() for f in futures)
    threading.Thread(target=release.touch).start()
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 1, 4, 9, 16, 25]
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


def test_context_manager_waits_for_every_call(cluster):
    with tasuki.Executor(max_workers=2) as ex:
        futures = [ex.submit(square, i) for i in range(12)]
    assert all(f.done() for f in futures) and [f.result() for f in futures] == [i * i for i in range(12)]
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


# --- task options -----------------------------------------------------------------------------------------
def test_a_custom_resource_bounds_concurrency(cluster, tmp_path):
    # without it, two calls run at once: each waits until the other has arrived
    with tasuki.Executor(max_workers=2) as ex:
        pair = [ex.submit(meet, str(tmp_path), "a", "b"), ex.submit(meet, str(tmp_path), "b", "a")]
        assert [f.result(TIMEOUT_S) for f in pair] == ["a", "b"]
    # with resources={"slot": 1} (the cluster has one slot), one at a time
    with tasuki.Executor(max_workers=4, resources={"slot": 1}) as ex:
        busy = str(tmp_path / "busy")
        assert all(ex.map(alone, [busy] * 6, [0.1] * 6, timeout=TIMEOUT_S))


def test_max_retries_reruns_a_call_whose_worker_died(cluster, tmp_path):
    (tmp_path / "retried").mkdir()
    (tmp_path / "not").mkdir()
    (tmp_path / "exceptions").mkdir()
    with tasuki.Executor(max_retries=2) as ex:
        assert ex.submit(exit_first_time, str(tmp_path / "retried")).result(TIMEOUT_S) == 2
    with tasuki.Executor(max_retries=0) as ex:
        with pytest.raises(WorkerCrashedError):
            ex.submit(exit_first_time, str(tmp_path / "not")).result(TIMEOUT_S)
    assert len(os.listdir(tmp_path / "not")) == 1
    with tasuki.Executor(max_retries=1, retry_exceptions=True) as ex:
        assert ex.submit(raise_first_time, str(tmp_path / "exceptions")).result(TIMEOUT_S) == 2


# --- large arguments -----------------------------------------------------------------------------------------
def test_a_large_array_is_stored_once_for_every_call(cluster, tmp_path):
    array = np.random.default_rng(1).random(MB)           # 8 MiB
    release = tmp_path / "release"
    wait_until(lambda: store_used() < MB, TIMEOUT_S, "the object store to empty")
    with tasuki.Executor(max_workers=2) as ex:
        # 20 calls; four are in the cluster at once, waiting for the release with their arguments
        futures = [ex.submit(array_sum_after_release, array, i, str(release)) for i in range(20)]
        marker = tasuki.put(np.zeros(MB // 2))            # 4 MiB, stored after the calls sent so far
        used = wait_until(lambda: (u := store_used()) >= 12 * MB and u, TIMEOUT_S, "the store to hold both")
        assert used < 20 * MB, f"{used / MB:.1f} MiB in the store: the array was stored more than once"
        release.touch()
        total = float(array.sum())
        assert [f.result(TIMEOUT_S) for f in futures] == [total + i for i in range(20)]
        assert list(ex.map(array_sum_after_release, [array] * 6, range(6), [str(release)] * 6, chunksize=4)) == \
            [total + i for i in range(6)]
    del marker


def test_a_dataframe_argument(executor):
    frame = pd.DataFrame({"a": np.arange(100_000, dtype=float), "b": np.ones(100_000)})    # 1.6 MB
    assert executor.submit(column_total, frame, "a").result(TIMEOUT_S) == float(frame["a"].sum())
    assert executor.submit(column_total, frame=frame, column="b").result(TIMEOUT_S) == 100_000.0
    assert list(executor.map(column_total, [frame, frame.head(10)], ["b", "a"])) == [100_000.0, 45.0]
    assert list(executor.map(lambda f: f.shape, [frame] * 4, chunksize=2)) == [(100_000, 2)] * 4


# --- tasuki.util.as_completed ---------------------------------------------------------------------------------
def test_util_as_completed_yields_values_as_tasks_finish(cluster, tmp_path):
    from tasuki.util import as_completed
    release = tmp_path / "release"
    blocked = tasuki.remote(wait_for_file)
    quick = tasuki.remote(square)
    failing = tasuki.remote(divide)
    slow_ref = blocked.remote(str(release), "slow")
    refs = [slow_ref, quick.remote(2), quick.remote(3)]
    values = as_completed(refs, timeout=TIMEOUT_S)
    assert sorted([next(values), next(values)]) == [4, 9]       # the blocked task comes last
    release.touch()
    assert next(values) == "slow"
    with pytest.raises(StopIteration):
        next(values)
    with pytest.raises(TimeoutError):
        list(as_completed([blocked.remote(str(tmp_path / "never"), None, 5)], timeout=0.2))
    with pytest.raises(ZeroDivisionError):
        list(as_completed([failing.remote(1, 0)], timeout=TIMEOUT_S))
    refs = [quick.remote(i) for i in range(4)]
    assert set(as_completed(refs, yield_refs=True)) == set(refs)
    assert list(as_completed([])) == []

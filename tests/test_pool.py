"""tasuki.Pool against real processes, checked call by call against the standard library's Pool.

The standard library's pool (fork start method, module-level functions) is started before the
embedded cluster `tasuki.init(num_cpus=2)`, so its processes are forked from a process without
the client's threads; each test then runs the same calls on both pools and compares. What only
tasuki can do (lambdas, notebook functions, a dying worker, large arguments stored once) is checked
on its own. Calls that must stay running until the test says so wait for a release file (with a
deadline of their own), never for a sleep.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import multiprocessing
import operator
import os
import pickle
import re
import sqlite3
import threading
from collections import Counter

import numpy as np
import pandas as pd
import psutil
import pytest

import tasuki
from conftest import array_sum_after_release, column_total, embedded_cluster, user_module, wait_for_file, wait_until
from tasuki.exceptions import ActorDiedError, SerializationError, TaskCancelledError, TaskError

TIMEOUT_S = 60            # for a result that must come; a hang fails the test instead of the suite
MB = 1 << 20


# --- module-level functions, which the standard library's pool can pickle by name ------------------
def square(x):
    return x * x


def power(base, exponent):
    return base ** exponent


def divide(a, b):
    return a / b


def reciprocal(x):
    return 1 / x


def pid_of(_):
    return os.getpid()




def block_on_zero(x, release):
    if x == 0:
        wait_for_file(release)
    return x


def exit_on(x, bad):
    if x == bad:
        os._exit(3)
    return x * x


def record_pid(log_path):
    with open(log_path, "a") as f:
        f.write(f"{os.getpid()}\n")


_INITIALIZED = None          # set in each pool process by set_initialized


def set_initialized(log_path, value):
    global _INITIALIZED
    record_pid(log_path)
    _INITIALIZED = value


def read_initialized(x):
    return os.getpid(), _INITIALIZED, x


def failing_initializer():
    raise ValueError("no database today")


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Adder:
    """A callable object, with methods of each kind. (Never returned from a worker: an instance
    coming back with its class by value would set the class's attributes anew here.)"""

    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        return x + self.n

    def add(self, x):
        return x + self.n

    @staticmethod
    def double(x):
        return 2 * x


class SetInitialized:
    """An initializer that is a class: constructing it sets the global read_initialized reads."""

    def __init__(self, log_path, value):
        set_initialized(log_path, value)


class FailingInitializer:
    def __init__(self):
        raise ValueError("no database today")






# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stdlib():
    """The standard library's pool, forked before this process has any client thread."""
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


@pytest.fixture(scope="module")
def cluster(stdlib):
    with embedded_cluster(num_cpus=2) as tasuki_:
        yield tasuki_


@pytest.fixture
def pool(cluster):
    with tasuki.Pool(2) as p:
        yield p


@pytest.fixture
def local_module(tmp_path, cluster):
    with user_module(tmp_path, "import os\n"
                               "connection = None\n"
                               "def connect(dsn):\n"
                               "    global connection\n"
                               "    connection = f'{dsn}@{os.getpid()}'\n"
                               "def query(x):\n"
                               "    return connection, 3 * x\n") as module:
        yield module


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def runs(values: list) -> int:
    """How many runs of equal neighbours `values` has (pids of a map: how many chunks at most)."""
    return sum(1 for _ in itertools.groupby(values))


def store_used() -> int:
    """Object store bytes in use on the live nodes, as the nodes last reported (every 0.5 s)."""
    return sum(n["ObjectStore"]["used"] for n in tasuki.nodes() if n["Alive"])


# --- the API, call by call, against the standard library --------------------------------------------
CASES = {
    "apply": lambda p: p.apply(divide, (7, 2)),
    "apply_kwds": lambda p: p.apply(divide, (), {"b": 3, "a": 9}),
    "apply_async": lambda p: p.apply_async(power, (2, 10)).get(TIMEOUT_S),
    "map": lambda p: p.map(square, range(50)),
    "map_list": lambda p: p.map(square, [3, 1, 2]),
    "map_builtin": lambda p: p.map(len, ["", "a", "bb", "ccc"]),
    "map_chunksize_1": lambda p: p.map(square, range(23), chunksize=1),
    "map_chunksize_7": lambda p: p.map(square, range(23), chunksize=7),
    "map_chunksize_above_length": lambda p: p.map(square, range(23), 1000),
    "map_empty": lambda p: p.map(square, []),
    "map_generator": lambda p: p.map(square, (i for i in range(30))),
    "map_big_items": lambda p: p.map(len, [b"x" * 200_000, b"y" * 300_000, b""]),
    "map_arrays": lambda p: [int(v) for v in p.map(np.sum, [np.arange(i) for i in range(6)])],
    "map_async": lambda p: p.map_async(square, range(30), 4).get(TIMEOUT_S),
    "starmap": lambda p: p.starmap(power, zip(range(10), itertools.repeat(3))),
    "starmap_chunksize": lambda p: p.starmap(divide, [(i, 4) for i in range(9)], chunksize=2),
    "starmap_async": lambda p: p.starmap_async(power, [(2, i) for i in range(12)]).get(TIMEOUT_S),
    "imap": lambda p: list(p.imap(square, range(40))),
    "imap_chunksize": lambda p: list(p.imap(square, iter(range(40)), chunksize=6)),
    "imap_generator": lambda p: list(p.imap(square, (i for i in range(2000)))),
    "imap_empty": lambda p: list(p.imap(square, [])),
    "imap_unordered": lambda p: sorted(p.imap_unordered(square, range(40))),
    "imap_unordered_chunksize": lambda p: sorted(p.imap_unordered(square, (i for i in range(41)), 5)),
}


@pytest.mark.parametrize("case", CASES)
def test_results_match_the_standard_library(pool, stdlib, case):
    expected = CASES[case](stdlib)
    got = CASES[case](pool)
    assert got == expected
    assert type(got) is type(expected)


def test_reachable_as_util_multiprocessing(cluster):
    from tasuki.util.multiprocessing import AsyncResult, Pool, TimeoutError     # Ray's (test_ray_compat_api2)
    assert issubclass(Pool, tasuki.Pool) and TimeoutError is multiprocessing.TimeoutError
    with Pool(1) as pool:
        result = pool.apply_async(square, (12,))
        assert isinstance(result, AsyncResult) and result.get(TIMEOUT_S) == 144


def test_processes_default_to_the_clusters_cpus(cluster):
    with tasuki.Pool() as pool:
        assert pool._processes == 2
        pids = set(pool.map(pid_of, range(20), chunksize=1))
    assert len(pids) == 2 and os.getpid() not in pids
    with tasuki.Pool(processes=3) as pool:         # more processes than CPUs: each holds a share
        assert len(set(pool.map(pid_of, range(30), chunksize=1))) == 3
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            tasuki.Pool(bad)


def test_chunksize_keeps_a_chunks_items_in_one_process(pool, stdlib):
    for p in (stdlib, pool):
        pids = p.map(pid_of, range(40), chunksize=5)
        assert all(len(set(pids[i:i + 5])) == 1 for i in range(0, 40, 5))
    with pytest.raises(ValueError):
        pool.map(square, range(3), chunksize=0)
    for p in (stdlib, pool):
        with pytest.raises(ValueError):
            p.imap(square, range(3), chunksize=0)


def test_tiny_items_are_batched_without_a_chunksize(pool):
    # each run of equal pids is at least one chunk: about four chunks per process, as in the stdlib
    assert runs(pool.map(pid_of, range(4000))) <= 8
    # imap on a generator starts with single items, then grows chunks to about 20 ms of work
    assert runs(list(pool.imap(pid_of, (i for i in range(4000))))) < 100
    assert runs(list(pool.imap(pid_of, range(4000), chunksize=1))) > 100    # (what the batching saves)


# --- every kind of callable, as the standard library runs it -----------------------------------------------
# name: (callable, the argument tuples of its calls, all of one length)
CALLABLES = {
    "builtin class int": (int, [("12",), ("-3",)]),
    "builtin class str": (str, [(5,), (None,)]),
    "dataclass": (Point, [(1, 2), (3, 4)]),
    "builtin function len": (len, [([1, 2, 3],), ("ab",)]),
    "builtin function max": (max, [(3, 9), (4, 1)]),
    "partial": (functools.partial(power, exponent=3), [(2,), (5,)]),
    "callable object": (Adder(5), [(1,), (2,)]),
    "bound method": (Adder(3).add, [(4,), (5,)]),
    "staticmethod": (Adder.double, [(4,), (5,)]),
    "operator.itemgetter": (operator.itemgetter(1), [("ab",), ([4, 5],)]),
}


def each_way(p, fn, calls: list) -> list:
    """The calls' values through apply_async, starmap, and map and imap when each call takes one argument."""
    values = [p.apply_async(fn, args).get(TIMEOUT_S) for args in calls]
    values += p.starmap_async(fn, calls).get(TIMEOUT_S)
    if len(calls[0]) == 1:
        items = [args[0] for args in calls]
        values += p.map_async(fn, items).get(TIMEOUT_S)
        it = p.imap(fn, items)
        values += [it.next(TIMEOUT_S) for _ in items]
    return values


@pytest.mark.parametrize("kind", CALLABLES)
def test_every_kind_of_callable_gives_the_standard_librarys_results(pool, stdlib, kind):
    fn, calls = CALLABLES[kind]
    assert each_way(pool, fn, calls) == each_way(stdlib, fn, calls)


def test_a_class_and_a_partial_as_initializer_set_the_globals_the_function_reads(cluster, stdlib, tmp_path):
    # under the standard library's fork the initializer and the function share one module; here the
    # function must see what the initializer set, however either is wrapped
    log = str(tmp_path / "init.log")
    for initializer, initargs, fn in [(SetInitialized, (log, "ready"), read_initialized),
                                      (functools.partial(set_initialized, log), ("ready",), read_initialized),
                                      (set_initialized, (log, "ready"), functools.partial(read_initialized))]:
        with tasuki.Pool(2, initializer=initializer, initargs=initargs) as pool:
            results = pool.map_async(fn, range(6), chunksize=1).get(TIMEOUT_S)
        assert [(value, x) for _, value, x in results] == [("ready", x) for x in range(6)], initializer
    with tasuki.Pool(1, initializer=FailingInitializer) as pool:
        with pytest.raises(ValueError, match="no database today") as info:
            pool.apply_async(square, (2,)).get(TIMEOUT_S)
        assert "initializer FailingInitializer" in str(info.value)


# --- errors ------------------------------------------------------------------------------------------
FAILING = {               # case: (the function named in the error, the call)
    "map": ("reciprocal", lambda p: p.map(reciprocal, [1, 2, 0, 4])),
    "map_chunksize": ("reciprocal", lambda p: p.map(reciprocal, range(-5, 5), chunksize=3)),
    "map_async": ("reciprocal", lambda p: p.map_async(reciprocal, range(-3, 3)).get(TIMEOUT_S)),
    "starmap": ("divide", lambda p: p.starmap(divide, [(1, 1), (1, 0)])),
    "apply": ("divide", lambda p: p.apply(divide, (1, 0))),
    "apply_async": ("reciprocal", lambda p: p.apply_async(reciprocal, (0,)).get(TIMEOUT_S)),
    "partial": ("divide", lambda p: p.map_async(functools.partial(divide, 1), [1, 0]).get(TIMEOUT_S)),
}


@pytest.mark.parametrize("case", FAILING)
def test_a_failing_call_raises_in_the_caller_like_the_standard_library(pool, stdlib, case):
    name, call = FAILING[case]
    with pytest.raises(ZeroDivisionError):
        call(stdlib)
    with pytest.raises(ZeroDivisionError) as info:
        call(pool)
    assert isinstance(info.value, TaskError)
    text = str(info.value)
    assert f"{name} failed in pool process pid" in text and "ZeroDivisionError: division by zero" in text
    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]          # the pool goes on


def test_imap_yields_the_values_before_a_failing_item(pool, stdlib):
    def until_error(p):
        out = []
        it = p.imap(reciprocal, [1, 2, 4, 0, 5], chunksize=1)
        with pytest.raises(ZeroDivisionError):
            for value in it:
                out.append(value)
        return out
    assert until_error(pool) == until_error(stdlib) == [1.0, 0.5, 0.25]


def test_callbacks_run_before_get_returns(pool, stdlib):
    for p in (stdlib, pool):
        values, errors = [], []
        assert p.apply_async(square, (7,), callback=values.append).get(TIMEOUT_S) == 49
        assert p.map_async(square, range(4), callback=values.append).get(TIMEOUT_S) == [0, 1, 4, 9]
        assert p.starmap_async(power, [(2, 3)], callback=values.append).get(TIMEOUT_S) == [8]
        assert values == [49, [0, 1, 4, 9], [8]]
        failed = p.apply_async(divide, (1, 0), callback=values.append, error_callback=errors.append)
        with pytest.raises(ZeroDivisionError):
            failed.get(TIMEOUT_S)
        failed_map = p.map_async(reciprocal, [1, 0], error_callback=errors.append)
        failed_map.wait(TIMEOUT_S)
        assert not failed.successful() and not failed_map.successful()
        assert [type(e) for e in errors] and all(isinstance(e, ZeroDivisionError) for e in errors)
        assert len(errors) == 2 and len(values) == 3


def test_a_raising_callback_is_reported_and_the_pool_goes_on(cluster, capfd):
    def broken(value):
        raise RuntimeError("bug in the callback")

    with tasuki.Pool(1) as pool:            # two calls in flight, the third waits for their callbacks
        first = pool.apply_async(square, (1,), callback=broken)
        second = pool.map_async(square, [2], error_callback=broken, callback=broken)
        third = pool.apply_async(square, (3,))
        assert third.get(TIMEOUT_S) == 9
        assert first.get(TIMEOUT_S) == 1 and second.get(TIMEOUT_S) == [4]     # the values stand
        failing = pool.apply_async(reciprocal, (0,), error_callback=broken)
        with pytest.raises(ZeroDivisionError):
            failing.get(TIMEOUT_S)
        pool.close()
        pool.join()
    assert capfd.readouterr().err.count("RuntimeError: bug in the callback") == 3


def test_async_result_ready_successful_wait_and_get_timeout(pool, stdlib, tmp_path):
    for p, release in ((stdlib, tmp_path / "stdlib"), (pool, tmp_path / "tasuki")):
        result = p.apply_async(wait_for_file, (str(release), "done"))
        assert not result.ready()
        with pytest.raises(ValueError):
            result.successful()
        assert result.wait(0.05) is None
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.1)
        release.touch()
        assert result.get(TIMEOUT_S) == "done"
        assert result.ready() and result.successful()
        result.wait()                     # returns at once once ready


# --- what the standard library cannot do ---------------------------------------------------------------
def test_lambdas_closures_and_notebook_functions(pool, stdlib):
    offset = 10

    def add_offset(x):
        return x + offset

    cell = "import math\ndef hypotenuse(a, b):\n    return math.hypot(a, b)\n"
    notebook = {"__name__": "__main__"}
    exec(compile(cell, "<notebook cell 3>", "exec"), notebook)
    hypotenuse = notebook["hypotenuse"]

    with pytest.raises((pickle.PicklingError, AttributeError)):
        stdlib.map(lambda x: x, [1])
    assert pool.map(lambda x: x * 3, range(10)) == [x * 3 for x in range(10)]
    assert pool.map(add_offset, range(5), chunksize=2) == [10, 11, 12, 13, 14]
    assert pool.starmap(hypotenuse, [(3, 4), (5, 12)]) == [5.0, 13.0]
    assert pool.apply(hypotenuse, (8, 15)) == 17.0
    assert pool.apply(lambda *a, **k: (a, k), (1, 2), {"c": 3}) == ((1, 2), {"c": 3})
    assert list(pool.imap(lambda x: -x, range(5))) == [0, -1, -2, -3, -4]
    assert sorted(pool.imap_unordered(add_offset, range(3))) == [10, 11, 12]


def test_an_unpicklable_argument_raises_at_the_call_naming_it(pool):
    lock = threading.Lock()
    connection = sqlite3.connect(":memory:")
    calls = {
        "item 2": lambda: pool.map(square, [1, 2, lock, 4]),
        "item 3": lambda: pool.map_async(square, [1, 2, 3, lock], chunksize=2),
        "item 1": lambda: pool.starmap(power, [(2, 3), (connection, 2)]),
        "positional argument 0": lambda: pool.apply_async(square, (connection,)),
        "keyword argument 'x'": lambda: pool.apply(square, (), {"x": lock}),
    }
    for where, call in calls.items():
        with pytest.raises(SerializationError) as info:          # at the call, not at get()
            call()
        text = str(info.value)
        assert isinstance(info.value, TypeError)
        assert where in text, text
        assert "_thread.lock" in text or "sqlite3.Connection" in text, text
        assert "of square()" in text or "of power()" in text, text
        assert re.search(r"create them inside the (remote )?function", text), text
    it = pool.imap(square, [1, lock])             # imap takes its items lazily: the error comes in turn
    assert next(it) == 1
    with pytest.raises(SerializationError, match="item 1"):
        next(it)
    assert pool.map(square, range(3)) == [0, 1, 4]


# --- processes: initializer, maxtasksperchild, death ------------------------------------------------------
def test_initializer_runs_once_per_process_and_sets_a_global(cluster, tmp_path):
    log = tmp_path / "init.log"
    with tasuki.Pool(2, initializer=set_initialized, initargs=(str(log), "ready")) as pool:
        results = pool.map(read_initialized, range(40), chunksize=1)
    assert [x for _, _, x in results] == list(range(40))
    assert {value for _, value, _ in results} == {"ready"}
    pids = {pid for pid, _, _ in results}
    started = log.read_text().split()
    assert len(pids) == 2 and sorted(started) == sorted(map(str, pids))      # each process once


def test_functions_and_initializer_from_a_module_the_workers_cannot_import(local_module):
    with tasuki.Pool(2, initializer=local_module.connect, initargs=("db",)) as pool:
        results = pool.map(local_module.query, range(10), chunksize=1)
    assert [x for _, x in results] == [3 * x for x in range(10)]
    assert all(re.fullmatch(r"db@\d+", connection) for connection, _ in results), results


def test_a_partial_of_a_function_the_workers_cannot_import(cluster, tmp_path):
    with user_module(tmp_path, "def triple(x):\n    return 3 * x\n") as module, tasuki.Pool(1) as pool:
        assert pool.map_async(functools.partial(module.triple), range(4)).get(TIMEOUT_S) == [0, 3, 6, 9]


def test_maxtasksperchild_replaces_processes(cluster, tmp_path):
    log = tmp_path / "init.log"
    with tasuki.Pool(2, initializer=record_pid, initargs=(str(log),), maxtasksperchild=2) as pool:
        pids = pool.map(pid_of, range(12), chunksize=1)
    per_process = Counter(pids)
    assert max(per_process.values()) <= 2 and len(per_process) >= 6, per_process
    started = log.read_text().split()
    assert len(started) == len(set(started))                  # the initializer ran once in each
    assert set(map(str, per_process)) <= set(started)
    with pytest.raises(ValueError):
        tasuki.Pool(2, maxtasksperchild=0)


def test_an_initializer_that_raises_is_reported_on_calls(cluster):
    with tasuki.Pool(2, initializer=failing_initializer) as pool:
        with pytest.raises(ValueError, match="no database today") as info:
            pool.apply(square, (2,))
        assert "initializer failing_initializer" in str(info.value)
        with pytest.raises(ValueError, match="initializer"):
            pool.map(square, range(10))
    with pytest.raises(TypeError):
        tasuki.Pool(1, initializer="not callable")


def test_a_dying_process_fails_its_item_and_the_pool_goes_on(pool):
    with pytest.raises(ActorDiedError):
        pool.apply_async(os._exit, (3,)).get(TIMEOUT_S)
    assert pool.map(square, range(20), chunksize=1) == [x * x for x in range(20)]
    with pytest.raises(ActorDiedError):
        pool.map_async(functools.partial(exit_on, bad=5), range(10), chunksize=1).get(TIMEOUT_S)
    assert pool.map(square, range(20), chunksize=1) == [x * x for x in range(20)]
    # replaced, still two processes (the new one may take a moment to start on a busy machine)
    wait_until(lambda: len(set(pool.map(pid_of, range(20), chunksize=1))) == 2, TIMEOUT_S,
               "two pool processes again")


# --- lifecycle --------------------------------------------------------------------------------------------
def test_terminate_fails_pending_results_and_kills_the_processes(cluster, tmp_path):
    pool = tasuki.Pool(2)
    pids = set(pool.map(pid_of, range(8), chunksize=1))
    assert len(pids) == 2
    blocked = functools.partial(wait_for_file, str(tmp_path / "never"))
    pending = pool.map_async(blocked, range(6), chunksize=1)
    lazy = pool.imap(blocked, range(6))
    pool.terminate()
    with pytest.raises(TaskCancelledError):
        pending.get(TIMEOUT_S)
    with pytest.raises(TaskCancelledError):
        lazy.next(TIMEOUT_S)
    wait_until(lambda: not any(alive(pid) for pid in pids), TIMEOUT_S, "the pool processes to exit")
    with pytest.raises(ValueError, match="not running"):
        pool.map(square, [1])
    pool.join()                   # after terminate, as in the standard library
    pool.terminate()              # twice is harmless


def test_close_then_join_waits_for_the_queued_work(cluster, stdlib):
    with pytest.raises(ValueError):
        stdlib.join()             # the standard library's rule, which the pool shares
    pool = tasuki.Pool(2)
    try:
        pids = set(pool.map(pid_of, range(8), chunksize=1))
        with pytest.raises(ValueError):
            pool.join()
        result = pool.map_async(square, range(200), chunksize=1)
        more = pool.imap(square, range(10))
        pool.close()
        with pytest.raises(ValueError):
            pool.apply_async(square, (1,))
        pool.join()
        assert result.ready() and result.get(0) == [x * x for x in range(200)]
        assert list(more) == [x * x for x in range(10)]
        wait_until(lambda: not any(alive(pid) for pid in pids), TIMEOUT_S, "the pool processes to exit")
    finally:
        pool.terminate()


def test_context_manager_terminates(cluster, stdlib):
    with tasuki.Pool(2) as pool:
        assert repr(pool).startswith("<tasuki.Pool state=RUN")
        pids = set(pool.map(pid_of, range(8), chunksize=1))
        assert pool.map(square, range(10)) == stdlib.map(square, range(10))
    with pytest.raises(ValueError):
        pool.map(square, [1])
    with pytest.raises(ValueError):
        with pool:
            pass
    wait_until(lambda: not any(alive(pid) for pid in pids), TIMEOUT_S, "the pool processes to exit")


# --- imap ------------------------------------------------------------------------------------------------
# (work is taken in submission order, as in the standard library: an endless imap keeps its pool
# busy until the pool is terminated, so each of these tests has a pool of its own)
def test_imap_takes_items_lazily_from_an_endless_generator(pool):
    assert list(itertools.islice(pool.imap(square, itertools.count()), 300)) == [x * x for x in range(300)]


def test_imap_unordered_takes_items_lazily_from_an_endless_generator(pool):
    unordered = itertools.islice(pool.imap_unordered(square, itertools.count(), chunksize=4), 100)
    assert len(set(unordered)) == 100


def test_imap_unordered_yields_finished_items_first(pool, tmp_path):
    release = tmp_path / "release"
    it = pool.imap_unordered(functools.partial(block_on_zero, release=str(release)), range(10), chunksize=1)
    early = [it.next(TIMEOUT_S) for _ in range(5)]           # the other process runs them meanwhile
    assert 0 not in early and set(early) <= set(range(1, 10))
    release.touch()
    assert sorted(early + list(it)) == list(range(10))


def test_imap_next_timeout_raises_multiprocessing_timeout_error(pool, stdlib, tmp_path):
    for p, release in ((stdlib, tmp_path / "stdlib"), (pool, tmp_path / "tasuki")):
        it = p.imap(functools.partial(block_on_zero, release=str(release)), [0, 1])
        with pytest.raises(multiprocessing.TimeoutError):
            it.next(timeout=0.1)
        release.touch()
        assert it.next(TIMEOUT_S) == 0 and next(it) == 1
        with pytest.raises(StopIteration):
            next(it)


def test_progress_is_silent_off_a_terminal_and_draws_on_one(pool, capfd, monkeypatch):
    assert pool.map(square, range(100), progress=True) == [x * x for x in range(100)]
    assert list(pool.imap(square, range(50), progress=True)) == [x * x for x in range(50)]
    assert sorted(pool.imap_unordered(square, range(50), progress=True)) == [x * x for x in range(50)]
    assert pool.starmap(power, [(2, 2)] * 30, progress=True) == [4] * 30
    assert "\x1b[K" not in capfd.readouterr().err            # stderr is not a terminal here
    import tasuki.progress
    monkeypatch.setattr(tasuki.progress, "_is_terminal", lambda file: True)
    assert pool.map(square, range(100), progress=True) == [x * x for x in range(100)]
    err = capfd.readouterr().err
    assert "\rsquare  [" in err and "100/100" in err and err.endswith("\n")


# --- large arguments ---------------------------------------------------------------------------------------
def test_a_large_array_is_stored_once_for_every_call(pool, tmp_path):
    array = np.random.default_rng(0).random(MB)           # 8 MiB
    release = tmp_path / "release"
    wait_until(lambda: store_used() < MB, TIMEOUT_S, "the object store to empty")
    # 20 calls; the four in flight wait for the release, so whatever was stored for them stays
    result = pool.starmap_async(array_sum_after_release, [(array, i, str(release)) for i in range(20)],
                                chunksize=1)
    marker = tasuki.put(np.zeros(MB // 2))                # 4 MiB, stored after every chunk sent so far
    used = wait_until(lambda: (u := store_used()) >= 12 * MB and u, TIMEOUT_S, "the store to hold both")
    assert used < 20 * MB, f"{used / MB:.1f} MiB in the store: the array was stored more than once"
    release.touch()
    total = float(array.sum())
    assert result.get(TIMEOUT_S) == [total + i for i in range(20)]
    del marker


def test_a_dataframe_argument(pool):
    frame = pd.DataFrame({"a": np.arange(100_000, dtype=float), "b": np.ones(100_000)})    # 1.6 MB
    small = frame.head(10)
    assert pool.apply(column_total, (frame, "a")) == float(frame["a"].sum())
    assert pool.starmap(column_total, [(frame, "a"), (frame, "b"), (small, "a")]) == \
        [float(frame["a"].sum()), 100_000.0, 45.0]
    assert pool.map(lambda f: f.shape, [frame, small, frame]) == [(100_000, 2), (10, 2), (100_000, 2)]
    assert pool.apply(column_total, (), {"frame": frame, "column": "b"}) == 100_000.0


def raise_with_source(x):
    raise ValueError(f"bad item {x}")       # this line must show in the remote traceback


def test_traceback_of_a_pool_function_shows_its_source(pool):
    """Pool functions travel like tasks' (serialization.dumps_function): with the newest cloudpickle
    their code would otherwise be named <dynamic-code>, with no source line."""
    with pytest.raises(ValueError) as info:
        pool.apply(raise_with_source, (3,))
    message = str(info.value)
    assert f'File "{__file__}"' in message, message
    assert 'raise ValueError(f"bad item {x}")' in message, message

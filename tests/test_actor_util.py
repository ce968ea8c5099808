"""tasuki.util against real processes: ActorPool over real actors, Queue held by a real async actor.

One embedded cluster `tasuki.init(num_cpus=2)` serves the module. Waits are deadlines; the few
fixed timeouts below are what is being tested (a blocking get that must give up), not
synchronization.
"""
from __future__ import annotations

import os
import time

import pytest

import tasuki
from conftest import embedded_cluster, wait_until
from tasuki.util import ActorPool, Empty, Full, Queue

GET_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster():
    with embedded_cluster(num_cpus=2) as tasuki_:
        yield tasuki_


@pytest.fixture
def spawned(cluster):
    handles: list = []
    yield handles
    for handle in handles:
        try:
            tasuki.kill(handle)
        except Exception:
            pass


@tasuki.remote
class Doubler:
    def __init__(self):
        self.calls = 0

    def double(self, x):
        self.calls += 1
        return 2 * x, os.getpid()

    def slow_double(self, x, seconds):
        time.sleep(seconds)
        return 2 * x

    def call_count(self):
        return self.calls


def pool_of(n: int, spawned: list) -> tuple[ActorPool, list]:
    actors = [Doubler.remote() for _ in range(n)]
    spawned += actors
    return ActorPool(actors), actors


# --- ActorPool -------------------------------------------------------------------------------------
def test_pool_map_keeps_order_and_uses_every_actor(spawned):
    pool, actors = pool_of(2, spawned)
    results = list(pool.map(lambda a, v: a.double.remote(v), range(20)))
    assert [value for value, _ in results] == [2 * v for v in range(20)]
    pids = {pid for _, pid in results}
    assert len(pids) == 2 and os.getpid() not in pids
    counts = tasuki.get([a.call_count.remote() for a in actors], timeout=GET_TIMEOUT_S)
    assert sum(counts) == 20 and min(counts) > 0


def test_pool_map_unordered_yields_results_as_they_finish(spawned):
    pool, _ = pool_of(2, spawned)
    # the first value goes to one actor and takes 2 s; the others run meanwhile on the second actor
    values = [(0, 2.0)] + [(v, 0.0) for v in range(1, 6)]
    results = list(pool.map_unordered(lambda a, v: a.slow_double.remote(*v), values))
    assert sorted(results) == [0, 2, 4, 6, 8, 10]
    assert results[0] != 0 and results[-1] == 0, results


def test_pool_submit_get_next_has_next(spawned):
    pool, actors = pool_of(2, spawned)
    assert not pool.has_next() and pool.has_free()
    for v in range(5):                         # more values than actors: three wait for a free actor
        pool.submit(lambda a, v: a.slow_double.remote(v, 0.05), v)
    assert pool.has_next() and not pool.has_free()
    out = []
    while pool.has_next():
        out.append(pool.get_next(timeout=GET_TIMEOUT_S))
    assert out == [0, 2, 4, 6, 8]
    with pytest.raises(StopIteration):
        pool.get_next()
    # a timeout that runs out raises, or returns None when asked to ignore it
    pool.submit(lambda a, v: a.slow_double.remote(v, 3.0), 21)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.1)
    assert pool.get_next(timeout=0.1, ignore_if_timedout=True) is None
    assert pool.get_next_unordered(timeout=GET_TIMEOUT_S) == 42
    # pop_idle takes an actor out of the pool, push puts one (back) in
    taken = pool.pop_idle()
    assert taken in actors
    pool.push(taken)
    assert pool.has_free()


@tasuki.remote
class Sleeper:
    """Async: a call that waits on an event does not hold up the calls sent after it."""

    def __init__(self):
        import asyncio
        self.release = asyncio.Event()

    async def hold(self):
        await self.release.wait()
        return "held"

    async def free(self):
        self.release.set()

    async def echo(self, x):
        return x


def test_pool_map_drops_unread_submits_without_waiting_for_them(spawned):
    actors = [Sleeper.remote() for _ in range(2)]
    spawned += actors
    pool = ActorPool(actors)
    pool.submit(lambda a, v: a.hold.remote(), None)        # never read, never finishes by itself
    # before: map waited for the held call first (Ray gh-23107), here forever
    assert list(pool.map(lambda a, v: a.echo.remote(v), range(5))) == list(range(5))
    pool.submit(lambda a, v: a.hold.remote(), None)
    assert sorted(pool.map_unordered(lambda a, v: a.echo.remote(v), range(5))) == list(range(5))
    tasuki.get([a.free.remote() for a in actors], timeout=GET_TIMEOUT_S)


def test_pool_pending_submits_under_rays_name(spawned):
    pool, actors = pool_of(2, spawned)
    busy = pool.pop_idle()
    pool.submit(lambda a, v: a.slow_double.remote(v, 0.2), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)         # no idle actor: waits, as in Ray's attribute
    assert len(pool._pending_submits) == 1 and not pool.has_free()
    pool.push(busy)                                           # pushing an actor runs the waiting value
    assert len(pool._pending_submits) == 0 and not pool.has_free()
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(busy)
    assert pool.get_next(timeout=GET_TIMEOUT_S) == 2 and pool.get_next(timeout=GET_TIMEOUT_S)[0] == 4


# --- Queue ---------------------------------------------------------------------------------------------
def test_queue_put_get_sizes_and_nowait(spawned):
    q = Queue()
    spawned.append(q.actor)
    assert q.empty() and q.qsize() == 0 and len(q) == 0
    for item in ("a", {"b": 1}, [3]):
        q.put(item)
    assert q.qsize() == 3 and not q.empty()
    assert [q.get(), q.get(), q.get()] == ["a", {"b": 1}, [3]]      # first in, first out
    q.put_nowait(4)
    q.put_nowait_batch([5, 6])
    assert q.get_nowait() == 4 and q.get_nowait_batch(2) == [5, 6]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(Empty):
        q.get(block=False)


def test_queue_blocking_get_times_out_with_empty(spawned):
    q = Queue()
    spawned.append(q.actor)
    q.qsize()                                # the actor is up: the timing below is the get's own
    started = time.time()
    with pytest.raises(Empty):
        q.get(timeout=0.5)
    assert time.time() - started >= 0.5
    q.put("late")
    assert q.get(timeout=GET_TIMEOUT_S) == "late"


def test_bounded_queue_is_full(spawned):
    q = Queue(maxsize=2)
    spawned.append(q.actor)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(Full):
        q.put(3, timeout=0.3)
    assert q.get() == 1
    q.put(3, timeout=GET_TIMEOUT_S)
    assert q.get_nowait_batch(2) == [2, 3]


@tasuki.remote
def produce(q, n):
    for i in range(n):
        q.put(i)
    q.put(None)
    return n


@tasuki.remote
def consume_one(q):
    return q.get(timeout=GET_TIMEOUT_S)


def test_queue_shared_by_a_producer_task_and_the_driver(spawned):
    q = Queue()
    spawned.append(q.actor)
    done = produce.remote(q, 50)
    got = []
    while (item := q.get(timeout=GET_TIMEOUT_S)) is not None:   # blocks until the task puts
        got.append(item)
    assert got == list(range(50))
    assert tasuki.get(done, timeout=GET_TIMEOUT_S) == 50
    # the other way round: a task blocks in get until the driver puts
    waiting = consume_one.remote(q)
    assert tasuki.wait([waiting], timeout=0.5)[0] == []
    q.put("from the driver")
    assert tasuki.get(waiting, timeout=GET_TIMEOUT_S) == "from the driver"
    assert q.empty()


def test_queue_batches_are_all_or_nothing_and_arguments_are_checked(spawned):
    q = Queue(maxsize=3)
    spawned.append(q.actor)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full, match="2 items do not fit"):
        q.put_nowait_batch([3, 4])                       # only one would fit: none goes in
    assert q.qsize() == 2
    with pytest.raises(Empty, match="3 items asked for"):
        q.get_nowait_batch(3)                            # two are there: none comes out
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(TypeError, match="maxsize must be an int"):
        Queue(maxsize="3")
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(ValueError, match="num_items must be 0 or more"):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError, match="num_items must be an int"):
        q.get_nowait_batch(1.5)


def test_queues_hold_no_cpu_and_shutdown_ends_the_actor(spawned):
    queues = [Queue() for _ in range(3)]              # on 2 CPUs: were each to hold one, the third never starts
    spawned.extend(q.actor for q in queues)
    for i, q in enumerate(queues):
        q.put(i)
    assert [q.get(timeout=GET_TIMEOUT_S) for q in queues] == [0, 1, 2]
    both = [tasuki.remote(num_cpus=1)(lambda: "runs").remote() for _ in range(2)]   # both CPUs are free
    assert tasuki.get(both, timeout=GET_TIMEOUT_S) == ["runs", "runs"]
    q = queues[0]
    q.shutdown()
    assert q.actor is None
    q.shutdown()                                      # again: nothing to do
    actor = queues[1].actor
    assert tasuki.get([actor.empty.remote(), actor.full.remote()], timeout=GET_TIMEOUT_S) == [True, False]
    queues[1].shutdown()                              # Ray's queue actor answers empty/full; once ended, it is dead

    def died() -> bool:         # kill() is asynchronous (as Ray's): a call made at once may still be answered
        try:
            tasuki.get(actor.empty.remote(), timeout=GET_TIMEOUT_S)
        except tasuki.exceptions.ActorDiedError:
            return True
        return False
    wait_until(died, what="the queue's actor to be dead after shutdown()")


def test_a_resource_with_nothing_free_is_left_out_of_available_resources(spawned):
    """Ray leaves a resource with nothing free out of available_resources() (a Queue holding the
    cluster's CPUs is how Ray's own test checks it)."""
    q = Queue(actor_options={"num_cpus": tasuki.cluster_resources()["CPU"]})
    spawned.append(q.actor)
    q.put(1)
    assert "CPU" not in tasuki.available_resources() and "CPU" in tasuki.cluster_resources()
    q.shutdown()
    wait_until(lambda: "CPU" in tasuki.available_resources(), 60, "the queue's CPUs to come back")

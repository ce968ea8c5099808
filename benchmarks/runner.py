"""One runtime, one workload, in a fresh process: the child that bench.py and dropins.py start.

    python benchmarks/runner.py RUNTIME WORKLOAD --repeats 3 --sizes '{...}' --out result.json

bench.py's runtimes (tasuki, ray, mp, ppe, loky, dask) run its workloads through one small
interface (`Runtime`). dropins.py's systems (tasuki-pool, tasuki-executor, mp, ppe, loky, dask,
ray-pool) run the `dropin_*` workloads through each one's own pool or executor API (`DropIn`).

The task functions live in this file, which runs as `__main__`, so every runtime ships them by
value (Ray, Dask, loky and tasuki through cloudpickle; multiprocessing and ProcessPoolExecutor by
fork) and no worker needs `benchmarks/` on its path.

Nothing heavy is imported at module level: the `lifecycle` workload measures the import of the
runtime itself as part of "init() → first result", and Dask's spawned worker processes re-import
this module. The clock for init starts just before the runtime's import.

The result (written to --out as JSON) is {"status": "ok", "metrics": {name: [values...]}} or
{"status": "na" | "unsupported" | "fail", "error": ...}:
  unsupported  the runtime has no such feature by design (multiprocessing has no put): shown "–"
  na           tasuki does not implement it yet (actors): shown "n/a"
  fail         an exception, with its traceback
"""
import json
import os
import sys
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = 2
MB = 1_000_000
GIB = float(1 << 30)


class Unsupported(Exception):
    """The runtime has no equivalent of this feature (shown as "–")."""


class NotYet(Exception):
    """tasuki does not implement this feature yet (shown as "n/a")."""


# --- task functions (shipped by value) ----------------------------------------------------------
def noop(*args):
    return None


def inc(x):
    return x + 1


def burn(n):
    """Pure-Python CPU work: a fixed amount of it, so that two tasks on one core take twice as long."""
    x = 0
    for i in range(n):
        x += i
    return x


def burn_timed(n):
    """burn(n), returning how long it took inside the task."""
    t = time.perf_counter()
    burn(n)
    return time.perf_counter() - t


def big_result(nbytes):
    """A large array, made once per worker process (kept in builtins, which every runtime's worker
    shares across tasks), so that the timing is the transfer and not the fill."""
    import builtins
    import numpy as np
    cache = builtins.__dict__.setdefault("_bench_big_result", {})
    if nbytes not in cache:
        cache.clear()
        cache[nbytes] = np.ones(nbytes, dtype=np.uint8)
    return cache[nbytes]


def first_item(arr):
    return int(arr[0]) + len(arr)


def square(x):
    return x * x


def nap(seconds):
    time.sleep(seconds)
    return seconds


def nap_key(key, seconds):
    """One key of the Executor workload: `seconds` of sleep (deterministic, unlike a CPU loop on
    this VM), then a small result."""
    time.sleep(seconds)
    return key


def item_at(arr, i):
    return int(arr[i % len(arr)])


class Actor:
    def m(self):
        return 0


class AsyncActor:
    async def m(self):
        return 0


def nn_caller(module_name, actors, n):
    """n:n actor calls: a task that calls every actor in turn, n calls in all, and gathers them."""
    import importlib
    rt = importlib.import_module(module_name)
    refs = [actors[i % len(actors)].m.remote() for i in range(n)]
    return len(rt.get(refs))


# --- the runtimes, behind one small interface -----------------------------------------------------
class Runtime:
    name = ""
    has_wait = True

    def start(self): ...
    def submit(self, fn, *args): ...
    def get(self, fut): ...
    def gather(self, futs): return [self.get(f) for f in futs]
    def stop(self): ...

    def map(self, fn, items):
        raise Unsupported("no map()")

    def put(self, value):
        raise Unsupported("no object store: data travels as task arguments")

    def wait_all(self, futs):
        raise Unsupported("no wait()")

    def chain(self, fn, n):
        raise Unsupported("futures cannot be passed as task arguments")

    def actor_class(self, cls, **options):
        raise Unsupported("no actors")

    def call(self, handle, method):
        raise Unsupported("no actors")


class RayLike(Runtime):
    """Ray and tasuki share the API (tasuki is written to run Ray programs unchanged)."""
    module_name = ""

    def start(self):
        import importlib
        self.rt = importlib.import_module(self.module_name)
        self._init()
        self._remote = {}

    def _init(self):
        self.rt.init(num_cpus=WORKERS)

    def _fn(self, fn):
        r = self._remote.get(fn)
        if r is None:
            r = self._remote[fn] = self.rt.remote(fn)
        return r

    def submit(self, fn, *args):
        return self._fn(fn).remote(*args)

    def get(self, fut):
        return self.rt.get(fut)

    def gather(self, futs):
        return self.rt.get(futs)

    def stop(self):
        self.rt.shutdown()

    def put(self, value):
        return self.rt.put(value)

    def wait_all(self, futs):
        ready, _ = self.rt.wait(futs, num_returns=len(futs))
        assert len(ready) == len(futs)

    def chain(self, fn, n):
        f = self._fn(fn)
        ref = f.remote(0)
        for _ in range(n - 1):
            ref = f.remote(ref)
        return self.rt.get(ref)

    def actor_class(self, cls, **options):
        return self.rt.remote(**options)(cls) if options else self.rt.remote(cls)

    def call(self, handle, method):
        return getattr(handle, method).remote()


class Tasuki(RayLike):
    name = module_name = "tasuki"

    def start(self):
        sys.path.insert(0, os.path.join(REPO, "runtime"))    # this working tree's tasuki
        super().start()

    def actor_class(self, cls, **options):
        try:
            return super().actor_class(cls, **options)
        except Exception as e:
            raise NotYet(f"tasuki.remote on a class: {type(e).__name__}: {e}\n{traceback.format_exc()}") from e


class Ray(RayLike):
    name = module_name = "ray"

    def _init(self):
        self.rt.init(num_cpus=WORKERS, include_dashboard=False)


class MpPool(Runtime):
    name = "mp"
    has_wait = False

    def start(self):
        import multiprocessing
        self.pool = multiprocessing.get_context("fork").Pool(WORKERS)

    def submit(self, fn, *args):
        return self.pool.apply_async(fn, args)

    def get(self, fut):
        return fut.get()

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def stop(self):
        self.pool.close()
        self.pool.join()


class Executor(Runtime):
    """concurrent.futures executors: ProcessPoolExecutor and loky."""

    def submit(self, fn, *args):
        return self.ex.submit(fn, *args)

    def get(self, fut):
        return fut.result()

    def map(self, fn, items):
        return list(self.ex.map(fn, items, chunksize=max(1, len(items) // (4 * WORKERS))))

    def wait_all(self, futs):
        import concurrent.futures
        done, _ = concurrent.futures.wait(futs)
        assert len(done) == len(futs)

    def stop(self):
        self.ex.shutdown(wait=True)


class Ppe(Executor):
    name = "ppe"

    def start(self):
        import concurrent.futures
        import multiprocessing
        self.ex = concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("fork"))


class Loky(Executor):
    name = "loky"

    def start(self):
        import loky
        self.ex = loky.get_reusable_executor(max_workers=WORKERS)


class Dask(Runtime):
    name = "dask"

    def start(self):
        import distributed
        self.d = distributed
        self.cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                                dashboard_address=None)
        self.client = distributed.Client(self.cluster)

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def get(self, fut):
        return fut.result()

    def gather(self, futs):
        return self.client.gather(futs)

    def map(self, fn, items):
        return self.client.gather(self.client.map(fn, items, pure=False))

    def put(self, value):
        return self.client.scatter(value, hash=False)

    def wait_all(self, futs):
        self.d.wait(futs)

    def chain(self, fn, n):
        fut = self.client.submit(fn, 0, pure=False)
        for _ in range(n - 1):
            fut = self.client.submit(fn, fut, pure=False)
        return fut.result()

    def actor_class(self, cls, **options):
        return cls

    def call(self, handle, method):
        return getattr(handle, method)()

    def stop(self):
        self.client.close()
        self.cluster.close()


RUNTIMES = {r.name: r for r in (Tasuki, Ray, MpPool, Ppe, Loky, Dask)}


# --- drop-ins (dropins.py): each system through its own pool or executor API ---------------------
class DropIn:
    """A pool or an executor used the way its users write code. Mixed in before a runtime class
    above, whose start() it times, with the pool or executor made (`make`) and a first result:
    `startup_s`. map's chunksize None is the system's own default."""
    startup_s = 0.0
    default_chunksize_is_one = False       # Executor.map: every item is a call of its own

    def start(self):
        t = time.perf_counter()
        super().start()
        self.make()
        self.results([self.submit(noop)])
        self.startup_s = time.perf_counter() - t

    def make(self):
        pass

    def map(self, fn, items, chunksize=None):
        raise NotImplementedError

    def starmap(self, fn, arg_tuples):
        raise Unsupported("no starmap")

    def results(self, handles):
        """The values of submitted calls, collected as the system's users do."""
        raise NotImplementedError

    def share(self, value):
        raise Unsupported("no scatter")


class PoolAPI(DropIn):
    """multiprocessing.Pool's API (also tasuki.Pool's and ray.util.multiprocessing.Pool's)."""

    def map(self, fn, items, chunksize=None):
        return self.pool.map(fn, items, chunksize)

    def starmap(self, fn, arg_tuples):
        return self.pool.starmap(fn, arg_tuples)

    def submit(self, fn, *args):
        return self.pool.apply_async(fn, args)

    def results(self, handles):
        return [h.get() for h in handles]           # no as_completed: in order

    def stop(self):
        self.pool.close()
        self.pool.join()
        super().stop()


class ExecutorAPI(DropIn):
    """concurrent.futures' API (ProcessPoolExecutor, loky, tasuki.Executor)."""
    default_chunksize_is_one = True

    def map(self, fn, items, chunksize=None):
        return list(self.ex.map(fn, items, chunksize=chunksize or 1))

    def submit(self, fn, *args):
        return self.ex.submit(fn, *args)

    def results(self, handles):
        import concurrent.futures
        return [f.result() for f in concurrent.futures.as_completed(handles)]


class MpPoolDropIn(PoolAPI, MpPool):
    def stop(self):
        MpPool.stop(self)


class PpeDropIn(ExecutorAPI, Ppe):
    pass


class LokyDropIn(ExecutorAPI, Loky):
    pass


class TasukiPool(PoolAPI, Tasuki):
    name = "tasuki-pool"

    def make(self):
        self.pool = self.rt.Pool(WORKERS)


class TasukiExecutor(ExecutorAPI, Tasuki):
    name = "tasuki-executor"

    def make(self):
        self.ex = self.rt.Executor(WORKERS)

    def stop(self):
        self.ex.shutdown(wait=True)
        super().stop()


class RayPool(PoolAPI, Ray):
    name = "ray-pool"

    def make(self):
        from ray.util.multiprocessing import Pool
        self.pool = Pool(WORKERS)


class DaskDropIn(DropIn, Dask):
    def map(self, fn, items, chunksize=None):
        if chunksize is not None:
            raise Unsupported("client.map has no chunksize")
        return self.client.gather(self.client.map(fn, items, pure=False))

    def results(self, handles):
        return [f.result() for f in self.d.as_completed(handles)]

    def share(self, value):
        return self.client.scatter(value)


DROPINS = {r.name: r for r in (TasukiPool, TasukiExecutor, MpPoolDropIn, PpeDropIn, LokyDropIn, DaskDropIn,
                               RayPool)}


# --- workloads: each returns {metric: [one value per repeat]} ---------------------------------------
def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def helpers_memory():
    """Total RSS (MiB) and count of every process below this one (the runtime's helpers)."""
    import psutil
    rss, count = 0, 0
    for p in psutil.Process().children(recursive=True):
        try:
            rss += p.memory_info().rss
            count += 1
        except psutil.Error:
            pass
    return rss / (1 << 20), count


def w_lifecycle(rt, size, repeats):
    """Fresh process: import + init + first result; helpers' memory after a round of tasks; shutdown."""
    t0 = time.perf_counter()
    rt.start()
    rt.get(rt.submit(noop))
    t_init = time.perf_counter() - t0
    rt.gather([rt.submit(noop, i) for i in range(4 * WORKERS)])
    rt.gather([rt.submit(burn, 2_000_000) for _ in range(WORKERS)])   # both workers surely started
    time.sleep(1.0)
    mem, count = helpers_memory()
    t_stop, _ = timed(rt.stop)
    return {"init": [t_init], "idle_memory": [mem], "idle_processes": [count], "shutdown": [t_stop]}


def w_noop(rt, size, repeats):
    n = size["noop"]
    rt.gather([rt.submit(noop, i) for i in range(200)])
    out = []
    for _ in range(repeats):
        t, res = timed(lambda: rt.gather([rt.submit(noop, i) for i in range(n)]))
        assert len(res) == n
        out.append(n / t)
    return {"noop": out}


def w_noop_map(rt, size, repeats):
    n = size["noop"]
    rt.map(noop, list(range(200)))
    out = []
    for _ in range(repeats):
        t, res = timed(lambda: rt.map(noop, list(range(n))))
        assert len(res) == n
        out.append(n / t)
    return {"noop_map": out}


def w_sequential(rt, size, repeats):
    n = size["sequential"]
    for _ in range(20):
        rt.get(rt.submit(noop))
    out = []
    for _ in range(repeats):
        def loop():
            for i in range(n):
                rt.get(rt.submit(noop, i))
        out.append(n / timed(loop)[0])
    return {"sequential": out}


def w_chain(rt, size, repeats):
    n = size["chain"]
    rt.chain(inc, 10)
    out = []
    for _ in range(repeats):
        t, last = timed(lambda: rt.chain(inc, n))
        assert last == n, last
        out.append(n / t)
    return {"chain": out}


def w_small_objects(rt, size, repeats):
    n = size["small"]
    rt.get(rt.put(0))
    puts, gets = [], []
    for _ in range(repeats):
        t, refs = timed(lambda: [rt.put(i) for i in range(n)])
        puts.append(n / t)
        t, values = timed(lambda: [rt.get(r) for r in refs])
        assert values[-1] == n - 1
        gets.append(n / t)
        del refs
    return {"small_put": puts, "small_get": gets}


def w_large_put(rt, size, repeats):
    """Fresh process: the first put (cold store), then put/get/del cycles (warm)."""
    import numpy as np
    nbytes = size["large"]
    arr = np.ones(nbytes, dtype=np.uint8)
    rt.get(rt.submit(noop))
    t_cold, ref = timed(lambda: rt.put(arr))
    t_get, value = timed(lambda: rt.get(ref))
    assert len(value) == nbytes and value[-1] == 1
    del value, ref
    time.sleep(0.05)                          # as after every warm cycle: let the store see the release
    warm, gets = [], [nbytes / t_get / GIB]
    for _ in range(max(3, repeats)):
        t, ref = timed(lambda: rt.put(arr))
        warm.append(nbytes / t / GIB)
        t, value = timed(lambda: rt.get(ref))
        assert len(value) == nbytes
        gets.append(nbytes / t / GIB)
        del value, ref
        time.sleep(0.05)
    return {"put_large_cold": [nbytes / t_cold / GIB], "put_large_warm": warm, "get_large": gets}


def w_return_large(rt, size, repeats):
    nbytes = size["large"]
    warm = [rt.submit(big_result, nbytes) for _ in range(2 * WORKERS)]   # each worker makes its array
    rt.gather(warm)
    del warm
    out = []
    for _ in range(repeats):
        t, value = timed(lambda: rt.get(rt.submit(big_result, nbytes)))
        assert len(value) == nbytes
        out.append(nbytes / t / GIB)
        del value
    return {"return_large": out}


def w_shared_arg(rt, size, repeats):
    """n tasks that all take one large array (put beforehand where the runtime has put; the put is
    not timed) and return something trivial."""
    import numpy as np
    nbytes, n = size["large"], size["shared_tasks"]
    arr = np.ones(nbytes, dtype=np.uint8)
    rt.gather([rt.submit(noop, i) for i in range(WORKERS)])
    out = []
    for _ in range(repeats):
        try:
            ref = rt.put(arr)
        except Unsupported:
            ref = arr                      # pools: the array itself is pickled into every task
        t, res = timed(lambda: rt.gather([rt.submit(first_item, ref) for _ in range(n)]))
        assert res[0] == 1 + nbytes
        out.append(n / t)
        del ref
    return {"shared_arg": out}


def w_wait(rt, size, repeats):
    n = size["wait"]
    if not rt.has_wait:
        raise Unsupported("no wait()")
    rt.gather([rt.submit(noop, i) for i in range(50)])
    pending, ready = [], []
    for _ in range(repeats):
        futs = [rt.submit(noop, i) for i in range(n)]
        pending.append(timed(lambda: rt.wait_all(futs))[0] * 1000)   # the tasks still run meanwhile
        ready.append(timed(lambda: rt.wait_all(futs))[0] * 1000)     # all done: wait()'s own cost
        del futs
    return {"wait_pending": pending, "wait_ready": ready}


def w_cpu_scaling(rt, size, repeats):
    """Ideal time / actual. This VM's CPU speed drifts by up to 30% from one second to the next, so
    the ideal is measured right before each parallel run: 2 × WORKERS burns here in the driver
    (no runtime in the way), ideal = n × their mean / WORKERS."""
    loops, n = size["burn_loops"], size["burn_tasks"]
    rt.gather([rt.submit(burn, loops // 10) for _ in range(WORKERS)])
    out, busy, singles = [], [], []
    for _ in range(repeats):
        here = [timed(lambda: burn(loops))[0] for _ in range(2 * WORKERS)]
        singles += here
        ideal = n * (sum(here) / len(here)) / WORKERS
        t, inside = timed(lambda: rt.gather([rt.submit(burn_timed, loops) for _ in range(n)]))
        out.append(ideal / t)
        busy.append(sum(inside) / (WORKERS * t))
    return {"cpu_scaling": out, "cpu_busy": busy, "burn_task_s": [sum(singles) / len(singles)]}


def _actor(rt, cls, **options):
    A = rt.actor_class(cls, **options)
    if isinstance(rt, Dask):
        return rt.client.submit(cls, actor=True).result()
    return A.remote()


def w_actor_sync(rt, size, repeats):
    n = size["actor_sync"]
    a = _actor(rt, Actor)
    for _ in range(20):
        rt.get(rt.call(a, "m"))
    out = []
    for _ in range(repeats):
        def loop():
            for _ in range(n):
                rt.get(rt.call(a, "m"))
        out.append(n / timed(loop)[0])
    return {"actor_sync": out}


def _actor_async(rt, size, repeats, cls, metric):
    n = size["actor_async"]
    a = _actor(rt, cls)
    rt.gather([rt.call(a, "m") for _ in range(50)])
    out = []
    for _ in range(repeats):
        t, res = timed(lambda: rt.gather([rt.call(a, "m") for _ in range(n)]))
        assert len(res) == n
        out.append(n / t)
    return {metric: out}


def w_actor_async(rt, size, repeats):
    return _actor_async(rt, size, repeats, Actor, "actor_async")


def w_asyncio_actor(rt, size, repeats):
    if isinstance(rt, Dask):
        raise Unsupported("not measured for Dask")
    return _actor_async(rt, size, repeats, AsyncActor, "asyncio_actor")


def w_actor_nn(rt, size, repeats):
    """n:n: WORKERS actors (num_cpus=0, so the callers can run beside them), WORKERS caller tasks,
    each calling all the actors in turn."""
    if isinstance(rt, Dask):
        raise Unsupported("not measured for Dask")
    n = size["actor_async"]
    A = rt.actor_class(Actor, num_cpus=0)
    actors = [A.remote() for _ in range(WORKERS)]
    rt.gather([rt.call(a, "m") for a in actors])
    rt.gather([rt.submit(nn_caller, rt.module_name, actors, 10) for _ in range(WORKERS)])
    out = []
    for _ in range(repeats):
        t, res = timed(lambda: rt.gather([rt.submit(nn_caller, rt.module_name, actors, n // WORKERS)
                                          for _ in range(WORKERS)]))
        assert sum(res) == n // WORKERS * WORKERS
        out.append(n // WORKERS * WORKERS / t)
    return {"actor_nn": out}


WORKLOADS = {
    "lifecycle": w_lifecycle, "noop": w_noop, "noop_map": w_noop_map, "sequential": w_sequential,
    "chain": w_chain, "small_objects": w_small_objects, "put_large": w_large_put,
    "return_large": w_return_large, "shared_arg": w_shared_arg, "wait": w_wait,
    "cpu_scaling": w_cpu_scaling, "actor_sync": w_actor_sync, "actor_async": w_actor_async,
    "asyncio_actor": w_asyncio_actor, "actor_nn": w_actor_nn,
}


# --- drop-in workloads (dropins.py): each adds "startup", timed in DropIn.start ---------------------
def _warm(rt):
    """A round of calls on both workers, not timed: the figures are the steady state."""
    rt.map(noop, list(range(4 * WORKERS)))


def w_dropin_map(rt, size, repeats):
    """map of square over a list of tiny items: the system's default chunksize; where the default
    is one call per item (executors), also chunksize = the standard library's default."""
    _warm(rt)
    out = {"startup": [rt.startup_s], "map_default": [], "map_default_items": [size["tiny"]]}
    items = list(range(size["tiny"]))
    for _ in range(repeats):
        t, res = timed(lambda: rt.map(square, items))
        assert res[-1] == (len(items) - 1) ** 2
        out["map_default"].append(len(items) / t)
    if rt.default_chunksize_is_one:
        items = list(range(size["tiny_tuned"]))
        chunksize = -(-len(items) // (4 * WORKERS))
        out["map_tuned"] = []
        for _ in range(repeats):
            t, res = timed(lambda: rt.map(square, items, chunksize))
            assert res[-1] == (len(items) - 1) ** 2
            out["map_tuned"].append(len(items) / t)
    return out


def w_dropin_sleep(rt, size, repeats):
    """map of a 10 ms sleep over n items, default chunksize: wall time."""
    _warm(rt)
    items = [size["nap_s"]] * size["naps"]
    out = []
    for _ in range(repeats):
        t, res = timed(lambda: rt.map(nap, items))
        assert len(res) == len(items)
        out.append(t)
    return {"startup": [rt.startup_s], "sleep_wall": out}


def w_dropin_shared(rt, size, repeats):
    """Calls that each take the same large array and return one item of it: submitted one by one
    (apply_async / submit), then through starmap (pools), then for Dask also scattered once. A
    fresh array for each (filled before the clock), so nothing stored earlier is reused."""
    import numpy as np
    _warm(rt)
    nbytes, n, n_star = size["large"], size["shared_calls"], size["shared_starmap"]
    out = {"startup": [rt.startup_s], "shared_submit": [], "shared_submit_calls": [n]}

    def fresh():
        return np.ones(nbytes, dtype=np.uint8)

    for _ in range(repeats):
        arr = fresh()
        t, res = timed(lambda: rt.results([rt.submit(item_at, arr, i) for i in range(n)]))
        assert res == [1] * n
        out["shared_submit"].append(t)
        del arr
        try:
            arr = fresh()
            t, res = timed(lambda: rt.starmap(item_at, [(arr, i) for i in range(n_star)]))
            assert res == [1] * n_star
            out.setdefault("shared_starmap", []).append(t)
        except Unsupported:
            pass
        try:
            arr = fresh()

            def scatter_then_submit():
                shared = rt.share(arr)
                return rt.results([rt.submit(item_at, shared, i) for i in range(n_star)])
            t, res = timed(scatter_then_submit)
            assert res == [1] * n_star
            out.setdefault("shared_scatter", []).append(t)
        except Unsupported:
            pass
        del arr
    return out


def w_dropin_keys(rt, size, repeats):
    """The Executor workload: one submit per key (nap_key: a sleep), results as they complete."""
    _warm(rt)
    n, seconds = size["keys"], size["key_s"]
    out = []
    for _ in range(repeats):
        t, res = timed(lambda: rt.results([rt.submit(nap_key, k, seconds) for k in range(n)]))
        assert sorted(res) == list(range(n))
        out.append(t)
    return {"startup": [rt.startup_s], "keys_wall": out}


DROPIN_WORKLOADS = {"dropin_map": w_dropin_map, "dropin_sleep": w_dropin_sleep, "dropin_shared": w_dropin_shared,
                    "dropin_keys": w_dropin_keys}


def main():
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("runtime", choices=sorted(set(RUNTIMES) | set(DROPINS)))
    parser.add_argument("workload", choices=sorted(WORKLOADS) + sorted(DROPIN_WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", required=True, help="JSON of the workload sizes")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dropin = args.workload in DROPIN_WORKLOADS
    started = False
    try:
        rt = (DROPINS if dropin else RUNTIMES)[args.runtime]()
        workload = (DROPIN_WORKLOADS if dropin else WORKLOADS)[args.workload]
        sizes = json.loads(args.sizes)
        if args.workload != "lifecycle":
            rt.start()
            started = True
        result = {"status": "ok", "metrics": workload(rt, sizes, args.repeats)}
        started = started and args.workload != "lifecycle"
    except Unsupported as e:
        result = {"status": "unsupported", "error": str(e)}
    except NotYet as e:
        result = {"status": "na", "error": str(e)}
    except BaseException as e:  # noqa: BLE001  (a benchmark records every failure and goes on)
        result = {"status": "fail", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    with open(args.out, "w") as f:
        json.dump(result, f)
    if started:
        try:
            rt.stop()
        except BaseException as e:  # noqa: BLE001
            print(f"shutdown after {args.workload} failed: {e!r}", file=sys.stderr)


if __name__ == "__main__":
    main()

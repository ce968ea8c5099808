"""Pool: a drop-in for `multiprocessing.Pool` whose processes are actors spread over the cluster.

    with tasuki.Pool() as pool:                  # one process per CPU of the cluster, every node
        print(sum(pool.map(lambda x: x * x, range(1, 10_001))))

What changes from the standard library: lambdas, closures and functions from `__main__` or a
notebook work; a large argument (an array, a DataFrame) is stored once and shared, never pickled
per call; many tiny items are batched without a `chunksize`; a worker that dies fails its item
instead of hanging the pool; `progress=True` draws a progress bar.

The path of a batch: the caller splits the items into chunks and pickles each chunk once (so an
unpicklable item fails at the call); a dispatcher hands chunks to the process actors, at most
DEPTH in flight per process, the next one sent the moment a result arrives (on the client's
callback thread); each actor runs its chunk and answers (values, error, seconds); the result
object puts the values in place and wakes whoever waits.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from multiprocessing import TimeoutError
from typing import Any, Callable, Iterable, Iterator

from . import api, serialization
from .actor import kill
from .exceptions import ActorError, TaskCancelledError, TaskError
from .progress import ProgressBar
from .shared_args import LARGE_ARGUMENT, SharedArguments, check_items, resolve

__all__ = ["Pool", "AsyncResult", "TimeoutError"]

DEPTH = 2                 # chunks queued at each process, so none idles while its next chunk travels
TARGET_CHUNK_S = 0.02     # imap without a chunksize grows chunks towards this much work each
MAP, STAR, APPLY = 0, 1, 2


def default_chunksize(n_items: int, processes: int) -> int:
    """The standard library's choice for map: about four chunks per process."""
    return max(1, math.ceil(n_items / (processes * 4)))


def adaptive_chunksize(seconds_per_item: float | None, cap: int) -> int:
    """Items per chunk for imap without a chunksize: one until an item has been timed, then
    enough for TARGET_CHUNK_S of work, never more than `cap` (to keep every process busy)."""
    if seconds_per_item is None:
        return 1
    return max(1, min(cap, int(TARGET_CHUNK_S / max(seconds_per_item, 1e-7))))


# --- the process actor ----------------------------------------------------------------------------
class PoolProcess:
    """One process of a Pool: runs the initializer once, then chunks of calls."""

    def __init__(self, initializer: Callable | None, initargs: tuple) -> None:
        self.init_error = None
        self.functions: dict = {}
        self.init_globals = _globals_of(initializer)
        if initializer is not None:
            try:
                initializer(*initargs)
            except Exception as e:        # every chunk reports it, instead of a process dying in a loop
                self.init_error = _item_error(e, f"initializer {_name(initializer)}")

    def ping(self) -> BaseException | None:
        """The initializer's error, if it raised (Ray's pool waits for its processes this way)."""
        return self.init_error

    def run(self, fn_box: list, payload, mode: int) -> tuple[list, BaseException | None, float]:
        """(values, error, seconds): the values of the chunk's calls up to the first that raised."""
        if self.init_error is not None:
            return [], self.init_error, 0.0
        fn = self._function(fn_box[0])
        items = _items(payload, mode)
        values: list = []
        started = time.perf_counter()
        try:                                  # extend() keeps the values made before an error
            if mode == MAP:
                values.extend(map(fn, items))
            elif mode == STAR:
                values.extend(itertools.starmap(fn, items))
            else:
                values.extend(fn(*args, **kwds) for args, kwds in items)
        except Exception as e:
            return values, _item_error(e, _name(fn)), time.perf_counter() - started
        return values, None, time.perf_counter() - started

    def run_each(self, fn_box: list, payload, mode: int) -> tuple[list, BaseException | None, float]:
        """Like run, but every call runs: one that raises leaves an ItemError in its place (Ray's pool)."""
        if self.init_error is not None:
            return [], self.init_error, 0.0
        fn = self._function(fn_box[0])
        values: list = []
        started = time.perf_counter()
        for item in _items(payload, mode):
            try:
                if mode == MAP:
                    value = fn(item)
                elif mode == STAR:
                    value = fn(*item)
                else:
                    value = fn(*item[0], **item[1])
            except Exception as e:
                value = ItemError(_item_error(e, _name(fn)))
            values.append(value)
        return values, None, time.perf_counter() - started

    def _function(self, ref) -> Callable:
        fn = self.functions.get(ref.id)
        if fn is None:
            if len(self.functions) >= 32:
                self.functions.pop(next(iter(self.functions)))
            fn = self.functions[ref.id] = serialization.loads(api.get(ref))
            _adopt_globals(fn, self.init_globals)
        return fn


def _adopt_globals(fn: Callable, init_globals: dict | None) -> None:
    """Let `fn` see the globals its module's initializer set (`global conn; conn = connect()`).
    Functions of a script, a notebook or a test module travel by value, each with its own copy of
    the module's globals, so the initializer's assignments would be invisible to the function;
    under the standard library's fork both see the one module."""
    fn_globals = _globals_of(fn)
    if (init_globals is None or fn_globals is None or fn_globals is init_globals
            or fn_globals.get("__name__") != init_globals.get("__name__")):
        return
    fn_globals.update({k: v for k, v in init_globals.items() if not (k.startswith("__") and k.endswith("__"))})


def _globals_of(fn: Callable | None) -> dict | None:
    """The module globals `fn`'s code runs in, whatever kind of callable it is: a function's or a
    method's own, a partial's function's, a class's __init__'s, a callable object's __call__'s;
    None for builtins."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, type):
        fn = fn.__init__
    elif not hasattr(fn, "__globals__"):
        fn = getattr(type(fn), "__call__", None)
    return getattr(fn, "__globals__", None)


class ItemError:
    """In place of the value of a call that raised, in run_each's values."""
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self):
        return ItemError, (self.error,)


def _items(payload, mode: int) -> list:
    if isinstance(payload, bytes):        # pickled in the caller: no large values inside
        return serialization.loads(payload)
    return _resolve_shared(payload, mode)


def _resolve_shared(items: list, mode: int) -> list:
    """The chunk with each large value's marker swapped for the value (a zero-copy view)."""
    get = api.get
    if mode == MAP:
        return [resolve(x, get) for x in items]
    if mode == STAR:
        return [tuple(resolve(a, get) for a in args) for args in items]
    return [(tuple(resolve(a, get) for a in args), {k: resolve(v, get) for k, v in kwds.items()})
            for args, kwds in items]


def _item_error(e: Exception, where: str) -> TaskError:
    frames = e.__traceback__.tb_next if e.__traceback__ is not None else None   # skip PoolProcess.run
    tb = "".join(traceback.format_exception(type(e), e, frames))
    return TaskError(f"{where} failed in pool process pid {os.getpid()}:\n{tb.rstrip()}", e, tb).as_instanceof_cause()


def _name(fn) -> str:
    fn = fn.func if isinstance(fn, functools.partial) else fn
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


# --- results ----------------------------------------------------------------------------------------
class AsyncResult:
    """The result of `apply_async`/`map_async`, as in the standard library."""

    def __init__(self, callback: Callable | None = None, error_callback: Callable | None = None,
                 progress: ProgressBar | None = None) -> None:
        self._event = threading.Event()
        self._callback, self._error_callback = callback, error_callback
        self._progress = progress
        self._value: Any = None
        self._success: bool | None = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout)

    def _is_done(self) -> bool:
        return self._event.is_set()

    def get(self, timeout: float | None = None) -> Any:
        """The value; re-raises the call's exception; multiprocessing.TimeoutError after `timeout` s."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"the result was not ready within {timeout} s")
        if self._success:
            return self._value
        raise self._value

    def _deliver(self, index: int, values: list, error: BaseException | None) -> None:
        if error is not None:
            self._finish(False, error)
        else:
            self._finish(True, values[0])

    def _finish(self, success: bool, value: Any) -> None:
        if self._event.is_set():
            return
        self._success, self._value = success, value
        if self._progress is not None:
            self._progress.close()
        callback = self._callback if success else self._error_callback
        try:
            if callback is not None:
                callback(value)
        except Exception:          # the caller's bug: told, and the pool's dispatch (after this) goes on
            print(f"tasuki: error in the Pool callback {_name(callback)}:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
        finally:
            self._event.set()


ApplyResult = AsyncResult


class MapResult(AsyncResult):
    """The result of map/starmap: the values in order, or the first error."""

    def __init__(self, n_items: int, chunksize: int, callback, error_callback, progress) -> None:
        super().__init__(callback, error_callback, progress)
        self._values: list = [None] * n_items
        self._chunksize = chunksize
        self._left = n_items
        self._lock = threading.Lock()
        if n_items == 0:
            self._finish(True, [])

    def _deliver(self, index: int, values: list, error: BaseException | None) -> None:
        if error is not None:
            self._finish(False, error)
            return
        start = index * self._chunksize
        with self._lock:
            self._values[start:start + len(values)] = values
            self._left -= len(values)
            done = self._left == 0
        if self._progress is not None:
            self._progress.update(len(values))
        if done:
            self._finish(True, self._values)


class IMapIterator:
    """The iterator of imap (in order) or imap_unordered (as chunks finish)."""

    def __init__(self, ordered: bool, progress: ProgressBar | None) -> None:
        self._ordered = ordered
        self._cond = threading.Condition()
        self._chunks: dict[int, tuple[list, BaseException | None]] = {}
        self._ready: deque = deque()          # (values, error) ready to yield
        self._next_chunk = 0
        self._total_chunks: int | None = None
        self._received = 0
        self._progress = progress
        self.seconds_per_item: float | None = None     # measured, for the adaptive chunk size

    def __iter__(self) -> "IMapIterator":
        return self

    def next(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                while self._ready:
                    values, error = self._ready[0]
                    if values:
                        return values.popleft()
                    self._ready.popleft()
                    if error is not None:
                        raise error
                if self._total_chunks is not None and self._received >= self._total_chunks:
                    if self._progress is not None:
                        self._progress.close()
                    raise StopIteration
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result within {timeout} s")
                self._cond.wait(remaining)

    __next__ = next

    def _deliver(self, index: int, values: list, error: BaseException | None) -> None:
        if self._progress is not None:
            self._progress.update(len(values))
        with self._cond:
            self._received += 1
            if self._ordered:
                self._chunks[index] = (deque(values), error)
                while self._next_chunk in self._chunks:
                    self._ready.append(self._chunks.pop(self._next_chunk))
                    self._next_chunk += 1
            else:
                self._ready.append((deque(values), error))
            self._cond.notify_all()

    def _is_done(self) -> bool:
        return self._total_chunks is not None and self._received >= self._total_chunks

    def _set_length(self, n_chunks: int) -> None:
        with self._cond:
            self._total_chunks = n_chunks
            self._cond.notify_all()

    def _finish(self, success: bool, error: BaseException) -> None:      # the pool was terminated
        with self._cond:
            self._ready.append((deque(), error))
            self._total_chunks = self._received
            self._cond.notify_all()


# --- the pool -----------------------------------------------------------------------------------------
class _Job:
    __slots__ = ("result", "index", "fn_ref", "payload", "mode", "size")

    def __init__(self, result, index: int, fn_ref, payload, mode: int, size: int) -> None:
        self.result, self.index, self.fn_ref, self.payload, self.mode, self.size = \
            result, index, fn_ref, payload, mode, size


class _Process:
    __slots__ = ("actor", "sent", "calls", "dead")

    def __init__(self, actor) -> None:
        self.actor = actor
        self.sent: deque = deque()       # jobs in flight, the running one first
        self.calls = 0                   # chunks sent to it (for maxtasksperchild)
        self.dead = False


class _Jobs(deque):
    """The chunks of a map, appended as they are pickled; `closed` once the last one is in."""

    closed = False

    @classmethod
    def of(cls, jobs: list) -> "_Jobs":
        queue = cls(jobs)
        queue.closed = True
        return queue

    def next_job(self) -> _Job | None:
        return self.popleft() if self else None

    def done(self) -> bool:
        return self.closed and not self


class _Lazy:
    """The chunks of an imap, cut from its iterable as processes become free."""

    def __init__(self, pool: "Pool", result: IMapIterator, fn_ref, name: str, items: Iterator, mode: int,
                 chunksize: int | None, cap: int) -> None:
        self.pool, self.result, self.fn_ref, self.name = pool, result, fn_ref, name
        self.items, self.mode = items, mode
        self.chunksize, self.cap = chunksize, cap
        self.index = 0
        self.first_item = 0
        self.exhausted = False

    def done(self) -> bool:
        return self.exhausted

    def next_job(self) -> _Job | None:
        if self.exhausted:
            return None
        size = self.chunksize or adaptive_chunksize(self.result.seconds_per_item, self.cap)
        try:
            chunk = list(itertools.islice(self.items, size))
        except Exception as e:                   # the iterable itself raised: that item fails
            chunk, error = [], e
        else:
            error = None
        if not chunk and error is None:
            self.exhausted = True
            self.result._set_length(self.index)
            return None
        index, self.index = self.index, self.index + 1
        if error is not None:
            self.exhausted = True
            self.result._deliver(index, [], error)
            self.result._set_length(self.index)
            return None
        first, self.first_item = self.first_item, self.first_item + len(chunk)
        try:
            payload = self.pool._payload(self.name, chunk, self.mode, first)
        except Exception as e:
            self.result._deliver(index, [], e)
            return self.next_job()
        return _Job(self.result, index, self.fn_ref, payload, self.mode, len(chunk))


class Pool:
    """A process pool over the cluster, with the standard library's `multiprocessing.Pool` API.

    `processes` defaults to the cluster's CPUs (every node when connected with
    `init(address=...)`); each process holds an equal share of them. `initializer(*initargs)`
    runs once in each process; `maxtasksperchild` replaces a process after that many chunks.
    """

    _run_method = "run"               # the process actor's method for a chunk (Ray's pool: run_each)

    def __init__(self, processes: int | None = None, initializer: Callable | None = None, initargs: Iterable = (),
                 maxtasksperchild: int | None = None, context: Any = None) -> None:
        cpus = api.cluster_resources().get("CPU", 0)
        if processes is None:
            processes = max(1, int(cpus))
        if not isinstance(processes, int) or processes < 1:
            raise ValueError(f"Number of processes must be at least 1, got {processes!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (not isinstance(maxtasksperchild, int) or maxtasksperchild < 1):
            raise ValueError(f"maxtasksperchild must be a positive int or None, got {maxtasksperchild!r}")
        self._processes = processes              # the standard library's attribute name
        self._initializer, self._initargs = initializer, tuple(initargs)
        api._pickle_by_value_if_local(initializer)     # from a script's neighbour: by value, as tasks are
        self._maxtasks = maxtasksperchild
        share = min(1.0, cpus / processes) if cpus else 0
        self._actor_class = api.remote(PoolProcess).options(**self._actor_options(share))
        self._shared = SharedArguments(api.put)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sources: deque = deque()          # job lists and _Lazy sources, in submission order
        self._results: set = set()              # unfinished results (failed by terminate)
        self._state = "RUN"
        self._client = api._get_client()        # the cluster connection the processes belong to
        self._procs = [self._start() for _ in range(processes)]

    def _actor_options(self, share: float) -> dict:
        return {"num_cpus": share, "max_concurrency": 1}

    _AsyncResult, _MapResult, _IMapIterator = AsyncResult, MapResult, IMapIterator   # Ray's pool has its own

    # --- the standard library's API ---------------------------------------------------------------
    def apply(self, func: Callable, args: tuple = (), kwds: dict | None = None) -> Any:
        """`func(*args, **kwds)` in a pool process, waiting for the value."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: dict | None = None,
                    callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        self._check_running()
        kwds = kwds or {}
        item = (tuple(args), kwds)
        fn_ref = self._function_ref(func)
        try:
            payload = self._payload(_name(func), [item], APPLY, 0)
        except serialization.SerializationError:
            serialization.check_arguments(_name(func), tuple(args), kwds)
            raise
        result = self._AsyncResult(callback, error_callback)
        self._submit(result, _Jobs.of([_Job(result, 0, fn_ref, payload, APPLY, 1)]))
        return result

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None, *, progress: bool = False) -> list:
        """`[func(x) for x in iterable]`, computed in the pool, in order. The first error is raised."""
        return self._map_async(func, iterable, MAP, chunksize, None, None, progress).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        return self._map_async(func, iterable, MAP, chunksize, callback, error_callback, False)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None, *,
                progress: bool = False) -> list:
        """`[func(*args) for args in iterable]`, computed in the pool, in order."""
        return self._map_async(func, iterable, STAR, chunksize, None, None, progress).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback: Callable | None = None, error_callback: Callable | None = None) -> AsyncResult:
        return self._map_async(func, iterable, STAR, chunksize, callback, error_callback, False)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int | None = None, *,
             progress: bool = False) -> IMapIterator:
        """An iterator over `func(x)` in order, items taken from `iterable` as processes free up.
        Without a chunksize, chunks grow until each holds about 20 ms of work."""
        return self._imap(func, iterable, chunksize, True, progress)

    def imap_unordered(self, func: Callable, iterable: Iterable, chunksize: int | None = None, *,
                       progress: bool = False) -> IMapIterator:
        """Like imap, but yields each value as soon as its chunk finishes."""
        return self._imap(func, iterable, chunksize, False, progress)

    def close(self) -> None:
        """Accept no more work; the processes exit once the queued work is done (see join)."""
        with self._lock:
            if self._state == "RUN":
                self._state = "CLOSE"

    def terminate(self) -> None:
        """Stop the processes at once; unfinished results fail with TaskCancelledError."""
        self._end(TaskCancelledError("the pool was terminated before this result was computed"))

    def _end(self, error: Exception, kill: bool = True) -> None:
        """Send nothing more; unfinished results fail with `error`; the processes are killed if `kill`."""
        with self._lock:
            if self._state == "TERMINATE":
                return
            self._state = "TERMINATE"
            procs, self._procs = self._procs, []
            self._sources.clear()
            results, self._results = list(self._results), set()
            self._changed.notify_all()
        for proc in procs:
            proc.dead = True
            if kill:
                _kill_quietly(proc.actor)
        for result in results:
            result._finish(False, error)
        self._shared.clear()

    def join(self) -> None:
        """Wait for the queued work to finish and the processes to exit (after close or terminate)."""
        with self._lock:
            if self._state == "RUN":
                raise ValueError("Pool is still running: call close() or terminate() before join()")
            while self._procs and (self._sources or any(p.sent for p in self._procs)):
                self._changed.wait(1.0)
            procs, self._procs = self._procs, []
        for proc in procs:
            _kill_quietly(proc.actor)
        self._shared.clear()

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()           # as the standard library does

    def __del__(self) -> None:
        if getattr(self, "_state", "TERMINATE") != "TERMINATE" and api.is_initialized():
            try:
                self.terminate()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"<tasuki.Pool state={self._state} processes={self._processes}>"

    # --- building and sending chunks ---------------------------------------------------------------
    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _function_ref(self, func: Callable):
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        return self._shared.for_function(func, _put_function)

    def _payload(self, name: str, chunk, mode: int, first: int):
        """A chunk pickled once, here in the caller: an item that cannot be pickled fails now,
        named with its index and the function `name`. A chunk holding large values (arrays,
        DataFrames) is pickled again with each of them stored once and passed by ref."""
        try:
            s = serialization.dumps(chunk)
        except serialization.SerializationError:
            check_items(name, chunk,
                        lambda i: f"item {first + i}" if mode != APPLY else "an argument")
            raise
        if s.buffers or len(s.header) >= LARGE_ARGUMENT:
            chunk = self._share_large(chunk, mode)
            s = serialization.dumps(chunk)
        return s.header if not s.buffers and not s.refs else chunk

    def _share_large(self, chunk, mode: int) -> list:
        share = self._shared.share
        if mode == MAP:
            return [share(x, wrap=True) for x in chunk]
        if mode == STAR:
            return [tuple(share(a, wrap=True) for a in args) for args in chunk]
        return [(tuple(share(a, wrap=True) for a in args), {k: share(v, wrap=True) for k, v in kwds.items()})
                for args, kwds in chunk]

    def _map_async(self, func, iterable, mode, chunksize, callback, error_callback, progress) -> MapResult:
        self._check_running()
        items = iterable if isinstance(iterable, (list, range)) else list(iterable)   # range slices stay ranges
        if chunksize is None:
            chunksize = default_chunksize(len(items), self._processes)
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
        fn_ref, name = self._function_ref(func), _name(func)
        bar = ProgressBar(len(items), name) if progress else None
        result = self._MapResult(len(items), chunksize, callback, error_callback, bar)
        if not items:
            return result
        jobs = _Jobs()                   # the first chunks run while the next ones are pickled
        self._submit(result, jobs)
        try:
            for i, start in enumerate(range(0, len(items), chunksize)):
                chunk = items[start:start + chunksize]
                job = _Job(result, i, fn_ref, self._payload(name, chunk, mode, start), mode, len(chunk))
                with self._lock:
                    jobs.append(job)
                    self._dispatch()
        except BaseException as e:       # an item that cannot be pickled: nothing more of this map runs
            with self._lock:
                jobs.clear()
            result._finish(False, e)
            raise
        finally:
            with self._lock:
                jobs.closed = True
                self._dispatch()
        return result

    def _imap(self, func, iterable, chunksize, ordered: bool, progress: bool) -> IMapIterator:
        self._check_running()
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise ValueError(f"chunksize must be a positive int, got {chunksize!r}")
        total = len(iterable) if hasattr(iterable, "__len__") else None
        cap = default_chunksize(total, self._processes) if total else 10_000
        bar = ProgressBar(total, _name(func)) if progress else None
        result = self._IMapIterator(ordered, bar)
        self._submit(result, _Lazy(self, result, self._function_ref(func), _name(func), iter(iterable), MAP,
                                   chunksize, cap))
        return result

    def _submit(self, result, source) -> None:
        with self._lock:
            self._check_running()
            self._results.add(result)
            self._sources.append(source)
            self._dispatch()

    def _next_job(self) -> _Job | None:
        while self._sources:
            source = self._sources[0]
            job = source.next_job()
            if job is not None:
                return job
            if not source.done():
                return None          # a map still being pickled: what follows it waits its turn
            self._sources.popleft()
        return None

    def _dispatch(self) -> None:
        """Send chunks to the least busy processes while any has room (called with the lock held)."""
        while self._sources:
            free = [p for p in self._procs if len(p.sent) < DEPTH and not self._retiring(p)]
            if not free:
                return
            proc = min(free, key=lambda p: len(p.sent))
            job = self._next_job()
            if job is None:
                return
            self._send(proc, job)

    def _send(self, proc: _Process, job: _Job) -> None:
        """One chunk to one process; `_done` runs when its result is in (called with the lock held)."""
        proc.sent.append(job)
        proc.calls += 1
        ref = getattr(proc.actor, self._run_method).remote([job.fn_ref], job.payload, job.mode)
        self._client.when_ready(ref.id, lambda p=proc, j=job, r=ref: self._done(p, j, r))

    def _retiring(self, proc: _Process) -> bool:
        return self._maxtasks is not None and proc.calls >= self._maxtasks

    def _done(self, proc: _Process, job: _Job, ref) -> None:
        """Callback thread: a chunk finished (or its process died, or the connection closed)."""
        if not self._client.running:          # tasuki.shutdown(): nothing more can be sent or computed
            self._end(self._client.closed_error(), kill=False)
            return
        try:
            values, error, seconds = self._client.result(ref.id)
        except ActorError as e:
            self._process_died(proc, e)
            return
        except Exception as e:                 # its result could not be read back
            values, error, seconds = [], e, 0.0
        with self._lock:
            if job in proc.sent:
                proc.sent.remove(job)
        if isinstance(job.result, IMapIterator) and error is None and job.size:
            job.result.seconds_per_item = seconds / job.size
        job.result._deliver(job.index, values, error)
        with self._lock:
            if job.result._is_done():
                self._results.discard(job.result)
            if self._retiring(proc) and not proc.sent and proc in self._procs:
                self._procs[self._procs.index(proc)] = self._start()
                _kill_quietly(proc.actor)
            if self._state != "TERMINATE":
                self._dispatch()
            self._changed.notify_all()

    def _process_died(self, proc: _Process, error: ActorError) -> None:
        """The running chunk fails with the death; the chunks queued behind it go to other processes."""
        with self._lock:
            if proc.dead:
                return
            proc.dead = True
            jobs = list(proc.sent)
            proc.sent.clear()
            if proc in self._procs:
                self._procs[self._procs.index(proc)] = self._start()
            if jobs[1:]:
                self._sources.appendleft(_Jobs.of(jobs[1:]))
        if jobs:
            jobs[0].result._deliver(jobs[0].index, [], error)
        with self._lock:
            if self._state != "TERMINATE":
                self._dispatch()
            self._changed.notify_all()

    def _start(self) -> _Process:
        return _Process(self._actor_class.remote(self._initializer, self._initargs))


def _put_function(func: Callable):
    """The function stored once for every chunk, pickled as a task's is: from the user's own modules
    by value (a pool process may not be able to import a script's or a notebook's neighbours), with
    its source lines for tracebacks (serialization.dumps_function)."""
    api._pickle_by_value_if_local(func)
    return api.put(serialization.dumps_function(func))


def _kill_quietly(actor) -> None:
    try:
        kill(actor)
    except Exception:           # the cluster is already gone
        pass

"""Executor: a `concurrent.futures.Executor` whose calls run as tasks on the cluster.

    with tasuki.Executor() as executor:                      # or Executor(num_cpus=2, max_retries=5)
        futures = [executor.submit(build_week, sales, week) for week in range(260)]
        for future in concurrent.futures.as_completed(futures):
            print(future.result())

Each `submit` is one task with the executor's task options. At most 2 × `max_workers` calls are
in the cluster at once (one running and one queued behind it per worker, so no worker idles
between calls); the rest wait here as pending futures, which is what `cancel()` and
`shutdown(cancel_futures=True)` can still take back. Calls that take less than SHORT_CALL_S are
sent further ahead (16 per worker): one round trip per call would leave the workers idle. A large argument (an array, a DataFrame) is
stored once and shared by every call that passes the same object (see shared_args).

Any callable runs as a task (api._remote_call): a class is called, not made an actor; the callable
is pickled once, at its first submit, and kept for the next calls. A call that cannot be sent
raises from `submit`, or, when it waited here, fails its future; `shutdown` never waits for calls
of a cluster connection that has closed.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from . import api, serialization
from .shared_args import SharedArguments, check_items, resolve

__all__ = ["Executor"]

SHORT_CALL_S = 0.01


class Executor(concurrent.futures.Executor):
    """Run calls as cluster tasks behind the standard `concurrent.futures` API.

    `max_workers` defaults to the cluster's CPUs; `task_options` (`num_cpus`, `num_gpus`,
    `resources`, `max_retries`, `retry_exceptions`, `name`) apply to every call.
    """

    def __init__(self, max_workers: int | None = None, **task_options: Any) -> None:
        if max_workers is None:
            max_workers = max(1, int(api.cluster_resources().get("CPU", 1)))
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        if "num_returns" in task_options:
            raise TypeError("num_returns is not an Executor option: a call's future holds its one return value")
        api._check_options(task_options, api._OPTIONS)
        self._max_workers = max_workers
        self._options = task_options
        self._limit = 2 * max_workers
        self._last_done: float | None = None
        self._gap_s: float | None = None          # mean time between two calls finishing
        self._shared = SharedArguments(api.put)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._waiting: deque = deque()          # (future, remote function, args, kwargs) not yet sent
        self._in_flight: set = set()            # the futures of calls sent and not yet finished
        self._client = None                     # the cluster connection the calls were sent through
        self._shutdown = False

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """Schedule `fn(*args, **kwargs)` as a task; returns a Future at once."""
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        share = self._shared.share
        args = tuple(share(a) for a in args)
        kwargs = {k: share(v) for k, v in kwargs.items()}
        task = self._shared.for_function(fn, self._remote_function)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if len(self._in_flight) < self._limit:
                self._send(future, task, args, kwargs)     # an unpicklable argument raises here
                future.set_running_or_notify_cancel()
            else:
                serialization.dumps_arguments(task.__name__, args, kwargs)    # fail now, not when sent
                self._waiting.append((future, task, args, kwargs))
        return future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """`fn` over the iterables' items, results in order; `chunksize` > 1 sends items in batches."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        share = self._shared.share
        api._pickle_by_value_if_local(fn)        # it travels as an argument of _run_batch, not as a task
        batches = list(_batches(((tuple(share(a, wrap=True) for a in args)) for args in zip(*iterables)),
                                chunksize))
        try:
            results = super().map(_run_batch, itertools.repeat(fn), batches, timeout=timeout)
        except serialization.SerializationError:        # name the item, not _run_batch's argument
            name = getattr(fn, "__name__", type(fn).__name__)
            for i, batch in enumerate(batches):
                check_items(name, batch, lambda j, first=i * chunksize: f"item {first + j}")
            raise
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; `cancel_futures` cancels those not yet sent; `wait` waits for the rest."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for future, *_ in self._waiting:
                    future.cancel()
                self._waiting.clear()
            while wait and (self._in_flight or self._waiting):
                if not self._client.running:       # tasuki.shutdown(): these calls can never finish
                    self._fail_all(self._client.closed_error())
                    break
                self._idle.wait(1.0)
        if wait:
            self._shared.clear()

    # --- internals -----------------------------------------------------------------------------------
    def _remote_function(self, fn: Callable):
        return api._remote_call(fn, self._options)

    def _send(self, future, task, args: tuple, kwargs: dict) -> None:
        """Submit the task of a running future (called with the lock held); counted in flight only
        once its completion callback is set, so a call that fails to go never holds up shutdown."""
        ref = task.remote(*args, **kwargs)
        self._client = client = api._get_client()
        client.when_ready(ref.id, lambda: self._done(future, client, ref))
        self._in_flight.add(future)

    def _done(self, future: concurrent.futures.Future, client, ref) -> None:
        """Callback thread: a task finished (or the connection closed); resolve its future and send
        the next waiting call."""
        try:
            future.set_result(client.result(ref.id))
        except BaseException as e:
            future.set_exception(e)
        with self._lock:
            self._in_flight.discard(future)
            self._measure(time.monotonic())
            if not client.running:      # tasuki.shutdown(): sending the waiting calls would start a new cluster
                self._fail_all(client.closed_error())
            while self._waiting and len(self._in_flight) < self._limit:
                waiting = self._waiting.popleft()
                if waiting[0].set_running_or_notify_cancel():       # False: it was cancelled
                    try:
                        self._send(*waiting)
                    except Exception as e:
                        waiting[0].set_exception(e)
            self._idle.notify_all()

    def _fail_all(self, error: BaseException) -> None:
        """Fail every call sent or waiting (called with the lock held)."""
        for future in self._in_flight:
            with contextlib.suppress(concurrent.futures.InvalidStateError):    # it finished meanwhile
                future.set_exception(error)
        for future, *_ in self._waiting:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
        self._in_flight.clear()
        self._waiting.clear()

    def _measure(self, now: float) -> None:
        """Send short calls further ahead: the time a call takes is about max_workers × the time
        between two calls finishing (measured while the executor is busy)."""
        if self._last_done is not None and self._waiting:
            gap = now - self._last_done
            self._gap_s = gap if self._gap_s is None else 0.8 * self._gap_s + 0.2 * gap
            short = self._gap_s * self._max_workers < SHORT_CALL_S
            self._limit = self._max_workers * (16 if short else 2)
        self._last_done = now


def _batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _run_batch(fn: Callable, batch: list) -> list:
    """One task running `fn` over a batch of argument tuples (Executor.map with a chunksize)."""
    get = api.get
    return [fn(*[resolve(a, get) for a in args]) for args in batch]


"""`from tasuki.util.multiprocessing import Pool`: Ray's `ray.util.multiprocessing.Pool`.

`tasuki.Pool` keeps the standard library's behaviour; this one follows Ray's where the two differ:

- `Pool(...)` connects first when this process is not connected: to `ray_address` (`"local"`
  starts a cluster of `processes` CPUs), else to RAY_ADDRESS or TASUKI_ADDRESS, else it starts a
  local cluster of `processes` CPUs. It asks for no more processes than the cluster has CPUs
  (ValueError), and returns once every process is up and its initializer ran (an initializer that
  raises fails the constructor).
- The processes hold no CPU (Ray's `num_cpus=0`), so a pool inside a pool's task cannot deadlock;
  `ray_remote_args` sets their options (`num_cpus`, `resources`, ...).
- Every item runs even after one raised: `map` raises the first failing item's error (in item
  order) once all are done; `imap` and `imap_unordered` yield a failing item's exception as its
  value instead of raising it.
- `apply(func, args=None, kwargs=None)`; `starmap_async(func, iterable, callback, error_callback)`
  (a callable third argument is the callback, as in Ray; an int, the chunksize, as in the standard
  library); a non-iterable given to imap or imap_unordered raises TypeError at the call (Ray 2.60;
  older Rays ran it as one item).
- Chunk k of the pool goes to process k mod n (Ray's round-robin), so a map's items are spread
  evenly over the processes however fast each one is; a map's chunks are all sent at once, as Ray
  submits them, an imap's DEPTH per process as results come in.

Where Ray's pool treats a function that *returns* an exception as one that raised it, we do not:
a value is a value.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterable

from .. import api
from .. import pool as _pool
from ..pool import TimeoutError

__all__ = ["Pool", "AsyncResult", "TimeoutError"]

logger = logging.getLogger(__name__)


class AsyncResult(_pool.AsyncResult):
    """apply_async's result: a failed call raises its error at get()."""

    def _deliver(self, index: int, values: list, error: BaseException | None) -> None:
        if error is None and type(values[0]) is _pool.ItemError:
            error = values[0].error
        super()._deliver(index, values, error)


class MapResult(_pool.MapResult):
    """map's result as Ray's: ready when every item is in; the first failing item's error, in item order."""

    def __init__(self, *args) -> None:
        self._errors: dict = {}                       # item index -> error
        super().__init__(*args)

    def _deliver(self, index: int, values: list, error: BaseException | None) -> None:
        start = index * self._chunksize
        if error is not None:                         # the whole chunk failed (its process died)
            values = [_pool.ItemError(error)] * min(self._chunksize, len(self._values) - start)
        with self._lock:
            for i, value in enumerate(values):
                if type(value) is _pool.ItemError:
                    self._errors.setdefault(start + i, value.error)
        super()._deliver(index, values, None)

    def _finish(self, success: bool, value: Any) -> None:
        if success and self._errors:
            success, value = False, self._errors[min(self._errors)]
        super()._finish(success, value)


class IMapIterator(_pool.IMapIterator):
    """imap's iterator as Ray's: a failing item's exception comes as its value."""

    def _deliver(self, index: int, values: list, error: BaseException | None) -> None:
        if error is not None:
            values = [error]
        else:
            values = [v.error if type(v) is _pool.ItemError else v for v in values]
        super()._deliver(index, values, None)


class Pool(_pool.Pool):
    """A pool of actor processes with Ray's `ray.util.multiprocessing.Pool` behaviour (see the module)."""

    _run_method = "run_each"
    _AsyncResult, _MapResult, _IMapIterator = AsyncResult, MapResult, IMapIterator

    def __init__(self, processes: int | None = None, initializer: Callable | None = None,
                 initargs: Iterable | None = None, maxtasksperchild: int | None = None, context: Any = None,
                 ray_address: str | None = None, ray_remote_args: dict | None = None) -> None:
        if ray_remote_args is not None and not isinstance(ray_remote_args, dict):
            raise TypeError(f"ray_remote_args must be a dict of actor options, got {type(ray_remote_args).__name__}")
        if context is not None:
            logger.warning("Pool: the 'context' argument is not supported (processes are actors of the cluster)")
        self._remote_args = dict(ray_remote_args or {})
        self._turn = 0                                # the process the next chunk goes to, mod n
        processes = _connect(processes, ray_address)
        super().__init__(processes, initializer, initargs or (), maxtasksperchild)
        errors = api.get([proc.actor.ping.remote() for proc in self._procs])
        failed = next((e for e in errors if e is not None), None)
        if failed is not None:
            self.terminate()
            raise failed

    def _actor_options(self, share: float) -> dict:
        return {"num_cpus": 0, **self._remote_args, "max_concurrency": 1}

    def _dispatch(self) -> None:
        """Ray's order: the pool's k-th chunk goes to process k mod n (those retiring after
        maxtasksperchild skipped), whether or not another is idle; a map's chunks all go at once,
        an imap's at most DEPTH per process (it reads its iterable as results come in)."""
        while self._sources:
            live = [p for p in self._procs if not self._retiring(p)]
            if not live:
                return
            proc = live[self._turn % len(live)]
            if len(proc.sent) >= _pool.DEPTH and not isinstance(self._sources[0], _pool._Jobs):
                return
            job = self._next_job()
            if job is None:
                return
            self._turn += 1
            self._send(proc, job)

    def apply(self, func: Callable, args: tuple | None = None, kwargs: dict | None = None, *,
              kwds: dict | None = None) -> Any:
        return self.apply_async(func, args, kwargs, kwds=kwds).get()

    def apply_async(self, func: Callable, args: tuple | None = None, kwargs: dict | None = None,
                    callback: Callable | None = None, error_callback: Callable | None = None, *,
                    kwds: dict | None = None) -> AsyncResult:
        return super().apply_async(func, args or (), kwargs if kwargs is not None else kwds, callback, error_callback)

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: Any = None, callback: Callable | None = None,
                      error_callback: Callable | None = None) -> MapResult:
        if callable(chunksize):                       # Ray's order: (func, iterable, callback, error_callback)
            chunksize, callback, error_callback = None, chunksize, callback
        return super().starmap_async(func, iterable, chunksize, callback, error_callback)

    def __repr__(self) -> str:
        return f"<tasuki.util.multiprocessing.Pool state={self._state} processes={self._processes}>"


def _connect(processes: int | None, address: str | None) -> int:
    """Connect as Ray's pool does, when not connected yet; the number of processes to start."""
    if not api.is_initialized():
        if address is not None:
            api.init(address=address, **({"num_cpus": processes} if address == "local" else {}))
        elif os.environ.get("RAY_ADDRESS"):
            api.init(address=os.environ["RAY_ADDRESS"])
        elif os.environ.get("TASUKI_ADDRESS"):
            api.init()
        else:
            api.init(num_cpus=processes)
    cpus = int(api.cluster_resources().get("CPU", 0))
    if processes is None:
        processes = cpus
    if not isinstance(processes, int) or processes <= 0:
        raise ValueError(f"Processes in the pool must be >0, got {processes!r}")
    if cpus < processes:
        raise ValueError(f"Tried to start a pool with {processes} processes on a cluster with only {cpus} CPUs: "
                         f"ask for at most {cpus}, or add nodes (or CPUs) to the cluster")
    return processes


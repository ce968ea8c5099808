"""ActorPool: spread calls over a fixed set of actors, as ray.util.ActorPool does."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator


from ..actor import ActorHandle
from ..api import get, wait
from ..exceptions import ActorDiedError

__all__ = ["ActorPool"]


class ActorPool:
    """Spread calls over a fixed set of actors: `pool.map(lambda a, v: a.f.remote(v), values)`."""

    def __init__(self, actors: list[ActorHandle]) -> None:
        self._idle = list(actors)
        self._future_to_actor: dict = {}
        self._index_to_future: dict = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list = []     # (fn, value) waiting for an idle actor (Ray's name)

    def submit(self, fn: Callable, value: Any) -> None:
        """Call `fn(actor, value)` on an idle actor, or queue it until one is free. `fn` may return
        a list of refs (a method with num_returns > 1): get_next() then returns the list of values."""
        if self._idle:
            actor = self._idle.pop()
            future = fn(actor, value)
            self._future_to_actor[_key(future)] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self) -> bool:
        return bool(self._future_to_actor)

    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending_submits

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("get_next() cannot follow get_next_unordered() on the same pool: use one or the other")
        future = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = wait(_refs(future), num_returns=len(_refs(future)), timeout=timeout)
            if len(ready) < len(_refs(future)):
                if ignore_if_timedout:
                    return None
                raise TimeoutError("timed out waiting for the next result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(_key(future))
        return self._result(future, actor)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result to finish, whatever its submission order."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        firsts = {_refs(future)[0]: future for future in self._index_to_future.values()}
        ready, _ = wait(list(firsts), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise TimeoutError("timed out waiting for a result")
        future = firsts[ready[0]]
        index, actor = self._future_to_actor.pop(_key(future))
        del self._index_to_future[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        return self._result(future, actor)

    def _result(self, future, actor: ActorHandle) -> Any:
        """The value(s) of a finished call; its actor goes back to the idle set unless it died."""
        alive = True
        try:
            return get(future)
        except ActorDiedError:
            alive = False          # a dead actor picked again would fail every call sent to it
            raise
        finally:
            self._return_actor(actor, alive)

    def map(self, fn: Callable, values: Iterable) -> Iterator:
        """Results of `fn(actor, v)` for each value, in order. Every value is submitted now (as Ray's
        map), not when the iteration starts; earlier submits whose results were not read are dropped
        without waiting for them, their actors taken as free again (Ray 2.60, gh-23107): a call to
        such an actor runs after the dropped one, or beside it on an async or threaded actor."""
        self._drop_unread()
        for value in values:
            self.submit(fn, value)
        return self._results(self.get_next)

    def map_unordered(self, fn: Callable, values: Iterable) -> Iterator:
        """As map(), in the order the results finish."""
        self._drop_unread()
        for value in values:
            self.submit(fn, value)
        return self._results(self.get_next_unordered)

    def _results(self, next_result: Callable) -> Iterator:
        while self.has_next():
            yield next_result()

    def _drop_unread(self) -> None:
        while self._index_to_future:            # freeing an actor may submit a pending value: dropped too
            futures = list(self._index_to_future.items())
            refs = [ref for _, future in futures for ref in _refs(future)]
            ready = set(wait(refs, num_returns=len(refs), timeout=0)[0])
            for index, future in futures:
                del self._index_to_future[index]
                _, actor = self._future_to_actor.pop(_key(future))
                self._next_return_index = max(self._next_return_index, index + 1)
                if all(ref in ready for ref in _refs(future)):
                    try:
                        self._result(future, actor)     # finished: an actor that died stays out
                    except Exception:                   # its error is not the map's to raise
                        pass
                else:
                    self._return_actor(actor)

    def push(self, actor: ActorHandle) -> None:
        """Add an actor to the pool; ValueError if it is in it already (idle or busy), as in Ray."""
        if actor in self._idle or any(a == actor for _, a in self._future_to_actor.values()):
            raise ValueError(f"{actor} already belongs to this ActorPool")
        self._return_actor(actor)

    def pop_idle(self) -> ActorHandle | None:
        return self._idle.pop() if self.has_free() else None

    def _return_actor(self, actor: ActorHandle, alive: bool = True) -> None:
        if alive:
            self._idle.append(actor)
        if self._pending_submits and self._idle:
            self.submit(*self._pending_submits.pop(0))


def _key(future):
    return tuple(future) if isinstance(future, list) else future


def _refs(future) -> list:
    return list(future) if isinstance(future, (list, tuple)) else [future]

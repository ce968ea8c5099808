"""ActorPool: spread calls over a fixed set of actors, as ray.util.ActorPool does."""
from __future__ import annotations

from typing import Any, Callable, Iterable


from ..actor import ActorHandle
from ..api import get, wait

__all__ = ["ActorPool"]


class ActorPool:
    """Spread calls over a fixed set of actors: `pool.map(lambda a, v: a.f.remote(v), values)`."""

    def __init__(self, actors: list[ActorHandle]) -> None:
        self._idle = list(actors)
        self._future_to_actor: dict = {}
        self._index_to_future: dict = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending: list = []

    def submit(self, fn: Callable, value: Any) -> None:
        """Call `fn(actor, value)` on an idle actor, or queue it until one is free."""
        if self._idle:
            actor = self._idle.pop()
            future = fn(actor, value)
            self._future_to_actor[future] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        return bool(self._future_to_actor)

    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        future = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = wait([future], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    return None
                raise TimeoutError("timed out waiting for the next result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(future)
        self._return_actor(actor)
        return get(future)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result to finish, whatever its submission order."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        ready, _ = wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise TimeoutError("timed out waiting for a result")
        future = ready[0]
        index, actor = self._future_to_actor.pop(future)
        del self._index_to_future[index]
        self._return_actor(actor)
        return get(future)

    def map(self, fn: Callable, values: Iterable) -> Iterable:
        """Results of `fn(actor, v)` for each value, in order."""
        for value in values:
            self.submit(fn, value)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn: Callable, values: Iterable) -> Iterable:
        for value in values:
            self.submit(fn, value)
        while self.has_next():
            yield self.get_next_unordered()

    def push(self, actor: ActorHandle) -> None:
        self._return_actor(actor)

    def pop_idle(self) -> ActorHandle | None:
        return self._idle.pop() if self.has_free() else None

    def _return_actor(self, actor: ActorHandle) -> None:
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.pop(0))

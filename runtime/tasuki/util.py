"""Helpers built on actors, as in Ray: ActorPool (spread calls over a set of actors) and Queue."""
from __future__ import annotations

import queue as _queue

from typing import Any, Callable, Iterable


from .actor import ActorHandle
from .api import get, remote, wait

__all__ = ["ActorPool", "Queue", "Empty", "Full"]

Empty = _queue.Empty
Full = _queue.Full


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


class _QueueActor:
    def __init__(self, maxsize: int) -> None:
        import asyncio
        self.queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    async def put(self, item, timeout=None):
        import asyncio
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full from None

    async def get(self, timeout=None):
        import asyncio
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty from None

    def put_nowait(self, item) -> None:
        import asyncio
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:        # not a queue.Full: the caller catches queue.Full
            raise Full from None

    def get_nowait(self):
        import asyncio
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty from None


class Queue:
    """A first-in first-out queue shared by tasks and actors (an async actor holds the items)."""

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None) -> None:
        self.maxsize = maxsize
        self.actor = remote(_QueueActor).options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return get(self.actor.qsize.remote())

    qsize = size

    def empty(self) -> bool:
        return self.size() == 0

    def full(self) -> bool:
        return self.maxsize > 0 and self.size() >= self.maxsize

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            try:
                return get(self.actor.put_nowait.remote(item))
            except _queue.Full:
                raise Full from None
        try:
            get(self.actor.put.remote(item, timeout))
        except Full:
            raise Full from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            try:
                return get(self.actor.get_nowait.remote())
            except _queue.Empty:
                raise Empty from None
        try:
            return get(self.actor.get.remote(timeout))
        except Empty:
            raise Empty from None

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def put_nowait_batch(self, items: Iterable) -> None:
        for item in items:
            self.put_nowait(item)

    def get_nowait_batch(self, num_items: int) -> list:
        return [self.get_nowait() for _ in range(num_items)]

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        from .actor import kill
        kill(self.actor)



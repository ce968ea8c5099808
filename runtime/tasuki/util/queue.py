"""Queue: a first-in first-out queue shared by tasks and actors, held by an async actor (ray.util.queue)."""
from __future__ import annotations

import queue as _queue
from typing import Any, Iterable

from ..api import get, remote

__all__ = ["Queue", "Empty", "Full"]

Empty = _queue.Empty
Full = _queue.Full


class _QueueActor:
    def __init__(self, maxsize: int) -> None:
        import asyncio
        self.queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

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

    def put_nowait_batch(self, items: list) -> None:
        """All of `items` or none (Full): checked before the first goes in."""
        if self.queue.maxsize > 0 and len(items) > self.queue.maxsize - self.queue.qsize():
            raise Full(f"{len(items)} items do not fit: the queue holds {self.queue.qsize()} of at most "
                       f"{self.queue.maxsize}")
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait_batch(self, num_items: int) -> list:
        """`num_items` items or none (Empty)."""
        if num_items > self.queue.qsize():
            raise Empty(f"{num_items} items asked for, the queue holds {self.queue.qsize()}")
        return [self.queue.get_nowait() for _ in range(num_items)]


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout!r}")


class Queue:
    """A first-in first-out queue shared by tasks and actors (an async actor holds the items).

    As Ray's: the actor holds no CPU unless `actor_options` asks for one (a queue must not take the
    CPU its producers and consumers need); the batch operations are all-or-nothing; `shutdown()`
    ends the actor and the queue cannot be used after it."""

    def __init__(self, maxsize: int = 0, actor_options: dict | None = None) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int (0 or less: unbounded), got {type(maxsize).__name__} {maxsize!r}")
        self.maxsize = maxsize
        self.actor = remote(_QueueActor).options(**{"num_cpus": 0, **(actor_options or {})}).remote(maxsize)

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
        _check_timeout(timeout)
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
        _check_timeout(timeout)
        if not block:
            try:
                return get(self.actor.get_nowait.remote())
            except _queue.Empty:
                raise Empty from None
        try:
            return get(self.actor.get.remote(timeout))
        except Empty:
            raise Empty from None

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """put() for asyncio code: awaits the queue's actor instead of blocking the event loop."""
        _check_timeout(timeout)
        try:
            await (self.actor.put.remote(item, timeout) if block else self.actor.put_nowait.remote(item))
        except Full:
            raise Full from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """get() for asyncio code: awaits the queue's actor instead of blocking the event loop."""
        _check_timeout(timeout)
        try:
            return await (self.actor.get.remote(timeout) if block else self.actor.get_nowait.remote())
        except Empty:
            raise Empty from None

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def put_nowait_batch(self, items: Iterable) -> None:
        """Put all of `items` in order, or none of them (Full when they do not all fit)."""
        if not isinstance(items, Iterable):
            raise TypeError(f"items must be an iterable, got {type(items).__name__}")
        get(self.actor.put_nowait_batch.remote(list(items)))

    def get_nowait_batch(self, num_items: int) -> list:
        """`num_items` items in order, or none (Empty when the queue holds fewer)."""
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError(f"num_items must be an int, got {type(num_items).__name__} {num_items!r}")
        if num_items < 0:
            raise ValueError(f"num_items must be 0 or more, got {num_items}")
        return get(self.actor.get_nowait_batch.remote(num_items))

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """End the queue's actor (the items go with it); calling it again does nothing."""
        from ..actor import kill
        if self.actor is not None:
            kill(self.actor)
            self.actor = None

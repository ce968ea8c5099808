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

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """put() for asyncio code: awaits the queue's actor instead of blocking the event loop."""
        try:
            await (self.actor.put.remote(item, timeout) if block else self.actor.put_nowait.remote(item))
        except Full:
            raise Full from None

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """get() for asyncio code: awaits the queue's actor instead of blocking the event loop."""
        try:
            return await (self.actor.get.remote(timeout) if block else self.actor.get_nowait.remote())
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
        from ..actor import kill
        kill(self.actor)

"""Helpers on top of the core API, as in `ray.util`.

- `ActorPool`: spread calls over a fixed set of actors.
- `Queue` (with `Empty`, `Full`): a queue shared by tasks and actors.
- `as_completed(refs)`: values in the order their tasks finish.
- `list_named_actors()`, `get_node_ip_address()`, as Ray's.
- `tasuki.util.multiprocessing.Pool` and `tasuki.util.joblib.register_tasuki()` (loaded on use).
"""
from __future__ import annotations

import importlib
import time
from typing import Iterable, Iterator

from ..api import get, wait
from ..object_ref import ObjectRef
from .actor_pool import ActorPool
from .queue import Empty, Full, Queue

__all__ = ["ActorPool", "Empty", "Full", "Queue", "as_completed", "get_node_ip_address", "list_named_actors"]


def list_named_actors(all_namespaces: bool = False) -> list:
    """The names of the live named actors in this job's namespace, as Ray's; with all_namespaces=True,
    [{"name": ..., "namespace": ...}] of every namespace."""
    from .. import api
    actors = api._get_client().query("named_actors")
    if all_namespaces:
        return actors
    namespace = api.get_runtime_context().namespace
    return [a["name"] for a in actors if a["namespace"] == namespace]


def get_node_ip_address() -> str:
    """The IP address of the node this process runs on, as other nodes reach it."""
    from .. import api, config
    worker = api._worker
    if worker is not None:
        return worker.cfg.ip
    client = api._client
    if client is not None and client.head_address.startswith("ipc://"):
        return "127.0.0.1"            # an embedded cluster: its node listens on loopback
    return config.node_ip()


def as_completed(refs: Iterable[ObjectRef], *, timeout: float | None = None,
                 yield_refs: bool = False) -> Iterator:
    """Yield the values of `refs` as their tasks finish, the first finished first.

    A failed task raises its error when its turn comes; `TimeoutError` when `timeout` seconds
    pass before every value was yielded. `yield_refs=True` yields the refs instead of values.
    """
    pending = list(refs)
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, pending = wait(pending, num_returns=1, timeout=remaining)
        if not ready:
            raise TimeoutError(f"{len(pending)} of the refs were not ready within {timeout} s")
        more, pending = wait(pending, num_returns=len(pending), timeout=0)   # everything else done by now
        for ref in ready + more:
            yield ref if yield_refs else get(ref)


def __getattr__(name: str):
    if name in ("multiprocessing", "joblib"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tasuki.util' has no attribute {name!r}")

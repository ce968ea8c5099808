"""ObjectRef: a future for a value in the cluster. Counting refs per process is how objects get freed."""
from __future__ import annotations

import asyncio

from . import serialization

_client = None        # the process's Client, set by client.Client.activate()


class ObjectRef:
    """A reference to an object in the cluster: returned by `f.remote()` and `put()`; read with `get()`.

    Refs are counted in each process; when no process holds a ref to an object and nothing else
    pins it, the object is freed. A ref can be passed to tasks (top-level arguments are resolved
    to their values first), stored inside other objects, and awaited in asyncio code.
    """
    __slots__ = ("id", "__weakref__")

    def __init__(self, object_id: bytes, _registered: bool = False) -> None:
        self.id = object_id
        if _client is not None:
            _client.add_ref(object_id, _registered)

    def __del__(self) -> None:
        client = _client
        if client is not None:
            try:
                client.remove_ref(self.id)
            except Exception:     # interpreter shutdown
                pass

    def hex(self) -> str:
        return self.id.hex()

    def binary(self) -> bytes:
        return self.id

    def task_id(self) -> str:
        return self.id[:-1].hex()

    def __repr__(self) -> str:
        return f"ObjectRef({self.id.hex()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self):
        serialization.note_ref(self.id)
        return (ObjectRef, (self.id,))

    def future(self):
        """A concurrent.futures.Future that completes with the value (or its error)."""
        import concurrent.futures
        from .api import _get_client
        future = concurrent.futures.Future()

        client = _get_client()

        def resolve():
            try:
                future.set_result(client.result(self.id))
            except BaseException as e:
                future.set_exception(e)
        client.when_ready(self.id, resolve)
        return future

    as_future = future       # Ray's name

    def _on_completed(self, callback) -> None:
        """Ray's semi-private hook: call `callback(value)` once the object is ready, on this process's
        callback thread (as future() is resolved); a failed task's error is passed, not raised. The
        callback is held until then and released after; what it raises is printed, not propagated."""
        from .api import _get_client
        client = _get_client()
        ref = self                  # the object stays while its callback waits for it

        def completed():
            try:
                value = client.result(ref.id)
            except Exception as e:
                value = e
            callback(value)
        client.when_ready(self.id, completed)

    def __await__(self):
        return asyncio.wrap_future(self.future()).__await__()


ObjectID = ObjectRef     # Ray's old name of ObjectRef, kept by Ray as an alias for older programs

"""Large arguments stored once, for Pool and Executor: a big array passed to 50 calls is put in the
object store at its first call and every call gets a ref to it, never a pickled copy.

A value counts as large from 1 MiB: NumPy arrays, pandas objects, bytes and bytearrays. Values are
found again by identity (the same object, not an equal one), for the pool's or executor's life;
like `put`, the stored copy is a snapshot: change an array in place and pass it again, and the
calls still see the first version (pass a new array, or `.copy()`, to send new data). Inside a
task the value arrives as a read-only zero-copy view.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable

from . import serialization
from .exceptions import SerializationError
from .object_ref import ObjectRef

LARGE_ARGUMENT = 1 << 20        # bytes
_NEVER_LARGE = frozenset({int, float, complex, bool, str, type(None), tuple, list, dict, set, frozenset, ObjectRef})


def nbytes(value: Any) -> int:
    """The size of a buffer-like value (array, DataFrame, bytes); 0 for anything else."""
    size = getattr(value, "nbytes", None)          # numpy arrays, memoryviews
    if isinstance(size, int) and type(value).__module__ == "numpy":
        return size
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if type(value).__module__.startswith("pandas") and hasattr(value, "memory_usage"):
        usage = value.memory_usage(index=True)
        return int(usage.sum() if hasattr(usage, "sum") else usage)
    return 0


class Shared:
    """Stands for a large argument inside a batch of calls; the worker swaps it for the value."""
    __slots__ = ("ref",)

    def __init__(self, ref: ObjectRef) -> None:
        self.ref = ref

    def __reduce__(self):
        return (Shared, (self.ref,))


class SharedArguments:
    """The large values a pool or executor has stored, by identity; and recently used functions."""

    def __init__(self, put: Callable[[Any], ObjectRef]) -> None:
        self._put = put
        self._lock = threading.Lock()
        self._stored: dict[int, tuple[Any, ObjectRef]] = {}    # id(value) -> (weakref or value, ref)
        self._recent: OrderedDict = OrderedDict()               # function -> what was made of it

    def ref(self, value: Any) -> ObjectRef:
        """A ref to `value`, stored on first use; later calls with the same object reuse it."""
        key = id(value)
        with self._lock:
            entry = self._stored.get(key)
            if entry is not None:
                held = entry[0]() if isinstance(entry[0], weakref.ref) else entry[0]
                if held is value:
                    return entry[1]
        ref = self._put(value)
        try:
            held = weakref.ref(value, lambda _, key=key: self._forget(key))
        except TypeError:            # bytes and other values without weak references: keep them
            held = value
        with self._lock:
            self._stored[key] = (held, ref)
        return ref

    def _forget(self, key: int) -> None:
        with self._lock:
            self._stored.pop(key, None)

    def share(self, value: Any, wrap: bool = False) -> Any:
        """`value` itself when small; else its ref (or a `Shared` marker when `wrap`, for values
        nested inside a batch, where the runtime does not resolve refs by itself)."""
        if type(value) in _NEVER_LARGE or nbytes(value) < LARGE_ARGUMENT:
            return value
        ref = self.ref(value)
        return Shared(ref) if wrap else ref

    def for_function(self, fn: Callable, make: Callable[[Callable], Any]) -> Any:
        """`make(fn)`, cached for the 64 functions used last (bound methods are new objects on
        every attribute access, so functions are matched by equality, not identity)."""
        try:
            with self._lock:
                made = self._recent.pop(fn)
                self._recent[fn] = made
                return made
        except KeyError:
            pass
        except TypeError:             # an unhashable callable
            return make(fn)
        made = make(fn)
        with self._lock:
            self._recent[fn] = made
            while len(self._recent) > 64:
                self._recent.popitem(last=False)
        return made

    def clear(self) -> None:
        with self._lock:
            self._stored.clear()
            self._recent.clear()


def resolve(value: Any, get: Callable[[ObjectRef], Any]) -> Any:
    """Worker side: the value a `Shared` marker stands for; anything else as it is."""
    return get(value.ref) if type(value) is Shared else value


def check_items(function_name: str, items: list, describe: Callable[[int], str]) -> None:
    """Raise a SerializationError naming the first item of a batch that cannot be pickled."""
    for i, item in enumerate(items):
        try:
            serialization.dumps_inline(item)
        except SerializationError as e:
            raise SerializationError(
                f"{describe(i)} of {function_name}() cannot be sent to a worker: {e}. Objects such as "
                f"locks, open files, sockets and database connections cannot travel between processes: "
                f"create them inside the function instead.") from e.__cause__

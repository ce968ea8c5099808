"""Serialization: cloudpickle with pickle protocol 5, large buffers out of band, ObjectRefs counted.

`dumps` turns a value into a `Serialized`: a pickle header plus the large buffers (NumPy arrays,
bytearrays) kept out of the stream, so a 1 GB array is never copied into a pickle. A large
`bytes` object is copied into the stream: pickle never offers `bytes` to a reducer override, so
it cannot go out of band (wrap it in a NumPy array or a bytearray to avoid the copy). The ObjectRefs
met while pickling are collected too: the head pins them while the value lives, which is how a ref
nested in a task argument or in a stored object stays valid. Lambdas, closures and functions
defined in `__main__` or a notebook pickle by value (cloudpickle).
"""
from __future__ import annotations

import pickle
import threading
from typing import Any, NamedTuple

import cloudpickle

from .config import INLINE_OBJECT_LIMIT
from .exceptions import SerializationError

OUT_OF_BAND_MIN = 64 * 1024     # bytes: smaller buffers stay inside the pickle stream
_collector = threading.local()


class Serialized(NamedTuple):
    header: bytes
    buffers: list           # memoryviews of the out-of-band buffers
    refs: list              # ids of the ObjectRefs contained in the value

    @property
    def size(self) -> int:
        return len(self.header) + sum(b.nbytes for b in self.buffers)


def note_ref(object_id: bytes) -> None:
    """Called by ObjectRef.__reduce__: records a ref met while pickling."""
    refs = getattr(_collector, "refs", None)
    if refs is not None:
        refs.append(object_id)


_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes})


def _plain(value: Any, depth: int = 0) -> bool:
    """Builtin scalars, and small tuples/lists/dicts of them: what plain pickle handles exactly
    (no functions, classes, buffers or refs), at a tenth of cloudpickle's cost per call."""
    t = type(value)
    if t in _PLAIN:
        return True
    if depth > 2 or (t is not tuple and t is not list and t is not dict) or len(value) > 32:
        return False
    if t is dict:
        return all(type(k) in _PLAIN and _plain(v, depth + 1) for k, v in value.items())
    return all(_plain(v, depth + 1) for v in value)


def dumps(value: Any) -> Serialized:
    """Pickle `value`; buffers of 64 KiB and more travel out of band. Raises SerializationError."""
    if _plain(value):
        return Serialized(pickle.dumps(value, protocol=5), [], [])
    refs: list = []
    buffers: list = []

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(view)
        return False

    previous = getattr(_collector, "refs", None)
    _collector.refs = refs
    try:
        header = cloudpickle.dumps(value, protocol=5, buffer_callback=keep_out_of_band)
    except Exception as e:
        raise SerializationError(f"cannot pickle {_describe(value)}: {type(e).__name__}: {e}") from e
    finally:
        _collector.refs = previous
    if buffers and len(header) + sum(b.nbytes for b in buffers) <= INLINE_OBJECT_LIMIT:
        header = cloudpickle.dumps(value, protocol=5)    # small enough to travel as one message
        buffers = []
    return Serialized(header, buffers, refs)


def dumps_inline(value: Any) -> bytes:
    """Pickle `value` into one bytes object (for values that always travel inside messages)."""
    try:
        return cloudpickle.dumps(value, protocol=5)
    except Exception as e:
        raise SerializationError(f"cannot pickle {_describe(value)}: {type(e).__name__}: {e}") from e


def loads(header: bytes, buffers=()) -> Any:
    return pickle.loads(header, buffers=buffers)


def dumps_arguments(function_name: str, args: tuple, kwargs: dict) -> Serialized:
    """`dumps((args, kwargs))`; on failure, an error naming the argument that cannot be pickled."""
    try:
        return dumps((args, kwargs))
    except SerializationError:
        check_arguments(function_name, args, kwargs)
        raise


def check_arguments(function_name: str, args: tuple, kwargs: dict) -> None:
    """Find which argument cannot be pickled and raise an error that names it and says what to do."""
    items = [(f"positional argument {i}", a) for i, a in enumerate(args)]
    items += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in items:
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as e:
            raise SerializationError(
                f"{label} of {function_name}() cannot be sent to a worker: {_describe(value)} "
                f"is not picklable ({type(e).__name__}: {e}). Objects such as locks, open files, "
                f"sockets and database connections cannot travel between processes: create them "
                f"inside the remote function instead.") from e


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} (type {type(value).__module__}.{type(value).__qualname__})"

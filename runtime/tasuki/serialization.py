"""Serialization: cloudpickle with pickle protocol 5, large buffers out of band, ObjectRefs counted.

`dumps` turns a value into a `Serialized`: a pickle header plus the large buffers (NumPy arrays,
bytearrays) kept out of the stream, so a 1 GB array is never copied into a pickle. A large
`bytes` object is copied into the stream: pickle never offers `bytes` to a reducer override, so
it cannot go out of band (wrap it in a NumPy array or a bytearray to avoid the copy). The ObjectRefs
met while pickling are collected too: the head pins them while the value lives, which is how a ref
nested in a task argument or in a stored object stays valid. Lambdas, closures and functions
defined in `__main__` or a notebook pickle by value (cloudpickle).

`dumps_function` pickles a task's function or an actor's class (once each: they are then referred
to by id) with each code object's real file name and source lines, which the worker restores, so a
remote traceback shows the source as a local one would, notebook cells included (cloudpickle 3.1
names every code object it pickles "<dynamic-code>"). It also carries `code_paths`, the driver
script's directory and working directory (Ray's driver sys.path): unpickling it appends them to the
worker's sys.path before the function's own references are resolved, so `import helper` of a module
beside the script works in tasks. Appended, not put first, as Ray does: a file in the driver's
directory never shadows an installed module or the standard library in a worker other drivers share.
"""
from __future__ import annotations

import io
import linecache
import os
import pickle
import threading
import types
from collections import ChainMap
from typing import Any, NamedTuple

import cloudpickle

from .config import INLINE_OBJECT_LIMIT
from .exceptions import SerializationError, TasukiError

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
    """Unpickle; a failure (a class not importable here, a __reduce__ that fails) is a SerializationError."""
    try:
        return pickle.loads(header, buffers=buffers)
    except TasukiError:
        raise
    except Exception as e:
        raise SerializationError(f"{type(e).__name__}: {e}") from e


# --- functions -------------------------------------------------------------------------------------
_cloudpickle_reduce_code = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _reduce_code(code: types.CodeType):
    """cloudpickle's reduction of a code object, plus its file name and the source lines it spans."""
    constructor, args = _cloudpickle_reduce_code(code)
    filename = code.co_filename
    first = code.co_firstlineno
    last = max((line for _, _, line in code.co_lines() if line is not None), default=first)
    linecache.checkcache(filename)        # as a local traceback would: a file edited since it was read
    return _located_code, (constructor, args, filename, first, linecache.getlines(filename)[first - 1:last])


def _located_code(constructor, args: tuple, filename: str, first: int, lines: list) -> types.CodeType:
    """Unpickle a code object under its real file name; its source lines go into linecache when that
    file is not here to read (a notebook cell, a script on the driver's machine only)."""
    if lines and not os.path.exists(filename):
        _remember_lines(filename, first, lines)
    code = constructor(*args)
    return code if code.co_filename == filename else code.replace(co_filename=filename)


def _remember_lines(filename: str, first: int, lines: list) -> None:
    entry = linecache.cache.get(filename)
    known = list(entry[2]) if entry is not None and len(entry) == 4 else []
    known += ["\n"] * (first - 1 + len(lines) - len(known))
    known[first - 1:first - 1 + len(lines)] = lines
    # no mtime: linecache.checkcache leaves the entry alone, as it does for IPython's cells
    linecache.cache[filename] = (sum(map(len, known)), None, known, filename)


class _SourcePickler(cloudpickle.Pickler):
    """cloudpickle's pickler with _reduce_code for code objects (only for functions: see dumps_function)."""
    dispatch_table = ChainMap({types.CodeType: _reduce_code}, *cloudpickle.Pickler.dispatch_table.maps)


code_paths: list[str] = []      # a driver's: set by init(); a worker's: learnt from the functions it loads


def dumps_function(function: Any) -> bytes:
    """Pickle a function or class to run remotely, its code under its real file name with its
    source, and `code_paths` for the worker's sys.path."""
    file = io.BytesIO()
    try:
        _SourcePickler(file, protocol=5).dump(_OnPath(tuple(code_paths), function) if code_paths else function)
    except Exception as e:
        raise SerializationError(
            f"cannot pickle {_describe(function)}: {type(e).__name__}: {e}. It travels with what it "
            f"refers to (globals, closure, defaults): create objects such as locks, files and "
            f"connections inside it instead.") from e
    return file.getvalue()


class _OnPath:
    """Pickles as `obj` that first extends sys.path with `paths` (before obj's references are loaded)."""

    def __init__(self, paths: tuple, obj: Any) -> None:
        self.paths, self.obj = paths, obj

    def __reduce__(self):
        return _second, (_Paths(self.paths), self.obj)


class _Paths:
    def __init__(self, paths: tuple) -> None:
        self.paths = paths

    def __reduce__(self):
        return _extend_sys_path, (self.paths,)


def _extend_sys_path(paths: tuple) -> None:
    import sys
    for path in paths:
        if path not in code_paths:
            code_paths.append(path)          # a task this worker submits carries them on
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)


def _second(_, obj: Any) -> Any:
    return obj


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

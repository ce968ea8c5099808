"""Placeholders for the Ray names tasuki does not provide, so one such name in a Ray test file costs
only the tests that use it, not the whole file's import.

- `install()` adds an import hook, last on sys.meta_path: any `ray.X` module the shim has no file for
  (ray.cluster_utils, ray.util.state, ray._raylet, ...) imports as a placeholder module.
- `placeholder(qualname)`: what a missing name resolves to. Calling it raises NotImplementedError
  that names it (called at a test file's module level, it returns a placeholder instead); its attributes are placeholders too; it can stand as a base class or a default value.
- `missing_exception(qualname)`: a real exception class (a subclass of tasuki's TasukiError) for a
  name in ray.exceptions that tasuki lacks: `except`/`pytest.raises` with it work, tasuki never raises it.

Every missing name that is touched is appended to the file named by RAY_COMPAT_MISSING_LOG (each
process, workers and sub-drivers included, appends), so the report can list what tests reached for.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types

_logged: set[str] = set()


def record(qualname: str) -> None:
    """Note that a Ray name tasuki lacks was touched (once per process)."""
    if qualname in _logged or qualname.rsplit(".", 1)[-1].startswith("_mock"):   # unittest.mock probes
        return
    _logged.add(qualname)
    path = os.environ.get("RAY_COMPAT_MISSING_LOG")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(qualname + "\n")
        except OSError:
            pass


class Placeholder:
    """Stands for a Ray name tasuki does not provide; fails when used, not when imported."""

    def __init__(self, qualname: str) -> None:
        object.__setattr__(self, "_qualname", qualname)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Placeholder(f"{self._qualname}.{name}")     # the parent was recorded already

    def __call__(self, *args, **kwargs):
        record(self._qualname)
        if sys._getframe(1).f_code.co_name == "<module>":
            # called while a test file is imported (a parametrize value, a module constant): defer the
            # failure to the tests that use the result, as for a name that is only imported
            return Placeholder(f"{self._qualname}(...)")
        raise NotImplementedError(f"{self._qualname}: tasuki has no such name (a placeholder of the Ray "
                                  f"test shim, compat/ray_shim)")

    def __mro_entries__(self, bases):           # `class X(ray.some.Missing)` still defines X
        record(self._qualname)
        return (object,)

    def __repr__(self) -> str:
        return f"<missing {self._qualname}>"


def placeholder(qualname: str) -> Placeholder:
    record(qualname)
    return Placeholder(qualname)


def missing_exception(qualname: str) -> type:
    from tasuki.exceptions import TasukiError
    record(qualname)
    module, _, name = qualname.rpartition(".")
    return type(name, (TasukiError,), {"__module__": module,
                                        "__doc__": "Placeholder: a Ray exception tasuki does not raise."})


class _MissingModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        record(spec.name + " (module)")
        module = _MissingModule(spec.name)
        module.__path__ = []            # a package, so its submodules are placeholders too
        return module

    def exec_module(self, module) -> None:
        pass


class _Finder(importlib.abc.MetaPathFinder):
    """Last on sys.meta_path: reached only when no shim file exists for a `ray.*` module."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("ray.") or fullname.startswith("ray.tests."):
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())

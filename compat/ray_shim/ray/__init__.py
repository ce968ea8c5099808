"""`ray`, bound to tasuki: the package that Ray's own tests import when compat/run_ray_tests.py runs
them against tasuki. It is a test harness, not an API: programs use `import tasuki as ray`.

A name resolves to tasuki's on first use (PEP 562), so what the runtime adds shows up here with no
edit. Submodules that Ray's tests import by path (ray.exceptions, ray.util.queue, ray.actor, ...) are
thin files beside this one; stand-ins for Ray's test utilities are in ray._private.test_utils (and
ray._common.test_utils). Any other Ray name or module becomes a placeholder that fails when used
(_missing.py), and is logged for the report.
"""
import importlib
import os

import tasuki

from . import _missing

_missing.install()

__version__ = tasuki.__version__
_SUBMODULES = {"exceptions", "actor", "types", "runtime_context", "util", "_private", "_common"}


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    if name in _SUBMODULES or os.path.exists(os.path.join(os.path.dirname(__file__), name + ".py")):
        value = importlib.import_module(f".{name}", __name__)
    else:
        try:
            value = getattr(tasuki, name)
        except AttributeError:
            value = _missing.placeholder(f"ray.{name}")
    globals()[name] = value
    return value

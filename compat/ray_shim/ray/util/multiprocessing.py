"""ray.util.multiprocessing → tasuki.util.multiprocessing (Ray's Pool under Ray's module path)."""
import tasuki.util.multiprocessing as _t
from tasuki.util.multiprocessing import *  # noqa: F401,F403

from .. import _missing


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    value = getattr(_t, name, None) or _missing.placeholder(f"ray.util.multiprocessing.{name}")
    globals()[name] = value
    return value

"""ray.exceptions → tasuki.exceptions; a Ray exception tasuki lacks is a placeholder class (_missing)."""
import tasuki.exceptions as _t
from tasuki.exceptions import *  # noqa: F401,F403

from . import _missing


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    try:
        value = getattr(_t, name)
    except AttributeError:
        value = _missing.missing_exception(f"ray.exceptions.{name}")
    globals()[name] = value
    return value

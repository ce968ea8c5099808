"""ray.actor → tasuki.actor (then tasuki itself); missing names are placeholders (_missing)."""
import tasuki
import tasuki.actor as _t

from . import _missing


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    for source in (_t, tasuki):
        if hasattr(source, name):
            value = getattr(source, name)
            break
    else:
        value = _missing.placeholder(f"ray.actor.{name}")
    globals()[name] = value
    return value

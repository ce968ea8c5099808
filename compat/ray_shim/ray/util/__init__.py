"""ray.util → tasuki.util (then tasuki itself); missing names are placeholders (_missing)."""
import importlib
import os

import tasuki
import tasuki.util as _t

from .. import _missing


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    if os.path.exists(os.path.join(os.path.dirname(__file__), name + ".py")):
        value = importlib.import_module(f".{name}", __name__)
    else:
        for source in (_t, tasuki):
            try:
                value = getattr(source, name)
                break
            except AttributeError:
                continue
        else:
            value = _missing.placeholder(f"ray.util.{name}")
    globals()[name] = value
    return value

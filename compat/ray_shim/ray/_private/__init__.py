"""ray._private: only the test-utility stand-ins (test_utils); every other internal is a placeholder."""
from .. import _missing


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    if name == "test_utils":
        from . import test_utils
        return test_utils
    import importlib
    return importlib.import_module(f"{__name__}.{name}")     # a placeholder module (_missing's finder)


_missing.install()

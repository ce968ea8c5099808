"""tasuki: remote tasks, actors and a shared-memory object store, on a laptop or a cluster.

    import tasuki            # or: import tasuki as ray
    tasuki.init()

    @tasuki.remote
    def square(x):
        return x * x

    print(sum(tasuki.get([square.remote(i) for i in range(100)])))

The names below load on first use (PEP 562), so the head process, which needs none of them,
starts without importing NumPy.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ActorClass": "actor", "ActorHandle": "actor", "get_actor": "actor", "kill": "actor", "method": "actor",
    "ObjectRef": "object_ref", "ObjectID": "object_ref", "Pool": "pool", "Executor": "executor",
    "available_resources": "api", "cancel": "api", "cluster_resources": "api", "get": "api",
    "get_gpu_ids": "api", "get_runtime_context": "api", "init": "api", "JobConfig": "api", "is_initialized": "api",
    "nodes": "api", "put": "api", "remote": "api", "shutdown": "api", "wait": "api",
}
_SUBMODULES = {"autoscaler", "exceptions", "tune", "util"}

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'tasuki' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])

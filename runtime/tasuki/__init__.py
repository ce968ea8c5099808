"""tasuki: remote tasks, actors and a shared-memory object store, on a laptop or a cluster.

    import tasuki            # or: import tasuki as ray
    tasuki.init()

    @tasuki.remote
    def square(x):
        return x * x

    print(sum(tasuki.get([square.remote(i) for i in range(100)])))
"""
__version__ = "0.1.0"

from . import exceptions  # noqa: E402
from .api import (available_resources, cancel, cluster_resources, get, get_gpu_ids,  # noqa: E402
                  get_runtime_context, init, is_initialized, nodes, put, remote, shutdown, wait)
from .object_ref import ObjectRef  # noqa: E402
from .actor import ActorClass, ActorHandle, get_actor, kill, method  # noqa: E402
from . import util  # noqa: E402

__all__ = [
    "ActorClass", "ActorHandle", "ObjectRef", "available_resources", "cancel", "cluster_resources", "exceptions", "get", "get_gpu_ids",
    "get_actor", "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes", "put", "remote",
    "shutdown", "util", "wait",
]

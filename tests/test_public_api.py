"""The public surface: `tasuki.__all__` is pinned, and the exceptions carry Ray's names.

Changing the public API is a decision: update the list here in the same change, on purpose.
"""
from __future__ import annotations

import tasuki
from tasuki import exceptions

EXPECTED_ALL = [
    "ActorClass", "ActorHandle", "Executor", "autoscaler", "JobConfig", "ObjectID", "ObjectRef", "Pool", "available_resources", "cancel", "cluster_resources", "exceptions",
    "get", "get_actor", "get_gpu_ids", "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes",
    "put", "remote", "shutdown", "tune", "util", "wait",
]

# ObjectID (issue 15): Ray's old name of ObjectRef, which Ray still exports as an alias.
# autoscaler (issue 16): tasuki.autoscaler.request_resources, Ray's ray.autoscaler.sdk.request_resources.
# JobConfig (issue 15): init(job_config=...) as Ray's: the job's default actor lifetime and namespace.

RAY_EXCEPTION_NAMES = ["RayError", "RayTaskError", "WorkerCrashedError", "GetTimeoutError", "RayActorError",
                       "ObjectLostError", "TaskCancelledError"]


def test_all_is_pinned():
    assert sorted(tasuki.__all__) == sorted(EXPECTED_ALL)
    assert len(set(tasuki.__all__)) == len(tasuki.__all__)


def test_every_name_in_all_exists():
    missing = [name for name in tasuki.__all__ if not hasattr(tasuki, name)]
    assert missing == []


def test_no_public_name_outside_all():
    """Everything public on the package is either in __all__ or a submodule."""
    import types
    public = {name for name, value in vars(tasuki).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public - set(tasuki.__all__) == set()


def test_version():
    assert isinstance(tasuki.__version__, str) and tasuki.__version__.count(".") == 2


def test_exceptions_have_rays_names():
    missing = [name for name in RAY_EXCEPTION_NAMES if not hasattr(exceptions, name)]
    assert missing == []
    for name in RAY_EXCEPTION_NAMES:
        assert issubclass(getattr(exceptions, name), exceptions.RayError), name


def test_exception_tree():
    e = exceptions
    assert e.RayError is e.TasukiError
    assert e.RayTaskError is e.TaskError
    assert issubclass(e.RayActorError, e.TasukiError) and issubclass(e.ActorDiedError, e.RayActorError)
    assert issubclass(e.GetTimeoutError, TimeoutError)
    assert issubclass(e.SerializationError, TypeError)
    assert issubclass(e.ClusterError, ConnectionError)
    for name in ("WorkerCrashedError", "TaskCancelledError", "ObjectLostError", "ObjectStoreFullError",
                 "NodeDiedError", "VersionMismatchError"):
        assert issubclass(getattr(e, name), e.TasukiError), name


def test_task_error_is_also_the_original_type():
    cause = KeyError("missing")
    error = exceptions.TaskError("task f failed", cause, "Traceback ...").as_instanceof_cause()
    assert isinstance(error, exceptions.TaskError) and isinstance(error, KeyError)
    assert error.cause is cause and error.traceback_str == "Traceback ..."
    assert str(error) == "task f failed"
    import pickle
    back = pickle.loads(pickle.dumps(error))
    assert isinstance(back, KeyError) and isinstance(back, exceptions.TaskError)
    assert str(back) == "task f failed"


def test_object_id_is_rays_alias_of_object_ref():
    assert tasuki.ObjectID is tasuki.ObjectRef

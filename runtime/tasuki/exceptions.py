"""Exceptions users catch, with Ray's names beside ours so `import tasuki as ray` code keeps working.

    TasukiError (RayError)
     ├── TaskError (RayTaskError)          a task raised; also an instance of the original type
     ├── WorkerCrashedError                the worker process died and retries are spent
     ├── ActorError (RayActorError)
     │    └── ActorDiedError               the actor is dead: killed, crashed, node lost, constructor raised
     ├── GetTimeoutError (also TimeoutError)
     ├── TaskCancelledError
     ├── ObjectLostError                   every copy of an object is gone
     ├── ObjectStoreFullError
     ├── NodeDiedError
     ├── SerializationError (also TypeError)  an argument or result could not be pickled
     └── VersionMismatchError              a peer runs another tasuki or Python version
"""
from __future__ import annotations


class TasukiError(Exception):
    """Base of every tasuki error."""


class TaskError(TasukiError):
    """A task raised. `get` raises an instance that is both TaskError and the original exception type."""

    def __init__(self, message: str = "", cause: BaseException | None = None, traceback_str: str = ""):
        super().__init__(message)
        self.cause = cause
        self.traceback_str = traceback_str

    def as_instanceof_cause(self) -> "TaskError":
        """This error as a subclass of both TaskError and the cause's type (so `except ValueError` works)."""
        cause_cls = type(self.cause)
        if self.cause is None or isinstance(self, cause_cls) or not issubclass(cause_cls, Exception):
            return self
        try:
            cls = _dual_classes.get(cause_cls)
            if cls is None:
                cls = type(f"TaskError({cause_cls.__name__})", (TaskError, cause_cls),
                           {"__init__": _dual_init, "__str__": _dual_str, "__reduce__": _dual_reduce})
                cls.__module__ = __name__
                _dual_classes[cause_cls] = cls
            return cls(str(self), self.cause, self.traceback_str)
        except TypeError:       # the cause's type cannot be mixed in (a C layout conflict)
            return self


_dual_classes: dict[type, type] = {}


def _dual_init(self, message="", cause=None, traceback_str=""):
    Exception.__init__(self, message)
    self.cause = cause
    self.traceback_str = traceback_str


def _dual_str(self):
    return self.args[0] if self.args else ""


def _dual_reduce(self):
    return (_rebuild_task_error, (self.args[0] if self.args else "", self.cause, self.traceback_str))


def _rebuild_task_error(message, cause, traceback_str):
    return TaskError(message, cause, traceback_str).as_instanceof_cause()


class WorkerCrashedError(TasukiError):
    """The worker running a task died (segfault, os._exit, OOM kill) and the task's retries are spent."""


class ActorError(TasukiError):
    """An actor could not run a method."""


class ActorDiedError(ActorError):
    """The actor is dead; the message says why (killed, crashed, its node died, constructor raised)."""


class GetTimeoutError(TasukiError, TimeoutError):
    """`get` or `wait` ran out of time."""


class TaskCancelledError(TasukiError):
    """The task was cancelled with `cancel()`."""


class ObjectLostError(TasukiError):
    """Every copy of an object is gone (its node died) and it cannot be rebuilt."""


class ObjectStoreFullError(TasukiError):
    """The node's shared-memory store cannot hold the object even after spilling."""


class NodeDiedError(TasukiError):
    """A node stopped heartbeating while it ran the task."""


class SerializationError(TasukiError, TypeError):
    """An argument or a result could not be pickled; the message names it."""


class VersionMismatchError(TasukiError):
    """A driver or node runs another tasuki or Python version than the head."""


class ClusterError(TasukiError, ConnectionError):
    """The cluster cannot be reached or refused us."""


# Ray's names, so `import tasuki as ray` code catches what it expects.
RayError = TasukiError
RayTaskError = TaskError
RayActorError = ActorError
ActorUnavailableError = ActorError
ObjectStoreFull = ObjectStoreFullError

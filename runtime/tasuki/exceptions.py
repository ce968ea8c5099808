"""Exceptions users catch, with Ray's names beside ours so `import tasuki as ray` code keeps working.

    TasukiError (RayError)
     ├── TaskError (RayTaskError)          a task raised, or its call or result could not be unpickled;
     │                                     also an instance of the original type where it can be rebuilt
     ├── WorkerCrashedError                the worker process died and retries are spent
     ├── ActorError (RayActorError)
     │    └── ActorDiedError               the actor is dead: killed, crashed, node lost, constructor raised
     ├── GetTimeoutError (also TimeoutError)
     ├── TaskCancelledError
     ├── ObjectLostError                   every copy of an object is gone
     ├── ObjectStoreFullError
     ├── NodeDiedError
     ├── SerializationError (also TypeError)  an argument or result could not be pickled
     ├── OptionError (also TypeError and ValueError)  remote() or .options() got an unknown option
     ├── ActorAlreadyExistsError (also ValueError)  a live actor has the name already (Ray's name)
     ├── ClusterError (also ConnectionError)  the cluster cannot be reached or refused us
     │    └── JobError                     the head's jobs API refused a request (jobs.py): status_code, job_id
     └── VersionMismatchError              a peer runs another tasuki or Python version
"""
from __future__ import annotations

import builtins


class TasukiError(Exception):
    """Base of every tasuki error."""


class TaskError(TasukiError):
    """A task raised. `get` raises an instance that is both TaskError and the original exception type,
    or a plain TaskError that says why when that type cannot be rebuilt where `get` runs.

    task_name, node_id: where it failed; traceback_str: the remote traceback; cause: the original
    exception (None when it could not be rebuilt); cause_type_name: its type's qualified name.
    """

    def __init__(self, message: str = "", cause: BaseException | None = None, traceback_str: str = "", *,
                 task_name: str = "", node_id: str = "", cause_type_name: str = ""):
        Exception.__init__(self, message)    # not super(): in a dual class the next __init__ is the cause type's
        self.cause = cause
        self.traceback_str = traceback_str
        self.task_name = task_name
        self.node_id = node_id
        self.cause_type_name = cause_type_name or (_qualified_name(type(cause)) if cause is not None else "")

    def __str__(self) -> str:          # the cause type's __str__ must not answer for a dual class
        return self.args[0] if self.args else ""

    def __reduce__(self):
        """The cause travels as a pickle of its own, unpickled by _rebuild_task_error where the error
        is raised: a driver that cannot rebuild it (its class is not importable there, its __reduce__
        fails) still gets the message, the remote traceback and where it failed."""
        cause_blob, plain, failure = _pickle_cause(self.cause)
        return (_rebuild_task_error, (str(self), self.traceback_str, self.task_name, self.node_id,
                                      self.cause_type_name, cause_blob, plain, failure))

    def as_instanceof_cause(self) -> "TaskError":
        """This error as a subclass of both TaskError and the cause's type (so `except ValueError` works)."""
        cause_cls = type(self.cause)
        if self.cause is None or isinstance(self, cause_cls):
            return self       # a BaseException subclass is mixed in too (Ray's rule)
        try:
            cls = _dual_classes.get(cause_cls)
            if cls is None:
                namespace = {"__module__": __name__, "__getattr__": _cause_attribute}
                if issubclass(cause_cls, _EXCEPTION_GROUPS):      # `except*` and .exceptions see the group's
                    namespace["__new__"] = _new_exception_group
                cls = type(f"TaskError({cause_cls.__name__})", (TaskError, cause_cls), namespace)
                _dual_classes[cause_cls] = cls
            return cls(str(self), self.cause, self.traceback_str, task_name=self.task_name,
                       node_id=self.node_id, cause_type_name=self.cause_type_name)
        except TypeError:       # the cause's type cannot be mixed in (a C layout conflict)
            return self


_dual_classes: dict[type, type] = {}
_EXCEPTION_GROUPS = getattr(builtins, "BaseExceptionGroup", ())      # Python 3.11+; issubclass takes nested tuples


def _new_exception_group(cls, message, cause, *args, **kwargs):
    """A dual class of an exception group is built as one: its message and exceptions are the cause's
    (an exception group's constructor takes those, not a TaskError's arguments)."""
    return _EXCEPTION_GROUPS.__new__(cls, cause.message, cause.exceptions)


def _cause_attribute(self, name: str):
    """A dual class's attributes missing from the error are the cause's (`except MyError as e: e.code`)."""
    cause = self.__dict__.get("cause")
    if cause is None or name.startswith("__"):
        raise AttributeError(name)
    return getattr(cause, name)


def _qualified_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _pickle_cause(cause: BaseException | None) -> tuple[bytes | None, bool, str]:
    """(pickle of the cause, whether it is plain (type, args, state), why it could not be pickled)."""
    if cause is None:
        return None, False, ""
    import cloudpickle        # here, not at the top: the head imports this module and never pickles errors
    try:
        if type(cause).__reduce__ is BaseException.__reduce__:     # rebuilt by _rebuild_plain_exception
            return cloudpickle.dumps((type(cause), cause.args, cause.__dict__), protocol=5), True, ""
        return cloudpickle.dumps(cause, protocol=5), False, ""
    except Exception as e:
        return None, False, f"it could not be pickled where it was raised ({type(e).__name__}: {e})"


def _rebuild_plain_exception(cls: type, args: tuple, state: dict) -> BaseException:
    """What pickle does for an exception (cls(*args), then its __dict__), except that an __init__
    which does not take back its own args (`def __init__(self, a, b): super().__init__(a)`) is skipped."""
    try:
        error = cls(*args)
    except Exception:
        error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


def _rebuild_task_error(message: str, traceback_str: str, task_name: str, node_id: str, cause_type_name: str,
                        cause_blob: bytes | None, plain: bool, failure: str) -> TaskError:
    """Unpickle a TaskError: with its original type when the cause can be rebuilt here, else a plain
    TaskError whose message ends with why not."""
    fields = {"task_name": task_name, "node_id": node_id, "cause_type_name": cause_type_name}
    if cause_blob is not None:
        import pickle
        try:
            cause = pickle.loads(cause_blob)
            if plain:
                cause = _rebuild_plain_exception(*cause)
            return TaskError(message, cause, traceback_str, **fields).as_instanceof_cause()
        except Exception as e:
            failure = f"it cannot be rebuilt in this process ({type(e).__name__}: {e})"
    if failure:
        message += (f"\n\nThe task raised {cause_type_name}, but {failure}: it is raised as a plain TaskError "
                    f"(catch TaskError; its traceback_str and message above are the original's). To catch "
                    f"it by its own type, make that class importable and picklable in both processes.")
    return TaskError(message, None, traceback_str, **fields)


class WorkerCrashedError(TasukiError):
    """The worker running a task died (segfault, os._exit, OOM kill) and the task's retries are spent."""


class ActorError(TasukiError):
    """An actor could not run a method. actor_id: the actor's id in hex (None when unknown), as Ray's."""

    def __init__(self, message: str = "", actor_id: str | None = None):
        super().__init__(message)
        self.actor_id = actor_id


class ActorDiedError(ActorError):
    """The actor is dead; the message says why (killed, crashed, its node died, constructor raised)."""


class GetTimeoutError(TasukiError, TimeoutError):
    """`get` or `wait` ran out of time."""


class TaskCancelledError(TasukiError):
    """The task was cancelled with `cancel()`."""


class ObjectLostError(TasukiError):
    """Every copy of an object is gone (its node died) and it cannot be rebuilt: it was made by `put`
    or an actor call, or its task's retries are spent, or its lineage was dropped (lineage.py)."""


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


class JobError(ClusterError):
    """A request to the head's jobs API failed (tasuki.jobs). The message is the server's, with what to
    do; status_code: the HTTP status (401 wrong token, 404 unknown job, 409 conflict, 413 package too
    large; None when the head could not be reached); job_id: the job asked about, if any."""

    def __init__(self, message: str, *, status_code: int | None = None, job_id: str | None = None):
        super().__init__(message)      # one argument: OSError would read two as (errno, strerror)
        self.status_code = status_code
        self.job_id = job_id


class OptionError(TasukiError, TypeError, ValueError):
    """An option name that `remote()` or `.options()` does not know. Both TypeError (what Python
    raises for an unexpected keyword) and ValueError (what Ray raises), so code written for either
    catches it. An option of the wrong type is a plain TypeError, a bad value a ValueError, as in Ray."""


class ActorAlreadyExistsError(TasukiError, ValueError):
    """`.options(name=...).remote()`: a live actor in that namespace has the name. A ValueError too,
    as in Ray (which raised plain ValueError before it had this class)."""


# Ray's names, so `import tasuki as ray` code catches what it expects.
RayError = TasukiError
RayTaskError = TaskError
RayActorError = ActorError
ActorUnavailableError = ActorError
ObjectStoreFull = ObjectStoreFullError

"""Actors: a class made remote. `Cls.remote()` starts a dedicated worker holding the instance.

Calls go straight from the caller to the actor's worker (its own socket), not through the head:
  caller: register the call's return ids with the head (batched, for refcounting) ──► head
  caller: CALL ──► actor worker (in submission order) ──► OBJECT back to the caller directly
  actor worker: ACTOR_RESULT ──► head (batched; the head keeps the value for other readers)
The caller learns where the actor lives once (ACTOR_LOCATE → ACTOR_INFO) and is told again when
the actor restarts or dies; calls made before that are queued in the caller's IO thread.
"""
from __future__ import annotations

import inspect

from . import api, protocol as P
from .exceptions import ActorDiedError

_ACTOR_OPTIONS = {"num_cpus": None, "num_gpus": 0, "resources": None, "name": None, "namespace": None,
                  "get_if_exists": False, "lifetime": None, "max_concurrency": None, "max_restarts": 0,
                  "max_task_retries": 0}


class ActorClass:
    """A class whose instances live in their own worker process: `Cls.remote(*args)` → ActorHandle."""

    def __init__(self, cls: type, options: dict, _export_cache: list | None = None) -> None:
        self._cls = cls
        self._options = {**_ACTOR_OPTIONS, **api._check_options(options, _ACTOR_OPTIONS)}
        if self._options["lifetime"] not in (None, "detached", "non_detached"):
            raise ValueError(f"lifetime must be None or 'detached', got {self._options['lifetime']!r}")
        self._export_cache = _export_cache if _export_cache is not None else [None]
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__
        self._methods = {name: _method_options(fn) for name, fn in inspect.getmembers(cls, callable)
                         if not name.startswith("__") or name == "__call__"}
        self._is_async = any(inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
                             for _, fn in inspect.getmembers(cls, callable))

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly: use "
                        f"{self.__name__}.remote(...)")

    def options(self, **options) -> "ActorClass":
        return ActorClass(self._cls, {**self._options, **options}, self._export_cache)

    def remote(self, *args, **kwargs) -> "ActorHandle":
        check = api._call_check(self._cls.__init__, self.__name__, skip_self=True)   # Ray checks it here too
        if check is not None:
            check(args, kwargs)
        client = api._get_client()
        if self._export_cache[0] is None:
            self._export_cache[0] = api._export(self._cls)
        fn_id, blob = self._export_cache[0]
        client.register_function(fn_id, blob)
        o = self._options
        placement = {"CPU": 1.0 if o["num_cpus"] is None else float(o["num_cpus"])}
        held = {"CPU": float(o["num_cpus"] or 0)}
        for shape in (placement, held):
            if o["num_gpus"]:
                shape["GPU"] = float(o["num_gpus"])
            if o["resources"]:
                shape.update(o["resources"])
        concurrency = o["max_concurrency"] or (1000 if self._is_async else 1)
        info = {"class_name": self.__name__, "name": o["name"], "namespace": o["namespace"] or api._namespace,
                "detached": o["lifetime"] == "detached", "max_restarts": o["max_restarts"],
                "max_task_retries": o["max_task_retries"], "max_concurrency": concurrency,
                "is_async": self._is_async, "methods": self._methods, "held": held,
                "get_if_exists": o["get_if_exists"]}
        actor_id = client.create_actor(fn_id, self.__name__, args, kwargs, placement, info)
        return ActorHandle(actor_id, info)

    def bind(self, *args, **kwargs):
        raise NotImplementedError("Ray DAG bind() is not supported; call .remote()")


def _method_options(fn) -> dict:
    return dict(getattr(fn, "__tasuki_method_options__", {}))


def method(num_returns: int = 1, **_ignored):
    """Decorate an actor method with options, as `@ray.method(num_returns=2)`."""
    num_returns = api._check_options({"num_returns": num_returns}, {"num_returns": 1})["num_returns"]

    def wrap(fn):
        fn.__tasuki_method_options__ = {"num_returns": num_returns}     # travels to the head: plain int
        return fn
    return wrap


class ActorHandle:
    """A handle to a live actor: `handle.method.remote(...)` returns ObjectRef(s). Picklable."""

    def __init__(self, actor_id: bytes, info: dict) -> None:
        self._actor_id = actor_id
        self._info = info

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("_"):
            raise AttributeError(name)
        methods = self._info["methods"]
        if name not in methods:
            raise AttributeError(f"actor {self._info['class_name']} has no method {name!r}")
        return ActorMethod(self, name, methods[name].get("num_returns", 1))

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._info))

    def __repr__(self) -> str:
        return f"Actor({self._info['class_name']}, {self._actor_id.hex()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int) -> None:
        self._handle, self._name, self._num_returns = handle, name, num_returns

    def options(self, num_returns: int | None = None, **_ignored) -> "ActorMethod":
        return ActorMethod(self._handle, self._name, num_returns or self._num_returns)

    def remote(self, *args, **kwargs):
        refs = api._get_client().call_actor(self._handle._actor_id, self._handle._info, self._name,
                                            args, kwargs, self._num_returns)
        return refs[0] if self._num_returns == 1 else refs

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor method {self._name} cannot be called directly: use .{self._name}.remote(...)")


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a named actor; ValueError when there is none."""
    checked = api._check_options({"name": name, "namespace": namespace}, {"name": None, "namespace": None})
    found = api._get_client().query("actor", {"name": checked["name"],
                                              "namespace": checked["namespace"] or api._namespace})
    if found is None:
        raise ValueError(f"no live actor named {name!r} in namespace {namespace or api._namespace!r}")
    return ActorHandle(found["actor_id"], found["info"])


def get_actor_handle(actor_id: bytes) -> ActorHandle:
    """The handle of a live actor by its id (get_runtime_context().current_actor)."""
    found = api._get_client().query("actor", {"actor_id": actor_id})
    if found is None:
        raise ValueError(f"no live actor with id {actor_id.hex()}")
    return ActorHandle(found["actor_id"], found["info"])


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process at once; its pending and future calls raise ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an ActorHandle, got {type(actor).__name__}")
    api._get_client().send_head((P.KILL_ACTOR, actor._actor_id, bool(no_restart)))


def died_error(info: dict, actor_id: bytes, cause: str) -> ActorDiedError:
    return ActorDiedError(f"actor {info.get('class_name', '?')} ({actor_id.hex()}) is dead: {cause}",
                          actor_id=actor_id.hex())

"""Actors: a class made remote. `Cls.remote()` starts a dedicated worker holding the instance.

Calls go straight from the caller to the actor's worker (its own socket), not through the head:
  caller: register the call's return ids with the head (batched, for refcounting) ──► head
  caller: CALL ──► actor worker (in submission order) ──► OBJECT back to the caller directly
  actor worker: ACTOR_RESULT ──► head (batched; the head keeps the value for other readers)
The caller learns where the actor lives once (ACTOR_LOCATE → ACTOR_INFO) and is told again when
the actor restarts or dies; calls made before that are queued in the caller's IO thread.

Lifetime: an actor lives as long as a handle to it does, as in Ray. Each ActorHandle holds an
ObjectRef to the actor id, so handles are counted exactly as refs are, off the per-call path:
each process tells the head when it starts and stops holding one (HOLD/RELEASE), and a handle
inside a task's arguments, a call's arguments or a stored object is pinned while those live.
When the head forgets the actor id's entry and the calls registered so far have their results,
it ends the actor gracefully (EXIT: `__ray_shutdown__`, `__del__` and atexit run there). Named
and detached actors are kept until killed; every actor but a detached one dies with the process
that created it (its driver, or the worker of the task or actor that created it).
"""
from __future__ import annotations

import functools
import inspect

from . import api, protocol as P, serialization
from .exceptions import ActorDiedError
from .labels import parse_selector
from .object_ref import ObjectRef
from .serialization import note_ref as _note_ref

_ACTOR_OPTIONS = {"num_cpus": None, "num_gpus": 0, "memory": 0, "resources": None, "label_selector": None,
                  "name": None, "namespace": None,
                  "get_if_exists": False, "lifetime": None, "max_concurrency": None, "max_restarts": 0,
                  "max_task_retries": 0}


class ActorClassInheritanceException(TypeError):
    """`class B(RemoteA)`: an actor class cannot be subclassed; subclass RemoteA.__ray_actor_class__."""


# methods every actor has (Ray's names): answered by the worker itself, see worker.BUILTIN_METHODS
BUILTIN_METHODS = ("__ray_ready__", "__ray_terminate__", "__ray_call__")


class ActorClass:
    """A class whose instances live in their own worker process: `Cls.remote(*args)` → ActorHandle.

    It still behaves like the class where that makes sense: class attributes, static and class
    methods are read from the class (`Cls.VERSION`, `Cls.from_config(...)` builds a local
    instance), `dir()` lists them, and `Cls.__ray_actor_class__` is the plain class to subclass.
    """

    def __init__(self, cls: type, options: dict, _export_cache: list | None = None) -> None:
        self._cls = cls
        self._options = {**_ACTOR_OPTIONS, **api._check_options(options, _ACTOR_OPTIONS)}
        if self._options["lifetime"] not in (None, "detached", "non_detached"):
            raise ValueError(f"lifetime must be None, 'detached' or 'non_detached', got {self._options['lifetime']!r}")
        if self._options["name"] == "":
            raise ValueError("Actor name cannot be an empty string: give the actor a name, or name=None for "
                             "an unnamed actor")
        if self._options["namespace"] == "":
            raise ValueError('"" is not a valid namespace: give a namespace\'s name, or namespace=None for '
                             "the job's namespace")
        if self._options["get_if_exists"] and not self._options["name"]:
            raise ValueError(f"get_if_exists=True needs the actor's name (got name={self._options['name']!r}): "
                             f"add name=... to the options of {cls.__name__}, as Ray requires")
        self._export_cache = _export_cache if _export_cache is not None else [None]
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__
        self._methods = {name: _method_options(fn) for name, fn in inspect.getmembers(cls, callable)
                         if not name.startswith("__") or name == "__call__"}
        for name, meta in self._methods.items():
            params = _method_params(cls, name)
            if params is not None:
                meta["params"] = params
            decorator = getattr(getattr(cls, name, None), "__ray_invocation_decorator__", None)
            if decorator is not None:           # travels pickled, as the class does: the head carries it unopened
                api._pickle_by_value_if_local(decorator)
                meta["decorator"] = serialization.dumps_function(decorator)
        self._is_async = any(inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
                             for _, fn in inspect.getmembers(cls, callable))

    @property
    def __ray_actor_class__(self) -> type:
        return self._cls

    def __getattr__(self, name: str):
        """Class attributes, static and class methods: those of the class. Dunder names are not
        looked up there (pickle asks this object for __setstate__ and the like)."""
        cls = self.__dict__.get("_cls")
        if cls is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(f"actor class {cls.__name__} has no attribute {name!r}") from None

    def __dir__(self):             # the class's names and ours, less bind: only there to say DAGs are not supported
        return sorted((set(object.__dir__(self)) | set(dir(self._cls))) - {"bind"})

    def __mro_entries__(self, bases):
        name = self._cls.__name__
        raise ActorClassInheritanceException(
            f"Inheriting from actor classes is not currently supported: {name} is an actor class "
            f"(made by tasuki.remote). Subclass the plain class instead, class Derived("
            f"{name}.__ray_actor_class__), and make the subclass an actor with tasuki.remote(Derived).")

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
            self._export_cache[0] = api._export(self._cls, "actor")
        fn_id, blob = self._export_cache[0]
        client.register_function(fn_id, blob)
        o = self._options
        placement = {"CPU": 1.0 if o["num_cpus"] is None else float(o["num_cpus"])}
        held = {"CPU": float(o["num_cpus"] or 0)}
        for shape in (placement, held):
            if o["num_gpus"]:
                shape["GPU"] = float(o["num_gpus"])
            if o["memory"]:                       # held for the actor's life, as in Ray
                shape["memory"] = float(o["memory"])
            if o["resources"]:
                shape.update(o["resources"])
        concurrency = o["max_concurrency"] or (1000 if self._is_async else 1)
        detached = {"detached": True, "non_detached": False}.get(o["lifetime"])    # None: the job's default
        info = {"class_name": self.__name__, "name": o["name"], "namespace": o["namespace"],
                "detached": detached, "max_restarts": o["max_restarts"],
                "max_task_retries": o["max_task_retries"], "max_concurrency": concurrency,
                "is_async": self._is_async, "methods": self._methods, "held": held,
                "get_if_exists": o["get_if_exists"],
                "label_selector": parse_selector(o["label_selector"])}
        actor_id, ours = client.create_actor(fn_id, self.__name__, args, kwargs, placement, info)
        return ActorHandle(actor_id, info, _registered=ours)

    def _remote(self, args=None, kwargs=None, **options) -> "ActorHandle":
        """Ray's older form of .options(**options).remote(*args, **kwargs)."""
        target = self.options(**options) if options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def bind(self, *args, **kwargs):
        raise NotImplementedError("Ray DAG bind() is not supported; call .remote()")


_METHOD_OPTIONS = {"num_returns": 1, "max_task_retries": None, "retry_exceptions": None}


def _method_params(cls: type, name: str) -> tuple | None:
    """A method's parameters (self left out) as plain tuples (name, kind, has a default) that travel
    with the handle's info, so every holder of a handle checks calls at .remote() as Ray does; None
    when there is nothing to check (no signature, or *args and **kwargs)."""
    try:
        attr = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    bound = not isinstance(attr, staticmethod)          # self, or cls of a classmethod, is not passed
    fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
    if not inspect.isfunction(fn):
        return None
    check = api._call_check(fn, name, skip_self=bound)
    if check is None:
        return None
    return tuple((p.name, int(p.kind), p.default is not p.empty) for p in check.signature.parameters.values())


def _params_check(params: tuple, name: str) -> "api._CallCheck":
    signature = inspect.Signature([inspect.Parameter(n, inspect._ParameterKind(k),
                                                     default=_DEFAULT if d else inspect.Parameter.empty)
                                   for n, k, d in params])
    return api._CallCheck(signature, name)


class _Default:
    def __repr__(self) -> str:
        return "..."


_DEFAULT = _Default()


def _method_options(fn) -> dict:
    """What callers need of a method's options (they travel to the head: plain ints only)."""
    options = getattr(fn, "__tasuki_method_options__", {})
    return {k: v for k, v in options.items() if k in ("num_returns", "max_task_retries")}


def method(*args, **options):
    """Decorate an actor method with options, as `@ray.method(num_returns=2)`, `@ray.method(
    max_task_retries=3, retry_exceptions=[ConnectionError])`. The retry options apply to exceptions
    the method raises (the actor retries it in place) and, with max_task_retries, to the actor's
    death (the call is sent again after the restart)."""
    if args:
        raise TypeError("method() takes only keyword options: @tasuki.method(num_returns=2)")
    checked = _check_method_options(options)

    def wrap(fn):
        fn.__tasuki_method_options__ = checked      # read by callers (num_returns) and by the actor
        return fn
    return wrap


def _check_method_options(options: dict) -> dict:
    checked = api._check_options({k: v for k, v in options.items() if v is not None}, _METHOD_OPTIONS)
    if isinstance(checked.get("retry_exceptions"), tuple):      # the actor loads it: classes are fine there
        checked["retry_exceptions"] = checked["retry_exceptions"] or False
    return checked


class ActorHandle:
    """A handle to a live actor: `handle.method.remote(...)` returns ObjectRef(s). Picklable: a copy
    sent to a task or another actor keeps the actor alive as this one does (see the module docstring)."""

    def __init__(self, actor_id: bytes, info: dict, _registered: bool = False) -> None:
        self._actor_id = actor_id
        self._info = info
        self._ref = ObjectRef(actor_id, _registered)      # counts this handle
        self._checks: dict = {}                            # method name -> its _CallCheck (or None)

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("_") and name not in BUILTIN_METHODS:
            raise AttributeError(name)
        methods = self._info["methods"]
        if name not in methods and name not in BUILTIN_METHODS:
            raise AttributeError(f"actor {self._info['class_name']} has no method {name!r}")
        meta = methods.get(name, {})
        checks = self._checks
        check = checks.get(name, False)
        if check is False:
            params = meta.get("params")
            check = checks[name] = None if params is None else \
                _params_check(params, f"{self._info['class_name']}.{name}")
        if "decorator" in meta:
            return ActorMethod(self, name, meta.get("num_returns", 1), _check=check,
                               _decorator=_load_decorator(meta["decorator"]))
        return ActorMethod(self, name, meta.get("num_returns", 1), _check=check)

    def __dir__(self):
        return sorted({*self._info["methods"], "__init__", "__ray_ready__", "__ray_terminate__"})

    def __reduce__(self):
        _note_ref(self._actor_id)      # pinned while the message or object carrying this copy lives
        return (ActorHandle, (self._actor_id, self._info))

    def __repr__(self) -> str:
        return f"Actor({self._info['class_name']}, {self._actor_id.hex()})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)


class ActorMethod:
    """`handle.method`: `.remote(...)` calls it; `.options(num_returns=..., max_task_retries=...,
    retry_exceptions=...)` for one call or more."""

    def __init__(self, handle: ActorHandle, name: str, num_returns: int, retry: tuple | None = None,
                 _check=None, _decorator=None) -> None:
        self._handle, self._name, self._num_returns = handle, name, num_returns
        self._check = _check       # the method's signature check (api._CallCheck), or None
        self._retry = retry        # (max_task_retries, retry_exceptions) set by options(), else None
        self._decorator = _decorator   # the method's __ray_invocation_decorator__, or None

    def options(self, **options) -> "ActorMethod":
        checked = _check_method_options({k: v for k, v in options.items() if k != "name"})
        num_returns = checked.get("num_returns", self._num_returns)
        retry = self._retry
        if "max_task_retries" in checked or "retry_exceptions" in checked:
            old = retry or (None, None)
            exceptions = checked.get("retry_exceptions", old[1])
            if isinstance(exceptions, tuple):          # as tasks carry them: cloudpickled once, opaque
                exceptions = api._retry_blob(exceptions)
            retry = (checked.get("max_task_retries", old[0]), exceptions)
        return ActorMethod(self._handle, self._name, num_returns, retry, self._check, self._decorator)

    def remote(self, *args, **kwargs):
        if self._decorator is not None:      # Ray's hook: it may change the arguments and what .remote() returns
            return self._decorator(self._invoke)(args, kwargs)
        if self._check is not None:
            self._check(args, kwargs)
        if type(self._num_returns) is str:
            raise api.generator_refusal(f"{self._handle._info['class_name']}.{self._name}", self._num_returns)
        handle = self._handle
        if api._stale_ids and handle._actor_id in api._stale_ids:      # not a new cluster for an old handle
            raise died_error(handle._info, handle._actor_id, "it belonged to a tasuki session that was shut "
                             "down (tasuki.shutdown()), and went with it; create it again after init()")
        # num_returns=0 still makes one result (api._as_returned drops it): a call is tracked by its first id
        refs = api._get_client().call_actor(handle._actor_id, handle._info, self._name, args, kwargs,
                                            self._num_returns or 1, self._retry)
        return api._as_returned(refs, self._num_returns)

    def _invoke(self, args, kwargs):
        """The call the invocation decorator wraps: the arguments it passes on are checked against the
        method as the class has it (decorated, as Ray checks them), then sent."""
        return ActorMethod(self._handle, self._name, self._num_returns, self._retry, self._check).remote(
            *args, **kwargs)

    def _remote(self, args=None, kwargs=None, **options):
        """Ray's older form of .options(**options).remote(*args, **kwargs)."""
        target = self.options(**options) if options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor method {self._name} cannot be called directly: use .{self._name}.remote(...)")


@functools.lru_cache(maxsize=64)
def _load_decorator(blob: bytes):
    """A method's `__ray_invocation_decorator__(invocation)`: Ray's hook that wraps the call of
    `.remote()`, set on the method by a decorator of its own."""
    return serialization.loads(blob)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of a named actor; ValueError when there is none."""
    checked = api._check_options({"name": name, "namespace": namespace}, {"name": None, "namespace": None})
    client = api._get_client()
    found = client.query("actor", {"name": checked["name"], "namespace": checked["namespace"]})
    if found is None:
        namespace = checked["namespace"] or api.get_runtime_context().namespace
        raise ValueError(f"Failed to look up actor with name {name!r} in namespace {namespace!r}: no live actor "
                         f"has that name there. It may have died or been killed, or live in another namespace "
                         f"(get_actor(name, namespace=...); list_named_actors(all_namespaces=True) lists them)")
    return ActorHandle(found["actor_id"], found["info"])


def get_actor_handle(actor_id: bytes) -> ActorHandle:
    """The handle of a live actor by its id (get_runtime_context().current_actor)."""
    found = api._get_client().query("actor", {"actor_id": actor_id})
    if found is None:
        raise ValueError(f"no live actor with id {actor_id.hex()}")
    return ActorHandle(found["actor_id"], found["info"])


def exit_actor() -> None:
    """End the actor whose method calls this, gracefully: the call fails with ActorDiedError, calls
    still queued fail the same way, the actor is not restarted, and its atexit handlers run."""
    worker = api._worker
    if worker is None or getattr(worker, "actor_id", None) is None:
        raise TypeError("exit_actor API is called on a non-actor worker: exit_actor() ends the actor whose "
                        "method calls it. To end an actor from a driver or a task, use tasuki.kill(handle), "
                        "or drop every handle to it.")
    worker.request_exit("it called exit_actor()")
    raise SystemExit(0)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor's process at once; its pending and future calls raise ActorDiedError. With
    no_restart (the default) its name is free again at once."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an ActorHandle, got {type(actor).__name__}")
    api._get_client().send_head(P.kill_actor(actor._actor_id, bool(no_restart)))


def died_error(info: dict, actor_id: bytes, cause: str) -> ActorDiedError:
    return ActorDiedError(f"actor {info.get('class_name', '?')} ({actor_id.hex()}) is dead: {cause}",
                          actor_id=actor_id.hex())

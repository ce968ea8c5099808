"""The public API: init, shutdown, remote, get, put, wait, cancel, and the cluster queries.

Names and semantics follow Ray Core, so `import tasuki as ray` runs Ray programs unchanged.
Calling `remote()`/`get()`/`put()` before `init()` starts an embedded cluster, as Ray does.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import inspect
import os
import sys
import sysconfig
import threading
import time
from typing import Any, Callable

import cloudpickle

from . import config, serialization
from .client import Client, pick_local_node
from .exceptions import ClusterError, OptionError, SerializationError
from .labels import parse_selector
from .object_ref import ObjectRef
from .scheduler import shape_of

_lock = threading.RLock()
_client: Client | None = None
_cluster = None           # launcher.EmbeddedCluster when init() started one
_worker = None            # worker.Worker inside a worker process
_job_id = ""
_namespace = "default"
_stale_ids: set = set()    # ids of refs alive when shutdown() ran: their values went with that session
_RAY_INIT_KWARGS_IGNORED = {"include_dashboard", "dashboard_host", "dashboard_port", "logging_level",
                            "configure_logging", "runtime_env", "_temp_dir", "local_mode",
                            "num_redis_shards", "_system_config", "logging_format", "_node_ip_address"}


class _UnknownInitArgument(TypeError, RuntimeError):
    """A misspelt init() argument: a TypeError as Python's, and the RuntimeError Ray's init raises."""


class JobConfig:
    """Settings of the job a driver's init() starts (Ray's ray.job_config.JobConfig):
    `tasuki.init(job_config=tasuki.JobConfig(default_actor_lifetime="detached"))`.

    default_actor_lifetime: the lifetime of actors created without a `lifetime` option by this job's
    driver, tasks and actors: "non_detached" (they end with their creator) or "detached" (they live
    until killed). ray_namespace: the job's namespace, as init(namespace=...). metadata: free-form
    strings kept with the job."""

    def __init__(self, default_actor_lifetime: str = "non_detached", ray_namespace: str | None = None,
                 metadata: dict | None = None) -> None:
        if default_actor_lifetime not in ("detached", "non_detached"):
            raise ValueError(f"default_actor_lifetime must be 'detached' or 'non_detached', "
                             f"got {default_actor_lifetime!r}")
        if ray_namespace is not None and not isinstance(ray_namespace, str):
            raise TypeError(f"ray_namespace must be a string, got {_type_name(ray_namespace)}")
        self.default_actor_lifetime = default_actor_lifetime
        self.ray_namespace = ray_namespace
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return (f"JobConfig(default_actor_lifetime={self.default_actor_lifetime!r}, "
                f"ray_namespace={self.ray_namespace!r}, metadata={self.metadata!r})")


class Context(dict):
    """What init() returns, as Ray's RayContext: `.address_info` (also readable as this dict, which
    is what init() returned before), and a context manager: `with tasuki.init(): ...` shuts down
    at the end of the block."""

    def __init__(self, info: dict) -> None:
        super().__init__(info)
        self.address_info = info
        self.dashboard_url = None
        self.python_version = "%d.%d.%d" % sys.version_info[:3]
        from . import __version__
        self.tasuki_version = __version__

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def init(address: str | None = None, *, num_cpus: float | None = None, num_gpus: int | None = None,
         resources: dict | None = None, object_store_memory: int | None = None, token: str | None = None,
         ignore_reinit_error: bool = False, namespace: str | None = None, log_to_driver: bool = True,
         job_config: JobConfig | None = None, **kwargs) -> Context:
    """Connect this process to a cluster, or start an embedded one.

    address: None or "local" starts a head and one node on this machine (None uses TASUKI_ADDRESS
    when set); "auto" joins the cluster named by TASUKI_ADDRESS or started here by `tasuki start`;
    "HOST:PORT" or "tasuki://HOST:PORT" joins that head (token from `token`, TASUKI_TOKEN, or the
    cluster file when it is the cluster started on this machine); the "ipc://..." address another
    driver's init() reported joins that embedded cluster. log_to_driver=False: the tasks' output
    is not printed here. job_config: a JobConfig (the default lifetime of this job's actors, its
    namespace). Returns a Context (Ray's RayContext): `.address_info`, `with init(): ...`.
    """
    global _client, _cluster, _job_id, _namespace
    unknown = set(kwargs) - _RAY_INIT_KWARGS_IGNORED
    if unknown:
        raise _UnknownInitArgument(f"init() got unexpected keyword arguments {sorted(unknown)}; its arguments are "
                                   f"{sorted(_INIT_ARGUMENTS | _RAY_INIT_KWARGS_IGNORED)}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a string, got {_type_name(namespace)}")
    if job_config is not None and not isinstance(job_config, JobConfig):
        raise TypeError(f"job_config must be a tasuki.JobConfig, got {_type_name(job_config)}")
    job_config = job_config or JobConfig()
    namespace = namespace or job_config.ray_namespace
    with _lock:
        if _client is not None:
            if ignore_reinit_error:
                return _context_info()
            raise RuntimeError("tasuki.init() was already called in this process; call tasuki.shutdown() "
                               "first, or pass ignore_reinit_error=True")
        if address is None:
            address = config.env("ADDRESS") or "local"
        started = time.time()
        if address == "local":
            from .launcher import EmbeddedCluster
            resources = config.parse_resources(resources)
            _cluster = EmbeddedCluster(num_cpus, num_gpus, resources, object_store_memory)
            head_address, token = _cluster.address, _cluster.token
        else:
            if any(v is not None for v in (num_cpus, num_gpus, resources, object_store_memory)):
                raise ValueError("num_cpus, num_gpus, resources and object_store_memory describe a new local "
                                 "cluster; when connecting to an existing one set them on its nodes "
                                 "(`tasuki start --num-cpus ...`) instead")
            head_address, token = _resolve_address(address, token)
        client = Client(head_address, token, "driver", info={
            "namespace": namespace or "default", "default_actor_lifetime": job_config.default_actor_lifetime,
            "metadata": job_config.metadata, "submission_id": config.env("JOB_ID")})
        try:
            welcome = _wait_welcome(client)
        except BaseException:
            client.close()
            if _cluster is not None:
                _cluster.stop()
                _cluster = None
            raise
        client.log_to_driver = bool(log_to_driver)
        client.choose_route(welcome["nodes"])     # through the head when the nodes are out of reach
        serialization.code_paths[:] = _driver_code_paths()
        _client = client
        _job_id = welcome["job_id"]
        _namespace = namespace or "default"
        client.activate()
        client.started = started
        atexit.register(shutdown)
        return _context_info()


_INIT_ARGUMENTS = set(inspect.signature(init).parameters) - {"kwargs"}


def _driver_code_paths() -> list[str]:
    """The directories a worker needs on sys.path to import what this driver imports from beside
    it, as Ray's: the script's directory (when Python put it on sys.path: not under `python -m`)
    and the working directory."""
    paths = []
    script = sys.argv[0] if sys.argv else ""
    if script and script != "-c" and os.path.isfile(script):
        directory = os.path.dirname(os.path.realpath(script))
        if directory in {os.path.realpath(p or os.curdir) for p in sys.path}:
            paths.append(directory)
    cwd = os.path.abspath(os.curdir)
    if cwd not in paths:
        paths.append(cwd)
    return paths


def _wait_welcome(client: Client) -> dict:
    if _cluster is None:
        return client.wait_welcome(timeout=config.env_float("CONNECT_TIMEOUT", 15.0))
    deadline = time.time() + 60
    while True:
        try:
            welcome = client.wait_welcome(timeout=0.2)
            break
        except ClusterError:
            _cluster.check()
            if time.time() > deadline:
                raise
    # the embedded node agent registers on its own: wait for it, so that nodes() and
    # cluster_resources() right after init() show it
    while not any(n["state"] != "dead" for n in client.nodes()):
        _cluster.check()
        if time.time() > deadline:
            raise ClusterError("the embedded tasuki node agent did not register with the head within 60 s")
        time.sleep(0.01)
    return welcome


def _resolve_address(address: str, token: str | None) -> tuple[str, str]:
    if address.startswith("ipc://"):       # an embedded cluster on this machine (another driver's init())
        token = token or config.env("TOKEN") or config.read_private_file(address[len("ipc://"):] + ".token")
        if token is None:
            raise ClusterError(f"no token for the cluster at {address}: it is not running any more, or it is "
                               f"not an embedded cluster started by this user; pass init(token=...)")
        return address, token.strip()
    cluster = config.read_cluster_file()
    if address == "auto":
        address = config.env("ADDRESS") or (cluster or {}).get("address")
        if not address:
            raise ClusterError("init(address='auto') found no cluster: TASUKI_ADDRESS is not set and no "
                               "`tasuki start --head` ran on this machine. Start one, or call init() with "
                               "no address for a local cluster.")
    host_port = address.split("://", 1)[-1]
    if ":" not in host_port:
        raise ValueError(f"address {address!r} must look like HOST:PORT, for example 'head.ns.svc:{config.DEFAULT_PORT}'")
    token = token or config.env("TOKEN")
    if token is None and cluster and cluster.get("address", "").split("://")[-1] == host_port:
        token = cluster.get("token")
    if token is None:
        raise ClusterError(f"no token for the cluster at {host_port}: pass init(token=...) or set TASUKI_TOKEN "
                           f"(`tasuki start --head` prints it)")
    return f"tcp://{host_port}", token


def shutdown() -> None:
    """Disconnect; stop the embedded cluster if init() started one. Safe to call twice."""
    global _client, _cluster
    with _lock:
        if _worker is not None:
            return
        client, cluster = _client, _cluster
        _client = _cluster = None
        if client is not None:
            with client.ref_lock:
                _stale_ids.update(client.refcounts)
            client.close()
        if cluster is not None:
            cluster.stop()


def is_initialized() -> bool:
    return _client is not None


def _get_client() -> Client:
    client = _client
    if client is None:
        init()
        client = _client
    return client


def _attach_worker(client: Client, worker) -> None:
    global _client, _worker
    _client, _worker = client, worker


def _context_info() -> Context:
    node = _client.node or pick_local_node(_client.nodes()) or {}     # the node this driver shares a store with
    ip = "127.0.0.1" if _client.head_address.startswith("ipc://") else _client.head_address.split("://")[-1].rsplit(":", 1)[0]
    return Context({"address": _client.head_address, "job_id": _job_id, "node_id": node.get("node_id"),
                    "node_ip_address": ip, "raylet_ip_address": ip, "gcs_address": _client.head_address,
                    "object_store_address": node.get("store_path"), "session_dir": config.session_dir(),
                    "webui_url": None, "dashboard_url": None, "namespace": _namespace})


def _check_fresh(ids) -> None:
    """Refs made before shutdown() point into a cluster that is gone: say so, not wait forever."""
    for oid in ids:
        if oid in _stale_ids:
            from .exceptions import ObjectLostError
            raise ObjectLostError(f"object {oid.hex()} belonged to a tasuki session that was shut down "
                                  f"(tasuki.shutdown()): its value went with it. get() values before shutdown(), "
                                  f"or put() them again after init().")


# --- remote functions ---------------------------------------------------------------------------
_OPTIONS = {"num_cpus": 1, "num_gpus": 0, "memory": 0, "resources": None, "max_retries": 3, "retry_exceptions": False,
            "num_returns": 1, "name": None, "max_calls": 0, "label_selector": None}
_RAY_OPTIONS_IGNORED = {"scheduling_strategy", "runtime_env", "placement_group",
                        "placement_group_bundle_index", "_metadata", "accelerator_type", "enable_task_events"}
# Ray options of features tasuki does not have: accepted at their default value (code that spells
# the defaults out keeps working), refused otherwise, since ignoring them would change what runs.
_RAY_OPTIONS_AT_DEFAULT = {"concurrency_groups": (None,), "max_pending_calls": (-1,), "object_store_memory": (None,),
                           "placement_group_capture_child_tasks": (None, False)}
_NUMBER, _INT, _STR = (int, float), (int,), (str,)
_OPTION_TYPES = {       # what Ray accepts for each option: another type is a TypeError, as in Ray
    "num_cpus": _NUMBER, "num_gpus": _NUMBER, "memory": _NUMBER, "resources": (dict,), "num_returns": (int, str),
    "max_retries": _INT,
    "max_calls": _INT, "max_restarts": _INT, "max_task_retries": _INT, "max_concurrency": _INT, "name": _STR, "namespace": _STR,
    "lifetime": _STR, "get_if_exists": (bool,), "retry_exceptions": (bool, list, tuple),
}


# Ray's generator tasks: the option is accepted where a task or method is defined, so a module that
# defines one still imports and its other functions work; calling it is refused (generator_refusal).
_GENERATOR_RETURNS = ("streaming", "dynamic")


def _as_returned(refs: list, num_returns: int):
    """What .remote() returns for a task or actor call's refs: one ref, a list of them, or None for
    num_returns=0 (as Ray; its one hidden result, which carries the outcome, is dropped)."""
    if num_returns == 0:
        return None
    return refs[0] if num_returns == 1 else refs


def generator_refusal(name: str, num_returns: str) -> NotImplementedError:
    """The error for calling a task or actor method declared num_returns='streaming' or 'dynamic'."""
    return NotImplementedError(f"{name} is declared num_returns={num_returns!r}, a Ray generator task, which "
                               f"tasuki does not run: return a list (num_returns=N), or send the items through "
                               f"a tasuki.util.Queue")


def _check_options(options: dict, allowed: dict) -> dict:
    """The options checked, as plain values: what travels to the head must be builtin types only
    (str, int, float, bool), since the head cannot load the user's classes, not even a subclass
    of str. Exception classes in retry_exceptions stay here; `_retry_blob` makes them opaque.
    As in Ray: an unknown option or a bad value is a ValueError (an unknown one is a TypeError too,
    see OptionError), a value of the wrong type a TypeError; None stands for the default."""
    unknown = set(options) - set(allowed) - _RAY_OPTIONS_IGNORED - set(_RAY_OPTIONS_AT_DEFAULT)
    if unknown:
        raise OptionError(f"unknown option(s) {sorted(unknown)}; valid options are {sorted(allowed)}")
    for key, defaults in _RAY_OPTIONS_AT_DEFAULT.items():
        if key in options and not any(options[key] is d or options[key] == d for d in defaults):
            raise ValueError(f"{key}={options[key]!r}: tasuki does not support {key} (only its default "
                             f"{defaults[0]!r} is accepted); remove it")
    for key, value in options.items():
        types = _OPTION_TYPES.get(key)
        if types is not None and value is not None and (not isinstance(value, types) or
                                                         (bool not in types and type(value) is bool)):
            raise TypeError(f"option {key} must be {' or '.join(t.__name__ for t in types)}, got {_type_name(value)}")
    out = {k: v for k, v in options.items() if k not in _RAY_OPTIONS_IGNORED and k not in _RAY_OPTIONS_AT_DEFAULT}
    for key in ("num_cpus", "num_gpus", "memory"):
        value = options.get(key)
        if value is not None and value < 0:
            raise ValueError(f"{key} must be a non-negative number{' of bytes' if key == 'memory' else ''}, "
                             f"got {value!r}")
    resources = options.get("resources")
    if resources is not None:
        out["resources"] = resources = config.parse_resources(resources)
        for reserved, option in (("CPU", "num_cpus"), ("GPU", "num_gpus"), ("memory", "memory")):
            if reserved in resources:
                raise ValueError(f"use {option}=... instead of resources={{'{reserved}': ...}}")
    if options.get("label_selector") is not None:
        parse_selector(options["label_selector"])        # checked at definition; the tuple is made by the caller
    if options.get("num_returns") in _GENERATOR_RETURNS:
        out["num_returns"] = options["num_returns"]      # accepted here, refused when called (generator_refusal)
    elif isinstance(options.get("num_returns"), str):
        raise ValueError(f"num_returns must be an integer of 0 or more (or Ray's 'streaming' or 'dynamic', which "
                         f"tasuki does not run), got {options['num_returns']!r}")
    for key, low, meaning in (("num_returns", 0, "0 (no result) or more"),
                              ("max_retries", -1, "-1 (retry forever) or more"),
                              ("max_restarts", -1, "-1 (restart forever) or more"),
                              ("max_task_retries", -1, "-1 (retry forever) or more"),
                              ("max_calls", 0, "0 (no limit) or more")):
        if options.get(key) is not None and options[key] not in _GENERATOR_RETURNS:
            value = options[key]
            if value < low:
                raise ValueError(f"{key} must be an integer of {meaning}, got {value!r}")
            out[key] = int(value)
    concurrency = options.get("max_concurrency")
    if concurrency is not None:
        if concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer of 1 or more, got {concurrency!r}")
        out["max_concurrency"] = int(concurrency)
    for key in ("name", "namespace"):
        if options.get(key) is not None:
            out[key] = str(options[key])
    retry = options.get("retry_exceptions")
    if retry is not None and not isinstance(retry, bool):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry):
            raise ValueError(f"retry_exceptions must be True, False or a list of exception types, got {retry!r}")
        out["retry_exceptions"] = tuple(retry)
    return {k: allowed.get(k) if v is None else v for k, v in out.items()}      # None: the default, as in Ray


@functools.lru_cache(maxsize=256)
def _retry_blob(types: tuple) -> bytes:
    """The exception types of retry_exceptions, cloudpickled: the head carries the blob to the
    worker untouched (it could not load a class from the user's script) and the worker matches it."""
    for t in types:
        _pickle_by_value_if_local(t)
    return serialization.dumps_inline(types)


def _pickle_by_value_if_local(obj) -> None:
    """Functions from the user's own modules (not installed packages) travel by value, so workers
    need not import them: scripts, notebooks and test modules just work."""
    if isinstance(obj, functools.partial):       # a partial's module is functools: look at its function
        obj = obj.func
    name = getattr(obj, "__module__", None)
    module = sys.modules.get(name) if name else None
    path = getattr(module, "__file__", None)
    if module is None or name == "__main__" or path is None or name.split(".")[0] == "tasuki":
        return
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    if not any(os.path.abspath(path).startswith(os.path.abspath(p) + os.sep) for p in installed):
        try:
            cloudpickle.register_pickle_by_value(module)
        except (ValueError, TypeError):
            pass


class _OversizedError(ValueError):
    """A remote function or actor class too large to send (see _export)."""


def _export(obj, kind: str = "remote function") -> tuple[bytes, bytes]:
    """obj pickled once, and its id. Over FUNCTION_SIZE_ERROR_THRESHOLD bytes (Ray's limit and
    variable, 10**8 by default) it is ValueError, as in Ray: such a function or class has almost
    always captured a large object by mistake, which would travel again to every worker."""
    _pickle_by_value_if_local(obj)
    blob = serialization.dumps_function(obj)
    limit = int(os.environ.get("FUNCTION_SIZE_ERROR_THRESHOLD", 10**8))
    if len(blob) > limit:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        if kind != "actor":
            name = f"{getattr(obj, '__module__', None) or '?'}.{name}"
        raise _OversizedError(
            f"The {kind} {name} is too large ({len(blob) // 2**20} MiB > FUNCTION_SIZE_ERROR_THRESHOLD="
            f"{limit // 2**20} MiB). Check that its definition is not capturing a large array or other "
            f"object from the enclosing scope: pass it as an argument, or tasuki.put() it once and pass the ref.")
    return hashlib.sha1(blob).digest()[:16], blob


class RemoteFunction:
    """A function that runs as a task: `f.remote(*args)` returns ObjectRef(s) at once."""

    def __init__(self, function: Callable, options: dict, _export_cache: list | None = None,
                 _check: "_CallCheck | None | bool" = False) -> None:
        self._function = function
        self._options = {**_OPTIONS, **_check_options(options, _OPTIONS)}
        self._export_cache = _export_cache if _export_cache is not None else [None]
        o = self._options
        self._shape = shape_of({"CPU": float(o["num_cpus"] or 0), "GPU": float(o["num_gpus"] or 0),
                                "memory": float(o["memory"] or 0), **(o["resources"] or {})})   # once, not per task
        self._selector = parse_selector(o["label_selector"])     # canonical, hashable: the queue's key
        retry = o["retry_exceptions"]                           # as the head carries it: no classes
        self._retry = _retry_blob(retry) if isinstance(retry, tuple) and retry else bool(retry)
        self.__name__ = _callable_name(function)
        self.__doc__ = function.__doc__
        self.__wrapped__ = function
        self._check = _call_check(function, self.__name__) if _check is False else _check   # once per function

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self.__name__} cannot be called directly: use "
                        f"{self.__name__}.remote(...), or {self.__name__}.__wrapped__(...) to run it here")

    def options(self, **options) -> "RemoteFunction":
        """A copy of this remote function with some options changed (for one call or more)."""
        return RemoteFunction(self._function, {**self._options, **options}, self._export_cache, self._check)

    def remote(self, *args, **kwargs):
        if self._check is not None:
            self._check(args, kwargs)
        client = _get_client()
        cache = self._export_cache
        if cache[0] is None:
            cache[0] = _export(self._function)
        fn_id, blob = cache[0]
        client.register_function(fn_id, blob)
        o = self._options
        if type(o["num_returns"]) is str:
            raise generator_refusal(self.__name__, o["num_returns"])
        retries = o["max_retries"]
        # num_returns=0 still makes one result (_as_returned drops it): a task's outcome travels in it
        refs = client.submit(fn_id, o["name"] or self.__name__, args, kwargs, self._shape, o["num_returns"] or 1,
                             10**9 if retries == -1 else retries, self._retry, o["max_calls"], self._selector)
        return _as_returned(refs, o["num_returns"])

    def _remote(self, args=None, kwargs=None, **options):
        """Ray's older form of .options(**options).remote(*args, **kwargs)."""
        target = self.options(**options) if options else self
        return target.remote(*(args or ()), **(kwargs or {}))


class _CallCheck:
    """Checks a call's arguments against the function's signature at .remote(), as Ray does, so a
    wrong call is a TypeError in the caller rather than a task error later. Plain positional calls
    of a function without keyword-only parameters or **kwargs are checked by counting (~0.1 µs);
    anything else by Signature.bind (~2 µs)."""
    __slots__ = ("signature", "name", "least", "most")

    def __init__(self, signature: inspect.Signature, name: str) -> None:
        self.signature, self.name = signature, name
        params = [p for p in signature.parameters.values() if p.kind != p.VAR_POSITIONAL]
        self.least = self.most = -1                # -1: no counting shortcut
        if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            self.least = sum(p.default is p.empty for p in params)
            self.most = len(params) if len(params) == len(signature.parameters) else sys.maxsize

    def __call__(self, args: tuple, kwargs: dict) -> None:
        if not kwargs and self.least <= len(args) <= self.most:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as e:
            shown = ", ".join([*(_type_name(a)[:40] for a in args), *(f"{k}=..." for k in kwargs)])[:200]
            raise TypeError(f"{self.name}.remote({shown}) does not match {self.name}{self.signature}: {e}") from None


def _call_check(fn, name: str, skip_self: bool = False) -> _CallCheck | None:
    """The check of calls of `fn` (None when it has no signature to check against, or takes anything)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):        # a builtin without one: the worker's call says what is wrong
        return None
    params = list(signature.parameters.values())
    if skip_self and params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD):
        signature = signature.replace(parameters=params[1:])      # def m(*args) takes self in args
    kinds = {p.kind for p in signature.parameters.values()}
    if {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds:
        return None
    return _CallCheck(signature, name)


def remote(*args, **options):
    """Make a function a task (or a class an actor): `@remote`, `@remote(num_cpus=2)` or `remote(f)`."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not options:            # `@remote()`: Ray refuses it too, as a likely slip
        raise TypeError("remote() takes a function or class, or only keyword options: write @remote without "
                        "parentheses, or @remote(num_cpus=1) with options")
    return lambda target: _make_remote(target, options)


def _remote_call(fn: Callable, options: dict) -> RemoteFunction:
    """A remote function whose task calls `fn`, whatever kind of callable it is: a class is called
    in the task (`int`, a dataclass), where remote() would make it an actor; builtins, partials,
    bound methods and callable objects too. For the drop-ins (Executor), which run "call this" as a
    task. `fn` is pickled here, once: one that cannot be pickled fails now, naming it."""
    task = RemoteFunction(fn, options, _check=None)     # the standard library raises a bad call's error at result()
    try:
        task._export_cache[0] = _export(fn)
    except _OversizedError:
        raise
    except Exception as e:
        raise SerializationError(
            f"{task.__name__} cannot be sent to a worker: {_type_name(fn)} is not picklable "
            f"({type(e).__name__}: {e}). A callable holding a lock, an open file, a socket or a database "
            f"connection cannot travel between processes: create those inside the call instead.") from e
    return task


def _callable_name(fn: Callable) -> str:
    """A task's name for any callable: its own, a partial's function's, or a callable object's type's."""
    if isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__name__", None) or type(fn).__name__


def _make_remote(target, options: dict):
    if isinstance(target, type):
        from .actor import ActorClass
        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"remote() needs a function or a class, got {target!r}")
    if inspect.iscoroutinefunction(target):      # its task would return a coroutine nobody runs (Ray refuses it too)
        raise ValueError(f"'async def' should not be used for remote tasks: {_callable_name(target)} is a "
                         f"coroutine function. Wrap it in a plain function that runs it, "
                         f"`def f(*args): return asyncio.run(async_f(*args))`, or make it a method of an actor "
                         f"class (async actor methods run on the actor's event loop)")
    return RemoteFunction(target, options)


# --- objects -------------------------------------------------------------------------------------
def put(value: Any) -> ObjectRef:
    """Store `value` in the cluster once and return a ref to it (share big data between tasks)."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed: pass the ref itself where you need it")
    return _get_client().put(value)


def get(refs, *, timeout: float | None = None, progress: bool = False):
    """The value of an ObjectRef, or the values of a list of them, waiting until they are ready.

    A task's exception is re-raised here (as TaskError and its original type); GetTimeoutError
    when `timeout` seconds pass first. `progress=True` draws a progress bar on a terminal.
    """
    single = isinstance(refs, ObjectRef)
    items = [refs] if single else refs
    if not isinstance(items, (list, tuple)) or not all(isinstance(r, ObjectRef) for r in items):
        raise TypeError(f"get() takes an ObjectRef or a list of ObjectRefs, got {_type_name(refs)}")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout}")
    ids = [r.id for r in items]
    if _stale_ids:
        _check_fresh(ids)
    client = _get_client()
    bar = None
    if progress:
        from .progress import ProgressBar
        bar = ProgressBar(len(ids), "get")
        for oid in ids:
            client.when_ready(oid, bar.update)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        entries = client.get_objects(ids, timeout, _on_block if _worker is not None else None)
    finally:
        if bar is not None:
            bar.close(complete=all(oid in client.objects for oid in ids))
    if deadline is None:
        values = [client.value(oid, kind, data) for oid, (kind, data) in zip(ids, entries)]
    else:       # fetches from other nodes get what is left of the timeout
        values = [client.value(oid, kind, data, deadline - time.monotonic()) for oid, (kind, data) in zip(ids, entries)]
    return values[0] if single else values


def _on_block(blocked: bool) -> None:
    _worker.set_blocked(blocked)


def wait(refs: list, *, num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True):
    """Wait until `num_returns` of `refs` are ready or `timeout` passes: returns (ready, not_ready)."""
    if isinstance(refs, ObjectRef) or not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError(f"wait() takes a list of ObjectRefs, got {_type_name(refs)}")
    refs = list(refs)
    if not refs:
        return [], []                        # as Ray, whatever num_returns
    ids = [r.id for r in refs]               # sets of ids, not of refs: no Python __hash__ per ref
    if _stale_ids:
        _check_fresh(ids)
    client = _get_client()
    if len(set(ids)) != len(ids):
        raise ValueError("wait() got the same ObjectRef twice")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns must be between 0 and len(refs)={len(refs)}, got {num_returns}")
    deadline = None if timeout is None else time.time() + timeout
    while True:
        flags = client.ready(ids)
        if sum(flags) >= num_returns:
            break
        remaining = None if deadline is None else deadline - time.time()
        if remaining is not None and remaining <= 0:
            break
        client.wait_any(min(remaining, 1.0) if remaining is not None else 1.0)
    ready, not_ready = [], []
    for ref, flag in zip(refs, flags):
        (ready if flag and len(ready) < num_returns else not_ready).append(ref)
    return ready, not_ready


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces `ref`: dequeue it, or interrupt it (force=True kills its worker).
    With recursive (the default, as in Ray), the tasks it submitted that have not finished too."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {_type_name(ref)}")
    from . import protocol as P
    if force and P.is_actor_call(ref.id):
        raise ValueError(f"force=True is not supported for actor tasks: {ref} is the result of an actor call, "
                         f"and killing its worker would end the actor. Cancel it without force (a queued call "
                         f"never runs, a running async one is cancelled), or end the actor with tasuki.kill().")
    _get_client().send_head(P.cancel(ref.id, bool(force), bool(recursive)))


def _type_name(value) -> str:
    return f"{type(value).__name__} {value!r}"[:100]


# --- the cluster ------------------------------------------------------------------------------
def nodes() -> list[dict]:
    """The cluster's nodes, in Ray's format (NodeID, Alive, NodeManagerAddress, Resources, Labels...),
    with the pod's name and worker group on Kubernetes (NodeName, Group)."""
    out = []
    for n in _get_client().nodes():
        out.append({"NodeID": n["node_id"], "Alive": n["state"] != "dead", "State": n["state"].upper(),
                    "NodeManagerAddress": n["ip"], "NodeManagerHostname": n["ip"], "Resources": n["resources"],
                    "Available": n["available"], "Version": n["version"], "IsHeadNode": n["is_head_node"],
                    "ObjectStore": n["object_store"], "SecondsIdle": n["seconds_idle"],
                    "NodeName": n.get("node_name", ""), "Group": n.get("group", ""), "Labels": n.get("labels", {})})
    return out


def cluster_resources() -> dict[str, float]:
    """Total resources of the live nodes."""
    return _sum_resources("resources")


def available_resources() -> dict[str, float]:
    """Resources free right now on the live nodes; one with nothing free is left out, as in Ray."""
    return {k: v for k, v in _sum_resources("available").items() if v > 0}


def _sum_resources(key: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for n in _get_client().nodes():
        if n["state"] != "dead":
            for k, v in n[key].items():
                total[k] = total.get(k, 0.0) + v
    # to Ray's granularity, 0.0001: fractions taken and given back leave float dust (1.9999999999999998)
    return {k: round(v, 4) for k, v in total.items()}


def get_gpu_ids() -> list:
    """GPU ids assigned to the running task (also in CUDA_VISIBLE_DEVICES); [] in a driver."""
    if _worker is None:
        return []
    return [int(g) if str(g).isdigit() else g for g in getattr(_worker, "gpu_ids", [])]


class _ID(str):
    """An id in get_runtime_context().get(): the hex string, with Ray's ID objects' .hex()."""
    __slots__ = ()

    def hex(self) -> str:
        return str(self)


class RuntimeContext:
    """Where this code runs: job, node, task, worker and actor, as Ray's RuntimeContext. Ids are hex
    strings; in a driver, the task and actor ids are None. In an actor method, the task is the call."""

    def __init__(self) -> None:
        client = _get_client()
        self.job_id = _worker.job_id if _worker is not None else _job_id
        self.node_id = (client.node or {}).get("node_id") if _worker is None else _worker.cfg.node_id
        call = _worker.current_call() if _worker is not None else None
        self._call = call
        if call is not None:                  # CALL(return_ids, method, ...): the task id is the first id's stem
            self.task_id = call[1][0][:-1].hex()
        else:
            self.task_id = _worker.task_id.hex() if _worker is not None and _worker.task_id else None
        self.worker_id = client.identity.hex()
        actor_id = getattr(_worker, "actor_id", None)
        self.actor_id = actor_id.hex() if actor_id else None
        actor = (getattr(_worker, "actor", None) or {}) if actor_id else {}
        self._actor = actor
        self._namespace = actor.get("namespace") or (_namespace if _worker is None else None)

    def get(self) -> dict:
        """Ray's dict of this context: job_id, node_id, namespace, and task_id (in a task or an actor
        call) and actor_id (in an actor) where there is one; the ids have .hex() as Ray's."""
        out = {"job_id": _ID(self.job_id), "node_id": _ID(self.get_node_id() or ""), "namespace": self.namespace}
        if self.task_id is not None:
            out["task_id"] = _ID(self.task_id)
        if self.actor_id is not None:
            out["actor_id"] = _ID(self.actor_id)
        return out

    def get_task_name(self) -> str | None:
        """The running task's name: its name= option or its function's name; Class.method in an actor
        call; None in a driver."""
        if self._call is not None:
            return self._call[5]
        if _worker is None or self.task_id is None:
            return None
        return _worker.task_name

    def get_task_function_name(self) -> str | None:
        """module.function of the running task, module.Class.method of the running actor call (None
        in a driver), as Ray's; in an async actor, Ray gives module.<the method's __qualname__>."""
        if _worker is None:
            return None
        if self._call is not None:
            cls = type(_worker.instance)
            method = getattr(cls, self._call[2], None)
            if _worker.loop is not None and hasattr(method, "__qualname__"):   # Ray: the qualname in an async actor
                return f"{cls.__module__}.{method.__qualname__}"
            return f"{cls.__module__}.{cls.__name__}.{self._call[2]}"
        if self.task_id is None:
            return None
        fn = _worker.functions.get(_worker.fn_id)
        if fn is None:
            return None
        if isinstance(fn, functools.partial):
            fn = fn.func
        return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{_callable_name(fn)}"

    def get_job_id(self) -> str:
        return self.job_id

    def get_node_id(self) -> str | None:
        if self.node_id is None:
            from .client import pick_local_node
            node = pick_local_node(_get_client().nodes())
            self.node_id = node["node_id"] if node else None
        return self.node_id

    def get_node_labels(self) -> dict[str, str]:
        """This process's node's labels (tasuki start --labels), as Ray's: {} for a node without any."""
        node_id = self.get_node_id()
        return next((dict(n.get("labels") or {}) for n in _get_client().nodes() if n["node_id"] == node_id), {})

    def get_task_id(self) -> str | None:
        return self.task_id

    def get_worker_id(self) -> str:
        return self.worker_id

    def get_actor_id(self) -> str | None:
        return self.actor_id

    def get_actor_name(self) -> str | None:
        """The name the running actor was given (None outside an actor or for an unnamed one)."""
        return self._actor.get("name")

    @property
    def namespace(self) -> str:
        """The namespace of this job (its driver's init(namespace=...)), in the driver and its workers."""
        if self._namespace is None:             # a worker running a task: its job's, from the head
            self._namespace = _get_client().query("namespace")
        return self._namespace

    def get_namespace(self) -> str:
        return self.namespace

    @property
    def current_actor(self):
        """The handle of the actor this code runs in; RuntimeError outside an actor, as in Ray."""
        if self.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor's method")
        from .actor import get_actor_handle
        return get_actor_handle(_worker.actor_id)

    @property
    def was_current_actor_reconstructed(self) -> bool:
        """Whether this actor was restarted (after a crash) at least once."""
        return bool(self._actor.get("restarts"))

    def get_assigned_resources(self) -> dict[str, float]:
        """The resources the running task or actor holds ({} in a driver), as Ray's."""
        if _worker is None:
            return {}
        return dict(_worker.shape or ())

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """{"GPU": ids of the GPUs assigned to the running task or actor, as strings}, as Ray's."""
        return {"GPU": [str(g) for g in getattr(_worker, "gpu_ids", None) or []]}

    @property
    def gcs_address(self) -> str:
        return _get_client().head_address

    def is_canceled(self) -> bool:
        """Whether cancel() was called on the running task or actor call: a running sync actor call is
        not interrupted (as in Ray), so it can check this and stop early."""
        if _worker is None:
            raise RuntimeError("is_canceled() is only available inside a task or an actor method, not in a driver")
        return _worker.is_canceled()


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext()

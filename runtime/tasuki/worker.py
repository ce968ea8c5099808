"""The worker: runs tasks one at a time on its main thread; the client's IO thread talks beside it.

Forked by the node's zygote, it connects to the head as itself (workers are on the per-task path,
node agents are not), says HELLO, and then receives RUN messages. For each task it loads the
function (sent once per worker), resolves top-level ObjectRef arguments (their values come with
the RUN message, or are pinned from the local store), runs the function, and sends DONE with
the results: small ones inline, large ones written into the node's arena. A task that raises
sends its exception with the remote traceback; the head decides about retries.

While a task waits in `get` the worker sends BLOCKED so the head lends its CPU to other tasks.
Its stdout and stderr (file descriptors 1 and 2, so C extensions are caught too) are read by a
thread and sent to the driver, each line prefixed with the task name, pid and node.

An actor's worker ends in one of two ways. Gracefully: EXIT from the head (every handle is gone,
or it was a surplus task worker), or the actor ended itself (exit_actor(), sys.exit(),
__ray_terminate__: ACTOR_EXIT tells the head not to restart it); then `__ray_shutdown__`,
`__del__` and the atexit handlers registered in this process run, and the last replies and
output lines are flushed. Or at once: kill() and crashes, where none of that runs (as in Ray).
"""
from __future__ import annotations

import functools
import inspect
import os
import contextvars
import queue
import sys
import threading
import time
import traceback
from collections import deque

from . import object_ref, protocol as P, serialization
from .exceptions import SerializationError, TaskCancelledError, TaskError, WorkerCrashedError

_current = threading.local()     # .call: the first return id of the actor call this thread runs (is_canceled)
                                 # .message: that call's CALL message (the runtime context reads it)
_async_call = contextvars.ContextVar("tasuki_async_call", default=None)    # the same for an async actor's call


def _ray_ready(worker) -> bool:
    return True


def _ray_terminate(worker) -> None:
    worker.request_exit("it was terminated with __ray_terminate__()")


def _ray_call(worker, fn, *args, **kwargs):
    return fn(worker.instance, *args, **kwargs)


BUILTIN_METHODS = {"__ray_ready__": _ray_ready, "__ray_terminate__": _ray_terminate, "__ray_call__": _ray_call}


class Worker:
    def __init__(self, cfg, worker_id: bytes) -> None:
        from .client import Client
        self.cfg = cfg
        self.worker_id = worker_id
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.blocked = False                 # the running task waits in get
        self.block_lock = threading.Lock()
        self.queued: set = set()             # ids of tasks in the inbox, not started
        self.skip: set = set()               # ids of queued tasks cancelled or given back: not to run
        self.functions: dict[bytes, object] = {}
        self.unloaded: dict[bytes, bytes] = {}    # code that came with tasks this worker did not run
        self.task_id: bytes | None = None
        self.task_name = ""
        self.fn_id: bytes | None = None       # the running task's function (get_task_function_name)
        self.actor_id: bytes | None = None
        self.actor: dict = {}                # the actor: class name, concurrency, max_task_retries, name, namespace, held, restarts
        self.instance = None
        self.bound: dict = {}                # method name -> the method bound to the instance
        self.policies: dict = {}             # method name -> (max_task_retries, retry_exceptions)
        self.exit_cause: str | None = None   # set when the actor ends itself: calls after it do not run
        self.cancelled_calls: set = set()    # first return ids of calls cancel() was called on
        self.running_async: dict = {}        # first return id -> its asyncio task (async actors)
        self.loop = None
        self.cancelled_task: bytes | None = None
        self.held: dict = {}                 # caller -> its calls waiting for ref arguments (queue_call)
        self.held_lock = threading.Lock()
        self.gpu_ids: list = []
        self.shape: tuple | None = None      # the running task's resources, as the scheduler's shape
        self.threads = 1                     # the thread variables' value now (see config.THREAD_VARIABLES)
        self.thread_variables = [v for v in os.environ.get("TASUKI_THREAD_VARIABLES", "").split(",") if v]
        from .node import pin_socket_path
        node = {"node_id": cfg.node_id, "ipc": cfg.ipc_address, "store_path": cfg.store_path,
                "pin_socket": pin_socket_path(cfg)}
        self.address: str | None = None      # where an actor's callers reach it
        self.client = Client(cfg.head_address, cfg.token, "worker", identity=worker_id,
                             info={"node_id": cfg.node_id}, node=node, on_message=self.on_message)
        self.client.rejoin_report = self.rejoin_report
        self.client.on_block = self.set_blocked    # lends its CPU while an argument is recomputed
        self.client.activate()

    def rejoin_report(self) -> dict:      # on the IO thread
        """What this worker runs, for a head restarted at the same address (recovery.py). The tasks
        the old head queued here are dropped: their owners re-send them to the new head."""
        with self.block_lock:
            self.skip |= self.queued
            self.queued.clear()
        if self.actor_id is not None and self.address is not None:
            return {"task_id": None, "actor": {"actor_id": self.actor_id, "info": self.actor.get("info", {}),
                                               "held": self.actor.get("held", {}), "address": self.address,
                                               "restarts": self.actor.get("restarts", 0), "job_id": self.job_id,
                                               "fn_id": self.actor_fn_id}}
        return {"task_id": self.task_id or self.actor_id, "actor": None, "creating": self.actor_id is not None}

    def on_message(self, message: tuple) -> None:      # on the IO thread
        kind = message[0]
        if kind == P.RUN:
            with self.block_lock:
                if self.blocked and message[1][-1] is None:
                    self.client.send_head(P.blocked([message[1][0]]))   # do not wait behind a blocked task
                else:
                    self.queued.add(message[1][0])
                    self.inbox.put(message[1])
        elif kind == P.INTERRUPT:
            if self.task_id == message[1]:
                import _thread
                self.cancelled_task = message[1]
                _thread.interrupt_main()
            else:
                self.skip.add(message[1])
        elif kind == P.STEAL:
            with self.block_lock:
                if message[1] in self.queued:          # not started: give it back
                    self.queued.discard(message[1])
                    self.skip.add(message[1])
                    self.client.send_head(P.returned([message[1]]))
        elif kind == P.EXIT:
            self.inbox.put(None)
        elif kind == P.CANCEL_CALL:
            self.cancel_call(message[1])

    def serve(self) -> None:
        from . import api
        api._attach_worker(self.client, self)
        while True:
            task = self.inbox.get()
            if task is None:
                return
            if task[-1] is not None:          # an actor's creation task: this worker becomes the actor
                return self.serve_actor(task)
            with self.block_lock:
                if task[0] in self.skip:       # cancelled or given back while it waited here
                    self.skip.discard(task[0])
                    self.keep_function(task)
                    continue
                self.queued.discard(task[0])
            self.run(task)

    def set_blocked(self, blocked: bool) -> None:
        """The running task starts or stops waiting in get. Starting: hand the tasks queued here
        back to the head, so nothing waits behind a blocked task (nested tasks never deadlock)."""
        if self.actor_id is not None:
            return
        if not blocked:
            self.blocked = False
            self.client.send_head(P.unblocked())
            return
        with self.block_lock:
            self.blocked = True
            kept, returned = [], []
            while True:
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item[-1] is None and item[0] not in self.skip:
                    returned.append(item)
                    self.queued.discard(item[0])
                    self.keep_function(item)
                else:
                    kept.append(item)
            for item in kept:
                self.inbox.put(item)
        self.client.send_head(P.blocked([task[0] for task in returned]))

    def run(self, task: tuple) -> None:
        (task_id, fn_id, fn_blob, name, args_blob, deps, return_ids, retry_exceptions,
         can_retry, gpu_ids, job_id, shape, _actor) = task
        self.task_id, self.task_name, self.job_id, self.fn_id = task_id, name, job_id, fn_id
        retryable = False
        try:
            if gpu_ids:                     # the scheduler gives a GPU worker only tasks of its own GPUs
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
            self.gpu_ids = gpu_ids
            if shape != self.shape:
                self.take_shape(shape)
            try:
                fn = self.function(fn_id, fn_blob)
                self.client.objects.update(deps)
                args, kwargs = self.arguments(args_blob, deps)
                result = fn(*args, **kwargs)
                results = self.pack(result, return_ids, name)
            except KeyboardInterrupt:         # cancel() interrupts the main thread; Ray reads it so too
                raise TaskCancelledError(f"task {name} was cancelled while running")
        except BaseException as e:
            if isinstance(e, TaskCancelledError):
                error = e
            elif isinstance(e, SystemExit):     # Ray: the worker exits, so a WorkerCrashedError; ours stays up
                error = WorkerCrashedError(
                    f"task {name} called sys.exit({e.code!r}) on node {self.cfg.node_id} ({self.cfg.ip}), worker "
                    f"pid {os.getpid()} (SystemExit: {e}): a task ends by returning or raising; to end an "
                    f"actor use tasuki.actor.exit_actor()")
            else:
                retryable = can_retry and _retryable(e, retry_exceptions)
                error = self.task_error(e, name)
            results = P.error_results(_pickle_error(error), return_ids)
        finally:
            self.task_id = None
            for oid in deps:
                self.client.objects.pop(oid, None)
            sys.stdout.flush()
            sys.stderr.flush()
            _sync_output(self)           # the task's output goes to the head before its DONE
        self.client.send_head(P.done(task_id, results, retryable))

    # --- actors -------------------------------------------------------------------------------
    def serve_actor(self, task: tuple) -> None:
        """Construct the actor, listen for its callers, and run calls until told to exit."""
        from . import transport
        (task_id, fn_id, fn_blob, name, args_blob, deps, _, _, _, gpu_ids, job_id, _, actor) = task
        self.actor_id, self.task_name, self.job_id, self.gpu_ids = actor["actor_id"], name, job_id, gpu_ids
        self.actor_fn_id = fn_id             # its class, reported to a restarted head (rejoin_report)
        self.actor = actor
        if gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        self.take_shape(tuple(sorted((k, v) for k, v in actor.get("held", {}).items() if v > 0)))
        try:
            cls = self.function(fn_id, fn_blob)
            self.client.objects.update(deps)
            args, kwargs = self.arguments(args_blob, deps)
            self.instance = cls(*args, **kwargs)
            if self.exit_cause is not None:         # exit_actor() was called, and the SystemExit caught
                raise SystemExit(0)
        except BaseException as e:
            if isinstance(e, SystemExit) or self.exit_cause is not None:
                self.request_exit(_exit_cause(e))
                tb = f"{self.exit_cause} in its constructor"
            else:
                tb = str(self.task_error(e, f"{actor['class_name']}.__init__"))
            self.instance = None
            self.client.send_head(P.actor_ready(self.actor_id, None, tb))
            while self.inbox.get() is not None:     # the head answers with EXIT once it has the error
                pass
            return
        cfg = self.cfg
        if cfg.tcp_address.startswith("tcp://"):
            transport.start_authenticator(self.client.context, cfg.token)
            address = f"tcp://{cfg.ip}:0"
        else:
            from .node import actor_socket_path
            address = f"ipc://{actor_socket_path(cfg, self.worker_id)}"
        sock, address = transport.bind(self.client.context, address, cfg.token)
        self.address = address
        self.task_name = actor["class_name"]
        concurrency = actor["max_concurrency"]
        if actor["is_async"]:
            import asyncio
            # the loop and its semaphore exist before the first call can arrive on the IO thread
            self.loop = asyncio.new_event_loop()
            self.semaphore = asyncio.Semaphore(concurrency)
            self.client.serve_calls(sock, self.on_async_call)
            self.client.send_head(P.actor_ready(self.actor_id, address, None))
            try:
                self.loop.run_until_complete(self.serve_async())
            except SystemExit as e:     # exit_actor() or sys.exit() in an asyncio task of its own, not a call's
                self.request_exit(_exit_cause(e))     # asyncio lets SystemExit out of the loop: end gracefully
            return
        if concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor
            pool = ThreadPoolExecutor(concurrency, thread_name_prefix="tasuki-actor")

            def on_call(ident: bytes, message: tuple) -> None:      # on the IO thread
                if self.exit_cause is None:
                    try:
                        pool.submit(self.execute_call, ident, message)
                    except RuntimeError:            # the pool shut down: the actor is ending
                        pass
            self.client.serve_calls(sock, on_call)
        else:
            pool = None
            self.client.serve_calls(sock, self.queue_call)
        self.client.send_head(P.actor_ready(self.actor_id, address, None))
        while self.exit_cause is None:
            item = self.inbox.get()
            if item is None:
                break
            self.execute_call(*item)
        if pool is not None:        # calls running on other threads finish and reply; queued ones do not run
            pool.shutdown(wait=True, cancel_futures=True)

    def queue_call(self, ident: bytes, message: tuple) -> None:      # on the IO thread
        """Queue a call for the main thread once its ref arguments are here, as Ray resolves them
        before a call queues at its actor: a call waiting for a slow argument waits aside, with
        the later calls of the same caller behind it (a caller's calls keep their order), while
        other callers' calls go ahead. A call without refs, from a caller with none waiting, is
        queued at once (the usual path: one dict lookup more)."""
        deps = message[4]
        with self.held_lock:
            held = self.held.get(ident)
            if held is None:
                objects = self.client.objects
                if not deps or all(oid in objects for oid in deps):
                    self.inbox.put((ident, message))
                    return
                held = self.held[ident] = deque()
            held.append(message)
            if len(held) > 1:
                return                       # behind the caller's first waiting call
        self.release_held(ident)

    def release_held(self, ident: bytes) -> None:
        """Queue the caller's waiting calls whose arguments are here, in order; watch the first
        missing argument of the next (its arrival calls this again, on the callback thread)."""
        with self.held_lock:
            held = self.held.get(ident)
            while held:
                missing = next((oid for oid in held[0][4] if oid not in self.client.objects), None)
                if missing is not None:
                    break
                self.inbox.put((ident, held.popleft()))
            else:
                self.held.pop(ident, None)
                return
        self.client.when_ready(missing, lambda: self.release_held(ident))

    def execute_call(self, ident: bytes, message: tuple) -> None:
        return_ids = message[1]
        if self.exit_cause is not None:
            return              # the actor is ending: the head fails this call with ActorDiedError
        cancelled = self.cancelled_calls
        first = _current.call = return_ids[0]
        _current.message = message
        results = None if cancelled and first in cancelled else \
            self.call_method(message[2], message[3], message[4], message[5], return_ids, message)
        if cancelled and first in cancelled:      # cancelled while queued, or while it ran (not interrupted)
            cancelled.discard(first)
            results = self.cancelled_results(message[5], return_ids)
        self.reply_call(ident, return_ids, results)
        if self.exit_cause is not None:
            self.inbox.put(None)            # wake the main loop (a threaded actor ran this call)

    def call_method(self, method: str, blob, deps: list, name: str, return_ids: list, message: tuple) -> list:
        """Run one call of a sync actor method, with its retries on exceptions; its results."""
        try:
            args, kwargs = self.call_arguments(blob, deps)
            fn = self.method(method)
        except BaseException as e:
            return self.error_results(e, name, return_ids)
        attempt = 0
        while True:
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                results = self.call_failed(e, method, fn, message, attempt, name, return_ids)
                if results is None:
                    attempt += 1
                    continue
                return results
            return self.call_results(result, name, return_ids)

    def call_failed(self, e: BaseException, method: str, fn, message: tuple, attempt: int, name: str,
                    return_ids: list) -> list | None:
        """A call raised `e`: None when it is to run again (retries left), else its results (an
        exit_actor() or sys.exit() ends the actor, and the call fails saying so)."""
        if isinstance(e, SystemExit):
            if self.exit_cause is None and e.code not in (None, 0):
                _crash(e.code)           # as in Ray: restarted (max_restarts), the call retried (max_task_retries)
            self.request_exit(_exit_cause(e))
        elif self.retries_left(e, self.retry_policy(method, fn, message), attempt, return_ids[0]):
            return None
        elif self.exit_cause is None:
            return self.error_results(e, name, return_ids)
        return self.exit_results(name, return_ids)

    def call_results(self, result, name: str, return_ids: list) -> list:
        """A call returned `result`: its packed results, or the exit results when exit_actor() was
        called meanwhile (its SystemExit perhaps caught)."""
        if self.exit_cause is not None:
            return self.exit_results(name, return_ids)
        try:
            results = self.pack(result, return_ids, name)
        except BaseException as e:
            return self.error_results(e, name, return_ids)
        for oid in _contained(results):
            # refs inside the result (`return other.f.remote()`) stay held here until reply_call has
            # told the head, which then pins them: `result` goes before that, and its RELEASE first
            # would free them
            self.client.add_ref(oid, True)
        return results

    def method(self, name: str):
        """The method `name` bound to the instance, looked up on its class (as Ray does), so an
        instance attribute of the same name does not hide it; Ray's built-in methods too."""
        bound = self.bound.get(name)
        if bound is None:
            builtin = BUILTIN_METHODS.get(name)
            if builtin is not None:
                bound = functools.partial(builtin, self)
            else:
                cls = type(self.instance)
                try:
                    attr = inspect.getattr_static(cls, name)
                except AttributeError:               # provided by __getattr__ or set on the instance only
                    bound = getattr(self.instance, name)
                else:
                    bound = attr.__get__(self.instance, cls) if hasattr(type(attr), "__get__") else attr
            self.bound[name] = bound
        return bound

    def retry_policy(self, method: str, fn, message: tuple) -> tuple:
        """(max_task_retries, retry_exceptions) of a call: its options(), else the method's
        @method(...), else the actor's max_task_retries (retry_exceptions: False)."""
        policy = self.policies.get(method)
        if policy is None:
            options = getattr(getattr(fn, "__func__", fn), "__tasuki_method_options__", {})
            retries = options.get("max_task_retries")
            policy = self.policies[method] = (self.actor.get("max_task_retries", 0) if retries is None else retries,
                                              options.get("retry_exceptions") or False)
        if len(message) > 6:                 # CALL(..., (max_task_retries, retry_exceptions)) from options()
            retries, exceptions = message[6]
            policy = (policy[0] if retries is None else retries, policy[1] if exceptions is None else exceptions)
        return policy

    def retries_left(self, e: BaseException, policy: tuple, attempt: int, first: bytes) -> bool:
        retries, exceptions = policy
        return (bool(exceptions) and (retries == -1 or attempt < retries) and self.exit_cause is None
                and first not in self.cancelled_calls and _retryable(e, exceptions))

    def request_exit(self, cause: str) -> None:
        """The actor ends itself (exit_actor(), sys.exit(), __ray_terminate__): no call starts after
        the one running, and the head learns it is on purpose (no restart; pending calls fail, saying why)."""
        if self.exit_cause is None:
            self.exit_cause = cause
            self.client.send_head(P.actor_exit(self.actor_id, cause))

    def exit_results(self, name: str, return_ids: list) -> list:
        from .actor import died_error
        error = died_error(self.actor, self.actor_id, f"{self.exit_cause} in {name} (Worker exit type: "
                                                      f"INTENDED_USER_EXIT, Ray's name)")
        return P.error_results(_pickle_error(error), return_ids)

    def cancelled_results(self, name: str, return_ids: list) -> list:
        error = TaskCancelledError(f"actor call {name} (task {return_ids[0][:-1].hex()}) was cancelled")
        return P.error_results(_pickle_error(error), return_ids)

    def cancel_call(self, first: bytes) -> None:      # on the IO thread
        """cancel() of a call to this actor: a queued one will not run; a running async one gets
        CancelledError; a running sync one runs on (is_canceled() says so) and its result is dropped."""
        if self.actor_id is None:
            return
        self.cancelled_calls.add(first)
        task = self.running_async.get(first)
        if task is not None:
            self.loop.call_soon_threadsafe(task.cancel)

    def is_canceled(self) -> bool:
        if self.actor_id is None:
            return self.task_id is not None and self.task_id == self.cancelled_task
        if self.loop is not None:
            raise RuntimeError("This method is not supported in an async actor: a cancelled async actor call "
                               "gets asyncio.CancelledError at its next await instead")
        return getattr(_current, "call", None) in self.cancelled_calls

    def current_call(self) -> tuple | None:
        """The CALL message of the actor call running here (this thread's, or this asyncio task's)."""
        if self.actor_id is None:
            return None
        return _async_call.get() if self.loop is not None else getattr(_current, "message", None)

    def call_arguments(self, blob, deps: list) -> tuple[tuple, dict]:
        values = dict(zip(deps, self.client.get_objects(deps, None))) if deps else {}
        return self.arguments(blob, values)

    def on_async_call(self, ident: bytes, message: tuple) -> None:      # on the IO thread
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.run_async_call(ident, message)))

    async def serve_async(self) -> None:
        import asyncio
        self.stopped = asyncio.Event()
        self.loop.run_in_executor(None, lambda: (self.inbox.get(), self.loop.call_soon_threadsafe(self.stopped.set)))
        await self.stopped.wait()

    async def run_async_call(self, ident: bytes, message: tuple) -> None:
        import asyncio
        return_ids, method, blob, deps, name = message[1:6]
        first = return_ids[0]
        if self.exit_cause is not None:
            return              # the actor is ending: the head fails this call with ActorDiedError
        _async_call.set(message)         # this asyncio task's own context: other calls do not see it
        self.running_async[first] = asyncio.current_task()
        results = None
        try:
            async with self.semaphore:
                if first not in self.cancelled_calls:
                    results = await self.call_async_method(method, blob, deps, name, return_ids, message)
        except asyncio.CancelledError:       # cancel() while it waited for its turn or ran
            pass
        finally:
            del self.running_async[first]
        if first in self.cancelled_calls or results is None:
            self.cancelled_calls.discard(first)
            results = self.cancelled_results(name, return_ids)
        self.reply_call(ident, return_ids, results)
        if self.exit_cause is not None:
            self.stopped.set()

    async def call_async_method(self, method: str, blob, deps: list, name: str, return_ids: list,
                                message: tuple) -> list:
        """call_method for an async actor: awaits the method, and lets asyncio.CancelledError through."""
        import asyncio
        try:
            if deps:
                args, kwargs = await self.loop.run_in_executor(None, self.call_arguments, blob, deps)
            else:
                args, kwargs = self.arguments(blob, {})
            fn = self.method(method)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            return self.error_results(e, name, return_ids)
        attempt = 0
        while True:
            try:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except asyncio.CancelledError:
                raise
            except BaseException as e:
                results = self.call_failed(e, method, fn, message, attempt, name, return_ids)
                if results is None:
                    attempt += 1
                    continue
                return results
            return self.call_results(result, name, return_ids)

    def error_results(self, e: BaseException, name: str, return_ids: list) -> list:
        return P.error_results(_pickle_error(self.task_error(e, name)), return_ids)

    def reply_call(self, ident: bytes, return_ids: list, results: list) -> None:
        direct = [P.object(oid, kind, data) for oid, kind, data, _, _ in results if kind != P.STORED_KIND]
        if direct:
            self.client.reply(ident, direct)
        self.client.send_head(P.actor_result(self.actor_id, return_ids[0], results))
        for oid in _contained(results):        # held by call_results until now
            self.client.remove_ref(oid)

    def take_shape(self, shape: tuple) -> None:
        """A task with other resources than the last one: set the thread variables tasuki set (not
        the user's) to its CPUs, as Ray does, and resize the thread pools of the BLAS libraries
        already loaded (threadpoolctl, when installed). Costs nothing while the shape stays."""
        self.shape = shape
        cpus = dict(shape).get("CPU", 0.0)
        threads = max(int(cpus), 1)
        if threads == self.threads or not self.thread_variables:
            return
        self.threads = threads
        for name in self.thread_variables:
            os.environ[name] = str(threads)
        try:
            import threadpoolctl
        except ImportError:
            return
        try:
            threadpoolctl.threadpool_limits(threads)
        except Exception:                 # a library it cannot resize: the variables still hold
            pass

    def keep_function(self, task: tuple) -> None:
        """The head sends a function's code once per worker, with the first task that needs it:
        when that task goes back unrun, keep the code, as the next one will come without it."""
        if task[2] is not None and task[1] not in self.functions:
            self.unloaded[task[1]] = task[2]

    def function(self, fn_id: bytes, blob: bytes | None):
        fn = self.functions.get(fn_id)
        if fn is None:
            blob = blob if blob is not None else self.unloaded.pop(fn_id)
            try:
                fn = self.functions[fn_id] = serialization.loads(blob)
            except SerializationError as e:
                self.unloaded[fn_id] = blob      # the next task of it comes without the code: it fails the same way
                raise SerializationError(
                    f"the function cannot be unpickled on this worker: {e}. A function from an installed "
                    f"module travels by reference: that module, and the classes the function refers to, "
                    f"must be importable on every node, at the same version.") from e.__cause__
        return fn

    def arguments(self, blob, deps: dict) -> tuple[tuple, dict]:
        ObjectRef = object_ref.ObjectRef
        if type(blob) is tuple:                     # the arguments were large: stored as an object
            kind, data = deps[blob[1]]
            args, kwargs = self.client.value(blob[1], kind, data)
        else:
            try:
                args, kwargs = serialization.loads(blob)
            except SerializationError as e:
                raise SerializationError(
                    f"the arguments cannot be unpickled on this worker: {e}. The classes of the "
                    f"arguments must be importable on every node, at the same version.") from e.__cause__
        if deps:
            value = self.client.value
            args = tuple(value(a.id, *deps[a.id]) if type(a) is ObjectRef and a.id in deps else a for a in args)
            kwargs = {k: value(v.id, *deps[v.id]) if type(v) is ObjectRef and v.id in deps else v
                      for k, v in kwargs.items()}
        return args, kwargs

    def pack(self, result, return_ids: list, name: str) -> list:
        if len(return_ids) == 1:
            values = [result]
        else:
            values = list(result) if result is not None else []
            if len(values) != len(return_ids):
                raise ValueError(f"task {name} declared num_returns={len(return_ids)} but returned "
                                 f"{len(values)} values")
        out = []
        for oid, value in zip(return_ids, values):
            try:
                s = serialization.dumps(value)
            except SerializationError as e:
                raise SerializationError(f"the result of task {name} cannot be sent back: {e}") from None
            if s.buffers or len(s.header) > serialization.INLINE_OBJECT_LIMIT:
                out.append(P.result(oid, P.STORED_KIND, self.client.store_locally(oid, s), s.refs, s.size))
            else:
                out.append(P.result(oid, P.VALUE, s.header, s.refs, len(s.header)))
        return out

    def task_error(self, e: BaseException, name: str) -> TaskError:
        """The error a failed task sends back: the remote traceback under a header naming the task and
        where it ran. A nested task's error (this task called get() on a task that raised) keeps its
        original cause, so the driver catches the ZeroDivisionError raised two tasks down, and its
        traceback shows both tasks' frames, the inner one as the exception's message (as Ray does)."""
        tb = format_remote_traceback(e)
        # Ray's header, `ray::f() (pid=..., ip=...)`, naming tasuki and the node; an actor call adds
        # the actor's id and repr. The frames follow without Python's "Traceback ..." line, as Ray's.
        labels = f"pid={os.getpid()}, ip={self.cfg.ip}, node={self.cfg.node_id}"
        if self.instance is not None:
            labels += f", actor_id={self.actor_id.hex()}, repr={_safe_repr(self.instance)}"
        body = tb.rstrip().removeprefix("Traceback (most recent call last):\n")
        message = f"tasuki::{name}() ({labels})\n{body}"
        if isinstance(e, TaskError):
            return TaskError(message, e.cause, tb, task_name=name, node_id=self.cfg.node_id,
                             cause_type_name=e.cause_type_name).as_instanceof_cause()
        return TaskError(message, e, tb, task_name=name, node_id=self.cfg.node_id).as_instanceof_cause()


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _contained(results: list):
    """The ids of the refs inside packed results (each result: oid, kind, data, contained, size)."""
    return (oid for r in results for oid in r[3])


def _safe_repr(obj) -> str:
    """repr(obj) for an error header: a __repr__ that raises must not hide the task's own error."""
    try:
        return repr(obj)
    except Exception:
        return object.__repr__(obj)


def format_remote_traceback(e: BaseException) -> str:
    """`e`'s traceback without tasuki's own frames (the worker's call of the task, get() inside a
    nested task), as Ray hides its internals: what is left is the user's code. Exceptions raised
    inside tasuki itself (an unpicklable result) keep their frames, which are then all there is."""
    te = traceback.TracebackException(type(e), e, e.__traceback__)
    user = [f for f in te.stack if not f.filename.startswith(_PACKAGE_DIR)]
    if user and len(user) < len(te.stack):
        te.stack = traceback.StackSummary.from_list(user)
    elif te.stack and te.stack[0].filename.startswith(_PACKAGE_DIR):
        te.stack = traceback.StackSummary.from_list(te.stack[1:])     # the worker's own call frame
    return "".join(te.format())


def _crash(code) -> None:
    """sys.exit(code) with a failing code in an actor method: the worker dies as in a crash."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


def _exit_cause(e: BaseException) -> str:
    """Why an actor ends itself, for ActorDiedError: SystemExit from exit_actor(), sys.exit() or
    sys.exit(0) (a failing code in a method is a crash instead: _crash)."""
    code = e.code if isinstance(e, SystemExit) else None
    return "it called sys.exit()" if code in (None, 0) else f"it called sys.exit({code!r})"


def _retryable(e: BaseException, retry_exceptions) -> bool:
    """Whether the task's retry_exceptions (True, False, or the cloudpickled tuple of types the
    driver made once per remote function: the head carries it unopened; an actor method's
    @method(retry_exceptions=...) is a tuple of the types themselves) ask to retry `e`."""
    if retry_exceptions is True:
        return isinstance(e, Exception)
    if type(retry_exceptions) is tuple:
        return isinstance(e, retry_exceptions)
    if type(retry_exceptions) is bytes:
        try:
            return isinstance(e, _retry_types(retry_exceptions))
        except Exception as load_error:        # its classes cannot be loaded here: say so, do not retry
            print(f"tasuki: retry_exceptions cannot be loaded on this worker, so the task is not retried: "
                  f"{type(load_error).__name__}: {load_error}", file=sys.stderr, flush=True)
    return False


@functools.lru_cache(maxsize=64)
def _retry_types(blob: bytes) -> tuple:
    return serialization.loads(blob)


def _pickle_error(error: BaseException) -> bytes:
    return serialization.dumps_inline(error)      # a TaskError pickles its cause apart: see TaskError.__reduce__


def _capture_output(worker: Worker) -> None:
    """Send everything written to fds 1 and 2 to the driver, line by line, prefixed."""
    import select
    worker.output_unread = select.poll()           # the read ends with bytes not read yet: see _sync_output
    worker.output_cond = threading.Condition()     # held by a forwarder from os.read to send_head
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        worker.output_unread.register(read_end, select.POLLIN)
        threading.Thread(target=_forward, args=(worker, read_end, stream), daemon=True,
                         name=f"tasuki-{stream}").start()
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _forward(worker: Worker, fd: int, stream: str) -> None:
    import select
    pending = b""
    while True:
        select.select([fd], [], [])
        with worker.output_cond:        # read and send as one step: see _sync_output
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            pending += chunk
            if b"\n" in pending:
                *lines, pending = pending.split(b"\n")
                prefix = f"({worker.task_name or 'worker'} pid={os.getpid()} node={worker.cfg.node_id})"
                worker.client.send_head(P.log([(stream, f"{prefix} {line.decode(errors='replace')}")
                                               for line in lines]))
            worker.output_cond.notify_all()


def _sync_output(worker: Worker, timeout: float = 2.0) -> None:
    """Wait until the forwarders have sent every line written to fds 1 and 2 so far, so a driver that
    exits right after get() still prints its task's output. Costs one poll() when nothing was written;
    the lock waits for a forwarder that has read a chunk but not sent it yet."""
    unread = getattr(worker, "output_unread", None)
    if unread is None:
        return
    deadline = None
    with worker.output_cond:
        while unread.poll(0):
            if deadline is None:
                deadline = time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            worker.output_cond.wait(remaining)


def main(cfg, worker_id: bytes) -> None:
    """Entry point in a process forked by the zygote (which ends it with os._exit when this returns)."""
    import atexit
    atexit._clear()          # handlers inherited from the node agent's process are not this worker's
    worker = Worker(cfg, worker_id)
    _capture_output(worker)
    worker.serve()
    _exit_gracefully(worker)


def _exit_gracefully(worker: Worker) -> None:
    """The worker was told to exit (EXIT), or its actor ended itself: run what a Python process
    runs when it exits (the actor's __ray_shutdown__ and __del__, then this process's atexit
    handlers), send the output they print, and let the last messages reach the head."""
    import atexit
    import gc
    instance, worker.instance = worker.instance, None
    if instance is not None:
        hook = getattr(instance, "__ray_shutdown__", None)
        if hook is not None:
            try:
                hook()
            except BaseException:
                traceback.print_exc()
        worker.bound.clear()
        del instance, hook
        gc.collect()
    atexit._run_exitfuncs()          # prints what a handler raises, as at interpreter exit
    sys.stdout.flush()
    sys.stderr.flush()
    _sync_output(worker)
    worker.client.close(linger_ms=2000)

"""The head: the cluster's control plane, one event loop that owns all cluster state.

It keeps the node table, the pending task queue (via scheduler.Scheduler), the object directory
(object_directory.ObjectDirectory), the actor directory (actor_directory.ActorDirectory) and the
registered functions. Drivers, node agents and workers all connect to its one ROUTER socket; the
HTTP thread (metrics.py) asks it questions over an inproc socket.

Per-task path (a small task, everything inline):
  driver SUBMIT ──► head: register return objects, pin argument refs, queue by shape, schedule()
  head RUN ──► worker (batched with other messages for that worker; function blob sent once)
  worker DONE ──► head: store the result inline, free the CPU, push OBJECT to the owner,
                  wake dependent tasks, schedule the next task onto the now idle worker
Every incoming zmq message is a batch; replies are collected per peer and sent once per loop turn.

Why one module of ~1,600 lines: one event loop owns all cluster state, and its handlers (tasks,
objects, actors, liveness, queries, drains, rejoins, in that order below) all mutate that state; the
decisions live in scheduler.py, object_directory.py, lineage.py, drain.py and recovery.py. The actors' state and decisions (names,
restarts, pending calls) live in actor_directory.py; the actors block below does their I/O.

Objects: an object lives while some process holds a ref to it (HOLD/RELEASE from each process,
deduplicated there) or something pins it (a pending task's arguments, a stored object containing
the ref). Small values are kept here inline; large ones stay in node stores and only their
locations are kept here. The records, refcounts, early GETs and copies are object_directory.py's,
over plain data: its methods say what must happen (the objects forgotten, whom to tell, the tasks
to wake, the copies a dead node took with it) and this loop does it: FREE to the nodes storing a
forgotten object, OBJECT to its owner and waiters, and the tasks' bookkeeping.

Draining (the block at the end of the class; decisions in drain.py): a node agent given SIGTERM
sends LEAVING, or the HTTP API asks; each drain tick hands back tasks past the deadline, moves
actors that may restart, has other nodes pull (REPLICATE) the objects only the node holds, and
says DRAINED to a leaving node once nothing is left. shutdown() tells drivers (HEAD_STOPPING).

Drivers that reach only the head's address (a port-forward, a LoadBalancer): relay.py carries
their object transfers and actor calls; this loop only dispatches to it (see `relay_frames`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

import zmq

from . import __version__, config, drain as D, lineage as L, protocol as P, recovery as R, serialization, transport
from .actor_directory import CALL_FAILS, UNKNOWN_ACTOR, Actor, ActorDirectory
from .exceptions import (NodeDiedError, ObjectLostError, TaskCancelledError, WorkerCrashedError)
from .labels import selector_dict
from .object_directory import Forgotten, Loss, ObjectDirectory
from .relay import Relay
from .scheduler import (ACTOR, ALIVE, DEAD, DRAINING, Node, Scheduler, Task, acquire, format_key, format_shape,
                        shape_of)

PYTHON_VERSION = "%d.%d" % sys.version_info[:2]
INFEASIBLE_GRACE_S = 1.0     # seconds a shape no node fits waits before its owner is warned
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, float("inf"))
FUNCTION_TRIM_BYTES = 1 << 20  # bytes of function code freed at once that are worth handing back to the OS
LOG_INTERVAL_S = 5.0         # seconds between two lines about dropped messages or failed HTTP requests
HANDLE_KIND = "h"            # the object kind of an actor id: its handles' refcount (see actor.py)
DRAIN_TICK_S = 0.2           # seconds between two looks at the draining nodes (see the drain block below)


class LogLimiter:
    """Writes a line to the head's log (stderr) at most once per `interval_s` and counts the
    lines it held back, so that a peer sending garbage all day cannot fill the disk."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.next_at = 0.0
        self.held = 0

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.held += 1
            return
        if self.held:
            line += f" ({self.held} more such line(s) held back in the last {self.interval_s:g} s)"
        self.next_at, self.held = now + self.interval_s, 0
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", file=sys.stderr, flush=True)


@dataclass(eq=False)
class Peer:
    role: str                        # "driver", "worker" or "node"
    info: dict
    job_id: str = ""
    last_seen: float = 0.0
    functions: list = field(default_factory=list)    # ids of the functions it registered


class Head:
    def __init__(self, address: str, token: str, metrics_port: int | None = None,
                 metrics_host: str = "127.0.0.1", lifeline_fd: int | None = None) -> None:
        self.token = token
        self.context = zmq.Context()
        if address.startswith("tcp://"):
            transport.start_authenticator(self.context, token)
        self.sock, self.address = transport.bind(self.context, address, token)
        self.relay = Relay(self.context, token, self.sock, self.send)     # drivers that reach only the head
        self.control = self.context.socket(zmq.ROUTER)
        self.control.bind("inproc://head-control")
        self.lifeline_fd = lifeline_fd
        self.sched = Scheduler()
        # refcounts, early gets, copies, and finished tasks' lineage (object_directory.py, lineage.py)
        lineage_bytes = int(config.env_float("LINEAGE_MAX_BYTES", config.LINEAGE_MAX_BYTES))
        self.objects = ObjectDirectory(L.Lineage(lineage_bytes))
        self.tasks: dict[bytes, Task] = {}          # live tasks by task id
        self.functions: dict[bytes, bytes] = {}
        self.function_peers: dict[bytes, set] = {}   # function id -> the connected peers that registered it
        self.unused_functions: set = set()           # no peer registers them: freed once no task runs them
        self.peers: dict[bytes, Peer] = {}
        self.drivers_by_job: dict[str, bytes] = {}
        self.job_settings: dict[str, dict] = {}       # job id -> its driver's namespace, default_actor_lifetime
        self.submissions: dict[str, set] = {}          # submitted job (job_manager.py) -> the job ids of its drivers
        self.outbox: dict[bytes, list] = {}
        self.warned_shapes: set = set()       # queue keys (shape, label selector) whose owner was warned
        self.requested_resources: list = []   # [(shape, count)]: request_resources(), until replaced
        self.actors = ActorDirectory()                # names, workers, owners, pending calls (actor_directory.py)
        self.next_job = 1
        self.last_gc = float("-inf")                 # when every process was last told to collect garbage
        self.started_at = time.time()
        self.finished = {"succeeded": 0, "failed": 0, "crashed": 0, "cancelled": 0}
        self.node_deaths = {ALIVE: 0, DRAINING: 0}   # by the state a node was in when it stopped heartbeating
        self.latency_counts = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.running = True
        self.stop_reason = ""                        # why serve() ends, for the drivers (HEAD_STOPPING)
        self.drains: dict[str, D.Drain] = {}         # node id -> its drain (see the drain block below)
        self.next_drain_tick = 0.0
        self.rejoin_asked: dict[bytes, float] = {}   # identity -> when it was last told REJOIN (rejoin block below)
        self.rejoin_waiting: dict[str, list] = {}    # node id -> [(ident, info)]: its workers that rejoined first
        self.node_reports: dict[str, dict] = {}      # node id -> {object id: size} it stored when it rejoined
        self.first_rejoin_at: float | None = None    # when a process of a previous head first rejoined this one
        self.rejoin_sweep_at: float | None = None    # when objects on nodes that did not rejoin are declared lost
        self.unclaimed_sweep_at: float | None = None  # when what no rejoined process claimed is let go
        self.workers_expected: set = set()           # workers a rejoined node listed that have not rejoined yet
        self.deferred_lookups: list = []             # (ident, req id, arg, asked at): actors looked up by name
        self.rejoin_results: dict[bytes, list] = {}  # task id -> results a worker sent while no head knew it
        self.rejoin_actor_specs: dict[bytes, tuple] = {}  # actor id -> (creator, spec): its worker not back yet
        self.creations_killed: set[bytes] = set()    # actors whose construction was killed when its worker rejoined
        self.rejoin_running: dict[bytes, tuple] = {} # task id -> (ident, info) of the worker running it, until re-sent
        self.log_dropped = LogLimiter()
        self.metrics_address = None
        self.jobs = None                             # submitted jobs (job_manager.py), served over HTTP
        if metrics_port is not None:
            from .job_manager import JobManager
            from .metrics import ask_head, serve_http
            self.jobs = JobManager(os.path.join(config.session_dir(), "jobs"), self.address, token,
                                   on_end=lambda job_id: ask_head(self.context, "end_submission", job_id))
            self.metrics_address = serve_http(self.context, metrics_host, metrics_port, token, LogLimiter(),
                                              jobs=self.jobs)

    # --- loop --------------------------------------------------------------------------
    def serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        if self.lifeline_fd is not None:
            poller.register(self.lifeline_fd, zmq.POLLIN)
        self.relay.poller = poller
        next_check = 0.0
        while self.running:
            events = dict(poller.poll(250))
            now = time.time()
            if self.relay.socks:            # actors' answers first: they precede news of their death
                self.relay.drain_actors(events)
            if self.sock in events:
                ident = None
                try:                        # free while nothing raises (handle guards each message)
                    for _ in range(256):        # drain what is queued, then schedule once
                        if not transport.readable(self.sock):
                            break
                        ident, messages, data = transport.recv_router_nowait(self.sock)
                        if data:
                            self.relay_frames(ident, messages[0], data)
                        else:
                            self.handle(ident, messages, now)
                except transport.MalformedFrame as e:       # not a pickled batch: drop the frame
                    self.drop_message(e.identity, e.__cause__)
                except Exception as e:      # a first message that is no HELLO(role, info)
                    self.drop_message(ident, e)
            if self.objects.early_gets:
                self.answer_early_gets(now)
            if self.actors.early_messages:
                self.answer_early_actor_messages(now)
            if self.deferred_lookups or self.workers_expected or self.rejoin_sweep_at or self.unclaimed_sweep_at:
                self.rejoin_tick(now)
            if self.control in events:
                self.answer_control()
            if self.lifeline_fd is not None and self.lifeline_fd in events:
                self.stop_reason = "the process that started it exited"
                break                         # the driver that started us is gone
            if now >= next_check:
                self.check_liveness(now)
                next_check = now + config.NODE_HEARTBEAT_S
            if self.drains and now >= self.next_drain_tick:
                self.drain_tick(now)
            self.schedule(now)
            self.flush()
        self.shutdown()

    def send(self, to: bytes, message: tuple) -> None:
        box = self.outbox.get(to)
        if box is None:
            self.outbox[to] = [message]
        else:
            box.append(message)

    def flush(self) -> None:
        if self.outbox:
            outbox, self.outbox = self.outbox, {}
            for to, messages in outbox.items():
                transport.send(self.sock, messages, to=to)

    def shutdown(self) -> None:
        if self.stop_reason and config.env("HEAD_EXPECT_RESTART", "") in ("1", "true", "yes"):
            # a supervisor (Kubernetes) starts the next head at this address: its nodes, workers and drivers
            # are not stopped; they wait for it (TASUKI_HEAD_RECONNECT_S) and rejoin it (recovery.py)
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tasuki head: {self.stop_reason}: exiting without stopping "
                  f"the cluster (TASUKI_HEAD_EXPECT_RESTART): its {len(self.sched.nodes)} node(s) and its drivers wait "
                  f"for the next head at {self.address}", file=sys.stderr, flush=True)
            restarting = P.head_restarting(f"the tasuki head at {self.address} is going away ({self.stop_reason}) and "
                                           f"is expected back at the same address")
            for ident in self.peers:
                self.send(ident, restarting)
            self.flush()
            self.close()
            return
        why = f" ({self.stop_reason})" if self.stop_reason else ""
        stopping = P.head_stopping(f"the tasuki head at {self.address} shut down{why}: the cluster stopped, and "
                                     f"the tasks, objects and actors it held are gone. Start it again (`tasuki start "
                                     f"--head`) and reconnect with init().")
        for ident, peer in list(self.peers.items()):
            if peer.role == "node":
                self.send(ident, P.shutdown())
            else:                             # drivers and workers: their gets fail now, not after HEAD_RECONNECT_S
                self.send(ident, stopping)
        self.flush()
        self.close()

    def close(self) -> None:
        if self.jobs is not None:
            self.jobs.close()
        self.relay.close()
        self.sock.close()
        self.control.close()
        self.context.term()
        if self.address.startswith("ipc://"):       # zmq leaves the socket file behind
            try:
                os.unlink(self.address[len("ipc://"):])
            except OSError:
                pass

    # --- dispatch ------------------------------------------------------------------------
    def handle(self, ident: bytes, messages: list, now: float) -> None:
        peer = self.peers.get(ident)
        if peer is None:
            first = messages[0]
            if first[0] != P.HELLO:
                self.keep_rejoin_results(ident, messages, now)
                return self.ask_rejoin(ident, now)      # a process of the head that ran here before this one
            self.on_hello(ident, first[1], first[2], now)
            peer = self.peers.get(ident)
            if peer is None or first[2].get("rejoin") is None:
                return
            messages = messages[1:]                 # a rejoin's re-sent requests follow its HELLO
        peer.last_seen = now
        for message in messages:
            try:
                handler = self.handlers.get(message[0])
                if handler is not None:
                    handler(self, ident, peer, now, *message[1:])
            except Exception as e:       # a malformed message: drop it, keep the rest of the batch
                self.drop_message(ident, e)

    def drop_message(self, ident: bytes | None, error: Exception) -> None:
        """Log (rate-limited) a message the head could not decode or handle, and tell its sender."""
        where = traceback.extract_tb(error.__traceback__)[-1]
        peer = self.peers.get(ident) if ident is not None else None
        sender = f"{peer.role if peer else 'unknown peer'} {ident.hex()}" if ident is not None else "a peer"
        text = f"{type(error).__name__}: {str(error)[:200]}"
        self.log_dropped(f"tasuki head: dropped a malformed message from {sender}: {text} (in {where.name}, "
                         f"{os.path.basename(where.filename)} line {where.lineno}). A peer running another "
                         f"tasuki version, or a bug: please report it.")
        if peer is not None:
            self.send(ident, P.warn(f"the head dropped a message from this process ({text}); "
                                      f"does it run tasuki {__version__}?"))

    def on_hello(self, ident: bytes, role: str, info: dict, now: float) -> None:
        mismatch = []
        if info.get("version") != __version__:
            mismatch.append(f"tasuki {info.get('version')} (head runs {__version__})")
        if info.get("python") != PYTHON_VERSION:
            mismatch.append(f"Python {info.get('python')} (head runs {PYTHON_VERSION})")
        if mismatch:
            self.send(ident, P.refused(f"this {role} runs " + " and ".join(mismatch) +
                              f"; install tasuki {__version__} on Python {PYTHON_VERSION} on every node and driver"))
            return
        if info.get("rejoin") is not None:
            return self.rejoin(ident, role, info, now)
        peer = Peer(role, info, last_seen=now)
        self.peers[ident] = peer
        if role == "driver":
            self.add_driver(ident, peer, f"{self.next_job:04d}")
            self.next_job += 1
        elif role == "node":
            node = self.add_node(ident, info, now)
            self.spawn_workers(node.node_id, math.ceil(node.total.get("CPU", 0)))    # 1.5 CPUs: 2 workers
            for key in list(self.warned_shapes):
                if self.sched.feasible(*key):
                    self.warned_shapes.discard(key)
        elif role == "worker":
            worker = self.sched.worker_ready(ident, info["pid"], now)
            if worker is None:                     # not a worker we asked for, or too late
                self.send(ident, P.exit())
                del self.peers[ident]
            else:
                self.send(ident, P.welcome({"session": self.started_at}))

    def add_driver(self, ident: bytes, peer: Peer, job_id: str) -> None:
        """A driver's HELLO (first, or rejoining a restarted head with its job id): its job's settings,
        and WELCOME with the job id, the node directory and this head's session."""
        peer.job_id = job_id
        self.drivers_by_job[job_id] = ident
        self.job_settings[job_id] = {"namespace": peer.info.get("namespace") or "default",
                                     "default_actor_lifetime": peer.info.get("default_actor_lifetime")}
        if peer.info.get("submission_id"):          # a submitted job's driver (TASUKI_JOB_ID)
            self.submissions.setdefault(peer.info["submission_id"], set()).add(job_id)
        self.send(ident, P.welcome({"job_id": job_id, "nodes": self.node_directory(), "session": self.started_at}))

    def add_node(self, ident: bytes, info: dict, now: float) -> Node:
        """A node agent's HELLO (first, or rejoining a restarted head): its resources join the
        scheduler, and it is welcomed with the node directory and this head's session."""
        node = Node(info["node_id"], info["address"], info["ip"], dict(info["resources"]), dict(info["resources"]),
                    gpu_ids=list(info.get("gpu_ids", [])), info=info, labels=dict(info.get("labels") or {}))
        self.sched.add_node(node, now)
        self.send(ident, P.welcome({"nodes": self.node_directory(), "session": self.started_at}))
        return node

    def on_function(self, ident, peer, now, fn_id: bytes, blob: bytes) -> None:
        self.functions[fn_id] = blob
        peers = self.function_peers.setdefault(fn_id, set())
        if ident not in peers:         # each process registers a function once (it remembers having sent it)
            peers.add(ident)
            peer.functions.append(fn_id)
        self.unused_functions.discard(fn_id)

    def on_submit(self, ident, peer, now, spec: tuple) -> None:
        (task_id, fn_id, name, args, deps, contained, return_ids, resources,
         max_retries, retry_exceptions, max_calls, selector) = spec
        if task_id in self.tasks:        # re-sent by a driver rejoining a restarted head (see recovery.py)
            return
        task = Task(task_id, fn_id, name, args, deps, contained, return_ids,
                    resources if type(resources) is tuple else shape_of(resources),
                    max_retries, retry_exceptions, owner=ident,
                    job_id=peer.job_id or self.job_of(ident), submitted_at=now,
                    max_calls=max_calls, selector=selector)
        submitter = self.sched.workers.get(ident)
        if submitter is not None and submitter.task is not None:
            task.parent = submitter.task.task_id
            task.depth = submitter.task.depth + 1
            submitter.task.has_children = True
        for oid in return_ids:
            self.objects.add(oid, ident, maker=task)
        self.admit(task, now)

    def admit(self, task: Task, now: float, pin: bool = True) -> None:
        """Register a task, pin its argument refs, and queue it once its dependencies are ready."""
        self.tasks[task.task_id] = task
        if pin:
            self.objects.pin(task.contained)
        waiting, failed = self.objects.add_dependent(task, task.deps) if task.deps else (0, None)
        task.waiting_on += waiting
        if failed is not None:
            obj = self.objects.get(failed)
            if obj is None:
                return self.finish_with_error(task, ObjectLostError(
                    f"argument {failed.hex()} of task {task.name} was freed before the task was submitted"), now)
            return self.finish_with_blob(task, obj.data, "failed", now)
        if task.waiting_on == 0:
            self.enqueue(task)

    def enqueue(self, task: Task) -> None:
        self.sched.enqueue(task)

    def warn_infeasible(self, now: float) -> None:
        """Warn a task's owner once per queue (shape and label selector) that no node could ever run
        it (after a grace period, so tasks submitted while the cluster's first nodes are still joining
        do not warn)."""
        for key, queue in self.sched.queues.items():
            if not queue or key in self.warned_shapes or self.sched.feasible(*key):
                continue
            task = queue[0]
            if now - max(task.submitted_at, self.started_at) < INFEASIBLE_GRACE_S:
                continue
            self.warned_shapes.add(key)
            alive = [n for n in self.sched.nodes.values() if n.state == ALIVE]
            shapes = sorted({format_shape(shape_of(n.total)) + (
                f" labelled {', '.join(f'{k}={v}' for k, v in sorted(n.labels.items())) or '(none)'}"
                if task.selector else "") for n in alive})
            self.send(task.owner, P.warn(
                f"task {task.name} asks for {format_key(key)}, which no node can provide "
                f"(nodes offer: {'; '.join(shapes) or 'no nodes'}). It stays pending until a node that "
                f"fits joins the cluster (the autoscaler sees it in /api/v1/demand)."))

    def on_hold(self, ident, peer, now, oids) -> None:
        self.objects.hold(ident, oids)

    def on_release(self, ident, peer, now, oids) -> None:
        forgotten = self.objects.release(ident, oids)
        if forgotten:
            self.free(forgotten, now)

    def on_put(self, ident, peer, now, oid, kind, data, contained, size=0) -> None:
        self.objects.add(oid, ident)
        self.set_ready(oid, kind, data, contained, size, now)

    def on_get(self, ident, peer, now, oids) -> None:
        for oid in self.objects.ask(ident, oids, now):
            self.send(ident, self.object_message(oid))

    def answer_early_gets(self, now: float) -> None:
        for ident, oid in self.objects.due_early_gets(now, config.EARLY_GET_WAIT_S):
            self.send(ident, self.object_message(oid))

    def on_done(self, ident, peer, now, task_id, results, retryable) -> None:
        worker = self.sched.workers.get(ident)
        task = self.tasks.get(task_id)
        if worker is None or task is None or worker.task is not task:
            return
        self.sched.task_done(worker, now)
        if task.max_calls and self.sched.calls_used_up(worker, task) and not self.actors.owns(ident):
            self.sched.worker_gone(ident, now)           # ran its max_calls: it exits, as in Ray
            self.send(ident, P.exit())
        self.retire_surplus(worker.node_id)
        if retryable and not task.cancelled and task.attempt < task.max_retries:
            task.attempt += 1
            task.worker = None
            self.sched.enqueue(task)
            return
        outcome = "succeeded" if results[0][1] != P.ERROR else "failed"
        self.finish(task, results, outcome, now)

    def on_blocked(self, ident, peer, now, returned=()) -> None:
        worker = self.sched.workers.get(ident)
        if worker is not None:
            self.sched.worker_blocked(worker, returned)

    def on_returned(self, ident, peer, now, task_ids) -> None:
        worker = self.sched.workers.get(ident)
        if worker is not None:
            self.sched.return_backlog(worker, set(task_ids), now)

    def on_unblocked(self, ident, peer, now) -> None:
        worker = self.sched.workers.get(ident)
        if worker is not None:
            self.sched.worker_unblocked(worker)

    def on_cancel(self, ident, peer, now, oid, force, recursive=False) -> None:
        if P.is_actor_call(oid):
            return self.cancel_actor_call(oid)
        task = self.objects.maker_of(oid)
        if task is None or task.cancelled:
            return
        task.cancelled = True
        if recursive and task.has_children:     # as Ray: the unfinished tasks it submitted, and theirs (a scan:
            # only for a task that submitted some, so cancelling many queued tasks stays linear)
            for child in [t for t in self.tasks.values() if t.parent == task.task_id and not t.cancelled]:
                self.on_cancel(ident, peer, now, child.return_ids[0], force, True)
        error = TaskCancelledError(f"task {task.name} was cancelled")
        if task.worker is not None and task in task.worker.backlog:     # sent, not started
            task.worker.backlog.remove(task)
            self.send(task.worker.worker_id, P.interrupt(task.task_id))
            task.worker = None
        if task.worker is None:
            self.sched.remove_pending(task)
            self.objects.remove_dependent(task, task.deps)
            self.finish_with_error(task, error, now, outcome="cancelled")
        elif force:
            node = self.sched.nodes[task.worker.node_id]
            self.send(b"N" + node.node_id.encode(), P.kill(task.worker.worker_id))
        else:
            self.send(task.worker.worker_id, P.interrupt(task.task_id))

    def cancel_actor_call(self, oid: bytes) -> None:
        """cancel() of an actor call not finished yet: its caller drops it if it still holds it
        (the actor not located yet, or restarting); the actor skips it if queued there, cancels it
        if it is a running async call, else marks it (see worker.cancel_call)."""
        first = oid[:-1] + b"\0"
        found = self.actors.call_of(first)      # rare: a scan is fine
        if found is None:
            return                    # finished already (no error, as in Ray), or unknown
        actor, (return_ids, _) = found
        owner = next((self.objects[o].owner for o in return_ids if o in self.objects), None)
        for target in {owner, actor.worker_id}:
            if target is not None and target in self.peers:
                self.send(target, P.cancel_call(first))

    def on_log(self, ident, peer, now, lines) -> None:
        worker = self.sched.workers.get(ident)
        job = worker.task.job_id if worker is not None and worker.task is not None else ""
        targets = [self.drivers_by_job[job]] if job in self.drivers_by_job else list(self.drivers_by_job.values())
        for target in targets:
            self.send(target, P.log(lines))

    def on_heartbeat(self, ident, peer, now, stats=None) -> None:
        if peer.role == "driver":
            self.send(ident, P.heartbeat())     # drivers time out a head that stops answering
        elif peer.role == "node":
            node = self.sched.nodes.get(peer.info["node_id"])
            if node is not None:
                node.last_heartbeat = now
                self.send(ident, P.heartbeat())     # and so do nodes (TASUKI_HEAD_RECONNECT_S)
                node.stats = stats or {}
                if stats and stats.get("used", 0) > config.GC_STORE_FRACTION * stats.get("capacity", float("inf")):
                    self.collect_garbage(now)

    def collect_garbage(self, now: float) -> None:
        """A store is nearly full: every worker and driver runs gc.collect(), so refs held only by
        reference cycles (in a process that disabled gc, or between its collections) let their
        objects go, as Ray's global GC does; at most once per config.GC_MIN_INTERVAL_S."""
        if now - self.last_gc < config.GC_MIN_INTERVAL_S:
            return
        self.last_gc = now
        for ident, peer in self.peers.items():
            if peer.role in ("worker", "driver"):
                self.send(ident, P.gc())

    def on_worker_exited(self, ident, peer, now, worker_id, pid, code) -> None:
        worker, task = self.sched.worker_gone(worker_id, now)
        self.forget_peer(worker_id)
        actor = self.actors.on_worker(worker_id)
        if actor is not None:
            self.actor_died(actor, f"its worker (pid {pid}, node {worker.node_id}) died: {describe_exit(code)}", now)
        elif task is not None and task.actor is not None:
            actor = self.actors.get(task.actor["actor_id"])
            self.tasks.pop(task.task_id, None)
            if actor is not None:
                self.actor_died(actor, f"its worker (pid {pid}) died while running the constructor: "
                                       f"{describe_exit(code)}", now)
        elif task is not None:
            self.task_lost(task, WorkerCrashedError(
                f"the worker running task {task.name} (pid {pid}, node {worker.node_id}) died: "
                f"{describe_exit(code)}"), now)

    def on_stored(self, ident, peer, now, oid, size) -> None:
        if not self.objects.add_copy(oid, peer.info["node_id"]):
            self.send(ident, P.free([oid]))

    def on_bye(self, ident, peer, now) -> None:
        self.forget_peer(ident)

    def on_query(self, ident, peer, now, req_id, what, arg=None) -> None:
        if what == "actor" and self.first_rejoin_at is not None:
            return self.query_while_rejoining(ident, req_id, arg, now, now)
        self.send(ident, P.answer(req_id, self.query(what, arg, now, ident)))

    # --- actors (their state and decisions: actor_directory.py) ------------------------------
    def on_create_actor(self, ident, peer, now, actor_id, spec, req) -> None:
        fn_id, class_name, args, deps, contained, placement, info = spec
        job = self.job_settings.get(self.job_of(ident), {})
        info["namespace"] = info["namespace"] or job.get("namespace", "default")
        if info["detached"] is None:           # no lifetime option: the job's default (JobConfig)
            info["detached"] = job.get("default_actor_lifetime") == "detached"
        actor = self.actors.create(actor_id, info, ident, spec, self.job_of(ident))
        if not isinstance(actor, Actor):       # its name is taken: the live actor's id (get_if_exists), or why
            return self.send(ident, P.answer(req, actor))
        # the creator holds the actor's handles' refcount entry; a process that unpickles a handle HOLDs it
        self.objects.add(actor_id, ident, kind=HANDLE_KIND)
        self.objects.pin(contained)        # the constructor's arguments live as long as the actor
        self.place_actor(actor, now)
        if actor_id in self.actors.early_messages:
            self.replay_actor_messages(actor_id, now)
        if req is not None:
            self.send(ident, P.answer(req, actor_id))

    def place_actor(self, actor: Actor, now: float) -> None:
        fn_id, class_name, args, deps, contained, placement, info = actor.spec
        task = Task(actor.actor_id + b"c" + bytes([actor.restarts % 256]), fn_id, f"{class_name}.__init__",
                    args, deps, contained, [], shape_of(placement), 0, False, owner=actor.owner,
                    job_id=actor.job_id, submitted_at=now, selector=info.get("label_selector") or (),
                    actor={"actor_id": actor.actor_id, "max_concurrency": info["max_concurrency"],
                           "is_async": info["is_async"], "class_name": class_name, "name": info["name"],
                           "namespace": info["namespace"], "held": info["held"], "restarts": actor.restarts,
                           "max_task_retries": info["max_task_retries"], "info": info})
        self.admit(task, now, pin=False)

    def on_actor_ready(self, ident, peer, now, actor_id, address, error) -> None:
        actor = self.actors.get(actor_id)
        worker = self.sched.workers.get(ident)
        if worker is None or worker.task is None:
            return
        task = worker.task
        self.tasks.pop(task.task_id, None)
        if actor is None or actor.state == P.DEAD_STATE or error is not None:
            self.sched.worker_gone(ident, now)       # this worker exits; it must not get new work
            self.forget_peer(ident)
            self.send(ident, P.exit())
            if actor is not None and actor.state != P.DEAD_STATE:
                actor.no_restart = True
                self.actor_died(actor, f"an error was raised in its creation task, {error}", now)
            return
        self.sched.bind_actor(worker, actor_id, shape_of(actor.info["held"]))
        self.actors.bind(actor, ident, worker.node_id, address)
        self.tell_subscribers(actor)

    def on_actor_locate(self, ident, peer, now, actor_id) -> None:
        actor = self.actors.subscribe(actor_id, ident, now)
        if actor is not None and actor.state in (P.ALIVE_STATE, P.DEAD_STATE):
            self.send(ident, P.actor_info(actor_id, actor.state, actor.address, actor.cause))

    def tell_subscribers(self, actor: Actor) -> None:
        for ident in actor.subscribers:
            if ident in self.peers:
                self.send(ident, P.actor_info(actor.actor_id, actor.state, actor.address, actor.cause))

    def on_actor_calls(self, ident, peer, now, actor_id, calls) -> None:
        actor = self.actors.get(actor_id)
        for return_ids, contained in calls:
            for oid in return_ids:
                self.objects.add(oid, ident)
            self.objects.pin(contained)
            early = self.actors.add_call(actor, actor_id, ident, return_ids, contained, now)
            if early is not None:           # its actor is dead (or unknown), or its result came first
                self.call_added(early, actor, actor_id, return_ids, contained, now)

    def call_added(self, early, actor: Actor | None, actor_id: bytes, return_ids: list, contained: list,
                   now: float) -> None:
        """What add_call said was not simply pending: fail the call, or handle its early result."""
        if early is CALL_FAILS:
            self.fail_call(actor, actor_id, return_ids, contained, now)
        else:
            self.on_actor_result(*early)

    def answer_early_actor_messages(self, now: float) -> None:
        for actor_id in self.actors.overdue(now, config.EARLY_GET_WAIT_S):    # no such actor after all: say so
            self.replay_actor_messages(actor_id, now)

    def replay_actor_messages(self, actor_id: bytes, now: float) -> None:
        """The locates and calls that came before the actor's creation, now that it exists (or never will)."""
        actor = self.actors.get(actor_id)
        for kind, ident, arg in self.actors.unpark(actor_id):
            if kind == P.ACTOR_CALLS:
                early = self.actors.add_call(actor, actor_id, ident, *arg, now, park=False)
                if early is not None:
                    self.call_added(early, actor, actor_id, *arg, now)
            elif actor is not None:
                self.on_actor_locate(ident, None, now, actor_id)
            else:
                self.send(ident, P.actor_info(actor_id, P.DEAD_STATE, None, UNKNOWN_ACTOR))

    def on_actor_result(self, ident, peer, now, actor_id, first, results) -> None:
        actor = self.actors.get(actor_id)
        call = actor.pending.pop(first, None) if actor is not None else None    # (inline: the per-call path)
        if call is None:                    # kept until the call is registered (add_call hands it back)
            return self.actors.keep_result(first, (ident, peer, now, actor_id, first, results))
        records = self.objects.records
        for oid, kind, data, contained, size in results:
            if oid not in records:
                if kind == P.STORED_KIND:
                    self.free_on_nodes(oid, data)
                continue
            # the caller already has inline results from the actor; stored ones it learns from us
            self.set_ready(oid, kind, data, contained, size, now, push_owner=kind == P.STORED_KIND)
        if call[1]:
            self.unpin(call[1], now)
        self.finished["succeeded" if results and results[0][1] != P.ERROR else "failed"] += 1
        if actor.unreferenced and not actor.pending:     # its handles are gone: it ends after its last call
            self.end_actor(actor, now)

    def fail_call(self, actor: Actor | None, actor_id: bytes, return_ids, contained, now,
                  info: dict | None = None, cause: str | None = None) -> None:
        """Fail an actor call with ActorDiedError: the actor's cause of death, or `cause` (`info`: the
        actor's, for its class name, when it is not in the directory)."""
        from .actor import died_error
        cause = cause or (actor.cause if actor is not None else UNKNOWN_ACTOR)
        blob = serialization.dumps_inline(died_error(actor.info if actor else info or {}, actor_id, cause))
        for oid in return_ids:
            obj = self.objects.get(oid)
            if obj is not None and obj.kind is None:
                self.set_ready(oid, P.ERROR, blob, [], len(blob), now)
        self.unpin(contained, now)

    def on_kill_actor(self, ident, peer, now, actor_id, no_restart) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None:
            self.kill_actor(actor, no_restart, "it was killed with tasuki.kill()", now)

    def kill_actor(self, actor: Actor, no_restart: bool, cause: str, now: float) -> None:
        if not self.actors.kill(actor, no_restart, cause):
            return                          # dead already
        if actor.worker_id is not None and actor.worker_id in self.sched.workers:
            self.send(b"N" + actor.node_id.encode(), P.kill(actor.worker_id))
        else:
            self.drop_creation(actor)
            self.actor_died(actor, actor.cause, now)

    def on_actor_exit(self, ident, peer, now, actor_id, cause) -> None:
        """The actor ends itself on purpose (its worker exits next): no restart; pending calls fail saying why."""
        self.actors.exiting(actor_id, cause)

    def handles_gone(self, actor_id: bytes, now: float) -> None:
        """No process holds a handle to the actor, and no message or object carries one."""
        actor = self.actors.unreferenced(actor_id)
        if actor is not None:
            self.end_actor(actor, now)

    def end_actor(self, actor: Actor, now: float) -> None:
        """End an actor no one can call any more, gracefully: an alive one exits (its __del__ and atexit
        handlers run); one still being placed or restarted is dropped."""
        self.actors.ending(actor)
        if actor.state == P.ALIVE_STATE and actor.worker_id in self.sched.workers:
            self.send(actor.worker_id, P.exit())
        elif actor.worker_id is None:
            if self.drop_creation(actor):
                self.actor_died(actor, actor.cause, now)

    def drop_creation(self, actor: Actor) -> bool:
        """Take the actor's creation task back if it has not started; False if it is running."""
        task = self.producer_of_actor(actor)
        if task is None:
            return True
        if task.worker is not None:
            return False                 # its constructor runs: on_actor_ready sees the actor dead
        self.sched.remove_pending(task)
        self.objects.remove_dependent(task, task.deps)
        self.tasks.pop(task.task_id, None)
        return True

    def producer_of_actor(self, actor: Actor) -> Task | None:
        return next((t for t in self.tasks.values() if t.actor and t.actor["actor_id"] == actor.actor_id), None)

    def actor_died(self, actor: Actor, cause: str, now: float) -> None:
        """Restart the actor if it may, else mark it dead and fail its pending calls."""
        if actor.state == P.DEAD_STATE:
            return
        if self.relay.links:
            self.relay.actor_gone(actor.actor_id)
        restarts = self.actors.died(actor, cause)
        self.tell_subscribers(actor)
        if restarts:
            for return_ids, contained in self.actors.failed_calls(actor):
                self.fail_call(actor, actor.actor_id, return_ids, contained, now)
            actor.cause = ""
            self.place_actor(actor, now)
            return
        fn_id = actor.spec[0]
        if fn_id in self.function_peers and not self.function_peers[fn_id]:    # its drivers have gone
            self.unused_functions.add(fn_id)
        for return_ids, contained in self.actors.failed_calls(actor):
            self.fail_call(actor, actor.actor_id, return_ids, contained, now)
        self.unpin(actor.spec[4], now)

    # --- relayed transfers and actor calls, for drivers that reach only the head (relay.py) ---
    def relay_frames(self, ident: bytes, message: tuple, data: list) -> None:
        """A message with raw data frames: a driver's WRITE, or a node's CHUNK for a relayed READ."""
        peer = self.peers.get(ident)
        if peer is None:
            return
        if message[0] == P.WRITE and peer.role == "driver":
            self.relay.write(ident, message, data)
        elif message[0] == P.CHUNK and peer.role == "node":
            self.relay.answer(message, data)

    def on_relay_read(self, ident, peer, now, req, oid, start, length, node_id) -> None:
        node = self.sched.nodes.get(node_id)
        self.relay.read(ident, req, oid, start, length, node_id, node is not None and node.state != DEAD)

    def on_relay_alloc(self, ident, peer, now, req, oid, size) -> None:
        self.relay.alloc(ident, req, oid, size, self.node_directory(now))

    def on_relay_seal(self, ident, peer, now, oid, parts) -> None:
        self.relay.seal(ident, oid, parts)

    def on_relay_answer(kind: str):        # noqa: N805 (builds the handlers of a node's answers, below)
        def handler(self, ident, peer, now, *rest) -> None:
            if peer.role == "node":
                self.relay.answer((kind, *rest))
        return handler

    def on_actor_send(self, ident, peer, now, actor_id, address, calls) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None and actor.address == address and actor.state == P.ALIVE_STATE:
            self.relay.actor_send(ident, actor_id, address, calls)
        # else the process the driver meant is gone (as a direct send to it would be lost): the
        # ACTOR_INFO on its way to the driver makes it fail these calls, or resend them after a restart

    handlers = {
        P.FUNCTION: on_function, P.SUBMIT: on_submit, P.HOLD: on_hold, P.RELEASE: on_release,
        P.PUT: on_put, P.GET: on_get, P.DONE: on_done, P.BLOCKED: on_blocked,
        P.UNBLOCKED: on_unblocked, P.RETURNED: on_returned, P.CANCEL: on_cancel, P.LOG: on_log, P.HEARTBEAT: on_heartbeat,
        P.WORKER_EXITED: on_worker_exited, P.STORED: on_stored, P.BYE: on_bye, P.QUERY: on_query,
        P.CREATE_ACTOR: on_create_actor, P.ACTOR_READY: on_actor_ready, P.ACTOR_LOCATE: on_actor_locate,
        P.ACTOR_CALLS: on_actor_calls, P.ACTOR_RESULT: on_actor_result, P.KILL_ACTOR: on_kill_actor,
        P.ACTOR_EXIT: on_actor_exit,
        P.READ: on_relay_read, P.ALLOC: on_relay_alloc, P.SEAL: on_relay_seal, P.ACTOR_SEND: on_actor_send,
        P.CHUNK: on_relay_answer(P.CHUNK), P.ALLOCATED: on_relay_answer(P.ALLOCATED),
        P.WRITTEN: on_relay_answer(P.WRITTEN),
    }
    del on_relay_answer

    # --- request_resources: the cluster's standing request to the autoscaler --------------------
    def on_request_resources(self, ident, peer, now, req, bundles) -> None:
        """Replace the standing request (tasuki.autoscaler.request_resources) with `bundles`,
        [(shape, count)] already checked and merged by the caller; [] clears it. It outlives the
        driver that made it, as Ray's: the autoscaler keeps the capacity until told otherwise."""
        self.requested_resources = [(tuple(shape), int(count)) for shape, count in bundles if count > 0]
        self.send(ident, P.answer(req, None))

    def requested_entries(self) -> list[dict]:
        return [{"shape": dict(shape), "count": count} for shape, count in self.requested_resources]

    handlers[P.REQUEST_RESOURCES] = on_request_resources

    # --- scheduling and results ----------------------------------------------------------
    def schedule(self, now: float) -> None:
        if self.sched.queues:
            self.dispatch(now)
        for task, victim in self.sched.steals():
            self.send(victim.worker_id, P.steal(task.task_id))

    def dispatch(self, now: float) -> None:
        assignments, spawns = self.sched.schedule(now)
        nodes = self.sched.nodes
        for task, worker in assignments:
            fn_blob = None
            if task.fn_id not in worker.functions:
                worker.functions.add(task.fn_id)
                fn_blob = self.functions.get(task.fn_id)
            deps = {oid: self.objects.payload(oid, nodes) for oid in task.deps}
            self.send(worker.worker_id, P.run((task.task_id, task.fn_id, fn_blob, task.name, task.args,
                                                 deps, task.return_ids, task.retry_exceptions,
                                                 task.attempt < task.max_retries, task.gpu_ids,
                                                 task.job_id, task.shape, task.actor)))
        for node_id, count in spawns.items():
            self.spawn_workers(node_id, count)
        for shape in [s for s, q in self.sched.queues.items() if not q]:
            del self.sched.queues[shape]

    def spawn_workers(self, node_id: str, count: int) -> None:
        ids = [b"W" + os.urandom(8) for _ in range(count)]
        for wid in ids:
            self.sched.worker_starting(node_id, wid)
        if ids:
            self.send(b"N" + node_id.encode(), P.spawn(ids))

    def retire_surplus(self, node_id: str) -> None:
        node = self.sched.nodes.get(node_id)
        if node is None or self.sched.pending_count():
            return
        for worker in self.sched.surplus_idle_workers(node):
            if self.actors.owns(worker.worker_id):      # its actors share its fate: keep it
                continue
            self.sched.worker_gone(worker.worker_id, time.time())
            self.send(worker.worker_id, P.exit())

    def finish(self, task: Task, results: list, outcome: str, now: float) -> None:
        if task.actor is not None:     # a creation task that could not run (an argument failed, cancelled)
            self.tasks.pop(task.task_id, None)
            actor = self.actors.get(task.actor["actor_id"])
            if actor is not None:
                actor.no_restart = True
                self.actor_died(actor, "its constructor could not run: one of its arguments failed", now)
            return
        records = self.objects.records
        for oid, kind, data, contained, size in results:
            if oid not in records:               # nobody holds the result any more
                if kind == P.STORED_KIND:
                    self.free_on_nodes(oid, data)
                continue
            self.set_ready(oid, kind, data, contained, size, now)
        self.task_ended(task, outcome, now)

    def finish_with_error(self, task: Task, error: BaseException, now: float, outcome: str = "failed") -> None:
        self.finish_with_blob(task, serialization.dumps_inline(error), outcome, now)

    def finish_with_blob(self, task: Task, blob: bytes, outcome: str, now: float) -> None:
        self.finish(task, P.error_results(blob, task.return_ids), outcome, now)

    def task_ended(self, task: Task, outcome: str, now: float) -> None:
        self.tasks.pop(task.task_id, None)
        # a task that succeeded is kept for its results' lineage (object_directory.py, lineage.py)
        kept = task if outcome == "succeeded" and task.actor is None else None
        forgotten = self.objects.task_ended(task.return_ids, task.contained, kept)
        if forgotten:
            self.free(forgotten, now)
        self.finished[outcome] += 1
        elapsed = now - task.submitted_at
        self.latency_sum += elapsed
        for i, bound in enumerate(LATENCY_BUCKETS):
            if elapsed <= bound:
                self.latency_counts[i] += 1
                break

    def task_lost(self, task: Task, error: BaseException, now: float) -> None:
        """The task's worker or node died: retry it, or fail it once retries are spent."""
        task.worker = None
        if task.cancelled:
            self.finish_with_error(task, TaskCancelledError(f"task {task.name} was cancelled"), now, "cancelled")
        elif task.attempt < task.max_retries:
            task.attempt += 1
            self.sched.requeue_front(task)
        else:
            self.finish_with_error(task, error, now, "crashed")

    def set_ready(self, oid, kind, data, contained, size, now, push_owner: bool = True) -> None:
        """The object is made: tell its owner and waiters, wake or fail the tasks waiting for it,
        and forget it if no one wants it (after the tasks: failing one can unpin it first)."""
        tell, dependents = self.objects.ready(oid, kind, data, contained, size, self.peers, push_owner)
        if tell:
            message = P.object(oid, *self.objects.payload(oid, self.sched.nodes))
            for ident in tell:
                self.send(ident, message)
        for task in dependents:
            if task.cancelled:
                continue
            if kind == P.ERROR:
                self.finish_with_blob(task, data, "failed", now)
                self.objects.remove_dependent(task, task.deps)
                continue
            task.waiting_on -= 1
            if task.waiting_on == 0:
                self.enqueue(task)
        forgotten = self.objects.drop_if_unreferenced(oid)
        if forgotten:
            self.free(forgotten, now)

    def object_message(self, oid: bytes) -> tuple:
        """OBJECT(id, kind, data) as the head sends it (an ObjectLostError for an unknown id)."""
        return self.objects.message(oid, self.sched.nodes)

    def unpin(self, oids, now: float) -> None:
        forgotten = self.objects.unpin(oids)
        if forgotten:
            self.free(forgotten, now)

    def free(self, forgotten: Forgotten, now: float) -> None:
        """Objects were forgotten: FREE the stored ones on their nodes; an actor whose handles'
        entry went ends once its calls are answered."""
        for oid, obj in forgotten:
            if obj.kind == P.STORED_KIND:
                self.free_on_nodes(oid, obj.data)
            elif obj.kind == HANDLE_KIND:
                self.handles_gone(oid, now)

    def free_on_nodes(self, oid: bytes, node_ids) -> None:
        for node_id in node_ids if isinstance(node_ids, list) else [node_ids]:
            self.send(b"N" + node_id.encode(), P.free([oid]))

    def forget_peer(self, ident: bytes) -> None:
        """A driver or worker left: release everything it held."""
        peer = self.peers.pop(ident, None)
        if peer is None:
            return
        owned = self.actors.owner_gone(ident)
        if owned:
            self.end_owned_actors(owned, peer)
        if peer.role == "driver":
            self.relay.forget(ident)
            self.drivers_by_job.pop(peer.job_id, None)
            for task in [t for t in self.tasks.values() if t.owner == ident and t.worker is None]:
                if self.sched.remove_pending(task):
                    self.task_ended(task, "cancelled", time.time())
        forgotten = self.objects.holder_gone(ident)
        if forgotten:
            self.free(forgotten, time.time())
        self.release_functions(ident, peer)

    def end_owned_actors(self, owned: list, peer: Peer) -> None:
        """Fate sharing: the process that created these actors is gone, so are they (not the detached)."""
        if peer.role == "driver":
            cause = "its driver exited: the driver that created it owns it (use lifetime='detached' to keep it)"
        else:
            cause = (f"its owner died: the worker (pid {peer.info.get('pid')}) of the task or actor that created "
                     f"it exited. Create it with lifetime='detached' to let it outlive its creator")
        for actor in owned:
            self.kill_actor(actor, True, cause, time.time())

    def release_functions(self, ident: bytes, peer: Peer) -> None:
        """A peer left: the functions no connected peer registered any more are freed once no task
        or live actor needs their code (a task's retry and an actor's restart send it again)."""
        for fn_id in peer.functions:
            peers = self.function_peers.get(fn_id)
            if peers is not None:
                peers.discard(ident)
                if not peers:
                    self.unused_functions.add(fn_id)
        if self.unused_functions:
            self.free_unused_functions()

    def free_unused_functions(self) -> None:
        """Free the unused functions no live task runs; those a live actor runs wait for its death."""
        running = {task.fn_id for task in self.tasks.values()}
        actors = {actor.spec[0] for actor in self.actors.live()}
        freed = 0
        for fn_id in list(self.unused_functions):
            if fn_id in actors:
                self.unused_functions.discard(fn_id)       # actor_died puts it back
            elif fn_id not in running:
                self.unused_functions.discard(fn_id)
                freed += len(self.functions.pop(fn_id))
                del self.function_peers[fn_id]
        if freed >= FUNCTION_TRIM_BYTES:
            return_free_memory()

    # --- liveness ------------------------------------------------------------------------
    def check_liveness(self, now: float) -> None:
        self.warn_infeasible(now)
        if self.unused_functions:           # their drivers left while tasks of theirs still ran
            self.free_unused_functions()
        timeout = config.env_float("NODE_TIMEOUT", config.NODE_TIMEOUT_S)
        for node in list(self.sched.nodes.values()):
            if node.state != DEAD and now - node.last_heartbeat > timeout:
                self.node_died(node, now)
        for ident, peer in list(self.peers.items()):
            if peer.role == "driver" and now - peer.last_seen > config.DRIVER_TIMEOUT_S:
                self.forget_peer(ident)
        if self.actors.early_results and self.unclaimed_sweep_at is None:
            self.drop_early_actor_results(now, R.unclaimed_sweep_delay(config.DRIVER_TIMEOUT_S))

    def node_died(self, node: Node, now: float) -> None:
        self.node_deaths[node.state] += 1
        self.drains.pop(node.node_id, None)
        self.peers.pop(b"N" + node.node_id.encode(), None)
        self.relay.node_gone(node.node_id)
        for worker in self.sched.remove_node(node.node_id):
            self.forget_peer(worker.worker_id)       # its refs and its functions
            actor = self.actors.on_worker(worker.worker_id)
            if actor is not None:
                self.actor_died(actor, f"its node {node.node_id} ({node.ip}) died", now)
            elif worker.task is not None and worker.task.actor is not None:
                self.tasks.pop(worker.task.task_id, None)
                actor = self.actors.get(worker.task.actor["actor_id"])
                if actor is not None:
                    self.actor_died(actor, f"its node {node.node_id} ({node.ip}) died", now)
            elif worker.task is not None:
                self.task_lost(worker.task, NodeDiedError(
                    f"node {node.node_id} ({node.ip}) stopped heartbeating while it ran task {worker.task.name}"), now)
        loss = self.objects.node_lost(node.node_id, node.ip, self.functions.__contains__)
        for oid in loss.touched:
            self.tell_holders(oid)        # they may hold its stale location, be fetching it, or it is lost
        if loss.remade:
            self.objects_remade(loss, now)
        for ident, peer in self.peers.items():
            if peer.role in ("node", "driver"):    # their pulls from it fail now; a driver of it stops waiting on it
                self.send(ident, P.node_died(node.node_id, node.address))

    def tell_holders(self, oid: bytes) -> None:
        """Push an object's new state (fewer copies, or its loss) to the processes holding it."""
        message = self.object_message(oid)
        for ident in self.objects[oid].holders:
            if ident in self.peers:
                self.send(ident, message)

    # --- lineage reconstruction (decisions in lineage.py and object_directory.node_lost) ------
    def objects_remade(self, loss: Loss, now: float) -> None:
        """The only copies of `loss.remade` died with their node: tell their holders to GET them
        again (a reader of the stale copy finds it gone and asks again: client.read_stored_again),
        hold back the queued tasks that need them, and run again the tasks that make them."""
        for oid in loss.remade:
            gone = P.object(oid, P.STORED_KIND, [])       # no live copy: GET it again
            for ident in self.objects[oid].holders:
                if ident in self.peers:
                    self.send(ident, gone)
        remade = set(loss.remade)
        for queue in list(self.sched.queues.values()):
            for task in [t for t in queue if any(oid in remade for oid in t.deps)]:
                self.sched.remove_pending(task)
                self.admit(task, now, pin=False)          # it waits for them again
        for task in loss.rerun:
            task.attempt += 1                             # a reconstruction is a retry, as in Ray
            task.worker, task.waiting_on, task.stealing, task.submitted_at = None, 0, False, now
            self.admit(task, now)
        if loss.stale:        # after admit: a ref the task passes through stays pinned by its arguments
            self.unpin(loss.stale, now)

    # --- state for the CLI, the HTTP API and metrics ---------------------------------------
    def answer_control(self) -> None:
        frames = self.control.recv_multipart()
        request = json.loads(frames[-1])
        try:
            body = self.query(request["what"], request.get("arg"), time.time())
        except Exception as e:       # a bad HTTP request must not stop the head
            body = {"error": f"{type(e).__name__}: {e}"}
        self.control.send_multipart([*frames[:-1], json.dumps(body).encode()])
        self.flush()

    def job_of(self, ident: bytes) -> str:
        """The job the process at `ident` works for: a driver's own, or that of the task or actor a
        worker runs ("" when it runs none)."""
        peer = self.peers.get(ident)
        if peer is not None and peer.job_id:
            return peer.job_id
        worker = self.sched.workers.get(ident)
        if worker is None:
            return ""
        actor = self.actors.get(worker.actor_id) if worker.actor_id else None
        return actor.job_id if actor is not None else worker.task.job_id if worker.task is not None else ""

    def namespace_of(self, ident: bytes) -> str:
        """The namespace of the job the process at `ident` works for: its driver's init(namespace=...),
        for the driver itself and for the workers running its tasks and actors (as in Ray)."""
        return self.job_settings.get(self.job_of(ident), {}).get("namespace", "default")

    def query(self, what: str, arg, now: float, ident: bytes = b""):
        if what == "nodes":
            return self.node_directory(now)
        if what == "demand":
            return self.demand(now)
        if what == "status":
            return self.status(now)
        if what == "drain":
            return self.drain(arg, now)
        if what == "actor":
            actor = self.actors.get(arg["actor_id"]) if arg.get("actor_id") else \
                self.actors.named(arg.get("namespace") or self.namespace_of(ident), arg.get("name"))
            if actor is None or actor.state == P.DEAD_STATE:
                return None
            return {"actor_id": actor.actor_id, "info": actor.info}
        if what == "actors":
            return self.actors.table()
        if what == "named_actors":      # the names taken now: a killed actor's is free before its process ends
            return self.actors.names_taken()
        if what == "namespace":
            return self.namespace_of(ident)
        if what == "end_submission":
            return self.end_submission(arg, now)
        raise ValueError(f"unknown query {what!r}")

    def end_submission(self, submission_id: str, now: float) -> dict:
        """A submitted job ended (stopped, or its driver exited): its drivers are forgotten now (not after
        DRIVER_TIMEOUT_S), its tasks cancelled (running ones' workers killed) and its actors that are not
        detached killed, wherever they were created (by the driver or by its tasks)."""
        jobs = self.submissions.pop(submission_id, set())
        for ident, peer in list(self.peers.items()):
            if peer.role == "driver" and peer.job_id in jobs:
                self.forget_peer(ident)
        tasks = [t for t in self.tasks.values() if t.job_id in jobs and t.actor is None and not t.cancelled]
        for task in tasks:
            self.on_cancel(b"", None, now, task.return_ids[0], True)
        actors = [a for a in self.actors.live() if a.job_id in jobs and not a.info["detached"]]
        for actor in actors:
            self.kill_actor(actor, True, f"its job {submission_id} ended (stopped, or its driver exited)", now)
        return {"jobs": sorted(jobs), "tasks_cancelled": len(tasks), "actors_killed": len(actors)}

    def node_directory(self, now: float | None = None) -> list[dict]:
        now = now or time.time()
        out = []
        primaries = None          # node id -> primary copies, counted only if an idle node stores objects
        for node in self.sched.nodes.values():
            busy = sum(1 for w in node.workers if self.sched.workers[w].task is not None)
            idle = node.idle_since is not None
            if idle and node.stats.get("objects"):      # secondary copies and freed objects keep no node busy
                primaries = self.objects.primary_counts(self.node_states()) if primaries is None else primaries
                idle = not primaries.get(node.node_id)
            out.append({
                "node_id": node.node_id, "ip": node.ip, "state": node.state, "address": node.address,
                "ipc": node.info.get("ipc"), "store_path": node.info.get("store_path"),
                "pin_socket": node.info.get("pin_socket"),
                "boot_id": node.info.get("boot_id"), "version": node.info.get("version"),
                "node_name": node.info.get("node_name", ""), "group": node.info.get("group", ""),
                "labels": node.labels,
                "python": node.info.get("python"), "is_head_node": node.info.get("is_head_node", False),
                "resources": node.total, "available": {k: max(0.0, v) for k, v in node.available.items()},
                "workers": len(node.workers), "busy_workers": busy,
                "seconds_idle": round(now - node.idle_since, 3) if idle else 0.0,
                "object_store": {"used": node.stats.get("used", 0), "capacity": node.stats.get("capacity", 0),
                                 "objects": node.stats.get("objects", 0), "spilled": node.stats.get("spilled", 0)},
            })
        return out

    def demand(self, now: float) -> dict:
        pending = [self.pending_entry(key, len(queue), feasible=self.sched.feasible(*key))
                   for key, queue in self.sched.queues.items() if queue]
        waiting = sum(1 for t in self.tasks.values() if t.waiting_on > 0)
        return {"pending": pending, "requested": self.requested_entries(), "waiting_for_dependencies": waiting,
                "nodes": self.node_directory(now), "version": __version__}

    def status(self, now: float) -> dict:
        running = sum(1 for t in self.tasks.values() if t.worker is not None)
        return {"version": __version__, "address": self.address, "uptime_s": round(now - self.started_at, 1),
                "nodes": self.node_directory(now), "pending": self.sched.pending_count(),
                "pending_by_shape": [self.pending_entry(k, len(q)) for k, q in self.sched.queues.items() if q],
                "requested": self.requested_entries(),
                "running": running, "finished": dict(self.finished), "node_deaths": dict(self.node_deaths),
                "latency": {"buckets": list(zip([str(b) for b in LATENCY_BUCKETS], self.latency_counts)),
                            "sum": self.latency_sum},
                "objects": len(self.objects), "drivers": len(self.drivers_by_job), "actors": self.actors.table()}

    @staticmethod
    def pending_entry(key, count: int, **extra) -> dict:
        """{"shape", "count"[, "label_selector" in Ray's syntax], **extra}: one pending queue in JSON."""
        shape, selector = key
        entry = {"shape": dict(shape), "count": count, **extra}
        if selector:
            entry["label_selector"] = selector_dict(selector)
        return entry

    # --- drain: a node leaves and loses nothing (decisions in drain.py) ---------------------------
    def drain(self, arg: dict, now: float) -> dict:
        """The "drain" query (POST /api/v1/nodes/{id}/drain): start an API drain, or with "cancel"
        put an API-drained node back to alive; answer what is left there either way."""
        node = self.sched.nodes.get(arg["node_id"])
        if node is None:
            raise KeyError(f"no node {arg['node_id']!r}")
        if arg.get("cancel"):
            return self.cancel_drain(node, now)
        running, _ = self.node_load(node)
        if arg.get("if_idle") and running:
            return {"node_id": node.node_id, "drained": False, "refused": True, "running_tasks": running,
                    "state": node.state}
        if node.state == ALIVE:
            self.start_drain(node, D.API, None, now)
        return self.drain_answer(node, now)

    def cancel_drain(self, node: Node, now: float) -> dict:
        drain = self.drains.get(node.node_id)
        refusal = D.cancel_refusal(node.node_id, drain, node.state)
        cancelled = refusal is None and node.state == DRAINING
        if cancelled:
            node.state = ALIVE
            self.drains.pop(node.node_id, None)
        answer = self.drain_answer(node, now)
        answer["cancelled"] = cancelled
        if refusal is not None:
            answer["error"] = refusal
        elif not cancelled:
            answer["message"] = f"node {node.node_id} was not draining: nothing to cancel"
        return answer

    def drain_answer(self, node: Node, now: float) -> dict:
        running, actors = self.node_load(node)
        moves = D.objects_to_move(self.objects.stored(), node.node_id, self.node_states())
        return D.answer(node.node_id, node.state, running, actors, moves, node.stats.get("objects", 0),
                        self.drains.get(node.node_id), now)

    def on_leaving(self, ident, peer, now, timeout_s) -> None:
        """A node agent got SIGTERM: drain it, handing its running tasks back after timeout_s."""
        node = self.sched.nodes.get(peer.info.get("node_id"))
        if node is None or node.state == DEAD:
            self.send(ident, P.drained())
            return
        timeout_s = max(0.0, float(timeout_s))
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tasuki head: node {node.node_id} ({node.ip}) is leaving "
              f"(SIGTERM): draining it, running tasks handed back after {timeout_s:g} s", file=sys.stderr, flush=True)
        self.start_drain(node, D.SIGTERM, now + timeout_s, now)

    def start_drain(self, node: Node, reason: str, deadline: float | None, now: float) -> None:
        """No new work for the node; the tasks queued behind its workers' current ones come back
        (STEAL: a worker gives back those it has not started)."""
        node.state = DRAINING
        drain = self.drains.get(node.node_id)
        if drain is None:
            drain = self.drains[node.node_id] = D.Drain(node.node_id, reason)
        if reason == D.SIGTERM:              # an API drain becomes a leave, with its deadline
            drain.reason, drain.deadline = reason, deadline
        for wid in node.workers:
            worker = self.sched.workers.get(wid)
            for task in worker.backlog if worker is not None else ():
                if not task.stealing:
                    task.stealing = True
                    self.send(wid, P.steal(task.task_id))
        self.next_drain_tick = now

    def node_load(self, node: Node) -> tuple[int, int]:
        """(tasks running on the node, workers held by its live actors)."""
        running = actors = 0
        for wid in node.workers:
            worker = self.sched.workers.get(wid)
            if worker is not None:
                running += worker.task is not None
                actors += worker.actor_id is not None
        return running, actors

    def node_states(self) -> dict:
        return {n.node_id: n.state for n in self.sched.nodes.values()}

    def drain_tick(self, now: float) -> None:
        """For each draining node: hand back its running tasks past the deadline, move its actors
        that may restart, copy the objects only it holds, and say DRAINED once nothing is left."""
        started = time.perf_counter()
        self.tick_drains(now)
        # a tick scans the object directory: with millions of objects, tick less often (at most 10 % busy)
        self.next_drain_tick = now + max(DRAIN_TICK_S, 10 * (time.perf_counter() - started))

    def tick_drains(self, now: float) -> None:
        states, stored = self.node_states(), self.objects.stored()
        room = {n.node_id: n.stats.get("capacity", 0) - n.stats.get("used", 0)
                for n in self.sched.nodes.values() if n.state == ALIVE and n.stats}
        for other in self.drains.values():          # copies under way take room not yet in the heartbeats
            for oid, (target, _) in other.copying.items():
                if target in room and oid in self.objects:
                    room[target] -= self.objects[oid].size
        for node_id, drain in list(self.drains.items()):
            node = self.sched.nodes.get(node_id)
            if node is None or node.state != DRAINING:
                del self.drains[node_id]
                continue
            if D.past_deadline(drain, now):
                self.hand_back(node, drain, now)
            self.move_actors(node, drain, now)
            moves = D.objects_to_move(stored, node_id, states)
            waiting = {oid for oid, _ in moves}
            for oid in [o for o in drain.copying if o not in waiting]:
                del drain.copying[oid]               # copied (STORED added the location) or freed
            for oid, target in D.choose_targets(moves, room, drain.copying, now):
                drain.copying[oid] = (target, now)
                self.send(b"N" + target.encode(), P.replicate(oid, self.objects.locations(oid, self.sched.nodes)))
            running, actors = self.node_load(node)
            if drain.reason == D.SIGTERM and not (running or actors or moves):
                self.send(b"N" + node_id.encode(), P.drained())
                self.node_died(node, now)            # it left: its workers and its copies are forgotten now

    def hand_back(self, node: Node, drain: D.Drain, now: float) -> None:
        """The deadline passed: requeue the node's running tasks without counting an attempt (the
        scheduler forgets the worker first, so its DONE or exit is ignored; then it is killed), and
        end the actors that may not restart (they would die with the node)."""
        to_node = b"N" + node.node_id.encode()
        for wid in list(node.workers):
            worker = self.sched.workers.get(wid)
            if worker is None or worker.task is None or worker.actor_id is not None:
                continue
            _, task = self.sched.worker_gone(wid, now)      # frees its resources, requeues its backlog
            self.forget_peer(wid)
            self.send(to_node, P.kill(wid))
            task.worker = None
            drain.handed_back += 1
            if task.cancelled and task.actor is None:
                self.finish_with_error(task, TaskCancelledError(f"task {task.name} was cancelled"), now, "cancelled")
            else:
                self.sched.requeue_front(task)
        for actor in self.actors.alive_on(node.node_id, drain.moved_actors):
            self.kill_actor(actor, True, f"its node {node.node_id} ({node.ip}) left (SIGTERM) and the actor may "
                                         f"not restart (max_restarts=0): give it max_restarts to have it moved "
                                         f"to another node when its node drains", now)

    def move_actors(self, node: Node, drain: D.Drain, now: float) -> None:
        """Restart elsewhere the node's live actors that may restart (max_restarts not 0): kill the
        worker; its exit goes through actor_died, which places the actor again (never on a draining
        node). As in Ray, such a move does not count against max_restarts."""
        for actor in self.actors.alive_on(node.node_id, drain.moved_actors):
            if self.actors.move(actor, f"its node {node.node_id} ({node.ip}) was drained"):
                drain.moved_actors.add(actor.actor_id)
                self.send(b"N" + node.node_id.encode(), P.kill(actor.worker_id))

    # --- rejoin: a restarted head rebuilds its state from the processes that rejoin (recovery.py) ---
    # A process of the head that ran here before sends something other than HELLO: it is told REJOIN
    # once, and says HELLO again with info["rejoin"]. Nodes first or workers first, drivers before or
    # after: each piece waits for what it needs (a worker for its node) or merges with what came.
    def ask_rejoin(self, ident: bytes, now: float) -> None:
        if R.ask_again(self.rejoin_asked.get(ident), now):
            self.rejoin_asked[ident] = now
            self.send(ident, P.rejoin(self.started_at))

    def rejoin_tick(self, now: float) -> None:
        """Workers a node listed that have not said HELLO: tell them again (the first REJOIN may have
        found no connection); lookups by name waiting for them: answer those that need wait no more."""
        if self.rejoin_sweep_at is not None and now >= self.rejoin_sweep_at:
            self.rejoin_sweep_at = None
            self.lose_objects_of_absent_nodes()
            self.recreate_absent_actors(now)
            self.finish_reported_actor_calls(now)
        if self.unclaimed_sweep_at is not None and now >= self.unclaimed_sweep_at:
            self.unclaimed_sweep_at = None
            self.let_go_of_unclaimed(now)
        self.workers_expected &= self.sched.workers.keys()     # (one that exited meanwhile is not waited for)
        for wid in self.workers_expected:
            self.ask_rejoin(wid, now)
        waiting, self.deferred_lookups = self.deferred_lookups, []
        for ident, req_id, arg, asked_at in waiting:
            self.query_while_rejoining(ident, req_id, arg, asked_at, now)

    def rejoin(self, ident: bytes, role: str, info: dict, now: float) -> None:
        what = info["rejoin"]
        if self.first_rejoin_at is None:
            self.first_rejoin_at, self.rejoin_sweep_at = now, now + R.REJOIN_GRACE_S
            reconnect_s = config.env_float("HEAD_RECONNECT_S", config.HEAD_RECONNECT_S)
            self.unclaimed_sweep_at = now + R.unclaimed_sweep_delay(reconnect_s)
        if role == "node":
            self.rejoin_node(ident, info, what, now)
        elif role == "worker":
            self.rejoin_worker(ident, info, what, now)
        elif role == "driver":
            self.rejoin_driver(ident, info, what, now)

    def let_go_of_unclaimed(self, now: float) -> None:
        """Every process of the previous head has rejoined or given up (R.unclaimed_sweep_delay): let go
        of what none of them claimed, which would otherwise be kept for good: objects nodes store for
        nobody, results of tasks and actor calls nobody re-sent, workers waiting for a task nobody re-sent."""
        freed = 0
        for node_id, orphans in R.unclaimed(self.node_reports, self.objects.records).items():
            node = self.sched.nodes.get(node_id)
            if node is not None and node.state != DEAD:
                self.send(b"N" + node_id.encode(), P.free(orphans))
                freed += len(orphans)
            for oid in orphans:
                del self.node_reports[node_id][oid]
        dropped = len(self.rejoin_results)
        for results in self.rejoin_results.values():
            self.free_unclaimed_results(results)
        self.rejoin_results.clear()
        dropped += self.drop_early_actor_results(now, R.REJOIN_GRACE_S)
        killed = len(self.rejoin_running)
        for ident, info in self.rejoin_running.values():
            self.sched.worker_gone(ident, now)
            self.send(b"N" + info["node_id"].encode(), P.kill(ident))
        self.rejoin_running.clear()
        if freed or dropped or killed:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tasuki head: after the restart, no process claimed "
                  f"{freed} stored object(s), {dropped} result(s) and the task(s) of {killed} worker(s): "
                  f"freed, dropped and killed", file=sys.stderr, flush=True)

    def drop_early_actor_results(self, now: float, older_than: float) -> int:
        """Actor results kept for calls their callers never registered (a caller that died meanwhile):
        drop those kept longer than `older_than` seconds, freeing their stored objects."""
        early = self.actors.early_results
        stale = [first for first, kept in early.items() if now - kept[2] > older_than]
        for first in stale:
            self.free_unclaimed_results(early.pop(first)[5])
        return len(stale)

    def free_unclaimed_results(self, results: list) -> None:
        """Free the stored objects among results (RESULT tuples) that no process claimed."""
        for oid, kind, data, *_ in results:
            if kind == P.STORED_KIND and oid not in self.objects.records:
                self.free_on_nodes(oid, data)

    def rejoin_node(self, ident: bytes, info: dict, what: dict, now: float) -> None:
        """A node agent that served the previous head: its resources as new, its live workers as
        starting (each says HELLO again, told REJOIN in case it is idle and silent), its stored objects
        added to the locations drivers claim."""
        node_id = info["node_id"]
        if node_id in self.sched.nodes:
            return
        self.peers[ident] = Peer("node", info, last_seen=now)
        node = self.add_node(ident, info, now)
        for wid, _pid in what["workers"]:
            self.sched.worker_starting(node_id, wid)
            self.workers_expected.add(wid)
            self.ask_rejoin(wid, now)
        self.spawn_workers(node_id, max(0, math.ceil(node.total.get("CPU", 0)) - len(what["workers"])))
        stored = self.node_reports[node_id] = dict(what["objects"])
        for oid, size in what["objects"]:      # unknown ones wait for their owners' claims (rejoin_driver)
            obj = self.objects.get(oid)
            if obj is not None and obj.kind == P.STORED_KIND:
                self.objects.restore_copy(oid, node_id, size, self.peers)
        for oid, obj in list(self.objects.records.items()):      # a driver claimed it here first; the node lost it
            if obj.kind == P.STORED_KIND and node_id in obj.data and oid not in stored:
                self.restore_locations(oid, [n for n in obj.data if n != node_id],
                                       R.lost_object_reason(oid, [node_id], self.node_reports))
        for worker_ident, worker_info in self.rejoin_waiting.pop(node_id, []):
            self.rejoin_worker(worker_ident, worker_info, worker_info["rejoin"], now)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tasuki head: node {node_id} ({node.ip}) rejoined with "
              f"{len(what['workers'])} worker(s) and {len(stored)} stored object(s)", file=sys.stderr, flush=True)

    def rejoin_worker(self, ident: bytes, info: dict, what: dict, now: float) -> None:
        node_id = info["node_id"]
        actor = what.get("actor")
        task = self.tasks.get(what.get("task_id") or b"")
        queued = None if task is None else task.worker is None and not task.waiting_on
        plan = R.worker_plan(node_id in self.sched.nodes, actor and actor["actor_id"], what.get("task_id"),
                             what.get("creating", False), queued)
        if plan == R.WAIT:
            self.rejoin_waiting.setdefault(node_id, []).append((ident, info))
            return
        self.workers_expected.discard(ident)
        if plan == R.WAIT_FOR_TASK:      # rejoin_driver adopts it with the task its owner re-sends
            self.rejoin_running[what["task_id"]] = (ident, info)
            return
        if ident not in self.sched.workers:
            self.sched.worker_starting(node_id, ident)
        if plan == R.KILL:           # an actor's construction, or a task running elsewhere already
            self.sched.worker_gone(ident, now)
            self.send(b"N" + node_id.encode(), P.kill(ident))
            if what.get("creating"):         # its creator's spec creates it again: now, not at the sweep
                self.creations_killed.add(what["task_id"])
                self.recreate_killed_creation(what["task_id"], now)
            return
        peer = self.peers[ident] = Peer("worker", info, last_seen=now)
        worker = self.sched.worker_ready(ident, info["pid"], now)
        self.send(ident, P.welcome({"session": self.started_at}))
        if plan == R.ADOPT_ACTOR:
            self.adopt_actor(worker, actor, now)
        elif plan == R.ADOPT_TASK and self.sched.remove_pending(task):
            self.sched.adopt_running(task, worker, now)
        self.rejoin_owned(ident, peer, what, now)     # (the tasks its task submitted are its children)

    def adopt_actor(self, worker, report: dict, now: float) -> None:
        """An actor found again through its worker: alive at the same address (its callers keep
        calling it directly), under its name. Its creation spec comes from its creator (rejoin_actor),
        before or after; until then it cannot restart (no_restart)."""
        info = report["info"]
        creator, spec = self.rejoin_actor_specs.pop(report["actor_id"], (b"", None))
        if spec is None:            # no arguments: never placed again
            spec = (report["fn_id"], info.get("class_name"), None, [], [], {}, info)
        actor = self.actors.adopt(report["actor_id"], info, creator, report.get("job_id", ""), worker.worker_id,
                                  worker.node_id, report["address"], report.get("restarts", 0), spec)
        if isinstance(actor, str):      # another live actor holds its name
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tasuki head: {actor}; killing the worker",
                  file=sys.stderr, flush=True)
            self.sched.worker_gone(worker.worker_id, now)
            self.send(b"N" + worker.node_id.encode(), P.kill(worker.worker_id))
            return
        actor.no_restart = not creator
        if creator:
            self.objects.pin(spec[4])         # its constructor's arguments live as long as it
        node = self.sched.nodes[worker.node_id]
        node.idle_workers.remove(worker)
        held = shape_of(report["held"])
        acquire(node.available, held)
        worker.state, worker.actor_id, worker.held = ACTOR, actor.actor_id, held
        node.actors += 1
        if actor.actor_id not in self.objects:      # its handles' entry: its holders HOLD it again as they rejoin
            self.objects.add(actor.actor_id, b"", kind=HANDLE_KIND)
            self.objects[actor.actor_id].holders.clear()
        if actor.actor_id in self.actors.early_messages:
            self.replay_actor_messages(actor.actor_id, now)

    def rejoin_actor(self, ident: bytes, actor_id: bytes, spec: tuple, now: float) -> None:
        """An actor its creator re-sends: one found again through its worker gets its creation spec
        (it may restart again); one whose worker has not rejoined waits for it (adopt_actor) until the
        sweep, REJOIN_GRACE_S after the first rejoin, and is then created again (recreate_absent_actors)."""
        actor = self.actors.get(actor_id)
        if actor is None:
            self.rejoin_actor_specs[actor_id] = (ident, spec)
            self.recreate_killed_creation(actor_id, now)
        elif actor.state != P.DEAD_STATE and actor.spec[2] is None:     # adopted without its arguments
            self.actors.restore_spec(actor, ident, spec)
            self.objects.pin(spec[4])

    def recreate_killed_creation(self, actor_id: bytes, now: float) -> None:
        """An actor whose construction was killed when its worker rejoined (recovery.worker_plan) is
        created again as soon as its creator's spec is here too."""
        if actor_id in self.creations_killed and actor_id in self.rejoin_actor_specs:
            self.creations_killed.discard(actor_id)
            ident, spec = self.rejoin_actor_specs.pop(actor_id)
            peer = self.peers.get(ident)
            if peer is not None and actor_id not in self.actors.actors:
                self.on_create_actor(ident, peer, now, actor_id, spec, None)

    def recreate_absent_actors(self, now: float) -> None:
        """Actors whose creators rejoined but whose workers did not (they died with the head): created
        again from their specs, as a restart (their state is lost)."""
        specs, self.rejoin_actor_specs = self.rejoin_actor_specs, {}
        for actor_id, (ident, spec) in specs.items():
            peer = self.peers.get(ident)
            if peer is not None and actor_id not in self.actors.actors:
                # calls its callers registered again went to the instance that died: they fail (ActorDiedError,
                # as for any actor death), and later calls go to the new instance their callers hear of
                for kind, caller, arg in self.actors.unpark(actor_id):
                    if kind == P.ACTOR_CALLS:
                        self.fail_call(None, actor_id, *arg, now, info=spec[6],
                                       cause="its worker died with the previous head; it was created again")
                    else:
                        self.actors.park(actor_id, kind, caller, arg, now)
                self.on_create_actor(ident, peer, now, actor_id, spec, None)

    def finish_reported_actor_calls(self, now: float) -> None:
        """Actor calls re-registered by their callers whose results a rejoined node stores: the actor
        told the previous head, which died before passing them on (recovery.reported_results)."""
        for actor in list(self.actors.live()):
            for first, (return_ids, _contained) in list(actor.pending.items()):
                stored = R.reported_results(return_ids, self.node_reports)
                if stored is not None:
                    self.on_actor_result(b"", None, now, actor.actor_id, first,
                                         [(oid, P.STORED_KIND, node_id, [], size) for oid, node_id, size in stored])

    def rejoin_driver(self, ident: bytes, info: dict, what: dict, now: float) -> None:
        """A driver of the previous head: same job id; its functions, its objects (inline ones with
        their bytes, stored ones where it put them and the nodes report them), its tasks without
        results (queued again), its refs (HOLD) and its request_resources."""
        job_id = what["job_id"]
        peer = self.peers[ident] = Peer("driver", info, last_seen=now)
        self.add_driver(ident, peer, job_id)
        self.next_job = max(self.next_job, int(job_id) + 1) if job_id.isdigit() else self.next_job
        kept = self.rejoin_owned(ident, peer, what, now)
        if what.get("request_resources"):
            self.requested_resources = list(what["request_resources"])
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tasuki head: job {job_id} rejoined: {len(what['functions'])} "
              f"function(s), {len(what['inline']) + len(what['stored'])} object(s), {len(what['tasks'])} task(s) "
              f"re-sent ({kept} of them finished while the head was away)", file=sys.stderr, flush=True)

    def rejoin_owned(self, ident: bytes, peer: Peer, what: dict, now: float) -> int:
        """What a rejoining driver or worker owns: its functions, its objects (inline ones with their
        bytes, stored ones where it put them and the nodes report them), its tasks without results
        (queued again, or finished by a DONE kept meanwhile: returns how many), its refs (HOLD) and
        its pending gets."""
        for fn_id, blob in what["functions"]:
            self.on_function(ident, peer, now, fn_id, blob)
        for actor_id, spec in what.get("actors", ()):
            self.rejoin_actor(ident, actor_id, spec, now)
        for oid, kind, data, size in what["inline"]:
            if oid not in self.objects:         # a new record: no waiter, no dependent (early GETs: the loop)
                self.objects.restore_value(oid, ident, kind, data, [], size, self.peers)
        for oid, claimed, size in what["stored"]:
            if oid in self.objects:
                continue
            self.objects.restore_value(oid, ident, P.STORED_KIND, claimed[0] if claimed else "", [], size, self.peers)
            self.restore_locations(oid, R.object_locations(claimed, self.node_reports, oid),
                                   R.lost_object_reason(oid, claimed, self.node_reports))
        for actor_id, return_ids, contained in what.get("actor_calls", ()):
            self.on_actor_calls(ident, peer, now, actor_id, [(return_ids, contained)])
        kept = 0
        for spec in what["tasks"]:
            self.on_submit(ident, peer, now, spec)
            if spec[0] in self.rejoin_results:
                kept += self.use_rejoin_result(spec[0], now)
            running_on = self.rejoin_running.pop(spec[0], None)
            if running_on is not None and spec[0] in self.tasks:     # (not finished by a kept DONE)
                self.rejoin_worker(running_on[0], running_on[1], running_on[1]["rejoin"], now)
        self.on_hold(ident, peer, now, what["holds"])
        self.on_get(ident, peer, now, what["gets"])
        return kept

    def keep_rejoin_results(self, ident: bytes, messages: list, now: float) -> None:
        """DONE from a worker this head does not know yet: the task ran while the head was away. Its
        results are kept and used once the task is known again and still queued (its owner re-sends
        it), so it does not run twice; a failure that may be retried is left to run again. An
        actor's ACTOR_RESULT is kept until its caller registers the call again (ACTOR_CALLS)."""
        for message in messages:
            if message[0] == P.DONE and not message[3]:
                self.rejoin_results[message[1]] = message[2]
                if message[1] in self.tasks:
                    self.use_rejoin_result(message[1], now)
            elif message[0] == P.ACTOR_RESULT:
                self.on_actor_result(ident, None, now, *message[1:])

    def use_rejoin_result(self, task_id: bytes, now: float) -> bool:
        """Finish a queued task with the results its worker sent while no head knew it; False if it
        runs again already (that run's DONE finishes it)."""
        task = self.tasks.get(task_id)
        if task is None or task.worker is not None or task.waiting_on or not self.sched.remove_pending(task):
            return False
        results = self.rejoin_results.pop(task_id)
        self.finish(task, results, "succeeded" if results[0][1] != P.ERROR else "failed", now)
        return True

    def query_while_rejoining(self, ident: bytes, req_id, arg: dict, asked_at: float, now: float) -> None:
        """An actor looked up by name while processes are still rejoining: its worker may not have
        said HELLO yet, so a miss waits (recovery.lookup_waits) instead of answering "no such actor"."""
        answer = self.query("actor", arg, now, ident)
        if R.lookup_waits(answer is not None, now, self.first_rejoin_at, len(self.workers_expected), asked_at):
            self.deferred_lookups.append((ident, req_id, arg, asked_at))
        else:
            self.send(ident, P.answer(req_id, answer))

    def lose_objects_of_absent_nodes(self) -> None:
        """REJOIN_GRACE_S after the first rejoin: locations on nodes that did not come back are dropped;
        an object left with none is lost, and its holders are told why."""
        gone = set()
        for oid, node_ids, _size in self.objects.stored():
            absent = [n for n in node_ids if n not in self.sched.nodes]
            if absent:
                gone.update(absent)
                self.restore_locations(oid, [n for n in node_ids if n in self.sched.nodes],
                                       R.not_rejoined_reason(oid, absent, R.REJOIN_GRACE_S))
        for ident, peer in self.peers.items():
            if peer.role == "node":          # their pulls from those nodes fail now (the address is unknown here)
                for node_id in gone:
                    self.send(ident, P.node_died(node_id, ""))

    def restore_locations(self, oid: bytes, node_ids: list, reason: str | None) -> None:
        """A stored object is on `node_ids` only; with none it is lost, and its holders and waiters
        get ObjectLostError(reason) at once."""
        if self.objects.restore_locations(oid, node_ids, reason or f"object {oid.hex()} is lost"):
            self.tell_holders(oid)

Head.handlers[P.LEAVING] = Head.on_leaving      # (the drain block's handler, defined after the table)


def return_free_memory() -> None:
    """Hand the heap's free pages back to the OS. glibc keeps large freed blocks (its mmap threshold
    grows after the first one is freed), so a head that freed many functions' code would otherwise
    stay at its peak size. A no-op where the C library has no malloc_trim (musl, macOS)."""
    import ctypes
    import ctypes.util
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def describe_exit(code: int) -> str:
    """'exit code 3' or 'killed by SIGKILL(-9)': how a process ended, from its wait status code."""
    import signal
    if code is None:
        return "it exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal"
        hint = " (often the out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"killed by {name}({code}){hint}"
    return f"it exited with code {code}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasuki.head")
    parser.add_argument("--address", required=True)
    parser.add_argument("--metrics-port", type=int, default=None)
    parser.add_argument("--metrics-host", default=None,
                        help="address the HTTP port listens on (default: the IP of --address, or 127.0.0.1)")
    parser.add_argument("--ready-file", default=None)
    args = parser.parse_args(argv)
    lifeline = os.environ.pop("TASUKI_LIFELINE_FD", None)
    import signal
    metrics_host = args.metrics_host
    if metrics_host is None:
        metrics_host = args.address.split("://", 1)[1].rsplit(":", 1)[0] if args.address.startswith("tcp://") \
            else "127.0.0.1"
    head = Head(args.address, os.environ["TASUKI_TOKEN"], args.metrics_port, metrics_host,
                int(lifeline) if lifeline else None)

    def stop(signum, _frame) -> None:
        head.stop_reason, head.running = signal.Signals(signum).name, False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            json.dump({"address": head.address, "metrics": head.metrics_address, "pid": os.getpid()}, f)
        os.replace(args.ready_file + ".tmp", args.ready_file)
    head.serve()


if __name__ == "__main__":
    main()

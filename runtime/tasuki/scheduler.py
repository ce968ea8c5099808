"""Scheduling state and decisions: nodes, workers, resources, the pending queue. No I/O, no clocks.

The head owns one `Scheduler`. Pending tasks wait in one queue per `Key`: their resource shape and
their label selector (labels.py; () for most tasks), the demand the autoscaler reads. A task with a
selector runs only on nodes whose labels match it. `schedule()` matches queued tasks with idle
workers on nodes whose free resources fit, and says how many workers each node should start for the
tasks that fit but find no idle worker. A worker whose task blocks in `get` lends its CPUs back
(`worker_blocked`), so nested task trees cannot deadlock a full pool. A queue is FIFO among tasks of
one nesting depth, deeper tasks first: the CPU a blocked task lends goes to the work it waits for,
not to the next top-level task that would block beside it (1,000 `f -> g -> h` chains on 1 CPU need
three workers, not a thousand; Ray gets there by fair queueing across functions). Time comes in as
`now` arguments.

A worker keeps the GPUs it first ran with (`Worker.cuda`: () for CPU work): CUDA reads
CUDA_VISIBLE_DEVICES once, when a process first initialises it, so a worker that ran a CPU task
(which may have imported torch) never runs a GPU task, and a GPU worker runs only tasks given the
same GPU ids. A task that finds no idle worker of its kind gets a new one (idle workers of other
kinds do not count against the node's cap; they are retired as surplus once nothing is pending).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .labels import Selector, format_selector, matches

Shape = tuple   # sorted ((resource, amount), ...) with amounts > 0 (CPU may be 0.5, memory is in bytes)
Key = tuple     # (Shape, Selector): the key of a pending queue
EPSILON = 1e-9  # tolerance on resource amounts (0.1 + 0.2 CPUs fit in 0.3); the operator's autoscaler packs by it too

ALIVE, DRAINING, DEAD = "alive", "draining", "dead"
STARTING, IDLE, BUSY, BLOCKED, ACTOR = "starting", "idle", "busy", "blocked", "actor"
MAX_WORKERS_PER_CPU = 4          # cap on workers a node starts per CPU (blocked tasks need more)
# Tasks queued at a busy worker behind its current one hide the round trip to the head between two
# tasks. Short tasks need many (no-op tasks: 8k/s with one, 25k/s with 16); a long task queued behind
# another would wait instead of starting on a worker that frees up or a node the autoscaler opens (it
# is not pending demand any more), so a function gets a deeper backlog only once its tasks are known
# to be short: enough to cover PIPELINE_COVER_S of its mean run time, at least 1, at most PIPELINE_MAX.
PIPELINE_COVER_S = 0.002
PIPELINE_MAX = 16


def shape_of(resources: dict[str, float]) -> Shape:
    return tuple(sorted((k, v) for k, v in resources.items() if v > 0))


def fits(available: dict[str, float], shape: Shape) -> bool:
    return all(available.get(k, 0.0) >= v - EPSILON for k, v in shape)


def times_fits(available: dict[str, float], shape: Shape) -> float:
    """How many tasks of `shape` fit in `available` (inf for a shape that asks for nothing)."""
    return min((math.floor(available.get(k, 0.0) / v + EPSILON) for k, v in shape), default=math.inf)


def acquire(available: dict[str, float], shape: Shape, sign: int = 1) -> None:
    for k, v in shape:
        available[k] = available.get(k, 0.0) - sign * v


MEMORY_KEYS = ("memory", "object_store_memory")     # amounts in bytes


def format_amount(key: str, value: float) -> str:
    """An amount for people: bytes of memory as GiB or MiB (2 GiB, not 2.14748e+09), others as numbers."""
    if key in MEMORY_KEYS and value >= 1 << 20:
        return f"{value / (1 << 30):.4g} GiB" if value >= 1 << 30 else f"{value / (1 << 20):.4g} MiB"
    return f"{value:g}"


def format_shape(shape: Shape) -> str:
    return "{" + ", ".join(f"{k}: {format_amount(k, v)}" for k, v in shape) + "}" if shape else "{}"


def format_key(key: Key) -> str:
    """A queue's key for people: its shape, and its label selector when it has one."""
    shape, selector = key
    return format_shape(shape) + (f" on nodes labelled {format_selector(selector)}" if selector else "")


@dataclass(eq=False, slots=True)     # slots: the head keeps finished tasks for their lineage (lineage.py)
class Task:
    task_id: bytes
    fn_id: bytes
    name: str
    args: bytes                 # pickled (args, kwargs); top-level ObjectRefs are resolved before it runs
    deps: list                  # ids of the top-level ObjectRef arguments
    contained: list             # ids of every ObjectRef inside the arguments (pinned while the task lives)
    return_ids: list
    shape: Shape
    max_retries: int
    retry_exceptions: object    # bool, or the cloudpickled exception types: opaque here, the worker loads them
    owner: bytes = b""          # identity of the submitter
    parent: bytes = b""         # task id of the task that submitted it (b"" from a driver): recursive cancel
    has_children: bool = False  # it submitted tasks: only then does a recursive cancel look for them
    depth: int = 0              # how deeply nested: 0 from a driver, its submitter's depth + 1 from a task
    max_calls: int = 0          # a worker exits after running this function this many times (0: never)
    job_id: str = ""
    gpu_ids: list = field(default_factory=list)
    attempt: int = 0
    waiting_on: int = 0         # deps not ready yet
    worker: object = None
    submitted_at: float = 0.0
    started_at: float = 0.0
    cancelled: bool = False
    actor: dict | None = None   # set on an actor's creation task: {"actor_id", "max_concurrency", "is_async"}
    stealing: bool = False      # in a busy worker's backlog, asked back for an idle worker
    selector: Selector = ()     # label_selector (labels.py): only nodes whose labels match run it

    @property
    def key(self) -> Key:
        return self.shape, self.selector


@dataclass(eq=False)
class Worker:
    worker_id: bytes
    node_id: str
    state: str = STARTING
    task: Task | None = None
    pid: int = 0
    functions: set = field(default_factory=set)    # function ids this worker has been sent
    gpu_ids: list = field(default_factory=list)     # GPUs an actor keeps
    backlog: deque = field(default_factory=deque)   # tasks sent to it that wait behind the current one
    actor_id: bytes | None = None                   # set while the worker holds an actor
    held: Shape = ()                                # resources the actor holds while it lives
    cuda: tuple | None = None                       # the GPU ids of every task it ran (() CPU only); None: fresh
    calls: dict = field(default_factory=dict)       # function id -> tasks of it run, for those with max_calls


@dataclass(eq=False)
class Node:
    node_id: str
    address: str                # tcp:// address of its object transfer server
    ip: str
    total: dict
    available: dict
    gpu_ids: list = field(default_factory=list)     # free GPU ids
    state: str = ALIVE
    info: dict = field(default_factory=dict)       # versions, store path, ipc address, boot id, labels
    labels: dict = field(default_factory=dict)     # what label selectors match (info["labels"])
    stats: dict = field(default_factory=dict)      # from heartbeats: store bytes, spilled bytes
    workers: set = field(default_factory=set)
    idle_workers: list = field(default_factory=list)
    starting: int = 0
    actors: int = 0                 # workers held by actors (outside the task pool's limits)
    last_heartbeat: float = 0.0
    idle_since: float | None = 0.0

    def busy_workers(self) -> int:
        return len(self.workers) - len(self.idle_workers) - self.starting

    def max_workers(self) -> int:
        return max(4, math.ceil(MAX_WORKERS_PER_CPU * self.total.get("CPU", 1) - EPSILON))


class Scheduler:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.workers: dict[bytes, Worker] = {}
        self.queues: dict[Key, deque] = {}
        self.queued_actors = 0          # actor creation tasks in the queues
        self.run_time: dict[bytes, float] = {}     # function id -> its tasks' mean run time (s, moving average)

    # --- nodes and workers -------------------------------------------------------------
    def add_node(self, node: Node, now: float) -> None:
        node.last_heartbeat = now
        node.idle_since = now
        self.nodes[node.node_id] = node

    def remove_node(self, node_id: str) -> list[Worker]:
        """Mark a node dead; returns its workers (their tasks and backlogs must be retried or failed)."""
        node = self.nodes[node_id]
        node.state = DEAD
        lost = [self.workers.pop(w) for w in list(node.workers) if w in self.workers]
        for worker in lost:
            self.return_backlog(worker)
        node.workers.clear()
        node.idle_workers.clear()
        node.starting = 0
        return lost

    def worker_starting(self, node_id: str, worker_id: bytes) -> None:
        node = self.nodes[node_id]
        self.workers[worker_id] = Worker(worker_id, node_id)
        node.workers.add(worker_id)
        node.starting += 1

    def worker_ready(self, worker_id: bytes, pid: int, now: float) -> Worker | None:
        worker = self.workers.get(worker_id)
        if worker is None or worker.state != STARTING:
            return None
        node = self.nodes[worker.node_id]
        node.starting -= 1
        worker.pid = pid
        self._set_idle(worker, node, now)
        return worker

    def worker_gone(self, worker_id: bytes, now: float) -> tuple[Worker | None, Task | None]:
        """Forget a worker that exited: returns it and the task it was running (resources freed).
        Tasks in its backlog never started: they go back to the front of the queue."""
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return None, None
        self.return_backlog(worker)
        task = worker.task
        node = self.nodes[worker.node_id]
        node.workers.discard(worker_id)
        if worker.state == STARTING:
            node.starting -= 1
        if worker in node.idle_workers:
            node.idle_workers.remove(worker)
        if task is not None:
            self._release(worker, node)
        if worker.actor_id is not None:
            node.actors -= 1
            acquire(node.available, worker.held, -1)
            node.gpu_ids = sorted(node.gpu_ids + worker.gpu_ids)
        self._update_idle(node, now)
        return worker, task

    def bind_actor(self, worker: Worker, actor_id: bytes, held: Shape) -> None:
        """The worker's creation task made it an actor: keep `held` (not the placement shape) for its life."""
        node = self.nodes[worker.node_id]
        task = worker.task
        worker.gpu_ids = list(task.gpu_ids) if dict(held).get("GPU") else []
        task.gpu_ids = [g for g in task.gpu_ids if g not in worker.gpu_ids]
        self._release(worker, node)
        acquire(node.available, held)
        worker.state = ACTOR
        worker.actor_id = actor_id
        node.actors += 1
        worker.held = held

    def adopt_running(self, task: Task, worker: Worker, now: float) -> None:
        """An idle worker that rejoined a restarted head still runs `task` (not queued): BUSY with it."""
        node = self.nodes[worker.node_id]
        node.idle_workers.remove(worker)
        self._start(task, worker, node, now)

    # --- tasks -------------------------------------------------------------------------
    def enqueue(self, task: Task) -> None:
        if task.actor is not None:
            self.queued_actors += 1
        key = task.shape, task.selector
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
        if not queue or queue[-1].depth >= task.depth:
            queue.append(task)          # the usual case: FIFO among tasks of one depth
        else:
            queue.insert(next(i for i, t in enumerate(queue) if t.depth < task.depth), task)

    def requeue_front(self, task: Task) -> None:
        """Back at the front of the tasks of its depth (deeper ones stay ahead)."""
        if task.actor is not None:
            self.queued_actors += 1
        queue = self.queues.setdefault((task.shape, task.selector), deque())
        if not queue or queue[0].depth <= task.depth:
            queue.appendleft(task)
        else:
            queue.insert(next((i for i, t in enumerate(queue) if t.depth <= task.depth), len(queue)), task)

    def remove_pending(self, task: Task) -> bool:
        queue = self.queues.get((task.shape, task.selector))
        if queue is not None and task in queue:
            queue.remove(task)
            self.queued_actors -= task.actor is not None
            return True
        return False

    def pending_count(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def feasible(self, shape: Shape, selector: Selector = ()) -> bool:
        """Could any live node (whose labels match `selector`) ever run this shape, on its total resources?"""
        return any(n.state == ALIVE and fits(n.total, shape) and (not selector or matches(n.labels, selector))
                   for n in self.nodes.values())

    def schedule(self, now: float) -> tuple[list[tuple[Task, Worker]], dict[str, int]]:
        """Assign queued tasks to idle workers; return (assignments, workers to start per node)."""
        assignments: list[tuple[Task, Worker]] = []
        spawns: dict[str, int] = {}
        alive = [n for n in self.nodes.values() if n.state == ALIVE]
        for (shape, selector), queue in self.queues.items():
            if not queue:
                continue
            nodes = [n for n in alive if matches(n.labels, selector)] if selector else alive
            gpus = int(dict(shape).get("GPU", 0))
            for node in nodes:
                while queue and node.idle_workers and fits(node.available, shape):
                    worker = self._idle_worker_for(node, gpus)
                    if worker is None:
                        break
                    task = queue.popleft()
                    self.queued_actors -= task.actor is not None
                    self._start(task, worker, node, now)
                    assignments.append((task, worker))
                if not queue:
                    break
            if queue and not dict(shape).get("GPU"):
                # more tasks than workers: queue one behind each busy worker of this shape, on nodes
                # that are full (where the task fits, or a worker is starting, a new worker should
                # take it instead: say a worker crashed and left its CPU free)
                for node in nodes:
                    if node.starting or node.idle_workers or fits(node.available, shape):
                        continue
                    for wid in node.workers:
                        worker = self.workers.get(wid)
                        if (worker is not None and worker.state == BUSY and worker.task is not None
                                and worker.task.shape == shape and worker.task.actor is None
                                and not worker.task.max_calls):      # it may have to exit after this one
                            while (queue and queue[0].actor is None
                                   and len(worker.backlog) < self.pipeline_depth(queue[0].fn_id)):
                                task = queue.popleft()
                                task.worker = worker
                                worker.backlog.append(task)
                                assignments.append((task, worker))
                        if not queue:
                            break
            if queue:
                # tasks that fit somewhere but found no idle worker: start workers for them
                for node in nodes:
                    want = min(len(queue), times_fits(node.available, shape))
                    # blocked workers wait in get: they do not count against the cap, or a chain of
                    # nested tasks deeper than the cap would deadlock
                    blocked = sum(1 for w in node.workers if w in self.workers and self.workers[w].state == BLOCKED)
                    # idle workers of another kind (CPU for a GPU task, other GPUs) cannot take these
                    other = sum(1 for w in node.idle_workers if not _may_run(w, gpus))
                    room = (node.max_workers() - (len(node.workers) - node.actors - blocked - other)
                            - spawns.get(node.node_id, 0))
                    if self.queued_actors:
                        room = max(room, self.queued_actors)   # every actor needs a worker of its own
                    extra = min(want - node.starting - spawns.get(node.node_id, 0), room)
                    if extra > 0:
                        spawns[node.node_id] = spawns.get(node.node_id, 0) + int(extra)
        return assignments, spawns

    def pipeline_depth(self, fn_id: bytes) -> int:
        """How many tasks of this function may wait at a busy worker (see PIPELINE_COVER_S)."""
        mean = self.run_time.get(fn_id)
        if mean is None:
            return 1
        return max(1, min(PIPELINE_MAX, int(PIPELINE_COVER_S / max(mean, 1e-6))))

    def task_done(self, worker: Worker, now: float) -> Task | None:
        """The worker finished its task: it starts its backlog's next one (same shape, resources
        kept) or becomes idle."""
        task = worker.task
        if task is None:
            return None
        if task.actor is None:
            took = max(0.0, now - task.started_at)   # from its start, or the DONE before it: an upper bound
            mean = self.run_time.get(task.fn_id)
            self.run_time[task.fn_id] = took if mean is None else 0.8 * mean + 0.2 * took
        if worker.backlog and worker.state == BUSY:
            nxt = worker.backlog.popleft()
            nxt.gpu_ids, task.gpu_ids = task.gpu_ids, []
            nxt.started_at = now
            worker.task = nxt
            return task
        node = self.nodes[worker.node_id]
        self._release(worker, node)
        self._set_idle(worker, node, now)
        return task

    def calls_used_up(self, worker: Worker, task: Task) -> bool:
        """Count a finished task of a function with max_calls; whether the worker, idle now, has
        run it max_calls times and should exit (Ray's max_calls: a leaky or GPU-holding function
        gets a fresh process). The caller removes the worker (worker_gone) and tells it to exit."""
        calls = worker.calls[task.fn_id] = worker.calls.get(task.fn_id, 0) + 1
        return calls >= task.max_calls and worker.state == IDLE

    def return_backlog(self, worker: Worker, task_ids=None, now: float = 0.0) -> list[Task]:
        """Put the worker's unstarted backlog (or those of `task_ids`) back at the front of the queue.

        A returned task may already have been promoted to the worker's current task (its previous
        task's DONE crossed our STEAL): the worker did not run it, so it is requeued too and the
        worker moves on to its next queued task or becomes idle."""
        back = [t for t in worker.backlog if task_ids is None or t.task_id in task_ids]
        for task in reversed(back):
            worker.backlog.remove(task)
            task.worker = None
            task.stealing = False
            self.requeue_front(task)
        current = worker.task
        if task_ids is not None and current is not None and current.task_id in task_ids and worker.state == BUSY:
            self.task_done(worker, now)
            current.worker = None
            current.stealing = False
            self.requeue_front(current)
            back.append(current)
        return back

    def steals(self) -> list[tuple[Task, Worker]]:
        """Backlog tasks to ask back from busy workers because a worker where they fit is idle
        (no head-of-line blocking behind a long task). The worker returns a task only if it has
        not started it; the head then requeues it with `return_backlog`."""
        idle = sum(len(n.idle_workers) for n in self.nodes.values() if n.state == ALIVE)
        if not idle or self.pending_count():
            return []
        out = []
        for worker in self.workers.values():
            for task in worker.backlog:
                if not task.stealing and any(n.state == ALIVE and n.idle_workers and fits(n.available, task.shape)
                                             and (not task.selector or matches(n.labels, task.selector))
                                             for n in self.nodes.values()):
                    task.stealing = True
                    out.append((task, worker))
                    idle -= 1
                    if not idle:
                        return out
        return out

    def worker_blocked(self, worker: Worker, returned=()) -> None:
        """The worker's task waits in get: lend its CPUs to other tasks; take back the backlog
        tasks the worker returned (they must not wait behind a blocked task)."""
        self.return_backlog(worker, set(returned))
        if worker.state == BUSY and worker.task is not None:
            worker.state = BLOCKED
            node = self.nodes[worker.node_id]
            acquire(node.available, _cpu_part(worker.task.shape), -1)

    def worker_unblocked(self, worker: Worker) -> None:
        if worker.state == BLOCKED and worker.task is not None:
            worker.state = BUSY
            node = self.nodes[worker.node_id]
            acquire(node.available, _cpu_part(worker.task.shape))   # may go below zero for a while

    def surplus_idle_workers(self, node: Node) -> list[Worker]:
        """Idle workers above the node's CPU count (started while others were blocked)."""
        keep = max(1, math.ceil(node.total.get("CPU", 1) - EPSILON))
        extra = len(node.workers) - node.actors - node.starting - keep
        return node.idle_workers[:max(0, min(extra, len(node.idle_workers)))]

    # --- helpers -----------------------------------------------------------------------
    def _idle_worker_for(self, node: Node, gpus: int) -> Worker | None:
        """An idle worker that may run a task of `gpus` GPUs on this node, taken off the idle list:
        one that ran such tasks before (a GPU worker whose GPUs are free now), else a fresh one."""
        idle = node.idle_workers
        last = idle[-1]
        if not gpus and (last.cuda == () or last.cuda is None):     # the common case: a CPU worker
            return idle.pop()
        free = set(node.gpu_ids)
        fresh = None
        for i in range(len(idle) - 1, -1, -1):
            cuda = idle[i].cuda
            if cuda is None:
                fresh = i if fresh is None else fresh
            elif (len(cuda) == gpus and free.issuperset(cuda)) if gpus else cuda == ():
                return idle.pop(i)
        return idle.pop(fresh) if fresh is not None else None

    def _start(self, task: Task, worker: Worker, node: Node, now: float) -> None:
        acquire(node.available, task.shape)
        if worker.cuda:                       # a GPU worker: the GPUs it has always had
            task.gpu_ids = list(worker.cuda)
            for g in task.gpu_ids:
                node.gpu_ids.remove(g)
        else:
            gpus = int(dict(task.shape).get("GPU", 0))
            task.gpu_ids = [node.gpu_ids.pop(0) for _ in range(min(gpus, len(node.gpu_ids)))]
            worker.cuda = tuple(task.gpu_ids)
        worker.state = BUSY
        worker.task = task
        task.worker = worker
        task.started_at = now
        node.idle_since = None

    def _release(self, worker: Worker, node: Node) -> None:
        task = worker.task
        shape = task.shape if worker.state != BLOCKED else _without_cpu(task.shape)
        acquire(node.available, shape, -1)
        node.gpu_ids.extend(task.gpu_ids)
        node.gpu_ids.sort()
        task.gpu_ids = []
        worker.task = None

    def _set_idle(self, worker: Worker, node: Node, now: float) -> None:
        worker.state = IDLE
        node.idle_workers.append(worker)
        self._update_idle(node, now)

    def _update_idle(self, node: Node, now: float) -> None:
        busy = any(self.workers[w].task is not None or self.workers[w].actor_id is not None
                   for w in node.workers if w in self.workers)
        if busy:
            node.idle_since = None
        elif node.idle_since is None:
            node.idle_since = now


def _may_run(worker: Worker, gpus: int) -> bool:
    """Whether an idle worker could be given a task of `gpus` GPUs (its GPUs aside)."""
    return worker.cuda is None or (len(worker.cuda) == gpus if gpus else worker.cuda == ())


def _cpu_part(shape: Shape) -> Shape:
    return tuple((k, v) for k, v in shape if k == "CPU")


def _without_cpu(shape: Shape) -> Shape:
    return tuple((k, v) for k, v in shape if k != "CPU")

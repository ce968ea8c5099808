"""Lineage: what the head keeps of finished tasks to recompute objects lost with a node. No I/O, no clock.

The head's object directory (object_directory.py) owns one `Lineage`. A task that finished is kept here (its spec: the scheduler's Task,
args included, no copy) while any of its return objects is still referenced, or while the
lineage of a kept task needs it (its return was that task's argument: Ray keeps an argument's
lineage, not its value). Kept specs count against `max_bytes` (config LINEAGE_MAX_BYTES); past
it the oldest specs are dropped and their objects marked not reconstructable (the error says so).

When a node dies, `plan()` decides for the objects whose only copy was there: which tasks to run
again (transitively through lost or freed arguments, each once, arguments' tasks first), and for
the objects that cannot be rebuilt, why (made by `put`, by an actor call, retries spent, lineage
evicted). Each re-run counts as a retry of its task, as in Ray.

    ObjectDirectory.task_ended ──► Lineage.add(task)     ObjectDirectory._forget ──► Lineage.object_freed(oid)
    ObjectDirectory.node_lost  ──► plan(lost, lineage, available) ──► Plan(rerun, failed)
                               ──► Loss(remade, rerun, lost) ──► head.objects_remade re-admits the tasks

Cost (measured December 2026): about 1.4 µs of head CPU per task (add, then free), and about 720
bytes of head memory per kept task with 40 bytes of arguments, the Task included (~70 MiB per 100,000
finished tasks whose results are still referenced; tracemalloc; ~150 of them are this module's
indexes). Rebuilding is eager: every lost object still referenced is made again when the node is
declared dead, not when first read (Ray rebuilds on demand).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .protocol import is_actor_call

COMPACT_SLACK = 1024          # dropped entries `specs` may hold beyond as many as it keeps
SPEC_OVERHEAD_BYTES = 700     # bytes a kept task costs besides its pickled arguments (measured: Task, its lists, entry, indexes)


@dataclass(eq=False, slots=True)
class Entry:
    """One finished task kept for its lineage: `task` is None once evicted or dropped (`name` stays for errors)."""
    task: object                 # scheduler.Task (task_id, name, args, deps, return_ids, attempt, max_retries)
    task_id: bytes
    name: str
    return_ids: list
    deps: list
    live: int                    # its return objects still referenced
    needed_by: int = 0           # kept entries whose task took one of its returns as an argument


@dataclass
class Plan:
    """`rerun`: tasks to run again, arguments' tasks first; `failed`: object id -> why it cannot be rebuilt."""
    rerun: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)


class Lineage:
    """The kept specs of finished tasks, by task id and by return object id, within `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # the entries kept, oldest first, for eviction; dropped ones (task None) stay until compacted
        # (a deque of pointers: an OrderedDict by task id cost ~100 more bytes per kept task)
        self.specs: deque[Entry] = deque()
        self.kept = 0                               # entries in `specs` neither dropped nor evicted
        self.by_object: dict[bytes, Entry] = {}     # return object id -> its task's entry (evicted ones too)
        self.bytes = 0
        self.evicted = 0

    def add(self, task, live_returns: int) -> None:
        """A task succeeded and `live_returns` of its returns are referenced: keep its spec. A task
        run again (reconstruction) is kept once."""
        if not live_returns:
            return
        known = self.by_object.get(task.return_ids[0])
        if known is not None and known.task_id == task.task_id:
            return
        entry = Entry(task, task.task_id, task.name, task.return_ids, task.deps, live_returns)
        self.specs.append(entry)
        self.kept += 1
        for oid in task.return_ids:
            self.by_object[oid] = entry
        for oid in task.deps:
            parent = self.by_object.get(oid)
            if parent is not None:
                parent.needed_by += 1
        self.bytes += spec_bytes(task)
        if self.bytes > self.max_bytes:
            self._evict()

    def object_freed(self, oid: bytes) -> None:
        """Nobody references `oid` any more: its task's spec goes once nothing else needs it."""
        entry = self.by_object.get(oid)
        if entry is None:
            return
        entry.live -= 1
        if entry.live <= 0 and entry.needed_by <= 0:
            self._drop(entry)

    def object_remade(self, oid: bytes) -> None:
        """A freed return is referenced again (an argument of a task run again): count it live."""
        entry = self.by_object.get(oid)
        if entry is not None:
            entry.live += 1

    def origin(self, oid: bytes) -> Entry | None:
        return self.by_object.get(oid)

    def _drop(self, entry: Entry) -> None:
        stack = [entry]
        while stack:
            entry = stack.pop()
            if entry.task is not None:          # not evicted
                self.bytes -= spec_bytes(entry.task)
                entry.task = None
                self.kept -= 1
            for oid in entry.return_ids:
                if self.by_object.get(oid) is entry:
                    del self.by_object[oid]
            for oid in entry.deps:
                parent = self.by_object.get(oid)
                if parent is not None:
                    parent.needed_by -= 1
                    if parent.live <= 0 and parent.needed_by <= 0:
                        stack.append(parent)
        if len(self.specs) > 2 * self.kept + COMPACT_SLACK:      # amortized: after as many drops as kept
            self.specs = deque(e for e in self.specs if e.task is not None)

    def _evict(self) -> None:
        """Drop the oldest specs (keeping their entries, for the error) until under max_bytes."""
        while self.bytes > self.max_bytes and self.specs:
            entry = self.specs.popleft()
            if entry.task is None:              # dropped
                continue
            self.bytes -= spec_bytes(entry.task)
            entry.task = None
            self.kept -= 1
            self.evicted += 1


def spec_bytes(task) -> int:
    """What keeping a task's spec counts against max_bytes: its pickled arguments and the overhead."""
    return len(task.args) + SPEC_OVERHEAD_BYTES


def retries_left(task) -> bool:
    return task.attempt < task.max_retries


def plan(lost: Iterable[bytes], lineage: Lineage, available: Callable[[bytes], bool],
         where: Callable[[bytes], str] = lambda oid: "a node that died",
         has_function: Callable[[bytes], bool] = lambda fn_id: True) -> Plan:
    """What to do for `lost` objects (their only copy is gone). `available(oid)`: the head has the
    object or a live copy or is computing it (then it needs no rebuilding). `where(oid)`: the node
    the copy was on, for the error. `has_function(fn_id)`: the head still has the task's code (it
    frees the code of processes that left). Tasks are re-run once each, arguments' tasks first; an
    object whose task cannot run (its own reason or an argument's) gets the reason in `failed`."""
    result = Plan()
    state: dict[bytes, str | None] = {}          # task id -> None (ok, planned) or why it cannot run

    def visit(oid: bytes, lost_at: bytes) -> str | None:
        """None if `oid` will be rebuilt, else why not."""
        entry = lineage.origin(oid)
        if entry is None:
            return cannot_rebuild(oid, where(lost_at))
        task = entry.task
        if task is None:
            return (f"object {oid.hex()} (a result of task {entry.name}) is lost: its only copy was on "
                    f"{where(lost_at)}, and its lineage was evicted (more than LINEAGE_MAX_BYTES="
                    f"{lineage.max_bytes} bytes of task specs were kept; raise TASUKI_LINEAGE_MAX_BYTES)")
        if entry.task_id in state:
            return state[entry.task_id]
        if not retries_left(task):
            why = (f"object {oid.hex()} (a result of task {entry.name}) is lost: its only copy was on "
                   f"{where(lost_at)}, and the task cannot run again: its retries are spent (max_retries="
                   f"{task.max_retries}; each reconstruction counts as a retry, as in Ray)")
            state[task.task_id] = why
            return why
        if not has_function(task.fn_id):
            why = (f"object {oid.hex()} (a result of task {entry.name}) is lost: its only copy was on "
                   f"{where(lost_at)}, and the task's code is gone (every process that registered it left)")
            state[task.task_id] = why
            return why
        state[task.task_id] = None             # a cycle cannot happen (ids are made before their users)
        for dep in task.deps:
            if available(dep):
                continue
            why = visit(dep, lost_at)
            if why is not None:
                why = (f"object {oid.hex()} (a result of task {entry.name}) cannot be recomputed: "
                       f"its argument cannot — {why}")
                state[task.task_id] = why
                return why
        result.rerun.append(task)
        return None

    for oid in lost:
        why = visit(oid, oid)
        if why is not None:
            result.failed[oid] = why
    failed_tasks = {tid for tid, why in state.items() if why is not None}
    if failed_tasks:          # a task planned before one of its arguments' tasks was found failing
        result.rerun = [t for t in result.rerun if t.task_id not in failed_tasks]
    return result


def cannot_rebuild(oid: bytes, where: str) -> str:
    """Why an object with no kept lineage cannot be recomputed, from how its id was made."""
    if is_actor_call(oid):
        how = ("it is the result of an actor call, and actor call results are not recomputed "
               "(call the actor again)")
    elif len(oid) == 15:
        how = "it was made by `put`, which cannot be recomputed (put it again)"
    else:
        how = ("its task's lineage is no longer known (the task finished before the head restarted: a new "
               "head learns only the tasks still without results; call the task again)")
    return f"object {oid.hex()} is lost: its only copy was on {where}; {how}"

"""The object directory: what the head knows about each object, and the decisions about it.

Plain data: no sockets, no clock (`now` comes in). The head (head.py) owns one `ObjectDirectory`,
calls it from its one loop, and does what the answers say: it sends OBJECT to the processes to
tell, FREE to the nodes storing a forgotten object, and wakes or fails the dependent tasks (the
directory keeps them in lists; what happens to a task is the head's and the scheduler's business).

An object record (`Obj`) holds:
  owner        the process that made the ref: submitted the task, called the actor, or put the value
  kind, data   None until ready; then VALUE (pickled bytes, kept here), STORED_KIND (the ids of the
               nodes holding a copy: the value stays in their stores), ERROR (a pickled exception),
               or the head's HANDLE_KIND for an actor id (its handles' refcount entry, no data)
  size         bytes of the value
  holders      the processes holding a ref (HOLD / RELEASE, each deduplicated in its process)
  pins         what else keeps it: a pending task's or a live actor's arguments, a ready object
               containing the ref (its `contained`)
  contained    the refs inside it, pinned while it lives
  waiters      processes whose GET came before it was ready (told once it is)
  dependents   tasks waiting for it as an argument (scheduler.Task)
  maker        the live task that will produce it (None once produced, and for a put or an actor
               call). A task that succeeded is kept past its end in `lineage` (lineage.py) while
               its results are referenced, to run it again when their only copy is lost (`node_lost`).

Life of an object:

  add (SUBMIT, ACTOR_CALLS) ──ready──► VALUE │ STORED │ ERROR ──no holder, no pin──► forgotten
  add + ready (PUT)                      ▲ copies: add_copy (STORED, REPLICATE), node_lost
                                         │
  node_lost, last copy gone ─► not ready again, its task re-run (lineage) │ ERROR (cannot be rebuilt)

A forgotten id stays a while in `forgotten` (the last FORGOTTEN_KEPT), so that a GET of it fails
at once; a GET of an id never seen waits in `early_gets` (it may have beaten its PUT, sent on
another connection) until the id appears or the head's wait runs out.

Who could tell a restarted head (nothing here is on disk; head recovery rebuilds the directory):
node agents report the ids and sizes of the objects in their stores (`restore_copy`); owners
re-send the small values they put (`restore_value`), HOLD the refs they hold (`hold`) and submit
again the tasks whose results they have not received (`add`). Nobody re-sends the waiters (they
GET again), the forgotten ids, or the refs contained in a stored object (a node's report carries
none: an inner object stays only as long as someone holds it), nor the lineage of finished tasks:
an object lost after a restart, with its task finished before it, cannot be made again (ObjectLostError).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import config, drain as D, protocol as P, serialization
from .exceptions import ObjectLostError
from .lineage import Lineage, plan
from .scheduler import DEAD

if TYPE_CHECKING:
    from .scheduler import Node, Task

FORGOTTEN_KEPT = 100_000     # ids of freed objects remembered, so that a late GET of one fails at once


@dataclass(eq=False)
class Obj:
    """One object as the head knows it (see the module docstring)."""
    owner: bytes
    kind: str | None = None          # None until ready; then VALUE, STORED_KIND or ERROR (or the head's HANDLE_KIND)
    data: object = None              # bytes (VALUE, ERROR) or list of node ids (STORED_KIND)
    size: int = 0
    holders: set = field(default_factory=set)
    pins: int = 0
    contained: list = field(default_factory=list)
    waiters: list = field(default_factory=list)
    dependents: list = field(default_factory=list)   # tasks waiting for this object
    maker: Task | None = None        # the live task that will produce it


Forgotten = list[tuple[bytes, Obj]]   # records just forgotten: the head frees the stored ones on their nodes


@dataclass
class Loss:
    """What a node's death did to the objects (`node_lost`). The head tells the holders of `touched`
    their new state (fewer copies, or ERROR for those in `lost`), tells those of `remade` to GET
    again, re-admits `rerun` (each run counts as a retry), then unpins `stale`."""
    touched: list = field(default_factory=list)   # ids that lost a copy (remade ones excepted)
    lost: list = field(default_factory=list)      # of those, the ones lost for good: ERROR with ObjectLostError
    remade: list = field(default_factory=list)    # ids whose only copy went, made again: not ready, maker set
    rerun: list = field(default_factory=list)     # the tasks that make them again, arguments' tasks first
    stale: list = field(default_factory=list)     # refs the lost copies contained (the new copies pin theirs)


class ObjectDirectory:
    """The head's objects: records by id, reference counts, early GETs and recently forgotten ids.

    Methods that may forget objects return them (`Forgotten`); methods that make an object ready
    return (the processes to send it to, the tasks that waited for it)."""

    def __init__(self, lineage: Lineage | None = None) -> None:
        self.records: dict[bytes, Obj] = {}
        # finished tasks kept to make their results again (lineage.py)
        self.lineage = lineage if lineage is not None else Lineage(config.LINEAGE_MAX_BYTES)
        # a GET can beat the PUT it needs: an actor asks for a ref its caller put just before the
        # call, on another connection. Such GETs wait here; an id freed lately fails at once.
        self.early_gets: dict[bytes, tuple[float, list]] = {}     # object id -> (since, askers)
        self.forgotten: OrderedDict[bytes, None] = OrderedDict()  # the ids freed last

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, oid: bytes) -> bool:
        return oid in self.records

    def __getitem__(self, oid: bytes) -> Obj:
        return self.records[oid]

    def get(self, oid: bytes) -> Obj | None:
        return self.records.get(oid)

    # --- references --------------------------------------------------------------------------
    def add(self, oid: bytes, owner: bytes, kind: str | None = None, maker: Task | None = None) -> None:
        """A new ref, held by its owner: a task's or an actor call's return id (not ready yet), or
        an actor id (`kind` HANDLE_KIND). A put is `add` then `ready`."""
        self.records[oid] = Obj(owner=owner, holders={owner}, kind=kind, maker=maker)

    def hold(self, holder: bytes, oids: Iterable[bytes]) -> None:
        """`holder` holds refs to `oids` (unknown ids are ignored: they were freed)."""
        records = self.records
        for oid in oids:
            obj = records.get(oid)
            if obj is not None:
                obj.holders.add(holder)

    def release(self, holder: bytes, oids: Iterable[bytes]) -> Forgotten:
        """`holder` dropped its refs to `oids`: forget those nothing else holds or pins."""
        out: Forgotten = []
        records = self.records
        for oid in oids:
            obj = records.get(oid)
            if obj is not None:
                obj.holders.discard(holder)
                if not obj.holders and obj.pins <= 0:
                    self._forget(oid, obj, out)
        return out

    def holder_gone(self, holder: bytes) -> Forgotten:
        """A process left (a scan of every record): it holds nothing any more."""
        out: Forgotten = []
        for oid, obj in list(self.records.items()):
            if holder in obj.holders:
                obj.holders.discard(holder)
                if not obj.holders and obj.pins <= 0:
                    self._forget(oid, obj, out)
        return out

    def pin(self, oids: Iterable[bytes]) -> None:
        """Something other than a process keeps `oids`: a pending task's or an actor's arguments."""
        records = self.records
        for oid in oids:
            obj = records.get(oid)
            if obj is not None:
                obj.pins += 1

    def unpin(self, oids: Iterable[bytes], out: Forgotten | None = None) -> Forgotten:
        """Take back one pin of each of `oids`: forget those nothing holds or pins any more (added
        to `out` when given: forgetting an object unpins what it contains)."""
        out = [] if out is None else out
        records = self.records
        for oid in oids:
            obj = records.get(oid)
            if obj is not None:
                obj.pins -= 1
                if obj.pins <= 0 and not obj.holders:
                    self._forget(oid, obj, out)
        return out

    def drop_if_unreferenced(self, oid: bytes) -> Forgotten:
        """Forget `oid` if nothing holds or pins it (a result no one wants, once its waiters are told)."""
        out: Forgotten = []
        obj = self.records.get(oid)
        if obj is not None and not obj.holders and obj.pins <= 0:
            self._forget(oid, obj, out)
        return out

    def _forget(self, oid: bytes, obj: Obj, out: Forgotten) -> None:
        if obj.kind is None and obj.maker is not None:
            return              # still being computed: the result is dropped when it arrives
        del self.records[oid]
        self.lineage.object_freed(oid)
        self.forgotten[oid] = None
        if len(self.forgotten) > FORGOTTEN_KEPT:
            self.forgotten.popitem(last=False)
        out.append((oid, obj))
        if obj.contained:
            self.unpin(obj.contained, out)

    # --- producing ------------------------------------------------------------------------------
    def maker_of(self, oid: bytes) -> Task | None:
        """The live task that will produce `oid` (None once that task ended, for a put or an actor
        call's result, and for an unknown id)."""
        obj = self.records.get(oid)
        return obj.maker if obj is not None else None

    def task_ended(self, return_ids: Iterable[bytes], contained: list, succeeded: Task | None = None) -> Forgotten:
        """A task ended (its results are in, or it failed for good, or it was dropped unrun): it
        makes `return_ids` no more, and its arguments (`contained`) are unpinned. `succeeded`: the
        task, if it succeeded and is no actor's: it is kept in the lineage while any of its results
        is referenced (added before its arguments are unpinned: their lineage is kept for it)."""
        records = self.records
        live = 0
        for oid in return_ids:
            obj = records.get(oid)
            if obj is not None:
                obj.maker = None
                live += 1
        if live and succeeded is not None:
            self.lineage.add(succeeded, live)
        return self.unpin(contained) if contained else []

    def ready(self, oid: bytes, kind: str, data, contained: list, size: int, connected: Container[bytes],
              push_owner: bool = True) -> tuple[list[bytes], list]:
        """The object `oid` is made: VALUE or ERROR bytes, or STORED_KIND with `data` the node id
        holding it. Pins the refs it contains. Returns (the processes to send it to, the tasks
        that waited for it): the owner when `push_owner` and it still holds the ref and is
        connected, then the waiters (the owner once). The head forgets it afterwards with
        `drop_if_unreferenced`, once the dependents are dealt with."""
        obj = self.records[oid]
        obj.kind, obj.size, obj.contained = kind, size, contained
        obj.data = [data] if kind == P.STORED_KIND else data
        if contained:
            self.pin(contained)
        owner = obj.owner
        pushed = push_owner and owner in obj.holders and owner in connected
        tell = [owner] if pushed else []
        if obj.waiters:
            tell.extend(w for w in obj.waiters if w != owner or not pushed)
            obj.waiters = []
        dependents, obj.dependents = obj.dependents, []
        return tell, dependents

    # --- dependents ---------------------------------------------------------------------------
    def add_dependent(self, task: Task, deps: Iterable[bytes]) -> tuple[int, bytes | None]:
        """Make `task` wait for those of `deps` not ready yet. Returns (how many it now waits for,
        the first dep that is unknown or an ERROR, or None). At such a dep the task cannot run
        (the head fails it with that error, or ObjectLostError for an unknown one): it waits for
        nothing, else a pending dep made later would queue the failed task again."""
        waiting = 0
        records = self.records
        for oid in deps:
            obj = records.get(oid)
            if obj is None or obj.kind == P.ERROR:
                if waiting:
                    self.remove_dependent(task, deps)
                return 0, oid
            if obj.kind is None:
                obj.dependents.append(task)
                waiting += 1
        return waiting, None

    def remove_dependent(self, task: Task, deps: Iterable[bytes]) -> None:
        """`task` waits no more (it was cancelled, or failed by another argument)."""
        records = self.records
        for oid in deps:
            obj = records.get(oid)
            if obj is not None and task in obj.dependents:
                obj.dependents.remove(task)

    # --- GET --------------------------------------------------------------------------------------
    def ask(self, asker: bytes, oids: Iterable[bytes], now: float) -> list[bytes]:
        """`asker` wants `oids`. Returns the ids to answer now (`message`): the ready ones and the
        forgotten ones (an error); the others wait, as waiters or as early GETs."""
        answer = []
        records = self.records
        for oid in oids:
            obj = records.get(oid)
            if obj is None:
                if oid in self.forgotten:
                    answer.append(oid)
                else:
                    self.early_gets.setdefault(oid, (now, []))[1].append(asker)
            elif obj.kind is None:
                obj.waiters.append(asker)
            else:
                answer.append(oid)
        return answer

    def due_early_gets(self, now: float, wait_s: float) -> list[tuple[bytes, bytes]]:
        """The early GETs whose id appeared, was forgotten, or waited over `wait_s` seconds:
        [(asker, id)] to answer now (`message`: the object, or an error); those of an object not
        ready yet become its waiters."""
        answer = []
        for oid, (since, askers) in list(self.early_gets.items()):
            if oid in self.records or oid in self.forgotten or now - since > wait_s:
                del self.early_gets[oid]
                for asker in askers:
                    if oid not in self.records or self.ask(asker, [oid], now):
                        answer.append((asker, oid))
        return answer

    # --- copies in node stores --------------------------------------------------------------------
    def add_copy(self, oid: bytes, node_id: str) -> bool:
        """A node stored a copy of `oid` (STORED after a pull or a REPLICATE). False: the object is
        unknown (freed meanwhile), the node should free its copy."""
        obj = self.records.get(oid)
        if obj is None:
            return False
        if obj.kind == P.STORED_KIND and node_id not in obj.data:
            obj.data.append(node_id)
        return True

    def node_lost(self, node_id: str, ip: str,
                  has_function: Callable[[bytes], bool] = lambda fn_id: True) -> Loss:
        """The node died (or left): drop its copies (a scan). An object whose only copy it held is
        made again by re-running its task from the lineage (and those of its lost or freed
        arguments: `lineage.plan`; `has_function(fn_id)`: the head still has the task's code),
        or, if it cannot be, becomes ERROR with an ObjectLostError saying why."""
        loss, gone = Loss(), []
        for oid, obj in self.records.items():
            if obj.kind == P.STORED_KIND and node_id in obj.data:
                obj.data.remove(node_id)
                if not obj.data:
                    gone.append(oid)
                loss.touched.append(oid)
        if not gone:
            return loss
        where = f"node {node_id} ({ip}), which stopped heartbeating and was declared dead"
        decided = plan(gone, self.lineage, self.has_copy, lambda oid: where, has_function)
        for oid, why in decided.failed.items():
            obj = self.records[oid]
            obj.kind, obj.data = P.ERROR, serialization.dumps_inline(ObjectLostError(why))
            loss.lost.append(oid)
        needed = {dep for task in decided.rerun for dep in task.deps}
        for task in decided.rerun:
            for oid in task.return_ids:
                obj = self.records.get(oid)
                if obj is None and oid in needed:       # a freed argument of a task run again
                    obj = self.records[oid] = Obj(owner=task.owner)
                    self.forgotten.pop(oid, None)
                    self.lineage.object_remade(oid)
                if obj is not None:
                    loss.stale += obj.contained
                    obj.kind, obj.data, obj.contained, obj.maker = None, None, [], task
                    loss.remade.append(oid)
        if loss.remade:
            remade = set(loss.remade)
            loss.touched = [oid for oid in loss.touched if oid not in remade]
        loss.rerun = decided.rerun
        return loss

    def has_copy(self, oid: bytes) -> bool:
        """The head has the object's value, a live copy's location, or is computing it."""
        obj = self.records.get(oid)
        return obj is not None and (obj.kind != P.STORED_KIND or bool(obj.data))

    def stored(self) -> list[tuple[bytes, list, int]]:
        """(id, node ids holding it, size) of each object kept in node stores (a scan)."""
        return [(oid, obj.data, obj.size) for oid, obj in self.records.items() if obj.kind == P.STORED_KIND]

    def primary_counts(self, states: dict) -> dict[str, int]:
        """Node id -> the objects it holds that no other alive node does (`states`: node id -> state; a scan)."""
        return D.primary_counts(self.stored(), states)

    def locations(self, oid: bytes, nodes: Mapping[str, Node]) -> list[tuple[str, str]]:
        """[(node id, address)] of the live copies of a stored object (`nodes`: the node table)."""
        return [(n, nodes[n].address) for n in self.records[oid].data if n in nodes and nodes[n].state != DEAD]

    def payload(self, oid: bytes, nodes: Mapping[str, Node]) -> tuple:
        """(kind, data) of a ready object as it travels: the live copies' locations for a stored one."""
        obj = self.records[oid]
        return obj.kind, self.locations(oid, nodes) if obj.kind == P.STORED_KIND else obj.data

    def message(self, oid: bytes, nodes: Mapping[str, Node]) -> tuple:
        """OBJECT(id, kind, data) for a ready object; for an unknown one, an ObjectLostError."""
        if oid in self.records:
            return P.object(oid, *self.payload(oid, nodes))
        return P.object(oid, P.ERROR, serialization.dumps_inline(ObjectLostError(
            f"object {oid.hex()} is unknown to the head: it was freed (no reference was left) or "
            f"its only copy was lost")))

    # --- rebuilding after a head restart (see the module docstring) ----------------------------------
    def restore_copy(self, oid: bytes, node_id: str, size: int,
                     connected: Container[bytes]) -> tuple[list[bytes], list]:
        """A node that rejoined a restarted head reports a copy of `oid` in its store. An unknown
        object gets a record with no owner and no holder yet (its holders HOLD it as they
        reconnect); a known stored one gains the location; one not ready yet (its task was
        submitted again) is ready now: returns, as `ready` does, whom to tell and the tasks that
        waited for it (else ([], []))."""
        obj = self.records.get(oid)
        if obj is None:
            self.records[oid] = Obj(owner=b"", kind=P.STORED_KIND, data=[node_id], size=size)
        elif obj.kind is None:
            return self.ready(oid, P.STORED_KIND, node_id, [], size, connected)
        else:
            self.add_copy(oid, node_id)
        return [], []

    def restore_value(self, oid: bytes, owner: bytes, kind: str, data: bytes, contained: list, size: int,
                      connected: Container[bytes]) -> tuple[list[bytes], list]:
        """An owner that reconnected to a restarted head re-sends a small value it put and still
        holds (VALUE or ERROR bytes). It holds the ref; an unknown object is ready at once (the
        owner is not sent its own value back), one not ready yet becomes ready (returns, as
        `ready` does, whom to tell and the tasks that waited for it), and a ready one is kept as
        it is (sent twice, nothing changes; else ([], [])). The refs it contains are pinned only
        if known already: an owner re-sends inner values before the values that contain them."""
        obj = self.records.get(oid)
        if obj is None:
            self.add(oid, owner)
            return self.ready(oid, kind, data, contained, size, connected, push_owner=False)
        obj.holders.add(owner)
        if obj.kind is None:
            return self.ready(oid, kind, data, contained, size, connected, push_owner=False)
        return [], []

    def restore_locations(self, oid: bytes, node_ids: list[str], reason: str) -> bool:
        """The stored object `oid` is on `node_ids` only (the nodes that rejoined with it, or that
        may still). With none it is lost: ERROR with ObjectLostError(reason); True then (the head
        tells its holders)."""
        obj = self.records[oid]
        if node_ids:
            obj.data = list(node_ids)
            return False
        obj.kind, obj.data = P.ERROR, serialization.dumps_inline(ObjectLostError(reason))
        return True

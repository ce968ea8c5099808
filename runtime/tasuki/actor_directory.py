"""The actor directory: every actor the head knows, its name, its worker and its pending calls,
and the decisions about them (a name taken or not, restart or die). Plain data: no sockets, no
clock (`now` comes in); the head (head.py, its "actors" block) calls it and sends the messages
its answers call for.

  CREATE_ACTOR ──create──► PENDING ──bind (ACTOR_READY)──► ALIVE ──died──► RESTARTING ──bind──► ALIVE …
                   │                                            └─(no restart left)──► DEAD (name freed)
                   └─► name taken: the live actor's id (get_if_exists), or the error text

An actor record (`Actor`) holds:
  - actor_id, and info: class name, name and namespace, detached, options (max_restarts,
    max_task_retries, max_concurrency, is_async, the resources it holds), methods (for handles);
  - owner (the process that created it), its job id, and spec: the creation task's arguments
    (function id, class name, args, deps, contained refs, placement, info), kept for restarts;
  - state (PENDING, ALIVE, RESTARTING, DEAD), the worker, node and address it runs at, restarts
    (and moves: restarts from drains, which do not count against max_restarts, as in Ray), the
    cause of its last death, no_restart (killed for good, ended itself, constructor failed);
  - subscribers (processes told of its address and state changes) and pending calls (first return
    id -> (return ids, contained refs): the refcount bookkeeping of calls not answered yet).

Who could tell a restarted head about an actor (head recovery rebuilds this directory from such
reports, with `adopt`): the actor's worker knows its id, its info, its address, the node it runs
on and its restarts so far (its creation task carried them); its owner knows the creation spec
(needed to restart it) and which calls it has not had results for; its callers know they
subscribe. Names come back with the info; the owners' counts follow from the owners recorded;
`unreferenced` follows from the handles' refcount entry, which the holders HOLD again. Lost with
the head: `moves` (a moved actor's restarts count again), the cause of a death before, and the
early messages (their senders time out or resend).

The directory also keeps what arrived too early: calls and locates for an actor whose creation
has not been read yet (an actor returns a handle to an actor it just made, and the caller calls it
before the creator's CREATE_ACTOR reaches the head), and results of calls not registered yet (the
actor answered before its caller's ACTOR_CALLS arrived).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .protocol import ACTOR_CALLS, ACTOR_LOCATE, ALIVE_STATE, DEAD_STATE, PENDING, RESTARTING

UNKNOWN_ACTOR = "no such actor in this cluster"      # the cause given for calls to an id never created
CALL_FAILS = ("fails",)                              # add_call: the call fails at once (its actor is dead)


@dataclass(eq=False)
class Actor:
    """One actor as the head knows it (see the module docstring)."""
    actor_id: bytes
    info: dict                       # class name, name, namespace, options, methods (for handles)
    owner: bytes
    spec: tuple | None               # the creation task's arguments, kept for restarts (None: adopted, owner not heard)
    state: str = PENDING
    worker_id: bytes | None = None
    node_id: str | None = None
    address: str | None = None
    restarts: int = 0
    cause: str = ""
    no_restart: bool = False
    unreferenced: bool = False       # every handle is gone: it ends once its pending calls have results
    subscribers: set = field(default_factory=set)
    job_id: str = ""                 # the job of the process that created it
    pending: dict = field(default_factory=dict)      # first return id -> (return ids, contained)
    moving: bool = False             # killed by a drain to restart elsewhere (see ActorDirectory.move)
    moves: int = 0                   # restarts from drains: they do not count against max_restarts (as in Ray)


def may_restart(actor: Actor) -> bool:
    """Whether an actor whose worker just died comes back: not if it may not (killed for good, it
    ended itself, its constructor failed, or its creation spec is unknown), else while restarts are
    left (max_restarts -1: forever). A drain's move always may, once max_restarts is not 0, and is
    not counted."""
    limit = actor.info["max_restarts"]
    if actor.no_restart or actor.spec is None:
        return False
    return limit == -1 or actor.restarts - actor.moves < limit or bool(actor.moving and limit)


class ActorDirectory:
    """The actors by id, by (namespace, name) and by worker, their owners' counts, and the
    messages that came too early. One owner: the head's event loop."""

    def __init__(self) -> None:
        self.actors: dict[bytes, Actor] = {}
        self.names: dict[tuple, bytes] = {}            # (namespace, name) -> actor id
        self.by_worker: dict[bytes, Actor] = {}        # worker id -> its live actor
        self.owners: dict[bytes, int] = {}             # process -> how many live non-detached actors it created
        self.early_results: dict[bytes, tuple] = {}    # first return id -> an actor result that beat its call
        self.early_messages: dict[bytes, tuple[float, list]] = {}   # actor id -> (since, [(kind, ident, arg)])
        # the dicts' own lookups: no Python call on the per-call path (ACTOR_CALLS, ACTOR_RESULT)
        self.get: Callable[[bytes | None], Actor | None] = self.actors.get
        self.on_worker: Callable[[bytes], Actor | None] = self.by_worker.get     # the actor ALIVE on this worker

    # --- lookups (and get, on_worker: see __init__) ------------------------------------------
    def named(self, namespace: str, name: str | None) -> Actor | None:
        """The actor holding this name now (a dead actor's name is free), or None."""
        actor = self.actors.get(self.names.get((namespace, name), b""))
        return actor if actor is not None and actor.state != DEAD_STATE else None

    def owns(self, ident: bytes) -> bool:
        """Whether the process created live non-detached actors (they share its fate)."""
        return ident in self.owners

    def live(self) -> Iterator[Actor]:
        """The actors not dead."""
        return (a for a in self.actors.values() if a.state != DEAD_STATE)

    def alive_on(self, node_id: str, skip=()) -> Iterator[Actor]:
        """The actors running on the node that may still restart, but those in `skip` (ids), each
        tested as the iteration reaches it (the caller may kill some meanwhile)."""
        return (a for a in self.actors.values()
                if a.node_id == node_id and a.worker_id is not None and a.state == ALIVE_STATE
                and a.actor_id not in skip and not a.no_restart)

    def call_of(self, first: bytes) -> tuple[Actor, tuple] | None:
        """The actor and pending call (return ids, contained) whose first return id this is (a scan:
        for cancel() only)."""
        actor = next((a for a in self.actors.values() if first in a.pending), None)
        return (actor, actor.pending[first]) if actor is not None else None

    # --- lifecycle ------------------------------------------------------------------------------
    def create(self, actor_id: bytes, info: dict, owner: bytes, spec: tuple, job_id: str) -> Actor | bytes | str:
        """Register a new actor (PENDING) and take its name. If a live actor holds the name in that
        namespace, register nothing and return the existing actor's id (get_if_exists) or the error
        text for the creator."""
        if info["name"] is not None:
            existing = self.named(info["namespace"], info["name"])
            if existing is not None:
                if info.get("get_if_exists"):
                    return existing.actor_id
                return (f"The name {info['name']!r} is already taken by a live actor in namespace "
                        f"{info['namespace']!r}. Please use a different name, or get the existing actor with "
                        f"get_actor({info['name']!r}), or create it with options(get_if_exists=True)")
            self.names[(info["namespace"], info["name"])] = actor_id
        actor = Actor(actor_id, info, owner, spec, job_id=job_id)
        self.actors[actor_id] = actor
        if not info["detached"]:
            self.owners[owner] = self.owners.get(owner, 0) + 1
        return actor

    def adopt(self, actor_id: bytes, info: dict, owner: bytes, job_id: str, worker_id: bytes, node_id: str,
              address: str, restarts: int = 0, spec: tuple | None = None) -> Actor | str:
        """Add an actor already ALIVE on a known worker, as its worker reports it to a restarted
        head (see the module docstring). An actor known already is bound to that worker (and
        given `spec` if it had none). The error text when another live actor holds its name.
        Without `spec` (its owner not heard yet) it does not restart; the head reads the spec
        elsewhere too (its function id, its pinned arguments), so it must wait for it or skip them."""
        actor = self.actors.get(actor_id)
        if actor is None:
            if info["name"] is not None:
                holder = self.named(info["namespace"], info["name"])
                if holder is not None:
                    return (f"actor {actor_id.hex()} on worker {worker_id.hex()} (node {node_id}) reports the name "
                            f"{info['name']!r} in namespace {info['namespace']!r}, which the live actor "
                            f"{holder.actor_id.hex()} holds: the two cannot both keep it; kill one of them")
                self.names[(info["namespace"], info["name"])] = actor_id
            actor = self.actors[actor_id] = Actor(actor_id, info, owner, spec, job_id=job_id, restarts=restarts)
            if not info["detached"]:
                self.owners[owner] = self.owners.get(owner, 0) + 1
        elif actor.spec is None:
            actor.spec = spec
        self.bind(actor, worker_id, node_id, address)
        return actor

    def bind(self, actor: Actor, worker_id: bytes, node_id: str, address: str) -> None:
        """The actor is constructed and listens at `address` on that worker: ALIVE."""
        if actor.worker_id is not None:               # adopt() of an actor bound elsewhere: that worker is stale
            self.by_worker.pop(actor.worker_id, None)
        actor.state, actor.worker_id, actor.node_id, actor.address = ALIVE_STATE, worker_id, node_id, address
        self.by_worker[worker_id] = actor

    def subscribe(self, actor_id: bytes, ident: bytes, now: float) -> Actor | None:
        """`ident` is told of the actor's address and states from now on. None when the actor is not
        known yet: the request waits for its creation (see park)."""
        actor = self.actors.get(actor_id)
        if actor is None:
            self.park(actor_id, ACTOR_LOCATE, ident, None, now)
            return None
        actor.subscribers.add(ident)
        return actor

    def kill(self, actor: Actor, no_restart: bool, cause: str) -> bool:
        """Record why the actor is being killed (and, with no_restart, free its name at once so a new
        actor may take it). False if it is dead already: nothing to do."""
        if actor.state == DEAD_STATE:
            return False
        actor.no_restart = actor.no_restart or no_restart
        actor.cause = cause
        if actor.no_restart:
            self.free_name(actor)
        return True

    def exiting(self, actor_id: bytes, cause: str) -> None:
        """The actor ends itself on purpose (its worker exits next): no restart, its name is free."""
        actor = self.actors.get(actor_id)
        if actor is not None and actor.state != DEAD_STATE:
            actor.no_restart = True
            actor.cause = f"it ended itself on purpose: {cause} (Worker exit type: INTENDED_USER_EXIT, Ray's name)"
            self.free_name(actor)

    def unreferenced(self, actor_id: bytes) -> Actor | None:
        """No process holds a handle to the actor any more: the actor to end now, if it is neither
        named nor detached (those live on) and has no call pending (else it ends after the last)."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == DEAD_STATE or actor.info["detached"] or actor.info["name"] is not None:
            return None
        actor.unreferenced = True
        return actor if not actor.pending else None

    @staticmethod
    def ending(actor: Actor) -> None:
        """The actor ends for good because no one can call it any more."""
        actor.no_restart = True
        actor.cause = actor.cause or ("all its handles went out of scope (an actor lives as long as a handle to it "
                                      "does; name it or make it lifetime='detached' to keep it)")

    @staticmethod
    def move(actor: Actor, cause: str) -> bool:
        """A drain wants the actor elsewhere: True if it may restart (max_restarts not 0), and then
        its coming death is a move (not counted against max_restarts)."""
        if not actor.info["max_restarts"]:
            return False
        actor.moving = True
        actor.cause = cause
        return True

    def died(self, actor: Actor, cause: str) -> bool:
        """The actor's worker is gone (or its creation never ran): True if it restarts (RESTARTING,
        counted unless a move), False if it is DEAD (its owner's count drops, its name is free).
        Its cause stays set for the caller to tell subscribers and fail calls (see failed_calls);
        the caller clears it before placing a restart."""
        self.by_worker.pop(actor.worker_id, None)
        actor.worker_id = actor.address = None
        actor.cause = actor.cause or cause       # a kill or its owner's exit said why first
        if may_restart(actor):
            actor.restarts += 1
            actor.moves += actor.moving
            actor.moving = False
            actor.state = RESTARTING
            return True
        actor.state = DEAD_STATE
        if not actor.info["detached"] and self.owners.get(actor.owner):
            self.owners[actor.owner] -= 1
            if not self.owners[actor.owner]:
                del self.owners[actor.owner]
        self.free_name(actor)
        return False

    def owner_gone(self, ident: bytes) -> list[Actor]:
        """The process left: the live non-detached actors it created, which share its fate (no scan
        unless it created some)."""
        if not self.owners.pop(ident, 0):
            return []
        return [a for a in self.live() if a.owner == ident and not a.info["detached"]]

    def free_name(self, actor: Actor) -> None:
        key = (actor.info["namespace"], actor.info["name"])
        if self.names.get(key) == actor.actor_id:
            del self.names[key]

    # --- calls ----------------------------------------------------------------------------------
    def add_call(self, actor: Actor | None, actor_id: bytes, caller: bytes, return_ids: list, contained: list,
                 now: float, park: bool = True) -> tuple | None:
        """Register a call (`actor`: the directory's, or None if unknown). None: it is pending until
        its result comes (the head then pops it off `actor.pending`), or it waits for its actor's
        creation (unknown actor, `park` True). CALL_FAILS: it fails at once (the actor is dead, or
        still unknown with `park` False). Else the result that came before the call (see keep_result)."""
        if actor is None and park:
            self.park(actor_id, ACTOR_CALLS, caller, (return_ids, contained), now)
            return None
        if actor is None or actor.state == DEAD_STATE:
            return CALL_FAILS
        first = return_ids[0]
        actor.pending[first] = (return_ids, contained)
        return self.early_results.pop(first, None)

    def keep_result(self, first: bytes, result: tuple) -> None:
        """A result that came before its call was registered (no pending call `first`), for
        add_call to hand back."""
        self.early_results[first] = result

    @staticmethod
    def failed_calls(actor: Actor) -> Iterator[tuple]:
        """The pending calls (return ids, contained) that fail now that the actor died, each taken off
        as it is yielded: all of them, unless it restarts with max_task_retries (then they are sent again)."""
        if actor.state == RESTARTING and actor.info["max_task_retries"]:
            return
        for first in list(actor.pending):
            call = actor.pending.pop(first, None)
            if call is not None:
                yield call

    # --- what came before the actor's creation ------------------------------------------------
    def park(self, actor_id: bytes, kind: str, ident: bytes, arg, now: float) -> None:
        """Keep a message for an actor not created yet (kind: ACTOR_LOCATE, or ACTOR_CALLS with
        arg (return ids, contained))."""
        self.early_messages.setdefault(actor_id, (now, []))[1].append((kind, ident, arg))

    def overdue(self, now: float, wait_s: float) -> list[bytes]:
        """The actors whose parked messages waited over `wait_s`: no such actor after all."""
        return [actor_id for actor_id, (since, _) in self.early_messages.items() if now - since > wait_s]

    def unpark(self, actor_id: bytes) -> list[tuple]:
        """The parked messages (kind, ident, arg) for the actor, oldest first, forgotten here."""
        return self.early_messages.pop(actor_id, (0, []))[1]

    # --- the state API ------------------------------------------------------------------------
    def table(self) -> list[dict]:
        """A row per actor, dead ones included (`tasuki list actors`, /api/v1/status)."""
        return [{"actor_id": a.actor_id.hex(), "class_name": a.info["class_name"], "name": a.info["name"],
                 "namespace": a.info["namespace"], "node_id": a.node_id, "state": a.state,
                 "restarts": a.restarts, "cause": a.cause} for a in self.actors.values()]

    def names_taken(self) -> list[dict]:
        """The names held now: a killed actor's is free before its process ends."""
        return [{"name": name, "namespace": namespace} for (namespace, name), actor_id in self.names.items()
                if actor_id in self.actors and self.actors[actor_id].state != DEAD_STATE]

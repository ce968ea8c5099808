"""actor_directory.py: names, restart-or-die, owners' counts, pending calls, early messages, the
actor table, adopt. Pure: plain data, no processes, no sockets."""
from __future__ import annotations

import ast
import itertools

import pytest

from tasuki import actor_directory, protocol as P
from tasuki.actor_directory import CALL_FAILS, Actor, ActorDirectory, may_restart

NOW = 1000.0
DRIVER, OTHER = b"D1", b"D2"
_ids = itertools.count(1)


def make_info(name: str | None = None, namespace: str = "default", detached: bool = False, max_restarts: int = 0,
              max_task_retries: int = 0, **extra) -> dict:
    return {"class_name": "Counter", "name": name, "namespace": namespace, "detached": detached,
            "max_restarts": max_restarts, "max_task_retries": max_task_retries, **extra}


def new_id() -> bytes:
    return b"A" + next(_ids).to_bytes(8, "little")


def create(directory: ActorDirectory, owner: bytes = DRIVER, **info) -> Actor | bytes | str:
    actor_id = new_id()
    return directory.create(actor_id, make_info(**info), owner, (b"fn", "Counter", b"", [], [], {}, None), "0001")


def alive(directory: ActorDirectory, owner: bytes = DRIVER, node: str = "n1", **info) -> Actor:
    actor = create(directory, owner, **info)
    directory.bind(actor, b"W" + actor.actor_id, node, f"tcp://{node}:9000")
    return actor


# --- names --------------------------------------------------------------------------------------
@pytest.mark.parametrize("first, second, outcome", [
    (dict(name="q"), dict(name="q"), "taken"),
    (dict(name="q"), dict(name="q", get_if_exists=True), "existing"),
    (dict(name="q"), dict(name="q", namespace="other"), "created"),     # names are per namespace
    (dict(name=None), dict(name=None), "created"),                      # anonymous actors never clash
    (dict(name="q"), dict(name="r"), "created"),
], ids=["taken", "get_if_exists", "other-namespace", "anonymous", "other-name"])
def test_a_name_is_taken_once_per_namespace(first, second, outcome):
    directory = ActorDirectory()
    existing = create(directory, **first)
    result = create(directory, OTHER, **second)
    if outcome == "taken":
        assert isinstance(result, str)
        assert "'q' is already taken by a live actor in namespace 'default'" in result
        assert "get_if_exists=True" in result
        assert len(directory.actors) == 1 and OTHER not in directory.owners      # nothing registered
    elif outcome == "existing":
        assert result == existing.actor_id
        assert len(directory.actors) == 1
    else:
        assert isinstance(result, Actor) and result.state == P.PENDING
        assert len(directory.actors) == 2


@pytest.mark.parametrize("end", ["died", "killed-for-good", "exited", "killed-may-restart"])
def test_a_name_is_freed_when_its_actor_may_not_come_back(end):
    directory = ActorDirectory()
    actor = alive(directory, name="q", max_restarts=1)
    if end == "died":
        actor.no_restart = True
        assert directory.died(actor, "its node died") is False
    elif end == "killed-for-good":
        assert directory.kill(actor, True, "it was killed") is True        # free at once, before the process ends
    elif end == "exited":
        directory.exiting(actor.actor_id, "exit_actor()")
    else:
        directory.kill(actor, False, "it was killed")                       # it restarts: it keeps its name
    freed = end != "killed-may-restart"
    assert (directory.named("default", "q") is None) == freed
    assert directory.names_taken() == ([] if freed else [{"name": "q", "namespace": "default"}])
    assert isinstance(create(directory, OTHER, name="q"), Actor) == freed


def test_a_dead_actor_is_not_found_by_name_and_a_new_one_takes_it():
    directory = ActorDirectory()
    old = alive(directory, name="q")
    directory.died(old, "its worker died")
    new = create(directory, OTHER, name="q")
    assert directory.named("default", "q") is new
    assert directory.get(old.actor_id) is old and old.state == P.DEAD_STATE     # still in the table


# --- restart or die -------------------------------------------------------------------------------
@pytest.mark.parametrize("max_restarts, restarts, moves, moving, no_restart, restarted", [
    (0, 0, 0, False, False, False),
    (1, 0, 0, False, False, True),
    (1, 1, 0, False, False, False),          # its one restart is spent
    (3, 2, 0, False, False, True),
    (-1, 1000, 0, False, False, True),       # -1: forever
    (-1, 0, 0, False, True, False),          # killed for good, ended itself, or its constructor failed
    (1, 1, 1, False, False, True),           # the one restart so far was a drain's move: not counted
    (1, 1, 0, True, False, True),            # a move is allowed even with no restart left
    (0, 0, 0, True, False, False),           # but not for an actor that may never restart
    (2, 3, 1, False, False, False),
], ids=["none", "first", "spent", "left", "infinite", "no_restart", "move-not-counted", "move-spent",
        "move-zero", "spent-with-moves"])
def test_restart_decision(max_restarts, restarts, moves, moving, no_restart, restarted):
    actor = Actor(new_id(), make_info(max_restarts=max_restarts), DRIVER, (b"fn",), restarts=restarts,
                  moves=moves, moving=moving, no_restart=no_restart)
    assert may_restart(actor) is restarted


def test_an_actor_without_its_creation_spec_does_not_restart():
    actor = Actor(new_id(), make_info(max_restarts=-1), DRIVER, None)
    assert may_restart(actor) is False


@pytest.mark.parametrize("moving, state, restarts, moves", [
    (False, P.RESTARTING, 1, 0),
    (True, P.RESTARTING, 1, 1),
])
def test_died_restarts_and_counts_moves_apart(moving, state, restarts, moves):
    directory = ActorDirectory()
    actor = alive(directory, max_restarts=1)
    worker = actor.worker_id
    if moving:
        assert directory.move(actor, "its node n1 was drained") is True
    assert directory.died(actor, "its worker died") is True
    assert (actor.state, actor.restarts, actor.moves, actor.moving) == (state, restarts, moves, False)
    assert actor.worker_id is None and actor.address is None and directory.on_worker(worker) is None
    assert actor.cause == ("its node n1 was drained" if moving else "its worker died")   # for the caller to tell


def test_a_drained_actor_moves_without_spending_its_restart():
    directory = ActorDirectory()
    actor = alive(directory, max_restarts=1)
    directory.move(actor, "drained")
    assert directory.died(actor, "killed") is True                  # the move
    directory.bind(actor, b"W2", "n2", "tcp://n2:9000")
    assert directory.died(actor, "its worker died") is True         # its real restart
    directory.bind(actor, b"W3", "n2", "tcp://n2:9000")
    assert directory.died(actor, "its worker died") is False
    assert (actor.restarts, actor.moves, actor.state) == (2, 1, P.DEAD_STATE)


def test_a_drain_does_not_move_an_actor_that_may_not_restart():
    directory = ActorDirectory()
    actor = alive(directory, max_restarts=0)
    assert directory.move(actor, "drained") is False
    assert not actor.moving and actor.cause == ""


def test_the_first_cause_said_is_kept():
    directory = ActorDirectory()
    actor = alive(directory)
    directory.kill(actor, True, "it was killed with tasuki.kill()")
    directory.died(actor, "its worker died: killed by SIGKILL(-9)")
    assert actor.cause == "it was killed with tasuki.kill()"
    assert directory.kill(actor, True, "again") is False             # dead already: nothing to do


def test_alive_on_lists_the_node_s_actors_that_may_still_move():
    directory = ActorDirectory()
    a, b, c = alive(directory, node="n1"), alive(directory, node="n1"), alive(directory, node="n2")
    gone = alive(directory, node="n1")
    directory.kill(gone, True, "killed")
    pending = create(directory)
    assert list(directory.alive_on("n1")) == [a, b]
    assert list(directory.alive_on("n1", skip={a.actor_id})) == [b]
    assert list(directory.alive_on("n2")) == [c]
    assert list(directory.live()) == [a, b, c, gone, pending]     # killed: live until its worker exits


# --- owners ---------------------------------------------------------------------------------------
def test_owners_count_their_live_non_detached_actors():
    directory = ActorDirectory()
    a = alive(directory)
    b = alive(directory)
    alive(directory, detached=True)                     # outlives its creator: not counted
    alive(directory, OTHER)
    assert directory.owners == {DRIVER: 2, OTHER: 1}
    directory.died(a, "its worker died")
    assert directory.owners == {DRIVER: 1, OTHER: 1} and directory.owns(DRIVER)
    directory.died(b, "its worker died")
    assert directory.owners == {OTHER: 1} and not directory.owns(DRIVER)


def test_a_restart_keeps_its_owner_s_count():
    directory = ActorDirectory()
    actor = alive(directory, max_restarts=1)
    directory.died(actor, "its worker died")
    assert directory.owners == {DRIVER: 1}


def test_owner_gone_names_the_actors_that_share_its_fate():
    directory = ActorDirectory()
    a, b = alive(directory), create(directory)
    alive(directory, detached=True)
    dead = alive(directory)
    directory.died(dead, "its worker died")
    alive(directory, OTHER)
    assert directory.owner_gone(DRIVER) == [a, b]
    assert DRIVER not in directory.owners
    assert directory.owner_gone(DRIVER) == []            # counted once: no scan the second time
    assert directory.owner_gone(b"nobody") == []


# --- calls --------------------------------------------------------------------------------------
def call_ids(n: int) -> list:
    return [new_id() + bytes([i]) for i in range(n)]


def add_call(directory: ActorDirectory, actor_id: bytes, return_ids: list, contained=(), park: bool = True):
    return directory.add_call(directory.get(actor_id), actor_id, b"C1", return_ids, list(contained), NOW, park)


def test_a_call_is_pending_until_its_result():
    directory = ActorDirectory()
    actor = alive(directory)
    ids = call_ids(2)
    assert add_call(directory, actor.actor_id, ids, [b"arg"]) is None
    assert directory.call_of(ids[0]) == (actor, (ids, [b"arg"]))
    assert actor.pending.pop(ids[0]) == (ids, [b"arg"])           # the head takes it when the result comes
    assert directory.call_of(ids[0]) is None and directory.early_results == {}


def test_a_result_that_beats_its_call_is_handed_back_when_the_call_comes():
    directory = ActorDirectory()
    actor = alive(directory)
    ids = call_ids(1)
    directory.keep_result(ids[0], ("result",))
    assert add_call(directory, actor.actor_id, ids) == ("result",)
    assert directory.early_results == {}


@pytest.mark.parametrize("state, park, outcome", [
    ("alive", True, "pending"),
    ("restarting", True, "pending"),          # sent again once it is back (or failed then)
    ("pending", True, "pending"),
    ("dead", True, "fails"),
    ("unknown", True, "parked"),              # its creation may not have been read yet
    ("unknown", False, "fails"),              # waited long enough: no such actor
])
def test_add_call_by_actor_state(state, park, outcome):
    directory = ActorDirectory()
    actor = None if state == "unknown" else alive(directory, max_restarts=1)
    actor_id = actor.actor_id if actor else new_id()
    if state == "restarting":
        directory.died(actor, "its worker died")
    elif state == "pending":
        actor = create(directory)
        actor_id = actor.actor_id
    elif state == "dead":
        directory.kill(actor, True, "killed")
        directory.died(actor, "killed")
    ids = call_ids(1)
    result = add_call(directory, actor_id, ids, park=park)
    assert result == {"pending": None, "parked": None, "fails": CALL_FAILS}[outcome]
    assert (actor is not None and ids[0] in actor.pending) == (outcome == "pending")
    assert (actor_id in directory.early_messages) == (outcome == "parked")


@pytest.mark.parametrize("max_restarts, max_task_retries, failed, kept", [
    (0, 0, 2, 0),        # dead: every pending call fails
    (0, 3, 2, 0),        # dead, retries or not
    (1, 0, 2, 0),        # restarts, no retries: they fail
    (1, 3, 0, 2),        # restarts with max_task_retries: the callers send them again
])
def test_failed_calls_on_death(max_restarts, max_task_retries, failed, kept):
    directory = ActorDirectory()
    actor = alive(directory, max_restarts=max_restarts, max_task_retries=max_task_retries)
    for _ in range(2):
        add_call(directory, actor.actor_id, call_ids(1))
    directory.died(actor, "its worker died")
    assert len(list(directory.failed_calls(actor))) == failed
    assert len(actor.pending) == kept


@pytest.mark.parametrize("detached, name, pending, ends", [
    (False, None, 0, True),
    (False, None, 1, False),         # ends after its last result
    (True, None, 0, False),          # detached actors live on
    (False, "q", 0, False),          # so do named ones
])
def test_an_actor_without_handles_ends_once_its_calls_are_answered(detached, name, pending, ends):
    directory = ActorDirectory()
    actor = alive(directory, detached=detached, name=name)
    ids = call_ids(1)
    if pending:
        add_call(directory, actor.actor_id, ids)
    assert (directory.unreferenced(actor.actor_id) is actor) == ends
    if pending:
        del actor.pending[ids[0]]                   # its result came
        assert actor.unreferenced and not actor.pending
    directory.ending(actor)
    assert actor.no_restart and "handles went out of scope" in actor.cause


def test_unreferenced_ignores_unknown_and_dead_actors():
    directory = ActorDirectory()
    dead = alive(directory)
    directory.died(dead, "its worker died")
    assert directory.unreferenced(dead.actor_id) is None and not dead.unreferenced
    assert directory.unreferenced(b"unknown") is None


# --- what came before the creation --------------------------------------------------------------
def test_early_messages_wait_for_the_creation_then_are_replayed_in_order():
    directory = ActorDirectory()
    actor_id = new_id()
    assert directory.subscribe(actor_id, b"C1", NOW) is None
    directory.park(actor_id, P.ACTOR_CALLS, b"C1", (call_ids(1), []), NOW + 0.1)
    assert directory.overdue(NOW + 0.5, wait_s=1.0) == []
    assert directory.overdue(NOW + 1.5, wait_s=1.0) == [actor_id]         # measured from the first message
    kinds = [kind for kind, ident, _ in directory.unpark(actor_id)]
    assert kinds == [P.ACTOR_LOCATE, P.ACTOR_CALLS]
    assert directory.early_messages == {} and directory.unpark(actor_id) == []


def test_subscribers_of_a_known_actor():
    directory = ActorDirectory()
    actor = alive(directory)
    assert directory.subscribe(actor.actor_id, b"C1", NOW) is actor
    directory.subscribe(actor.actor_id, b"C2", NOW)
    assert actor.subscribers == {b"C1", b"C2"} and directory.early_messages == {}


# --- the state API --------------------------------------------------------------------------------
def test_actor_table_rows():
    directory = ActorDirectory()
    a = alive(directory, name="q", namespace="ns", max_restarts=1)
    directory.died(a, "its worker died")
    b = create(directory)
    assert directory.table() == [
        {"actor_id": a.actor_id.hex(), "class_name": "Counter", "name": "q", "namespace": "ns", "node_id": "n1",
         "state": P.RESTARTING, "restarts": 1, "cause": "its worker died"},
        {"actor_id": b.actor_id.hex(), "class_name": "Counter", "name": None, "namespace": "default",
         "node_id": None, "state": P.PENDING, "restarts": 0, "cause": ""},
    ]


# --- adopt: an actor a restarted head learns of from its worker ---------------------------------
def test_adopt_an_actor_alive_on_a_known_worker():
    directory = ActorDirectory()
    actor_id = new_id()
    actor = directory.adopt(actor_id, make_info(name="q", max_restarts=2), DRIVER, "0001", b"W1", "n1",
                            "tcp://n1:9000", restarts=1)
    assert isinstance(actor, Actor)
    assert (actor.state, actor.worker_id, actor.node_id, actor.address, actor.restarts) == \
        (P.ALIVE_STATE, b"W1", "n1", "tcp://n1:9000", 1)
    assert directory.named("default", "q") is actor and directory.on_worker(b"W1") is actor
    assert directory.owners == {DRIVER: 1}
    assert not may_restart(actor)                              # until its owner reports the creation spec
    spec = (b"fn", "Counter", b"", [], [], {}, None)
    assert directory.adopt(actor_id, actor.info, DRIVER, "0001", b"W1", "n1", "tcp://n1:9000", spec=spec) is actor
    assert actor.spec == spec and may_restart(actor)
    assert directory.owners == {DRIVER: 1} and len(directory.actors) == 1          # counted once


def test_adopt_refuses_a_name_another_live_actor_holds():
    directory = ActorDirectory()
    holder = alive(directory, name="q")
    actor_id = new_id()
    error = directory.adopt(actor_id, make_info(name="q"), OTHER, "0002", b"W9", "n2", "tcp://n2:9000")
    assert isinstance(error, str) and holder.actor_id.hex() in error and actor_id.hex() in error
    assert directory.get(actor_id) is None and OTHER not in directory.owners


def test_the_directory_is_pure():
    """It imports no sockets and no clock: only the protocol's constants and the standard library."""
    tree = ast.parse(open(actor_directory.__file__).read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported <= {"__future__", "collections.abc", "dataclasses", "protocol"}


def test_adopt_an_actor_known_on_another_worker_moves_it():
    directory = ActorDirectory()
    actor = alive(directory)
    stale = actor.worker_id
    assert directory.adopt(actor.actor_id, actor.info, DRIVER, "0001", b"W2", "n2", "tcp://n2:9000") is actor
    assert directory.on_worker(stale) is None and directory.on_worker(b"W2") is actor
    assert (actor.node_id, actor.address) == ("n2", "tcp://n2:9000")

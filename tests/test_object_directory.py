"""The head's object directory (object_directory.py) with plain data: no processes, no sockets.

Refcounting (holders, pins, contained refs, forgetting and what to free on which nodes), early
GETs and forgotten ids, readiness (whom to tell, the tasks to wake), node loss, primary and
secondary copies for drains, and rebuilding records after a head restart.
"""
from __future__ import annotations

import pytest

from tasuki import object_directory as OD, protocol as P, serialization
from tasuki.exceptions import ObjectLostError
from tasuki.object_directory import ObjectDirectory
from tasuki.scheduler import Node, Task

A, B, C = b"driver-a", b"worker-b", b"worker-c"      # processes (their zmq identities)
X, Y, Z = b"x" * 16, b"y" * 16, b"z" * 16             # object ids
NOW = 1000.0
WAIT_S = 10.0
CONNECTED = {A, B, C}


def node(node_id: str, state: str = "alive") -> Node:
    return Node(node_id, f"tcp://{node_id}:1", f"10.0.0.{ord(node_id[-1]) % 250}", {"CPU": 1}, {"CPU": 1},
                state=state)


def task(name: str = "t", deps=()) -> Task:
    return Task(name.encode(), b"fn", name, b"", list(deps), list(deps), [], (("CPU", 1),), 0, False)


def put(d: ObjectDirectory, oid: bytes, owner: bytes = A, kind: str = P.VALUE, data=b"v", contained=(), size=1):
    """A PUT: add, then ready (as the head's on_put); returns ready's answer."""
    d.add(oid, owner)
    return d.ready(oid, kind, data, list(contained), size, CONNECTED)


def ids(forgotten) -> list[bytes]:
    return [oid for oid, _ in forgotten]


def error_of(blob: bytes) -> BaseException:
    return serialization.loads(blob)


# --- refcounting ------------------------------------------------------------------------------------
# Each case: steps on a directory where A put X; then whether X is still known. A step is
# (method, args...); "drop" is the head's drop_if_unreferenced after a ready.
@pytest.mark.parametrize("steps, alive", [
    ([("release", A, [X])], False),                                   # the only holder let go
    ([("hold", B, [X]), ("release", A, [X])], True),                  # another process holds it
    ([("hold", B, [X]), ("release", A, [X]), ("release", B, [X])], False),
    ([("hold", A, [X]), ("release", A, [X])], False),                 # holders are a set: HOLD twice, one RELEASE
    ([("pin", [X]), ("release", A, [X])], True),                      # a pending task's argument
    ([("pin", [X]), ("release", A, [X]), ("unpin", [X])], False),
    ([("pin", [X]), ("pin", [X]), ("release", A, [X]), ("unpin", [X])], True),   # two tasks pin it
    ([("unpin", [X])], True),                                         # unpinned but held
    ([("holder_gone", A)], False),                                    # the process left
    ([("holder_gone", B)], True),
    ([("release", B, [X])], True),                                    # B never held it
    ([("release", A, [Y])], True),                                    # an unknown id changes nothing
], ids=lambda v: None)
def test_an_object_lives_while_held_or_pinned(steps, alive):
    d = ObjectDirectory()
    put(d, X)
    for method, *args in steps:
        getattr(d, method)(*args)
    assert (X in d) is alive
    assert (X in d.forgotten) is not alive


def test_forgetting_says_what_to_free_on_which_nodes():
    d = ObjectDirectory()
    put(d, X, kind=P.STORED_KIND, data="n1")
    assert d.add_copy(X, "n2")
    put(d, Y)                                        # an inline value: nothing on any node
    forgotten = d.release(A, [X, Y])
    assert [(oid, obj.kind, obj.data) for oid, obj in forgotten] == [(X, P.STORED_KIND, ["n1", "n2"]),
                                                                     (Y, P.VALUE, b"v")]
    assert len(d) == 0


def test_contained_refs_pin_inner_objects_until_the_outer_one_goes():
    d = ObjectDirectory()
    put(d, Y, kind=P.STORED_KIND, data="n1")         # the inner object
    put(d, X, contained=[Y])                         # X's value holds a ref to Y
    assert d[Y].pins == 1
    assert d.release(A, [Y]) == []                   # the putter drops its own ref to Y: X keeps it
    forgotten = d.release(A, [X])
    assert ids(forgotten) == [X, Y]                  # the outer, then what it contained
    assert forgotten[1][1].data == ["n1"]
    assert X in d.forgotten and Y in d.forgotten


def test_a_result_still_being_computed_is_kept_until_it_arrives():
    d = ObjectDirectory()
    t = task()
    d.add(X, A, maker=t)
    assert d.maker_of(X) is t
    assert d.release(A, [X]) == []                   # nobody wants it, but its task runs
    assert X in d
    tell, _ = d.ready(X, P.STORED_KIND, "n1", [], 5, CONNECTED)
    assert tell == []                                # the owner dropped it: nobody to tell
    assert [(oid, obj.data) for oid, obj in d.drop_if_unreferenced(X)] == [(X, ["n1"])]
    assert d.task_ended([X], []) == []               # (the head ends the task after its results)


def test_an_actor_call_result_has_no_maker_and_is_forgotten_before_it_is_ready():
    d = ObjectDirectory()
    d.add(X, A)
    assert d.maker_of(X) is None
    assert ids(d.release(A, [X])) == [X]


def test_a_task_that_ends_makes_its_results_no_more_and_unpins_its_arguments():
    d = ObjectDirectory()
    t = task("t", [Y])
    put(d, Y)
    d.add(X, A, maker=t)
    d.pin([Y])
    d.release(A, [Y, X])                             # X is kept while its task lives, Y while t does
    assert X in d and Y in d
    assert ids(d.task_ended([X, Z], [Y])) == [Y]     # unknown ids are fine
    assert d.maker_of(X) is None
    assert ids(d.drop_if_unreferenced(X)) == [X]     # its task was dropped unrun: nobody wants X


def test_holder_gone_forgets_only_what_no_one_else_wants():
    d = ObjectDirectory()
    put(d, X)
    put(d, Y)
    d.hold(B, [Y])
    put(d, Z, owner=B)
    assert ids(d.holder_gone(A)) == [X]
    assert Y in d and Z in d and d[Y].holders == {B}


def test_a_process_that_leaves_frees_what_it_held_and_what_that_contained():
    d = ObjectDirectory()
    put(d, Y, kind=P.STORED_KIND, data="n1")         # A holds Y, and X, whose value contains Y
    put(d, X, contained=[Y])
    put(d, Z)
    d.hold(B, [Z])
    forgotten = d.holder_gone(A)
    assert sorted(ids(forgotten)) == sorted([X, Y]) and Z in d
    assert dict(forgotten)[Y].data == ["n1"]


def test_forgetting_twice_is_harmless():
    d = ObjectDirectory()
    put(d, X)
    d.pin([X])
    assert ids(d.release(A, [X])) == []
    assert ids(d.unpin([X])) == [X]
    assert d.unpin([X]) == [] and d.drop_if_unreferenced(X) == []


# --- GET: early gets and forgotten ids --------------------------------------------------------------
def test_a_get_of_a_ready_object_is_answered_at_once():
    d = ObjectDirectory()
    put(d, X)
    assert d.ask(B, [X], NOW) == [X]
    assert d.message(X, {}) == (P.OBJECT, X, P.VALUE, b"v")


def test_a_get_of_a_pending_object_waits_for_it():
    d = ObjectDirectory()
    d.add(X, A, maker=task())
    assert d.ask(B, [X], NOW) == []
    tell, _ = d.ready(X, P.VALUE, b"v", [], 1, CONNECTED)
    assert tell == [A, B]


def test_a_get_that_beats_its_put_waits_then_is_answered():
    d = ObjectDirectory()
    assert d.ask(B, [X], NOW) == []
    assert X in d.early_gets
    assert d.due_early_gets(NOW + 1, WAIT_S) == []   # not put yet
    put(d, X)
    assert d.due_early_gets(NOW + 1, WAIT_S) == [(B, X)]
    assert d.early_gets == {}


def test_an_early_get_of_an_object_not_ready_becomes_a_waiter():
    d = ObjectDirectory()
    d.ask(B, [X], NOW)
    d.ask(C, [X], NOW)
    d.add(X, A, maker=task())
    assert d.due_early_gets(NOW + 1, WAIT_S) == []
    assert d[X].waiters == [B, C] and d.early_gets == {}


def test_an_early_get_of_an_id_that_never_comes_fails_after_the_wait():
    d = ObjectDirectory()
    d.ask(B, [X], NOW)
    assert d.due_early_gets(NOW + WAIT_S, WAIT_S) == []
    assert d.due_early_gets(NOW + WAIT_S + 0.1, WAIT_S) == [(B, X)]
    kind, blob = d.message(X, {})[2:]
    assert kind == P.ERROR and isinstance(error_of(blob), ObjectLostError)
    assert X.hex() in str(error_of(blob)) and "freed" in str(error_of(blob))


def test_a_get_of_a_forgotten_id_fails_at_once():
    d = ObjectDirectory()
    put(d, X)
    d.release(A, [X])
    assert d.ask(B, [X], NOW) == [X]
    assert d.early_gets == {}
    assert isinstance(error_of(d.message(X, {})[3]), ObjectLostError)


def test_an_early_get_whose_id_is_forgotten_meanwhile_fails_without_waiting():
    d = ObjectDirectory()
    d.ask(B, [X], NOW)
    put(d, X)
    d.release(A, [X])
    assert d.due_early_gets(NOW, WAIT_S) == [(B, X)]


def test_only_the_latest_forgotten_ids_are_remembered(monkeypatch):
    monkeypatch.setattr(OD, "FORGOTTEN_KEPT", 2)
    d = ObjectDirectory()
    for oid in (X, Y, Z):
        put(d, oid)
        d.release(A, [oid])
    assert list(d.forgotten) == [Y, Z]


# --- ready: whom to tell, what to wake ----------------------------------------------------------------
# (push_owner, the owner holds it, the owner is connected, waiters) -> the processes to tell
@pytest.mark.parametrize("push_owner, holds, connected, waiters, tell", [
    (True, True, True, [], [A]),
    (True, True, True, [B, A, C], [A, B, C]),        # the owner once, first
    (True, False, True, [B], [B]),                   # it released its ref
    (True, True, False, [B], [B]),                   # it disconnected
    (False, True, True, [], []),                     # an actor's inline result: the caller has it
    (False, True, True, [A, B], [A, B]),             # ... but whoever asked is told, the owner too
], ids=lambda v: None)
def test_ready_says_whom_to_tell(push_owner, holds, connected, waiters, tell):
    d = ObjectDirectory()
    d.add(X, A, maker=task())
    d.hold(B, [X])
    if not holds:
        d.release(A, [X])
    for waiter in waiters:
        d.ask(waiter, [X], NOW)
    got, _ = d.ready(X, P.VALUE, b"v", [], 1, {B, C} | ({A} if connected else set()), push_owner)
    assert got == tell
    assert d[X].waiters == []


def test_ready_hands_over_the_dependents_and_stores_the_payload():
    d = ObjectDirectory()
    nodes = {"n1": node("n1"), "n2": node("n2", "dead")}
    d.add(X, A, maker=task())
    d.add(Y, A, maker=task())
    t1, t2 = task("t1", [X, Y]), task("t2", [X])
    assert d.add_dependent(t1, t1.deps) == (2, None)
    assert d.add_dependent(t2, t2.deps) == (1, None)
    _, dependents = d.ready(X, P.STORED_KIND, "n1", [], 7, CONNECTED)
    assert dependents == [t1, t2]
    assert d[X].dependents == [] and d[Y].dependents == [t1]
    assert d.payload(X, nodes) == (P.STORED_KIND, [("n1", "tcp://n1:1")])
    d.add_copy(X, "n2")                              # a copy on a dead node is not a location
    assert d.locations(X, nodes) == [("n1", "tcp://n1:1")]
    assert d[X].size == 7


@pytest.mark.parametrize("deps, result", [
    ([], (0, None)),
    ([X], (0, None)),                                # ready
    ([Z], (1, None)),                                # pending
    ([X, Z, Z], (2, None)),                          # a ref passed twice is waited for twice
    ([Z, Y], (0, Y)),                                # failed: it cannot run, so it waits for nothing
    ([b"gone" * 4, Z], (0, b"gone" * 4)),            # unknown (freed before the task came)
], ids=lambda v: None)
def test_add_dependent_counts_pending_args_and_stops_at_a_failed_one(deps, result):
    d = ObjectDirectory()
    put(d, X)
    put(d, Y, kind=P.ERROR, data=b"err")
    d.add(Z, A, maker=task())
    t = task("t", deps)
    assert d.add_dependent(t, deps) == result
    assert d[Z].dependents.count(t) == result[0]      # (Z is the only pending one)
    d.remove_dependent(t, deps)
    assert t not in d[Z].dependents


# --- copies and node loss -------------------------------------------------------------------------------
def test_a_node_that_dies_takes_its_copies_and_the_objects_only_it_held():
    d = ObjectDirectory()
    put(d, X, kind=P.STORED_KIND, data="n1")
    d.add_copy(X, "n2")                              # X has a second copy
    put(d, Y, kind=P.STORED_KIND, data="n1")         # Y's only copy is on n1
    put(d, Z)                                        # an inline value does not care
    loss = d.node_lost("n1", "10.0.0.7")
    assert loss.touched == [X, Y] and loss.lost == [Y] and loss.remade == loss.rerun == []
    assert (d[X].kind, d[X].data) == (P.STORED_KIND, ["n2"])
    assert d[Y].kind == P.ERROR and d[Z].data == b"v"
    error = error_of(d[Y].data)
    assert isinstance(error, ObjectLostError)               # Y has no lineage (no task kept for it)
    assert Y.hex() in str(error) and "n1 (10.0.0.7)" in str(error) and "call the task again" in str(error)
    assert d.node_lost("n1", "10.0.0.7") == OD.Loss()
    assert d.message(Y, {})[2] == P.ERROR


# --- lineage: results lost with a node are made again (lineage.py decides) -----------------------------
def made(d: ObjectDirectory, oid: bytes, deps=(), max_retries: int = 1, contained=()) -> Task:
    """A task that made `oid` (stored on n1, held by A) and succeeded, its arguments `deps` pinned till then."""
    t = Task(b"t" + oid[:1], b"fn", "t" + oid[:1].decode(), b"", list(deps), list(deps), [oid], (("CPU", 1),),
             max_retries, False)
    d.add(oid, A, maker=t)
    d.pin(deps)
    d.ready(oid, P.STORED_KIND, "n1", list(contained), 1, CONNECTED)
    assert d.task_ended([oid], list(deps), succeeded=t) == []
    return t


def test_a_result_lost_with_its_node_is_made_again_by_its_task():
    d = ObjectDirectory()
    put(d, Y)
    put(d, Z)
    t = made(d, X, deps=[Y], contained=[Z])
    loss = d.node_lost("n1", "10.0.0.7")
    assert (loss.remade, loss.rerun, loss.touched, loss.lost, loss.stale) == ([X], [t], [], [], [Z])
    assert d[X].kind is None and d[X].maker is t and d[X].holders == {A} and d[X].contained == []
    assert ids(d.release(A, [X])) == []                     # being made again: kept till its result comes


@pytest.mark.parametrize("max_retries, has_code, why", [
    (0, True, "retries are spent (max_retries=0"),
    (1, False, "the task's code is gone"),
])
def test_a_result_whose_task_cannot_run_again_is_lost_saying_why(max_retries, has_code, why):
    d = ObjectDirectory()
    made(d, X, max_retries=max_retries)
    loss = d.node_lost("n1", "10.0.0.7", lambda fn_id: has_code)
    assert (loss.touched, loss.lost, loss.remade, loss.rerun) == ([X], [X], [], [])
    assert why in str(error_of(d[X].data)) and "n1 (10.0.0.7)" in str(error_of(d[X].data))


def test_a_freed_argument_of_a_lost_result_is_made_again_first():
    d = ObjectDirectory()
    t1 = made(d, Y)
    t2 = made(d, X, deps=[Y])
    assert ids(d.release(A, [Y])) == [Y]                    # Y is freed; its lineage stays for X's
    loss = d.node_lost("n1", "10.0.0.7")
    assert loss.rerun == [t1, t2] and loss.remade == [Y, X]
    assert d[Y].maker is t1 and Y not in d.forgotten


def test_a_forgotten_result_drops_its_lineage():
    d = ObjectDirectory()
    made(d, X)
    assert d.lineage.origin(X) is not None
    d.release(A, [X])
    assert d.lineage.origin(X) is None and d.node_lost("n1", "10.0.0.7") == OD.Loss()


def test_add_copy_of_an_unknown_object_asks_the_node_to_free_it():
    d = ObjectDirectory()
    assert d.add_copy(X, "n1") is False
    put(d, X, kind=P.STORED_KIND, data="n1")
    assert d.add_copy(X, "n1") and d.add_copy(X, "n2") and d.add_copy(X, "n2")
    assert d[X].data == ["n1", "n2"]
    put(d, Y)
    assert d.add_copy(Y, "n1") and d[Y].data == b"v"     # an inline value keeps no locations


def test_primary_and_secondary_copies_for_drains():
    d = ObjectDirectory()
    put(d, X, kind=P.STORED_KIND, data="a", size=10)      # only on a: primary there
    put(d, Y, kind=P.STORED_KIND, data="a", size=20)
    d.add_copy(Y, "b")                                     # on a and b: secondary on both
    put(d, Z, kind=P.STORED_KIND, data="d", size=30)       # only on a draining node: primary there
    put(d, b"v" * 16)                                      # inline: not stored
    assert d.stored() == [(X, ["a"], 10), (Y, ["a", "b"], 20), (Z, ["d"], 30)]
    assert d.primary_counts({"a": "alive", "b": "alive", "d": "draining"}) == {"a": 1, "d": 1}
    assert d.primary_counts({"a": "alive", "b": "draining", "d": "draining"}) == {"a": 2, "d": 1}


# --- rebuilding after a head restart ------------------------------------------------------------------
def test_a_node_reports_a_copy_the_restarted_head_does_not_know():
    d = ObjectDirectory()
    assert d.restore_copy(X, "n1", 100, CONNECTED) == ([], [])
    assert (d[X].kind, d[X].data, d[X].size, d[X].owner, d[X].holders) == (P.STORED_KIND, ["n1"], 100, b"", set())
    assert d.restore_copy(X, "n2", 100, CONNECTED) == ([], [])      # another node has a copy too
    assert d.restore_copy(X, "n2", 100, CONNECTED) == ([], [])
    assert d[X].data == ["n1", "n2"]
    d.hold(A, [X])                                                   # its holder reconnects
    assert ids(d.release(A, [X])) == [X]


def test_a_reported_copy_makes_a_resubmitted_result_ready():
    d = ObjectDirectory()
    t = task("t", [X])
    d.add(X, A, maker=task("maker"))
    d.add_dependent(t, [X])
    d.ask(B, [X], NOW)
    tell, dependents = d.restore_copy(X, "n1", 100, CONNECTED)
    assert tell == [A, B] and dependents == [t]
    assert (d[X].kind, d[X].data) == (P.STORED_KIND, ["n1"])


def test_an_owner_re_sends_a_small_value_it_put():
    d = ObjectDirectory()
    assert d.restore_value(Y, A, P.VALUE, b"y", [], 1, CONNECTED) == ([], [])    # the inner value, first
    assert d.restore_value(X, A, P.VALUE, b"x", [Y], 1, CONNECTED) == ([], [])   # not echoed to its owner
    assert (d[X].kind, d[X].data, d[X].owner, d[X].holders) == (P.VALUE, b"x", A, {A})
    assert d[Y].pins == 1
    assert d.restore_value(X, A, P.VALUE, b"x", [Y], 1, CONNECTED) == ([], [])   # sent twice: no change
    assert d[Y].pins == 1
    assert d.message(X, {}) == (P.OBJECT, X, P.VALUE, b"x")


def test_a_re_sent_value_answers_those_who_asked_for_it():
    d = ObjectDirectory()
    d.add(X, B, maker=task())                         # a task's record (resubmitted) someone waits on
    t = task("t", [X])
    d.add_dependent(t, [X])
    d.ask(C, [X], NOW)
    tell, dependents = d.restore_value(X, A, P.ERROR, b"err", [], 3, CONNECTED)
    assert tell == [C] and dependents == [t]
    assert d[X].holders == {A, B} and d[X].kind == P.ERROR

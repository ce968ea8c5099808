"""recovery.py: the pure decisions of head recovery, table-driven."""
from __future__ import annotations

import pytest

from tasuki import recovery as R

A, B = b"a" * 16, b"b" * 16


@pytest.mark.parametrize("known, session, changed", [
    (None, 1.0, True),          # never welcomed (a worker started just before the head died): rejoin
    (1.0, 2.0, True),           # another head runs at the address
    (1.0, 1.0, False),          # the same head forgot this process (declared it dead): not a restart
])
def test_head_changed(known, session, changed):
    assert R.head_changed(known, session) is changed


@pytest.mark.parametrize("asked_at, now, again", [
    (None, 5.0, True),
    (5.0, 5.0, False),                              # one REJOIN per process per retry period, not per message
    (5.0, 5.0 + R.REJOIN_RETRY_S, True),            # the first may have found no connection to route to
])
def test_ask_again(asked_at, now, again):
    assert R.ask_again(asked_at, now) is again


@pytest.mark.parametrize("node_known, actor_id, task_id, creating, task_queued, plan", [
    (False, None, None, False, None, R.WAIT),
    (False, A, None, False, None, R.WAIT),      # the node's table entry comes first, whatever the worker hosts
    (False, None, B, False, True, R.WAIT),
    (True, A, None, False, None, R.ADOPT_ACTOR),
    (True, None, None, False, None, R.ADOPT_IDLE),
    (True, None, B, False, None, R.WAIT_FOR_TASK),   # until the task's owner re-sends it
    (True, None, B, False, True, R.ADOPT_TASK),      # re-sent and queued: it runs on, on this worker
    (True, None, B, False, False, R.KILL),           # it runs elsewhere already, or ended
    (True, None, A, True, None, R.KILL),             # an actor's construction: nobody re-sends it
])
def test_worker_plan(node_known, actor_id, task_id, creating, task_queued, plan):
    assert R.worker_plan(node_known, actor_id, task_id, creating, task_queued) == plan


@pytest.mark.parametrize("claimed, reports, located", [
    (["n1"], {}, ["n1"]),                                   # its node has not rejoined yet: may still come
    (["n1"], {"n1": {A}}, ["n1"]),
    (["n1"], {"n1": set()}, []),                            # rejoined without it: lost there
    (["n1"], {"n1": set(), "n2": {A}}, ["n2"]),             # a copy elsewhere (pulled by a reader)
    ([], {"n2": {A}, "n3": {A}}, ["n2", "n3"]),
    (["n1", "n2"], {"n2": {B}}, ["n1"]),
])
def test_object_locations(claimed, reports, located):
    assert R.object_locations(claimed, reports, A) == located


@pytest.mark.parametrize("return_ids, reports, results", [
    ([A], {}, None),                                                  # no node rejoined yet
    ([A], {"n1": {B: 5}}, None),                                      # not stored anywhere: the actor may still send it
    ([A], {"n1": {A: 7}}, [(A, "n1", 7)]),
    ([A, B], {"n1": {A: 7}}, None),                                   # one of two: wait for the other
    ([A, B], {"n1": {A: 7}, "n2": {B: 9}}, [(A, "n1", 7), (B, "n2", 9)]),
])
def test_reported_results(return_ids, reports, results):
    assert R.reported_results(return_ids, reports) == results


def test_lost_object_reason_names_the_object_and_its_node():
    assert R.lost_object_reason(A, ["n1"], {"n1": {A}}) is None
    assert R.lost_object_reason(A, ["n1"], {}) is None
    reason = R.lost_object_reason(A, ["n1"], {"n1": set()})
    assert A.hex() in reason and "n1" in reason and "cannot be rebuilt" in reason


@pytest.mark.parametrize("found, now, first_rejoin_at, expected, asked_at, waits", [
    (True, 1.0, 0.0, 1, 1.0, False),                        # found: answer
    (False, 1.0, None, 0, 1.0, False),                      # nobody rejoined this head: a plain miss
    (False, 1.0, 0.0, 0, 1.0, True),                        # nodes may still come
    (False, 1.0 + R.REJOIN_GRACE_S, 1.0, 0, 2.0, False),    # past the grace, no worker expected
    (False, 100.0, 0.0, 2, 99.0, True),                     # a listed worker has not said HELLO yet
    (False, 100.0, 0.0, 2, 100.0 - R.LOOKUP_WAIT_S, False),  # waited long enough
])
def test_lookup_waits(found, now, first_rejoin_at, expected, asked_at, waits):
    assert R.lookup_waits(found, now, first_rejoin_at, expected, asked_at) is waits


def test_not_rejoined_reason_names_the_object_its_nodes_and_the_wait():
    reason = R.not_rejoined_reason(A, ["n1", "n2"], 6.0)
    assert A.hex() in reason and "n1, n2" in reason and "6 s" in reason and "put it again" in reason


def test_give_up_message_says_how_long_and_what_to_do():
    text = R.give_up_message("tasuki driver", "tcp://10.0.0.1:6380", 61.2, 60)
    assert "tcp://10.0.0.1:6380" in text and "61 s" in text and "TASUKI_HEAD_RECONNECT_S=60" in text
    assert "tasuki start --head" in text


@pytest.mark.parametrize("reports, known, orphans", [
    ({}, set(), {}),
    ({"n1": {A: 10}}, {A}, {}),                                  # claimed by a driver that rejoined
    ({"n1": {A: 10, B: 20}}, {A}, {"n1": [B]}),                  # B's holders never came back
    ({"n1": {A: 10}, "n2": {A: 10, B: 5}}, set(), {"n1": [A], "n2": [A, B]}),   # every copy of each
])
def test_unclaimed(reports, known, orphans):
    assert R.unclaimed(reports, known) == orphans


def test_what_is_unclaimed_is_let_go_only_after_every_process_could_have_rejoined():
    assert R.unclaimed_sweep_delay(60.0) == 60.0 + R.REJOIN_GRACE_S
    assert R.unclaimed_sweep_delay(5.0) > 5.0


def test_recovery_is_pure():
    import ast
    import inspect
    tree = ast.walk(ast.parse(inspect.getsource(R)))
    imported = {(node.module or "." if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
                for node in tree if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert imported <= {"__future__", "collections"}, imported     # (collections.abc: type hints)

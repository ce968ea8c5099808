"""lineage.py: which tasks to run again for lost objects, and the bounded memory of kept specs."""
from __future__ import annotations

import pytest

from tasuki.lineage import COMPACT_SLACK, SPEC_OVERHEAD_BYTES, Lineage, cannot_rebuild, plan
from tasuki.protocol import ACTOR_CALL_BIT
from tasuki.scheduler import Task

PREFIX = b"P" * 8


def tid(n: int) -> bytes:
    """A task id as client.new_id makes it (15 bytes); its first return is tid(n) + b"\\0"."""
    return PREFIX + n.to_bytes(7, "little")


def ret(n: int, i: int = 0) -> bytes:
    return tid(n) + bytes([i])


def task(n: int, deps=(), attempt: int = 0, max_retries: int = 3, args: bytes = b"x" * 10, returns: int = 1,
         fn: bytes = b"fn") -> Task:
    return Task(tid(n), fn, f"t{n}", args, list(deps), list(deps), [ret(n, i) for i in range(returns)], (),
                max_retries, False, attempt=attempt)


def kept(*tasks: Task, max_bytes: int = 1 << 30) -> Lineage:
    lineage = Lineage(max_bytes)
    for t in tasks:
        lineage.add(t, len(t.return_ids))
    return lineage


def names(tasks) -> list[str]:
    return [t.name for t in tasks]


PUT_ID = PREFIX + (99).to_bytes(7, "little")                   # 15 bytes: made by put
CALL_ID = PREFIX + (7 | ACTOR_CALL_BIT << 48).to_bytes(7, "little") + b"\0"

# (case, tasks kept, ids lost, ids still available, tasks to run again in order, {lost id: words in its error})
PLANS = [
    ("one lost result", [task(1)], [ret(1)], set(), ["t1"], {}),
    ("two results of one task: run once", [task(1, returns=2)], [ret(1, 0), ret(1, 1)], set(), ["t1"], {}),
    ("argument still has a copy", [task(1), task(2, [ret(1)])], [ret(2)], {ret(1)}, ["t2"], {}),
    ("argument lost too: its task first", [task(1), task(2, [ret(1)])], [ret(2), ret(1)], set(), ["t1", "t2"], {}),
    ("argument freed: rebuilt for the re-run", [task(1), task(2, [ret(1)])], [ret(2)], set(), ["t1", "t2"], {}),
    ("chain of three, deduplicated", [task(1), task(2, [ret(1)]), task(3, [ret(1), ret(2)])], [ret(3)], set(),
     ["t1", "t2", "t3"], {}),
    ("retries spent", [task(1, attempt=3)], [ret(1)], set(), [], {ret(1): ["retries are spent", "max_retries=3",
                                                                         "t1"]}),
    ("max_retries=0", [task(1, max_retries=0)], [ret(1)], set(), [], {ret(1): ["max_retries=0"]}),
    ("argument's retries spent: neither runs", [task(1, attempt=3), task(2, [ret(1)])], [ret(2)], set(), [],
     {ret(2): ["its argument cannot", "t1", "retries are spent"]}),
    ("made by put", [], [PUT_ID], set(), [], {PUT_ID: ["made by `put`", PUT_ID.hex(), "node 7"]}),
    ("an actor call's result", [], [CALL_ID], set(), [], {CALL_ID: ["actor call", CALL_ID.hex()]}),
    ("argument made by put and lost", [task(2, [PUT_ID])], [ret(2)], set(), [],
     {ret(2): ["its argument cannot", "made by `put`"]}),
    ("its code is gone", [task(1, fn=b"gone")], [ret(1)], set(), [], {ret(1): ["code is gone", "t1"]}),
    ("one fails, the other runs", [task(1, attempt=3), task(2)], [ret(1), ret(2)], set(), ["t2"],
     {ret(1): ["retries are spent"]}),
]


@pytest.mark.parametrize("case, tasks, lost, available, rerun, failed", PLANS, ids=[p[0] for p in PLANS])
def test_plan(case, tasks, lost, available, rerun, failed):
    result = plan(lost, kept(*tasks), available.__contains__, lambda oid: "node 7 (10.0.0.7)",
                  lambda fn_id: fn_id != b"gone")
    assert names(result.rerun) == rerun
    assert set(result.failed) == set(failed)
    for oid, words in failed.items():
        for word in words:
            assert word in result.failed[oid], result.failed[oid]


def test_an_evicted_spec_is_not_reconstructable_and_says_why():
    big = task(1, args=b"x" * 1000)
    lineage = kept(big, task(2), max_bytes=1000 + 2 * SPEC_OVERHEAD_BYTES - 1)
    assert lineage.evicted == 1 and lineage.bytes <= lineage.max_bytes
    result = plan([ret(1), ret(2)], lineage, lambda oid: False)
    assert names(result.rerun) == ["t2"]
    assert "LINEAGE_MAX_BYTES" in result.failed[ret(1)] and "evicted" in result.failed[ret(1)]


def test_a_spec_lives_while_its_results_or_its_users_lineage_do():
    lineage = kept(task(1, returns=2), task(2, [ret(1, 0)]))
    lineage.object_freed(ret(1, 0))
    lineage.object_freed(ret(1, 1))
    assert lineage.origin(ret(1, 0)) is not None            # task 2's lineage needs it (its argument's, not its value)
    lineage.object_freed(ret(2))
    assert lineage.by_object == {} and lineage.kept == 0 and lineage.bytes == 0


def test_a_remade_argument_counts_live_until_freed_again():
    lineage = kept(task(1), task(2, [ret(1)]))
    lineage.object_freed(ret(1))
    lineage.object_remade(ret(1))
    lineage.object_freed(ret(1))
    lineage.object_freed(ret(2))
    assert lineage.by_object == {}


def test_keeping_a_task_twice_keeps_it_once():
    t = task(1)
    lineage = kept(t)
    lineage.add(t, 1)
    assert lineage.kept == 1 and lineage.bytes == len(t.args) + SPEC_OVERHEAD_BYTES


@pytest.mark.parametrize("oid, words", [(PUT_ID, "`put`"), (CALL_ID, "actor call"), (ret(5), "no longer known")])
def test_cannot_rebuild_says_how_the_object_was_made(oid, words):
    assert words in cannot_rebuild(oid, "node n1")


def test_eviction_keeps_the_bound_and_stays_cheap_past_it():
    lineage = Lineage(10 * (10 + SPEC_OVERHEAD_BYTES))
    for n in range(10_000):                  # quadratic eviction would take minutes here
        lineage.add(task(n), 1)
    assert lineage.bytes <= lineage.max_bytes and lineage.evicted == 9_990
    assert lineage.kept == len(lineage.specs) == 10
    for n in range(10_000):
        lineage.object_freed(ret(n))
    assert lineage.by_object == {} and lineage.kept == 0 and lineage.bytes == 0


def test_dropped_specs_are_compacted_away_and_skipped_by_eviction():
    lineage = Lineage(10 * (10 + SPEC_OVERHEAD_BYTES))
    for n in range(10_000):                  # each freed at once: the index of kept specs stays small
        lineage.add(task(n), 1)
        lineage.object_freed(ret(n))
    assert lineage.kept == 0 and len(lineage.specs) <= COMPACT_SLACK + 1 and lineage.bytes == 0
    for n in range(10_000, 10_011):          # eviction skips the dropped entries, evicts the oldest kept
        lineage.add(task(n), 1)
    assert lineage.evicted == 1 and lineage.kept == 10 and lineage.origin(ret(10_000)).task is None
    assert lineage.origin(ret(10_010)).task is not None

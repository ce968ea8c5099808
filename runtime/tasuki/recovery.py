"""Head recovery: the decisions a restarted head and its rejoining processes make, over plain data.

No I/O, no clock, no sockets: the head's rejoin block (the end of head.Head), node.py and
client.py call these and act on the answers.

How a head is recovered (no external store):
  the old head dies ──► drivers, workers and node agents keep their zmq DEALERs, which reconnect by
      themselves to the same address and queue what is sent meanwhile; gets and waits block; each
      gives up after TASUKI_HEAD_RECONNECT_S of silence (`give_up_message`)
  a new head starts at the same address ──► the queued messages arrive from identities it does not
      know: it answers each with REJOIN(session), again every 0.5 s until HELLO, and drops the message
  the process compares the session (`head_changed`) and says HELLO again with info["rejoin"]:
      node agent: its resources, labels, live workers [(worker id, pid)] and stored objects [(id, size)]
      worker:     its node id, the actor it hosts (id, info, address, job id) or the task it runs,
                  and, as a driver does, what it owns (the tasks its task submitted, its refs)
      driver:     its job id, the functions it registered, the refs it holds, its inline objects
                  [(id, kind, data, size)], its stored puts [(id, node id, size)], the specs of its
                  tasks without results, and its request_resources bundles
  the head rebuilds its tables from these, in whatever order they arrive: a worker that rejoins
      before its node waits for it (`worker_plan`); a stored object's locations merge what its
      owner claims with what the nodes report (`object_locations`).

What is adopted rather than redone, and what cannot be rebuilt:
  - a task still running when its worker rejoins goes on there: the worker waits (WAIT_FOR_TASK)
    until the task's owner re-sends the spec, then runs it as if the new head had placed it
    (ADOPT_TASK), and its DONE finishes it. A DONE that reaches the new head before its worker
    rejoins is kept (head.keep_rejoin_results) and finishes the task once its owner re-sends it.
  - an actor's creator re-sends its creation spec (client.created_actors), merged by actor id with
    what the actor's worker reports (head.rejoin_actor, adopt_actor): found again, it may restart;
    an actor whose worker did not come back by the sweep is created again (its state is lost).
    Until its creator rejoins, an actor found again cannot restart (no_restart). Callers re-send
    ACTOR_LOCATE for the actors they call, to hear of restarts and deaths.
  - an actor call without its results is re-registered by its caller (ACTOR_CALLS); the result an
    actor sent while no head knew it is kept until then (as a DONE is); one the previous head got but
    did not pass on is found in the store of a rejoined node at the sweep (`reported_results`).
  - a worker constructing an actor is killed, and the actor created again as soon as its creator
    re-sends the spec (head.recreate_killed_creation);
    a standing request_resources() is re-sent only by the driver that made it, while it is connected.
  - a stored object whose nodes have not rejoined REJOIN_GRACE_S after the first rejoin is lost
    (`not_rejoined_reason`, pushed to its holders); a node that rejoins later does not bring it back.
  - what no process claims is let go once every process of the previous head has rejoined or given
    up (`unclaimed_sweep_delay`): objects nodes still store for nobody are freed (`unclaimed`), kept
    results of tasks and calls nobody re-sent are dropped, and workers still waiting for a task nobody
    re-sent are killed.
"""
from __future__ import annotations

from collections.abc import Container, Mapping

WAIT, ADOPT_ACTOR, ADOPT_IDLE, KILL = "wait", "adopt_actor", "adopt_idle", "kill"
ADOPT_TASK, WAIT_FOR_TASK = "adopt_task", "wait_for_task"
REJOIN_GRACE_S = 6.0      # seconds after the first rejoin during which more nodes are expected: as long as the
                          # head waits for a silent node before declaring it dead (config.NODE_TIMEOUT_S)
LOOKUP_WAIT_S = 10.0      # the longest a lookup by name waits for the actor's worker to rejoin
REJOIN_RETRY_S = 0.5      # seconds before the same process is told REJOIN again: the first may have been sent
                          # before its connection came back, and a ROUTER drops what it cannot route


def unclaimed_sweep_delay(reconnect_s: float) -> float:
    """Seconds after the first rejoin when what no process has claimed is let go (`unclaimed`): every
    process of the previous head has rejoined by then or given up, as each tries for
    TASUKI_HEAD_RECONNECT_S (`reconnect_s`) from the moment its head went silent, before the first rejoin."""
    return reconnect_s + REJOIN_GRACE_S


def unclaimed(node_reports: Mapping[str, Mapping[bytes, int]], known: Container) -> dict[str, list]:
    """Node id -> the objects it reported when it rejoined that no process has claimed since (not in
    `known`, the head's object records): nobody holds a ref to them, so the node may free them."""
    out = {}
    for node_id, stored in node_reports.items():
        orphans = [oid for oid in stored if oid not in known]
        if orphans:
            out[node_id] = orphans
    return out


def head_changed(known_session: float | None, session: float | None) -> bool:
    """Whether a REJOIN carrying `session` comes from another head than the one this process knew
    (None: it was never welcomed, as a worker that started just before the head died). The same
    session means the head itself forgot this process (it declared it dead or gone): that is not a
    restart, and the process must not come back as if nothing happened."""
    return known_session is None or session != known_session


def ask_again(asked_at: float | None, now: float) -> bool:
    """Whether to tell a process REJOIN (again): never asked, or asked REJOIN_RETRY_S ago and it has
    not said HELLO since (the answer to one message per process per retry period, not to each)."""
    return asked_at is None or now - asked_at >= REJOIN_RETRY_S


def worker_plan(node_known: bool, actor_id: bytes | None, task_id: bytes | None, creating: bool = False,
                task_queued: bool | None = None) -> str:
    """What a new head does with a worker that says HELLO with info["rejoin"]:
    WAIT until its node rejoins (the node's table entry holds its resources), ADOPT_ACTOR (it hosts
    an actor: keep it, callers reach it directly), ADOPT_IDLE, or, for a worker running task
    `task_id` (`creating`: an actor's construction, which nobody re-sends: KILL), as the head knows
    that task (`task_queued`): None, its owner has not re-sent it yet (WAIT_FOR_TASK); True, queued
    (ADOPT_TASK: it runs on, on this worker); False, it runs elsewhere already or ended (KILL)."""
    if not node_known:
        return WAIT
    if actor_id is not None:
        return ADOPT_ACTOR
    if task_id is None:
        return ADOPT_IDLE
    if creating or task_queued is False:
        return KILL
    return WAIT_FOR_TASK if task_queued is None else ADOPT_TASK


def lookup_waits(found: bool, now: float, first_rejoin_at: float | None, workers_expected: int,
                 asked_at: float) -> bool:
    """Whether a lookup of an actor by name that found nothing should wait rather than answer "no
    such actor": this head is being rejoined (`first_rejoin_at`), and some worker a node listed has not
    said HELLO yet (`workers_expected`) or nodes may still come (within REJOIN_GRACE_S); never longer
    than LOOKUP_WAIT_S from `asked_at`. A head that nobody rejoined answers at once."""
    if found or first_rejoin_at is None or now - asked_at >= LOOKUP_WAIT_S:
        return False
    return workers_expected > 0 or now - first_rejoin_at < REJOIN_GRACE_S


def object_locations(claimed: list[str], reports: Mapping[str, Container[bytes]], oid: bytes) -> list[str]:
    """The nodes holding stored object `oid`, from what its owner claims (`claimed`: the node ids
    it put it on or got it from) and what rejoined nodes report (`reports`: node id -> the ids it
    stores). A node that rejoined without it lost it (evicted, or it restarted); a claimed node that
    has not rejoined yet is kept: it may still come back with it."""
    located = [n for n, stored in reports.items() if oid in stored]
    located += [n for n in claimed if n not in reports and n not in located]
    return located


def reported_results(return_ids: list[bytes], reports: Mapping[str, Mapping[bytes, int]]) -> list[tuple] | None:
    """The results of an actor call that rejoined nodes report in their stores, [(id, node id, size)]:
    the actor stored them and told the previous head, which died before passing them on. None
    unless every one of `return_ids` is found."""
    results = []
    for oid in return_ids:
        node_id = next((n for n, stored in reports.items() if oid in stored), None)
        if node_id is None:
            return None
        results.append((oid, node_id, reports[node_id][oid]))
    return results


def lost_object_reason(oid: bytes, claimed: list[str], reports: Mapping[str, Container[bytes]]) -> str | None:
    """Why stored object `oid` cannot be found after a head restart, or None while it may still be:
    every node its owner put it on rejoined without it."""
    if object_locations(claimed, reports, oid):
        return None
    where = ", ".join(claimed) or "no node"
    return (f"object {oid.hex()} was stored on {where}, which rejoined the restarted head without it "
            f"(the node restarted, or evicted it while the head was away): it cannot be rebuilt")


def not_rejoined_reason(oid: bytes, nodes: list[str], grace_s: float) -> str:
    """Why stored object `oid` is lost: the nodes that held it did not rejoin the restarted head
    within `grace_s` seconds of the first process that did."""
    return (f"object {oid.hex()} was stored on {', '.join(nodes)}, which did not rejoin the restarted head within "
            f"{grace_s:g} s (the node died with the head, or cannot reach it): it cannot be rebuilt; make it again "
            f"(call the task that returned it, or put it again)")


def give_up_message(who: str, address: str, silent_s: float, reconnect_s: float) -> str:
    """The error a driver raises (or the line a node agent logs) when the head stayed away."""
    return (f"{who}: the tasuki head at {address} has not answered for {silent_s:.0f} s; this process kept trying to "
            f"reach it (or a head restarted at the same address) for TASUKI_HEAD_RECONNECT_S={reconnect_s:g} s and "
            f"gave up. Start the head again with `tasuki start --head` at the same address (or raise "
            f"TASUKI_HEAD_RECONNECT_S), check `tasuki status`, and reconnect with init().")

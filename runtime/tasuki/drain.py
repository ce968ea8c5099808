"""Draining a node: the decisions, as functions of plain data. No I/O, no clocks (`now` comes in).

A node drains when its node agent gets SIGTERM (Kubernetes deletes its pod: it sends LEAVING to
the head) or when the operator asks (POST /api/v1/nodes/{id}/drain). The head (head.py, its
"drain" block) then places nothing new there, hands back the tasks queued at its workers, lets
the running ones finish, restarts its actors that may restart on other nodes (a move does not
count against max_restarts, as in Ray), and copies the objects only this node holds to other
nodes. It calls these functions on each drain tick:

  objects on the node ──objects_to_move──► [(id, size)] ──choose_targets──► [(id, target node)]
  counts (tasks, actors, objects) ──answer──► the drain endpoint's JSON (`drained` and what is left)

An object needs moving when this node holds a copy and no node that stays (state alive) holds
another: a copy on a node that is draining too does not count, it leaves as well. The same test,
for an alive node, tells a primary copy from a secondary one: a node holding only secondary
copies is idle for the autoscaler (`primary_counts`; ray#21870: Ray kept such nodes for good).

A drain from SIGTERM has a deadline (the node agent's TASUKI_DRAIN_TIMEOUT_S): at it the tasks
still running are handed back (`past_deadline`) and requeued without counting an attempt. A drain
from the API has none and can be cancelled; one from SIGTERM cannot (the pod is going away).
"""
from __future__ import annotations

from dataclasses import dataclass, field

API, SIGTERM = "api", "sigterm"          # why a node drains
COPY_RETRY_S = 15.0                      # seconds a copy may take before it is asked of another node
ALIVE = "alive"                          # (scheduler.ALIVE: nodes that stay)


@dataclass
class Drain:
    """One draining node as the head tracks it."""
    node_id: str
    reason: str                          # API or SIGTERM
    deadline: float | None = None        # SIGTERM: when running tasks are handed back
    copying: dict = field(default_factory=dict)     # object id -> (target node id, since)
    moved_actors: set = field(default_factory=set)  # actor ids restarted elsewhere by this drain
    handed_back: int = 0                 # tasks handed back at the deadline
    done: bool = False                   # DRAINED was sent


def needs_move(locations, node_id: str, states: dict) -> bool:
    """Whether `node_id` holds a copy that no staying (alive) node holds too."""
    return node_id in locations and not any(n != node_id and states.get(n) == ALIVE for n in locations)


def objects_to_move(objects, node_id: str, states: dict) -> list[tuple[bytes, int]]:
    """[(id, size)] of the stored objects (`objects`: (id, locations, size) triples) that only
    `node_id` holds among the nodes that stay; `states`: node id -> state."""
    return [(oid, size) for oid, locations, size in objects if needs_move(locations, node_id, states)]


def primary_counts(objects, states: dict) -> dict[str, int]:
    """Node id -> how many stored objects it holds that no other alive node holds (its primary
    copies). Nodes holding only secondary copies are absent."""
    counts: dict[str, int] = {}
    for _, locations, _ in objects:
        alive = [n for n in locations if states.get(n) == ALIVE]
        if len(alive) == 1:
            counts[alive[0]] = counts.get(alive[0], 0) + 1
        elif not alive:
            for n in locations:              # only on draining nodes: each is a primary holder
                counts[n] = counts.get(n, 0) + 1
    return counts


def choose_targets(moves: list[tuple[bytes, int]], room: dict[str, int], copying: dict,
                   now: float, retry_s: float = COPY_RETRY_S) -> list[tuple[bytes, str]]:
    """Where to copy each object of `moves` ([(id, size)]): [(id, target node)].

    `room`: node id -> free bytes, for the nodes that may take copies (alive, not draining);
    consumed here as copies are assigned (so one call never overfills a node). `copying`: id ->
    (target, since) of the copies under way: one is asked again (of the roomiest other node when
    there is one) only when its target is no longer a candidate or it has taken `retry_s`.
    Largest objects first, each to the node with the most room that holds it; an object that fits
    nowhere is left out (it stays in the answer's objects_to_move)."""
    out = []
    for oid, size in sorted(moves, key=lambda m: -m[1]):
        under_way = copying.get(oid)
        if under_way is not None and under_way[0] in room and now - under_way[1] < retry_s:
            continue
        candidates = [n for n, free in room.items() if free >= size]
        if under_way is not None and len(candidates) > 1:
            candidates = [n for n in candidates if n != under_way[0]]
        if not candidates:
            continue
        target = max(candidates, key=lambda n: (room[n], n))
        room[target] -= size
        out.append((oid, target))
    return out


def past_deadline(drain: Drain, now: float) -> bool:
    """Whether the drain's running tasks are to be handed back now (only a SIGTERM drain has a deadline)."""
    return drain.deadline is not None and now >= drain.deadline


def answer(node_id: str, state: str, running_tasks: int, actors: int, moves: list[tuple[bytes, int]],
           objects: int, drain: Drain | None, now: float) -> dict:
    """The drain endpoint's answer: `drained` is true only when the node runs no task, hosts no
    live actor and holds no object that is referenced and stored on no node that stays."""
    out = {"node_id": node_id, "state": state,
           "drained": running_tasks == 0 and actors == 0 and not moves,
           "running_tasks": running_tasks, "actors": actors,
           "objects_to_move": len(moves), "bytes_to_move": sum(size for _, size in moves),
           "objects": objects}
    if drain is not None:
        out["reason"] = drain.reason
        out["copies_under_way"] = len(drain.copying)
        out["actors_moved"] = len(drain.moved_actors)
        if drain.deadline is not None:
            out["seconds_left"] = round(max(0.0, drain.deadline - now), 3)
            out["tasks_handed_back"] = drain.handed_back
    return out


def cancel_refusal(node_id: str, drain: Drain | None, state: str) -> str | None:
    """Why a drain of this node cannot be cancelled (None: it can, or there is nothing to cancel)."""
    if drain is not None and drain.reason == SIGTERM:
        return (f"node {node_id} is leaving: its node agent got SIGTERM (its pod or machine is going away), "
                f"so its drain cannot be cancelled; start a new node instead")
    if state == "dead":
        return f"node {node_id} is dead: there is no drain to cancel; start a new node instead"
    return None

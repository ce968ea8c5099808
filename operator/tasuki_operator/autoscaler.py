"""The autoscaler's decision: one pure function from what the head and Kubernetes report to a plan.

`plan(demand, groups, pods, now, settings)` takes the JSON of the head's GET /api/v1/demand, the
Cluster's worker groups, the cluster's worker pods and the time, and returns a `Plan`: pods to
create per group, nodes to drain, pods to delete, a reason with numbers for each, and the bundles
it placed, could not place yet (`waiting`) or can never place (`unplaceable`). No I/O, no clock,
no kopf or kubernetes import: the kopf timer in handlers.py reads, calls this, and acts (or, in
DryRun, only reports). Tests replay saved snapshots through it (tests/test_autoscaler.py).

The rules, in the order `plan` applies them (Auto and DryRun):

1. Pods. A pod is *live* while its phase is not Failed/Succeeded and it is not being deleted; live
   pods count against `max_replicas`. A live pod is *leaving* once its node drains (the head
   reports the node `draining`, or the last drain answer said `drained`); *ready* when the head
   has its node alive; *starting* when the head has no node for it yet; *stuck* when it is Pending
   and Unschedulable for `pending_grace_s` or more. A group with a stuck pod is *backed off*: it
   gets no new pod (stuck pods are kept, not deleted: deleting and re-creating them is the loop of
   kuberay#859), and demand goes to the next group that fits.
2. Minimum: each group not backed off gets pods up to `min_replicas` (leaving pods not counted).
   These are not bounded by `max_step_per_group` (the floor is what the spec asks for now).
3. Demand, largest shape first (first-fit decreasing; "largest" is the cost order below, reversed):
   the bundles of a shape go into the free capacity of alive nodes (the head's `available`), then
   of starting pods (each with its group's full shape; stuck pods excluded), then into room left
   on the pods this plan opens, then onto new pods of the groups whose shape fits, cheapest group
   first, each bounded by `max_replicas` and `max_step_per_group`. Counts are arithmetic (how many
   times a shape fits a pod), never a loop per bundle, and nodes with identical free capacity
   are one bin with a count.
   *Cheapest* is the order (GPUs, CPUs, memory, sum of custom resources, name) of the shape a
   group's pod offers, compared in that order: fewest GPUs first, then the smallest pod.
   A bundle asking for GPUs fits only groups that offer them. With `conserve_gpus`, a bundle
   asking for no GPU never opens a pod of a GPU group while some group without GPUs could fit
   its shape, even when that group is at its max or backed off: the bundle waits, and says so
   (room left on GPU pods that start anyway, or on GPU nodes, is used: the runtime's scheduler
   would put it there too). A shape no group fits and no alive node could ever run is
   *unplaceable*: reported with the group that comes closest, and it starts nothing.
   A bundle with a label selector (`label_selector` in the head's pending entry, Ray's syntax) goes
   only into nodes whose labels match and opens only pods of groups whose `labels` (the pod labels
   of the group's spec, which the node carries: TASUKI_LABELS) match; none: *unplaceable*, saying so.
   Requested bundles (`tasuki.autoscaler.request_resources`, the head's "requested") are placed
   before the pending ones, the same way but into the TOTAL capacity of alive nodes (busiest first)
   and of starting and new pods, ignoring what runs there now (Ray's "scale to at least this
   size"): what fits asks for nothing, the rest opens pods. The pods they open count at their full
   capacity for the pending bundles after (a request is a floor, not extra room).
4. Scale-down: a node is drained only when it is a worker pod's, alive, has no busy worker and
   `seconds_idle` above `idle_timeout_s` (the head reports 0 while a node runs tasks or actors or
   holds objects someone references), its pod is older than `idle_timeout_s`, its free capacity
   took no bundle in this plan, no requested bundle lies on it, its group opens no pod in this plan, and its group keeps
   `min_replicas` non-leaving pods. The most idle go first. A node already draining is asked
   again (the head's answer says when it is empty). A pod is deleted only when the last drain
   answer said `drained` and the head does not report its node alive again (a head that
   restarted forgot the drain). The head node is never drained.

`Off` mode makes no demand decision: each group is held at `replicas` clamped to
[`min_replicas`, `max_replicas`] (what `kubectl scale` sets). Missing pods are created at once (no
step limit); extra ones are removed in this order, never at random or LIFO: pods the head has
never seen (deleted directly: no work can be on them), then idle nodes (most idle first), then
busy ones (fewest busy workers first), these two drained first (`drain_if_idle` is False then: the
head lets the busy node finish its tasks and reports it drained). Demand is still reported.

`DryRun` computes exactly the Auto plan, marked `dry_run`: the caller reports it, acts on nothing.

One module (about 700 lines with this docstring) because the rules are read together: each
interacts with the others (a node that took bundles is not drained, a group that grows keeps its
idle nodes, a backed-off group sends its demand on). Sections: inputs and outputs,
the plan, scale-up, scale-down, Off mode, Kubernetes JSON and replays.

The resource arithmetic (`shape_of`, `fits`, `times_fits`, EPSILON) is the runtime scheduler's own
(tasuki.scheduler, pure; tasuki's __init__ loads nothing eagerly), so both pack by the same rules.
"""
from __future__ import annotations

import math
from datetime import datetime
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from tasuki.labels import Selector, format_selector, matches, parse_selector, selector_dict
from tasuki.scheduler import EPSILON, Shape, fits, shape_of, times_fits

AUTO, DRY_RUN, OFF = "Auto", "DryRun", "Off"
MODES = (AUTO, DRY_RUN, OFF)
ENDED_PHASES = ("Failed", "Succeeded")
ALIVE, DRAINING = "alive", "draining"      # node states in the head's JSON
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_PENDING_GRACE_S = 120.0              # a Kubernetes cluster autoscaler takes 1-2 min to add a node
MEMORY_KEYS = ("memory", "object_store_memory")   # amounts in bytes: printed as Mi/Gi
MAX_REASONS = 6                              # reasons kept in one group's decision (status stays short)



def format_shape(shape: Shape | dict) -> str:
    """'{CPU: 1, memory: 2Gi}': a shape for people (memory in Mi/Gi)."""
    items = shape.items() if isinstance(shape, dict) else shape
    return "{" + ", ".join(f"{k}: {_format_amount(k, v)}" for k, v in sorted(items)) + "}"


def _format_amount(key: str, value: float) -> str:
    if key in MEMORY_KEYS and value >= 1024 ** 2:
        return f"{value / 1024 ** 3:g}Gi" if value >= 1024 ** 3 else f"{value / 1024 ** 2:g}Mi"
    return f"{value:g}"


def size_key(shape: Shape | dict) -> tuple:
    """The cost order of a shape: (GPUs, CPUs, memory, sum of the custom resources)."""
    d = dict(shape)
    custom = sum(v for k, v in d.items() if k not in ("GPU", "CPU", "memory"))
    return (d.get("GPU", 0.0), d.get("CPU", 0.0), d.get("memory", 0.0), custom)


# --- inputs and outputs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupSpec:
    """A worker group of the Cluster spec: its bounds and the resources each of its pods advertises
    to the scheduler (keys CPU, GPU, memory in bytes, custom names)."""
    name: str
    min_replicas: int
    max_replicas: int
    replicas: int                      # spec.workerGroups[].replicas: the size Off mode holds
    shape: dict[str, float]            # advertised resources of one pod
    labels: dict[str, str] = field(default_factory=dict, hash=False)   # the pod labels its nodes carry

    @property
    def has_gpu(self) -> bool:
        return self.shape.get("GPU", 0) > 0

    @property
    def cost(self) -> tuple:
        """Cheapest first: fewest GPUs, then the smallest pod (CPUs, memory, custom), then name."""
        return size_key(self.shape) + (self.name,)


@dataclass(frozen=True)
class PodInfo:
    """A worker pod as Kubernetes and the last drain answer describe it."""
    name: str
    group: str
    phase: str                          # Pending | Running | Succeeded | Failed | Unknown
    created_at: float                   # creationTimestamp, seconds since the epoch
    unschedulable_since: float | None = None   # PodScheduled=False reason Unschedulable: since when
    node_id: str | None = None          # the head's node id; None: matched by node_name == pod name
    drained: bool = False               # the head's last drain answer for its node said drained
    deleting: bool = False              # metadata.deletionTimestamp is set


@dataclass(frozen=True)
class Settings:
    """spec.autoscaler."""
    mode: str = AUTO                    # Auto | DryRun | Off
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_step_per_group: int | None = None   # new pods per group per plan for demand; None: unbounded
    conserve_gpus: bool = True
    pending_grace_s: float = DEFAULT_PENDING_GRACE_S

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"spec.autoscaler.mode is {self.mode!r}: use one of {', '.join(MODES)}")
        if self.max_step_per_group is not None and self.max_step_per_group < 1:
            raise ValueError(f"spec.autoscaler.maxStepPerGroup is {self.max_step_per_group}: use 1 or more, "
                             "or leave it out for no limit")


class Drain(NamedTuple):
    pod: str
    node_id: str
    reason: str


class Delete(NamedTuple):
    pod: str
    reason: str


@dataclass
class GroupDecision:
    """What the plan does to one group, and why."""
    name: str
    decision: str = "hold"              # up | down | hold | backoff
    create: int = 0
    drain: int = 0
    delete: int = 0
    live: int = 0                        # pods not ended and not being deleted
    ready: int = 0                       # registered with the head, alive
    starting: int = 0                    # not yet registered
    stuck: int = 0                       # Unschedulable past the grace period
    leaving: int = 0                     # draining or drained
    desired: int = 0                     # live + create - leaving - new drains - pods deleted directly (Off)
    for_demand: int = 0                  # of `create`, pods opened for pending bundles (the rest: min or Off replicas)
    reason: str = ""


@dataclass
class IdleNode:
    node_id: str
    pod: str | None
    group: str | None
    seconds_idle: float
    action: str                          # drain | keep
    reason: str


@dataclass
class Plan:
    """The autoscaler's plan. Act on it only when `dry_run` is False."""
    mode: str
    dry_run: bool
    create: dict[str, int] = field(default_factory=dict)       # group -> new pods
    drain: list[Drain] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    drain_if_idle: bool = True           # ask the head to refuse a node that became busy (Auto)
    demand: list[dict] = field(default_factory=list)           # [{shape, count[, label_selector]}] from the head
    requested: list[dict] = field(default_factory=list)        # [{shape, count}]: request_resources()
    placed: list[dict] = field(default_factory=list)           # [{shape, count, into, group}] (+ requested: True)
    waiting: list[dict] = field(default_factory=list)          # [{shape, count, reason}]: could fit, held back
    unplaceable: list[dict] = field(default_factory=list)      # [{shape, count, reason, largest_group}]
    groups: dict[str, GroupDecision] = field(default_factory=dict)
    idle_nodes: list[IdleNode] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready (status.autoscaler, Events, metrics)."""
        out = asdict(self)
        out["drain"] = [d._asdict() for d in self.drain]
        out["delete"] = [d._asdict() for d in self.delete]
        return out


# --- the plan ---------------------------------------------------------------------------------------

def plan(demand: dict, groups: list[GroupSpec], pods: list[PodInfo], now: float, settings: Settings) -> Plan:
    """The plan for one autoscaler tick (see the module docstring for the rules)."""
    check_groups(groups)
    result = Plan(mode=settings.mode, dry_run=settings.mode == DRY_RUN, drain_if_idle=settings.mode != OFF)
    pending = _pending(demand)
    result.demand = [_entry(key, n) for key, (n, _) in pending.items()]
    requested = _requested(demand)
    result.requested = [{"shape": dict(s), "count": n} for s, n in requested.items()]
    nodes = [n for n in demand.get("nodes", ()) or () if isinstance(n, dict)]
    states = _classify(groups, pods, nodes, now, settings)
    for g in groups:
        st = states[g.name]
        result.groups[g.name] = GroupDecision(
            name=g.name, live=len(st.live), ready=len(st.ready), starting=len(st.starting),
            stuck=len(st.stuck), leaving=len(st.leaving))
    _delete_drained(states, result)
    if settings.mode == OFF:
        _hold_replicas(groups, states, result)
        _report_demand_off(pending, groups, nodes, result)
    else:
        absorbed, kept = _scale_up(pending, requested, groups, states, nodes, settings, result)
        _scale_down(groups, states, nodes, absorbed, kept, now, settings, result)
    _summarise(groups, states, settings, result)
    return result


def check_groups(groups: list[GroupSpec]) -> None:
    """Raise ValueError naming the field when a group's bounds cannot hold."""
    seen = set()
    for g in groups:
        where = f"spec.workerGroups[{g.name}]"
        if g.name in seen:
            raise ValueError(f"{where}: two worker groups are named {g.name!r}; give each its own name")
        seen.add(g.name)
        if not 0 <= g.min_replicas <= g.max_replicas:
            raise ValueError(f"{where}.minReplicas is {g.min_replicas} and maxReplicas {g.max_replicas}: "
                             "need 0 <= minReplicas <= maxReplicas")


@dataclass
class _GroupState:
    live: list = field(default_factory=list)       # PodInfo
    ready: list = field(default_factory=list)      # (PodInfo, node dict)
    starting: list = field(default_factory=list)   # PodInfo
    stuck: list = field(default_factory=list)      # (PodInfo, seconds unschedulable)
    leaving: list = field(default_factory=list)    # (PodInfo, node dict or None)
    lost: list = field(default_factory=list)       # PodInfo whose node the head reports dead
    ended: int = 0
    created: int = 0                               # new pods in this plan
    for_demand: int = 0                            # of which for demand (the step limit counts these)
    dropped: int = 0                               # never-registered pods deleted directly (Off)
    reasons: list = field(default_factory=list)

    @property
    def backed_off(self) -> bool:
        return bool(self.stuck)

    @property
    def staying(self) -> int:
        """Live pods that are not leaving: what min_replicas counts."""
        return len(self.live) - len(self.leaving)


def _pending(demand: dict) -> dict[tuple[Shape, Selector], tuple[int, bool]]:
    """The head's pending list merged by shape and label selector: (shape, selector) -> (count,
    feasible on some alive node)."""
    out: dict[tuple, tuple[int, bool]] = {}
    for entry in demand.get("pending", ()) or ():
        count = int(entry.get("count", 0))
        if count <= 0:
            continue
        key = shape_of(entry.get("shape") or {}), parse_selector(entry.get("label_selector"))
        n, feasible = out.get(key, (0, False))
        out[key] = (n + count, feasible or bool(entry.get("feasible")))
    return out


def _requested(demand: dict) -> dict[Shape, int]:
    """The head's standing request (request_resources) merged by shape: shape -> count."""
    out: dict[Shape, int] = {}
    for entry in demand.get("requested", ()) or ():
        count, s = int(entry.get("count", 0)), shape_of(entry.get("shape") or {})
        if count > 0 and s:
            out[s] = out.get(s, 0) + count
    return out


def _entry(key: tuple, count: int, **extra) -> dict:
    """A bundle entry of the plan: {"shape", "count"[, "label_selector"], **extra}."""
    s, selector = key
    out = {"shape": dict(s), "count": count, **extra}
    if selector:
        out["label_selector"] = selector_dict(selector)
    return out


def _key_text(key: tuple) -> str:
    s, selector = key
    return format_shape(s) + (f" on nodes labelled {format_selector(selector)}" if selector else "")


def _classify(groups, pods, nodes, now, settings) -> dict[str, _GroupState]:
    by_id = {n.get("node_id"): n for n in nodes}
    by_name: dict[str, dict] = {}
    for n in nodes:                                 # a pod's live entry wins over a dead one
        name = n.get("node_name")
        if name and (name not in by_name or by_name[name].get("state") not in (ALIVE, DRAINING)):
            by_name[name] = n
    states = {g.name: _GroupState() for g in groups}
    for pod in pods:
        st = states.get(pod.group)
        if st is None:                              # the head pod, or a group no longer in the spec
            continue
        if pod.phase in ENDED_PHASES or pod.deleting:
            st.ended += 1
            continue
        st.live.append(pod)
        node = by_id.get(pod.node_id) if pod.node_id else by_name.get(pod.name)
        state = node.get("state") if node else None
        if pod.drained or state == DRAINING:
            st.leaving.append((pod, node))
        elif state == ALIVE:
            st.ready.append((pod, node))
        elif node is not None:
            st.lost.append(pod)
        elif (pod.phase == "Pending" and pod.unschedulable_since is not None
              and now - pod.unschedulable_since >= settings.pending_grace_s):
            st.stuck.append((pod, now - pod.unschedulable_since))
        else:
            st.starting.append(pod)
    return states


def _delete_drained(states, result: Plan) -> None:
    for name, st in states.items():
        for pod, node in st.leaving:
            if not pod.drained:
                continue
            if node is not None and node.get("state") == ALIVE:
                continue                             # a restarted head forgot the drain: not deleted
            where = f"node {node.get('node_id')}" if node else "its node (gone from the head)"
            result.delete.append(Delete(pod.name, f"the head confirmed {where} drained: no tasks, actors or "
                                                  "referenced objects left"))
            result.groups[name].delete += 1


# --- scale-up ---------------------------------------------------------------------------------------

class _Bin:
    """`n` pods or nodes with the same free capacity and labels; `ids` names them where known."""
    __slots__ = ("avail", "n", "ids", "kind", "group", "labels")

    def __init__(self, avail: dict, n: int, ids: list | None, kind: str, group: str | None,
                 labels: dict | None = None):
        self.avail, self.n, self.ids, self.kind, self.group = avail, n, ids, kind, group
        self.labels = labels or {}

    def after(self, shape: Shape, k: float, n: int, ids: list | None) -> _Bin:
        avail = dict(self.avail)
        for key, v in shape:
            avail[key] = avail.get(key, 0.0) - k * v
        return _Bin(avail, n, ids, self.kind, self.group, self.labels)


def _bins_of(entries, kind: str) -> list[_Bin]:
    """One bin per distinct free capacity and labels: entries are (id, available dict, group, labels)."""
    classes: dict[tuple, _Bin] = {}
    for ident, avail, group, labels in entries:
        key = (group, tuple(sorted(avail.items())), tuple(sorted((labels or {}).items())))
        b = classes.get(key)
        if b is None:
            classes[key] = _Bin(dict(avail), 1, [ident], kind, group, labels)
        else:
            b.n += 1
            b.ids.append(ident)
    return list(classes.values())


_CHECK_ORDER = {"GPU": 0, "memory": 2, "CPU": 3}     # custom resources: 1


def _fill(bins: list[_Bin], shape: Shape, count: int, taken: set | None,
          selector: Selector = ()) -> tuple[int, dict]:
    """Put up to `count` bundles of `shape` into `bins` whose labels match `selector`, first fit;
    return (placed, per group)."""
    placed, per_group, i = 0, {}, 0
    # the scan is the plan's hot loop (bins x shapes): a bin that cannot take one bundle is
    # rejected on its first short resource, checking the rarest first (GPU, custom, memory, CPU)
    checks = sorted(((k, v - EPSILON) for k, v in shape), key=lambda kv: _CHECK_ORDER.get(kv[0], 1))
    while i < len(bins) and placed < count:
        b = bins[i]
        if selector and not matches(b.labels, selector):
            i += 1
            continue
        avail, short = b.avail, False
        for k, least in checks:
            if avail.get(k, 0.0) < least:
                short = True
                break
        if short:
            i += 1
            continue
        per = times_fits(avail, shape)
        left = count - placed
        if per == math.inf or per * b.n <= left:
            k = left if per == math.inf else per * b.n
            if per != math.inf:
                bins[i] = b.after(shape, per, b.n, b.ids)
            used_ids = b.ids if per != math.inf else (b.ids[:1] if b.ids else None)
        else:
            full, part = divmod(left, per)
            split = [b.after(shape, per, full, b.ids[:full] if b.ids else None)] if full else []
            if part:
                split.append(b.after(shape, part, 1, b.ids[full:full + 1] if b.ids else None))
            used = full + (1 if part else 0)
            rest = _Bin(b.avail, b.n - used, b.ids[used:] if b.ids else None, b.kind, b.group, b.labels)
            bins[i:i + 1] = split + ([rest] if rest.n else [])
            k, used_ids = left, (b.ids[:used] if b.ids else None)
        placed += k
        per_group[b.group] = per_group.get(b.group, 0) + k
        if taken is not None and used_ids:
            taken.update(used_ids)
        i += 1
    return placed, per_group


def _scale_up(pending, requested, groups, states, nodes, settings, result: Plan) -> tuple[set, set]:
    """Min top-up, then requested bundles into total capacity, then pending bundles into free,
    starting and new capacity. Returns (the node ids whose free capacity took pending bundles, the
    node ids requested bundles lie on): neither is drained in this plan."""
    by_cost = sorted(groups, key=lambda g: g.cost)
    alive = [n for n in nodes if n.get("state") == ALIVE]
    free = _bins_of(((n.get("node_id"), n.get("available") or {}, n.get("group") or None, n.get("labels"))
                     for n in alive), "free")

    def starting_bins():
        return _bins_of(((p.name, g.shape, g.name, g.labels) for g in groups for p in states[g.name].starting),
                        "starting")
    starting = starting_bins()
    opened: list[_Bin] = []
    for g in by_cost:                                 # the floor first: its pods absorb demand too
        st = states[g.name]
        short = g.min_replicas - st.staying
        if short <= 0:
            continue
        room = g.max_replicas - len(st.live)
        if st.backed_off:
            st.reasons.append(f"below min {g.min_replicas} ({st.staying} pods) but backed off: "
                              f"{_stuck_text(st, settings)}")
            continue
        n = min(short, room)
        if n > 0:
            st.created += n
            opened.append(_Bin(dict(g.shape), n, None, "new", g.name, g.labels))
            st.reasons.append(f"+{n} to keep min {g.min_replicas} ({st.staying} pods not leaving)")
    kept: set = set()
    if requested:
        # into the nodes' totals, busiest first (the most idle stay free to be drained), then
        # starting and new pods, each at full capacity: copies, what runs there now does not count
        by_busy = sorted(alive, key=lambda n: (-(n.get("busy_workers") or 0), n.get("seconds_idle") or 0))
        totals = _bins_of(((n.get("node_id"), n.get("resources") or {}, n.get("group") or None, n.get("labels"))
                           for n in by_busy), "total")
        created = {g.name: states[g.name].created for g in groups}
        first = (len(result.placed), len(result.waiting), len(result.unplaceable))
        room = [_Bin(dict(b.avail), b.n, b.ids, b.kind, b.group, b.labels) for b in opened]
        for s in sorted(requested, key=size_key, reverse=True):
            _place_shape((s, ()), requested[s], False, by_cost, states, totals, starting_bins(), room, nodes,
                         settings, result, kept, "requested")
        for entries, start in zip((result.placed, result.waiting, result.unplaceable), first):
            for entry in entries[start:]:
                entry["requested"] = True
        for g in groups:                   # the pods opened for the request: full room for pending bundles
            if states[g.name].created > created[g.name]:
                opened.append(_Bin(dict(g.shape), states[g.name].created - created[g.name], None, "new", g.name,
                                   g.labels))
    absorbed: set = set()
    for key in sorted(pending, key=lambda k: size_key(k[0]), reverse=True):
        count, feasible = pending[key]
        _place_shape(key, count, feasible, by_cost, states, free, starting, opened, nodes, settings, result,
                     absorbed)
    for g in groups:
        result.create[g.name] = states[g.name].created
    return absorbed, kept


def _place_shape(key, count, feasible, by_cost, states, free, starting, opened, nodes, settings, result,
                 absorbed, what: str = "pending") -> None:
    """Place the `count` bundles of `key` (shape, label selector); record placed, waiting and
    unplaceable. `free` is the alive nodes' free capacity (their totals for requested bundles)."""
    s, selector = key
    entry = {k: v for k, v in _entry(key, 0).items() if k != "count"}     # shape[, label_selector]
    text = _key_text(key)
    left = count
    for bins, into, taken in ((free, "free", absorbed), (starting, "starting", None), (opened, "new", None)):
        placed, per_group = _fill(bins, s, left, taken, selector)
        for group, k in per_group.items():
            result.placed.append({**entry, "count": k, "into": into, "group": group})
        left -= placed
        if not left:
            return
    fitting = [g for g in by_cost if fits(g.shape, s) and matches(g.labels, selector)]
    if not fitting:
        if feasible or any(n.get("state") == ALIVE and fits(n.get("resources") or {}, s)
                           and matches(n.get("labels") or {}, selector) for n in nodes):
            result.waiting.append({**entry, "count": left, "reason":
                                   f"no worker group offers {text}; only nodes already in the "
                                   "cluster can run it"})
        elif selector and any(fits(g.shape, s) for g in by_cost):
            labelled = ", ".join(f"{g.name!r} ({_labels_text(g.labels)})" for g in by_cost)
            result.unplaceable.append({**entry, "count": left, "largest_group": None, "reason":
                                       f"no worker group's pods carry labels matching {format_selector(selector)} "
                                       f"({left} {what} {format_shape(s)} bundles; groups: {labelled}): add the "
                                       f"labels to a group's spec (workerGroups[].labels), or change the selector"})
        else:
            result.unplaceable.append({**_unplaceable(s, left, by_cost), **entry})
        return
    eligible, held = fitting, []
    cpu_groups = [g for g in fitting if not g.has_gpu]
    if settings.conserve_gpus and not dict(s).get("GPU") and cpu_groups:
        eligible = cpu_groups
        held = [g.name for g in fitting if g.has_gpu]
    blocked = []
    for g in eligible:
        st = states[g.name]
        room = g.max_replicas - len(st.live) - st.created
        step = math.inf if settings.max_step_per_group is None else settings.max_step_per_group - st.for_demand
        cause = (f"is backed off ({_stuck_text(st, settings)})" if st.backed_off else
                 f"is at its max {g.max_replicas}" if room <= 0 else
                 f"reached the step limit of {settings.max_step_per_group} new pods" if step <= 0 else "")
        if cause:
            blocked.append(f"group {g.name!r} {cause}")
            st.reasons.append(f"{left} {what} {text} bundles wait: it {cause}")
            continue
        per = times_fits(g.shape, s)
        need = 1 if per == math.inf else -(-left // per)
        n = int(min(need, room, step))
        k = left if per == math.inf else min(left, n * per)
        bins = [_Bin(dict(g.shape), n, None, "new", g.name, g.labels)]
        placed, _ = _fill(bins, s, k, None)
        opened.extend(bins)
        st.created += n
        st.for_demand += n
        result.placed.append({**entry, "count": placed, "into": "new", "group": g.name})
        st.reasons.append(f"+{n} for {placed} {what} {text} bundles "
                          f"({per if per != math.inf else 'any number'} per pod of {format_shape(g.shape)})"
                          + (f"; capped by {'max ' + str(g.max_replicas) if n == room else 'step limit'}"
                             if n < need else ""))
        left -= placed
        if not left:
            return
        if n == room:
            blocked.append(f"group {g.name!r} reached its max {g.max_replicas}")
        else:
            blocked.append(f"group {g.name!r} reached the step limit of {settings.max_step_per_group} new pods")
    reason = "; ".join(blocked) or "no group can take more pods"
    for h in held:
        states[h].reasons.append(f"conserveGpus: {left} {what} {text} bundles ask for no GPU and "
                                 "a group without GPUs fits them: no pod started here for them")
    if held:
        reason += (f"; conserveGpus: no GPU pod ({', '.join(repr(h) for h in held)}) is started for bundles "
                   "that ask for no GPU while a group without GPUs fits them")
    result.waiting.append({**entry, "count": left, "reason": f"{left} bundles wait: {reason}"})


def _unplaceable(s: Shape, count: int, by_cost: list[GroupSpec]) -> dict:
    """A shape no group fits: name the group that comes closest (the most of what it asks for)."""
    asks_gpu = any(k == "GPU" for k, _ in s)

    def closeness(g):
        return (min((g.shape.get(k, 0.0) / v for k, v in s), default=0.0), g.has_gpu == asks_gpu,
                size_key(g.shape))
    largest = max(by_cost, key=closeness, default=None)
    if largest is None:
        text = "the Cluster has no worker group"
    else:
        text = f"the largest, {largest.name!r}, offers {format_shape(largest.shape)}"
    return {"shape": dict(s), "count": count, "largest_group": largest.name if largest else None,
            "reason": f"no worker group can ever fit {format_shape(s)} ({count} bundles): {text}; "
                      "add a group with pods this large, or ask for less"}


def _labels_text(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def _stuck_text(st: _GroupState, settings: Settings) -> str:
    pod, secs = max(st.stuck, key=lambda x: x[1])
    return (f"{len(st.stuck)} pod(s) Unschedulable, {pod.name} for {secs:.0f} s "
            f"(grace {settings.pending_grace_s:g} s)")


# --- scale-down -------------------------------------------------------------------------------------

def _scale_down(groups, states, nodes, absorbed, kept, now, settings, result: Plan) -> None:
    by_name = {g.name: g for g in groups}
    pod_of = {}
    for name, st in states.items():
        for pod, node in st.ready:
            pod_of[node.get("node_id")] = (pod, name)
        for pod, node in st.leaving:
            if node is not None and not pod.drained:
                result.drain.append(Drain(pod.name, node.get("node_id"),
                                          f"still draining: {node.get('busy_workers', 0)} busy workers; "
                                          "asking the head again"))
    removable = {g.name: states[g.name].staying - g.min_replicas for g in groups}
    idle = [n for n in nodes if n.get("state") == ALIVE and not n.get("busy_workers")
            and (n.get("seconds_idle") or 0) > 0]
    idle.sort(key=lambda n: (-(n.get("seconds_idle") or 0), str(n.get("node_id"))))
    for n in idle:
        node_id, secs = n.get("node_id"), float(n.get("seconds_idle") or 0)
        pod, group = pod_of.get(node_id, (None, None))
        action, why = "keep", ""
        if n.get("is_head_node"):
            why = "the head node is never drained"
        elif pod is None:
            why = "not a worker pod of this Cluster"
        elif secs <= settings.idle_timeout_s:
            why = f"idle {secs:.0f} s of {settings.idle_timeout_s:g} s"
        elif now - pod.created_at < settings.idle_timeout_s:
            why = f"pod started {now - pod.created_at:.0f} s ago, within the idle timeout {settings.idle_timeout_s:g} s"
        elif node_id in absorbed:
            why = "its free capacity takes pending bundles in this plan"
        elif node_id in kept:
            why = "request_resources needs its capacity"
        elif states[group].created:
            why = f"group {group!r} is scaling up in this plan"
        elif removable[group] <= 0:
            why = f"group {group!r} is at its min {by_name[group].min_replicas}"
        else:
            action = "drain"
            why = f"idle {secs:.0f} s > {settings.idle_timeout_s:g} s"
            removable[group] -= 1
            result.drain.append(Drain(pod.name, node_id, why))
            result.groups[group].drain += 1
        result.idle_nodes.append(IdleNode(node_id, pod.name if pod else None, group, round(secs, 3), action, why))


# --- Off mode ---------------------------------------------------------------------------------------

def _hold_replicas(groups, states, result: Plan) -> None:
    """Off: each group at replicas clamped to [min, max]; extra pods removed in a stated order."""
    for g in groups:
        st, d = states[g.name], result.groups[g.name]
        target = max(g.min_replicas, min(g.replicas, g.max_replicas))
        have = st.staying
        if have < target:
            n = min(target - have, g.max_replicas - len(st.live))
            st.created = max(n, 0)
            st.reasons.append(f"Off: +{st.created} to hold replicas {target} ({have} pods)")
        elif have > target:
            extra = have - target
            never_seen = [p for p in st.starting + [p for p, _ in st.stuck] if p.node_id is None]
            for p in never_seen[:extra]:
                result.delete.append(Delete(p.name, f"Off: replicas {target}, {have} pods; the head never saw "
                                                    "this pod, no work is on it"))
                d.delete += 1
                st.dropped += 1
            extra -= min(extra, len(never_seen))
            ready = sorted(st.ready, key=lambda pn: (pn[1].get("busy_workers", 0) > 0,
                                                     pn[1].get("busy_workers", 0),
                                                     -(pn[1].get("seconds_idle") or 0), pn[0].name))
            for pod, node in ready[:extra]:
                busy = node.get("busy_workers", 0)
                result.drain.append(Drain(pod.name, node.get("node_id"),
                                          f"Off: replicas {target}, {have} pods; "
                                          + (f"{busy} busy workers finish first" if busy else
                                             f"idle {node.get('seconds_idle') or 0:.0f} s")))
                d.drain += 1
            st.reasons.append(f"Off: -{have - target} to hold replicas {target}")
        result.create[g.name] = st.created


def _report_demand_off(pending, groups, nodes, result: Plan) -> None:
    by_cost = sorted(groups, key=lambda g: g.cost)
    for key, (count, feasible) in sorted(pending.items(), key=lambda kv: size_key(kv[0][0]), reverse=True):
        s, selector = key
        if any(fits(g.shape, s) and matches(g.labels, selector) for g in groups) or feasible or any(
                n.get("state") == ALIVE and fits(n.get("resources") or {}, s)
                and matches(n.get("labels") or {}, selector) for n in nodes):
            result.waiting.append(_entry(key, count, reason="autoscaler mode is Off: replicas come from the spec "
                                                            "(kubectl scale)"))
        else:
            result.unplaceable.append({**_unplaceable(s, count, by_cost), **_entry(key, count)})


def _summarise(groups, states, settings, result: Plan) -> None:
    for g in groups:
        st, d = states[g.name], result.groups[g.name]
        d.create, d.for_demand = st.created, st.for_demand
        d.desired = d.live + d.create - d.leaving - d.drain - st.dropped
        reasons = st.reasons[:MAX_REASONS] + ([f"and {len(st.reasons) - MAX_REASONS} more"]
                                              if len(st.reasons) > MAX_REASONS else [])
        if d.drain:
            reasons.append(f"-{d.drain} draining")
        if d.delete:
            reasons.append(f"-{d.delete} drained pods deleted" if result.mode != OFF else f"{d.delete} deleted")
        if st.lost:
            reasons.append(f"{len(st.lost)} pods whose node the head reports dead")
        if st.ended:
            reasons.append(f"{st.ended} ended or deleting pods not counted")
        if st.backed_off:
            reasons.append(f"backed off: {_stuck_text(st, settings)}")
        if d.create:
            d.decision = "up"
        elif d.drain or d.delete:
            d.decision = "down"
        elif st.backed_off:
            d.decision = "backoff"
        d.reason = "; ".join(reasons) or (f"hold at {d.live} pods (min {g.min_replicas}, max {g.max_replicas})")


# --- inputs from Kubernetes JSON, and replays ---------------------------------------------------

def pod_from_kubernetes(pod: dict, drained: bool = False, node_id: str | None = None) -> PodInfo:
    """A PodInfo from a Kubernetes Pod as JSON (`kubectl get pod -o json`, or the API's dict).
    The group is the `tasuki.dev/group` label; `unschedulable_since` is the PodScheduled=False
    condition's lastTransitionTime when its reason is Unschedulable."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    since = None
    for c in status.get("conditions") or ():
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            since = parse_time(c.get("lastTransitionTime")) if c.get("lastTransitionTime") else None
    return PodInfo(name=meta.get("name", ""), group=(meta.get("labels") or {}).get("tasuki.dev/group", ""),
                   phase=status.get("phase", "Pending"), created_at=parse_time(meta.get("creationTimestamp")),
                   unschedulable_since=since, node_id=node_id, drained=drained,
                   deleting=bool(meta.get("deletionTimestamp")))


def parse_time(text: str | None) -> float:
    """Seconds since the epoch from a Kubernetes timestamp ('2026-12-02T16:07:44Z')."""
    if not text:
        raise ValueError("metadata.creationTimestamp is missing: pass the Pod as the API returns it")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def replay(snapshot: dict) -> Plan:
    """The plan for a saved snapshot: {"now", "settings": Settings fields, "groups": [GroupSpec
    fields], "demand": GET /api/v1/demand, "pods": [Pod JSON] (`kubectl get pods -l
    tasuki.dev/cluster=NAME -o json`'s items), "drained": [pod names the head said drained]}."""
    drained = set(snapshot.get("drained") or ())
    pods = [pod_from_kubernetes(p, (p.get("metadata") or {}).get("name") in drained) for p in snapshot["pods"]]
    groups = [GroupSpec(**g) for g in snapshot["groups"]]
    return plan(snapshot["demand"], groups, pods, float(snapshot["now"]), Settings(**snapshot.get("settings", {})))

"""The autoscaler's plan (operator/tasuki_operator/autoscaler.py): one table row per rule.

Each case builds the head's demand JSON, the groups and the pods, calls plan() and checks the
creates, drains, deletes and what waits or can never be placed, with the reason's key words.
"""
from __future__ import annotations

import json
import os

import pytest

from tasuki_operator.autoscaler import (AUTO, DRY_RUN, OFF, GroupSpec, PodInfo, Settings, format_shape, plan,
                                        pod_from_kubernetes, replay, shape_of, times_fits)

GI = 2 ** 30
NOW = 10_000.0
CPU = GroupSpec("cpu", 0, 3, 0, {"CPU": 1, "memory": 2 * GI})
GPU = GroupSpec("gpu", 0, 2, 0, {"CPU": 1, "memory": 4 * GI, "GPU": 1})
BIG = GroupSpec("big", 0, 5, 0, {"CPU": 4, "memory": 8 * GI})
SMALL = GroupSpec("small", 0, 5, 0, {"CPU": 2, "memory": 4 * GI})
CPU_B = GroupSpec("cpu-b", 0, 3, 0, {"CPU": 1, "memory": 2 * GI})
DATA = os.path.join(os.path.dirname(__file__), "data", "autoscaler_snapshot.json")


def want(shape: dict, count: int, feasible: bool = False, selector: dict | None = None) -> dict:
    out = {"shape": shape, "count": count, "feasible": feasible}
    if selector:
        out["label_selector"] = selector
    return out


def node(pod: str, group: str, resources: dict, available: dict | None = None, busy: int = 0, idle: float = 0.0,
         state: str = "alive", head: bool = False, labels: dict | None = None) -> dict:
    return {"node_id": f"n-{pod}", "node_name": pod, "group": group, "ip": "10.0.0.1", "state": state,
            "labels": labels or {},
            "resources": resources, "available": dict(resources if available is None else available),
            "workers": 1, "busy_workers": busy, "seconds_idle": idle, "is_head_node": head,
            "object_store": {"used": 0, "capacity": GI, "objects": 0, "spilled": 0}, "version": "0.1.0"}


def pod(name: str, group: str, phase: str = "Running", age: float = 600.0, unschedulable_for: float | None = None,
        drained: bool = False) -> PodInfo:
    return PodInfo(name, group, phase, NOW - age, None if unschedulable_for is None else NOW - unschedulable_for,
                   drained=drained)


def demand(pending=(), nodes=(), requested=()) -> dict:
    return {"pending": list(pending), "requested": [{"shape": s, "count": n} for s, n in requested],
            "waiting_for_dependencies": 0, "nodes": list(nodes), "version": "0.1.0"}


def labelled(g: GroupSpec, name: str, **labels) -> GroupSpec:
    return GroupSpec(name, g.min_replicas, g.max_replicas, g.replicas, g.shape, labels)


def with_bounds(g: GroupSpec, lo: int, hi: int, replicas: int = 0) -> GroupSpec:
    return GroupSpec(g.name, lo, hi, replicas, g.shape)


CPU_NODE = {"CPU": 1.0, "memory": 2.0 * GI}
GPU_NODE = {"CPU": 1.0, "memory": 4.0 * GI, "GPU": 1.0}
BUSY = {"CPU": 0.0, "memory": 2.0 * GI}
ZONE_A = labelled(CPU, "zone-a", zone="a")             # the cheapest groups: 1 CPU, with a zone label
ZONE_B = labelled(CPU, "zone-b", zone="b", disk="ssd")
BIG_NODE = {"CPU": 4.0, "memory": 8.0 * GI}

# (id, demand, groups, pods, settings, creates, drained pods, deleted pods, waiting / unplaceable words)
CASES = [
    ("fits-no-group", demand([want({"CPU": 64}, 2)]), [CPU, GPU, BIG], [], Settings(),
     {}, [], [], ["unplaceable", "{CPU: 64}", "'big'", "{CPU: 4, memory: 8Gi}"]),
    ("no-group-but-an-existing-node-fits", demand([want({"CPU": 64}, 2, True)], [node("x", "", {"CPU": 64})]),
     [CPU], [], Settings(), {}, [], [], ["waiting", "only nodes already in the cluster"]),
    ("gpu-bundle-to-gpu-group", demand([want({"CPU": 1, "GPU": 1}, 2)]), [CPU, GPU], [], Settings(),
     {"gpu": 2}, [], [], []),
    ("gpu-bundle-capped-by-gpu-max", demand([want({"CPU": 1, "GPU": 1}, 5)]), [CPU, GPU], [], Settings(),
     {"gpu": 2}, [], [], ["waiting", "3 bundles", "'gpu' reached its max 2"]),
    ("cpu-bundle-to-cpu-group", demand([want({"CPU": 1}, 2)]), [GPU, CPU], [], Settings(),
     {"cpu": 2}, [], [], []),
    ("conserve-gpus-at-cpu-max", demand([want({"CPU": 1}, 6)]), [CPU, GPU],
     [pod("c1", "cpu"), pod("c2", "cpu"), pod("c3", "cpu")], Settings(),
     {}, [], [], ["waiting", "3 bundles", "'cpu' is at its max 3", "conserveGpus"]),  # 3 starting pods take 3
    ("conserve-gpus-off-spills-to-gpu", demand([want({"CPU": 1}, 6)]), [CPU, GPU], [], Settings(conserve_gpus=False),
     {"cpu": 3, "gpu": 2}, [], [], ["waiting", "1 bundles", "'gpu' reached its max 2"]),
    ("cpu-bundle-only-a-gpu-group-fits", demand([want({"CPU": 1, "memory": 3 * GI}, 1)]), [CPU, GPU], [],
     Settings(), {"gpu": 1}, [], [], []),
    ("min-maintained", demand(), [with_bounds(CPU, 2, 3)], [pod("c1", "cpu")], Settings(),
     {"cpu": 1}, [], [], []),
    ("min-pods-absorb-demand", demand([want({"CPU": 1}, 2)]), [with_bounds(CPU, 2, 3)], [], Settings(),
     {"cpu": 2}, [], [], []),
    ("max-bounds-demand", demand([want({"CPU": 1}, 10)]), [CPU], [pod("c1", "cpu")], Settings(),
     {"cpu": 2}, [], [], ["waiting", "'cpu' reached its max 3"]),
    ("failed-pods-not-counted", demand([want({"CPU": 1}, 10)]), [CPU], [pod("c1", "cpu", phase="Failed")],
     Settings(), {"cpu": 3}, [], [], ["waiting"]),
    ("step-limit", demand([want({"CPU": 1}, 10)]), [with_bounds(CPU, 0, 10)], [], Settings(max_step_per_group=2),
     {"cpu": 2}, [], [], ["waiting", "8 bundles", "step limit of 2"]),
    ("cheapest-group-first", demand([want({"CPU": 2}, 1)]), [BIG, SMALL], [], Settings(),
     {"small": 1}, [], [], []),
    ("only-the-big-group-fits", demand([want({"CPU": 3}, 1)]), [SMALL, BIG], [], Settings(),
     {"big": 1}, [], [], []),
    ("first-fit-decreasing-fills-leftover", demand([want({"CPU": 3}, 2), want({"CPU": 1}, 2)]), [BIG], [],
     Settings(), {"big": 2}, [], [], []),
    ("count-arithmetic-packs-4-per-pod", demand([want({"CPU": 1}, 10)]), [BIG], [], Settings(),
     {"big": 3}, [], [], []),
    ("free-capacity-absorbs", demand([want({"CPU": 1}, 2)], [node("c1", "cpu", {"CPU": 4}, {"CPU": 2})]),
     [CPU], [pod("c1", "cpu")], Settings(), {}, [], [], []),
    ("starting-pods-absorb", demand([want({"CPU": 1}, 4)]), [BIG], [pod("b1", "big", phase="Pending", age=5)],
     Settings(), {}, [], [], []),
    ("unschedulable-within-grace-still-absorbs", demand([want({"CPU": 1}, 1)]), [CPU, CPU_B],
     [pod("c1", "cpu", phase="Pending", age=60, unschedulable_for=30)], Settings(pending_grace_s=120),
     {}, [], [], []),
    ("unschedulable-backs-off-to-another-group", demand([want({"CPU": 1}, 1)]), [CPU, CPU_B],
     [pod("c1", "cpu", phase="Pending", age=300, unschedulable_for=200)], Settings(pending_grace_s=120),
     {"cpu-b": 1}, [], [], []),
    ("unschedulable-only-group-waits", demand([want({"CPU": 1}, 3)]), [CPU],
     [pod("c1", "cpu", phase="Pending", age=300, unschedulable_for=200)], Settings(pending_grace_s=120),
     {}, [], [], ["waiting", "backed off", "c1 for 200 s", "grace 120 s"]),
    ("idle-past-timeout-drained", demand([], [node("c1", "cpu", CPU_NODE, idle=90)]), [CPU], [pod("c1", "cpu")],
     Settings(idle_timeout_s=60), {}, ["c1"], [], []),
    ("idle-within-timeout-kept", demand([], [node("c1", "cpu", CPU_NODE, idle=30)]), [CPU], [pod("c1", "cpu")],
     Settings(idle_timeout_s=60), {}, [], [], []),
    ("just-added-pod-kept", demand([], [node("c1", "cpu", CPU_NODE, idle=90)]), [CPU], [pod("c1", "cpu", age=40)],
     Settings(idle_timeout_s=60), {}, [], [], []),
    ("busy-node-kept", demand([], [node("c1", "cpu", CPU_NODE, BUSY, busy=1, idle=0)]), [CPU], [pod("c1", "cpu")],
     Settings(idle_timeout_s=60), {}, [], [], []),
    ("node-holding-objects-kept", demand([], [node("c1", "cpu", CPU_NODE, idle=0)]), [CPU], [pod("c1", "cpu")],
     Settings(idle_timeout_s=60), {}, [], [], []),
    ("min-floor-on-scale-down", demand([], [node("c1", "cpu", CPU_NODE, idle=70), node("c2", "cpu", CPU_NODE, idle=300),
                                           node("c3", "cpu", CPU_NODE, idle=100)]),
     [with_bounds(CPU, 2, 3)], [pod("c1", "cpu"), pod("c2", "cpu"), pod("c3", "cpu")], Settings(), {}, ["c2"], [], []),
    ("head-node-never-drained", demand([], [node("head", "head", CPU_NODE, idle=900, head=True)]), [CPU], [],
     Settings(), {}, [], [], []),
    ("idle-node-absorbing-demand-kept", demand([want({"CPU": 1}, 3)], [node("c1", "cpu", CPU_NODE, idle=90)]),
     [CPU], [pod("c1", "cpu")], Settings(), {"cpu": 2}, [], [], []),
    ("drained-pod-deleted", demand([], [node("c1", "cpu", CPU_NODE, idle=90, state="draining")]), [CPU],
     [pod("c1", "cpu", drained=True)], Settings(), {}, [], ["c1"], []),
    ("not-yet-drained-asked-again", demand([], [node("c1", "cpu", CPU_NODE, BUSY, busy=1, state="draining")]),
     [CPU], [pod("c1", "cpu")], Settings(), {}, ["c1"], [], []),
    ("drained-but-head-says-alive-not-deleted", demand([], [node("c1", "cpu", CPU_NODE, idle=5)]), [CPU],
     [pod("c1", "cpu", drained=True)], Settings(), {}, [], [], []),
    ("drained-and-node-gone-deleted", demand(), [CPU], [pod("c1", "cpu", drained=True)], Settings(), {}, [], ["c1"], []),
    ("off-holds-replicas-without-demand", demand(), [with_bounds(CPU, 0, 3, replicas=2)], [], Settings(mode=OFF),
     {"cpu": 2}, [], [], []),
    ("off-ignores-demand", demand([want({"CPU": 1}, 10)]), [CPU], [], Settings(mode=OFF),
     {}, [], [], ["waiting", "Off"]),
    ("off-clamps-replicas-to-min", demand(), [with_bounds(CPU, 1, 3, replicas=0)], [], Settings(mode=OFF),
     {"cpu": 1}, [], [], []),
    ("off-scale-down-order", demand([], [node("c2", "cpu", CPU_NODE, BUSY, busy=1), node("c3", "cpu", CPU_NODE, idle=4)]),
     [with_bounds(CPU, 0, 3, replicas=1)], [pod("c1", "cpu", phase="Pending"), pod("c2", "cpu"), pod("c3", "cpu")],
     Settings(mode=OFF), {}, ["c3"], ["c1"], []),
    # label selectors (issue 16): only groups and nodes whose labels match take the bundle
    ("selector-opens-the-matching-group", demand([want({"CPU": 1}, 2, selector={"zone": "b"})]),
     [CPU, ZONE_A, ZONE_B], [], Settings(), {"zone-b": 2}, [], [], []),
    ("selector-set", demand([want({"CPU": 1}, 1, selector={"zone": "in(b,c)"})]), [ZONE_A, ZONE_B], [], Settings(),
     {"zone-b": 1}, [], [], []),
    ("selector-negated-skips-the-group", demand([want({"CPU": 1}, 1, selector={"zone": "!a"})]), [ZONE_A, BIG], [],
     Settings(), {"big": 1}, [], [], []),                # a group without the label matches a negation
    ("selector-skips-free-capacity-elsewhere",
     demand([want({"CPU": 1}, 1, selector={"disk": "ssd"})], [node("a1", "zone-a", BIG_NODE, labels={"zone": "a"})]),
     [ZONE_A, ZONE_B], [pod("a1", "zone-a")], Settings(), {"zone-b": 1}, [], [], []),
    ("selector-uses-a-matching-free-node",
     demand([want({"CPU": 1}, 1, selector={"zone": "b"})], [node("b1", "zone-b", BIG_NODE, labels={"zone": "b"})]),
     [ZONE_A, ZONE_B], [pod("b1", "zone-b")], Settings(), {}, [], [], []),
    ("selector-skips-starting-pods-of-other-groups", demand([want({"CPU": 1}, 1, selector={"zone": "b"})]),
     [ZONE_A, ZONE_B], [pod("a1", "zone-a", phase="Pending", age=5)], Settings(), {"zone-b": 1}, [], [], []),
    ("selector-no-group-matches", demand([want({"CPU": 1}, 3, selector={"zone": "c"})]), [ZONE_A, ZONE_B], [],
     Settings(), {}, [], [], ["unplaceable", "zone=c", "3 pending {CPU: 1}", "'zone-a' (zone=a)",
                              "workerGroups[].labels"]),
    ("selector-matching-group-at-max", demand([want({"CPU": 1}, 5, selector={"zone": "b"})]), [ZONE_A, ZONE_B], [],
     Settings(), {"zone-b": 3}, [], [], ["waiting", "2 bundles", "'zone-b' reached its max 3"]),
    # request_resources (issue 16): packed into TOTAL capacity, ignoring what runs now
    ("requested-fits-busy-nodes-totals", demand([], [node("b1", "big", BIG_NODE, {"CPU": 0.0}, busy=4)],
                                                [({"CPU": 1}, 4)]),
     [BIG], [pod("b1", "big")], Settings(), {}, [], [], []),
    ("requested-opens-pods-for-the-rest", demand([], [node("b1", "big", BIG_NODE, {"CPU": 0.0}, busy=4)],
                                                 [({"CPU": 1}, 10)]),
     [BIG], [pod("b1", "big")], Settings(), {"big": 2}, [], [], []),
    ("requested-counts-starting-pods", demand([], [], [({"CPU": 1}, 4)]), [BIG],
     [pod("b1", "big", phase="Pending", age=5)], Settings(), {}, [], [], []),
    ("requested-and-pending-share-new-pods", demand([want({"CPU": 1}, 4)], [], [({"CPU": 1}, 4)]), [BIG], [],
     Settings(), {"big": 1}, [], [], []),
    ("requested-keeps-an-idle-node", demand([], [node("b1", "big", BIG_NODE, idle=900)], [({"CPU": 2}, 1)]),
     [BIG], [pod("b1", "big")], Settings(), {}, [], [], []),
    ("requested-drains-only-the-nodes-it-does-not-need",
     demand([], [node("b1", "big", BIG_NODE, idle=90), node("b2", "big", BIG_NODE, idle=300)], [({"CPU": 4}, 1)]),
     [BIG], [pod("b1", "big"), pod("b2", "big")], Settings(), {}, ["b2"], [], []),
    ("requested-no-group-fits", demand([], [], [({"CPU": 64}, 1)]), [BIG], [], Settings(),
     {}, [], [], ["unplaceable", "{CPU: 64}"]),
    ("requested-memory-packs-by-memory", demand([], [], [({"memory": 6 * GI}, 3)]), [BIG], [], Settings(),
     {"big": 3}, [], [], []),                            # 6 Gi on 8 Gi pods: one per pod
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_plan(case):
    _, dem, groups, pods, settings, creates, drains, deletes, words = case
    p = plan(dem, groups, pods, NOW, settings)
    assert {g: n for g, n in p.create.items() if n} == creates, p.groups
    assert [d.pod for d in p.drain] == drains, p.idle_nodes
    assert [d.pod for d in p.delete] == deletes
    if words:
        kind, rest = words[0], words[1:]
        entries = getattr(p, kind)
        assert entries, f"nothing in plan.{kind}: {p.to_dict()}"
        text = " ".join(e["reason"] for e in entries)
        for w in rest:
            assert w in text, text
    else:
        assert not p.waiting and not p.unplaceable, (p.waiting, p.unplaceable)
    for d in p.groups.values():
        assert d.reason, d
    for d in p.drain:
        assert any(ch.isdigit() for ch in d.reason), d


def test_every_bundle_is_accounted_for():
    dem = demand([want({"CPU": 1}, 7), want({"CPU": 1, "GPU": 1}, 5), want({"CPU": 64}, 2), want({"CPU": 3}, 2)],
                 [node("c1", "cpu", CPU_NODE, {"CPU": 1})])
    p = plan(dem, [CPU, GPU, BIG], [pod("c1", "cpu"), pod("b1", "big", phase="Pending")], NOW, Settings())
    counted = sum(e["count"] for e in p.placed + p.waiting + p.unplaceable)
    assert counted == 7 + 5 + 2 + 2
    assert p.unplaceable[0]["largest_group"] == "big"


def test_selectors_and_requests_are_reported():
    dem = demand([want({"CPU": 1}, 2, selector={"zone": "b"}), want({"CPU": 1}, 1)],
                 [node("a1", "zone-a", BIG_NODE, idle=900, labels={"zone": "a"})], [({"CPU": 2}, 1)])
    p = plan(dem, [ZONE_A, ZONE_B], [pod("a1", "zone-a")], NOW, Settings())
    assert p.demand == [{"shape": {"CPU": 1}, "count": 2, "label_selector": {"zone": "b"}},
                        {"shape": {"CPU": 1}, "count": 1}]
    assert p.requested == [{"shape": {"CPU": 2}, "count": 1}]
    assert {"shape": {"CPU": 2}, "count": 1, "into": "free", "group": "zone-a", "requested": True} in p.placed
    assert {"shape": {"CPU": 1}, "count": 2, "into": "new", "group": "zone-b", "label_selector": {"zone": "b"}} \
        in p.placed
    kept, = p.idle_nodes
    assert (kept.action, kept.reason) == ("keep", "its free capacity takes pending bundles in this plan")
    p = plan(demand([], dem["nodes"], [({"CPU": 2}, 1)]), [ZONE_A], [pod("a1", "zone-a")], NOW, Settings())
    assert p.idle_nodes[0].reason == "request_resources needs its capacity"


def test_group_labels_come_from_the_pod_template():
    from tasuki_operator.reconcile import group_specs
    cluster = {"metadata": {"name": "demo", "namespace": "ml", "uid": "u"},
               "spec": {"image": "img", "workerGroups": [{"name": "gpu", "minReplicas": 0, "maxReplicas": 2,
                                                         "replicas": 0, "labels": {"zone": "b"},
                                                         "resources": {"limits": {"cpu": "1500m", "memory": "4Gi"}}}]}}
    g, = group_specs(cluster)
    assert g.labels == {"zone": "b"} and g.shape == {"CPU": 1.5, "memory": 4 * GI}


def test_idle_node_reasons_and_seconds():
    dem = demand([], [node("c1", "cpu", CPU_NODE, idle=90), node("c2", "cpu", CPU_NODE, idle=20),
                      node("c3", "cpu", CPU_NODE, BUSY, busy=2)])
    p = plan(dem, [CPU], [pod("c1", "cpu"), pod("c2", "cpu"), pod("c3", "cpu")], NOW, Settings(idle_timeout_s=60))
    idle = {n.pod: n for n in p.idle_nodes}
    assert set(idle) == {"c1", "c2"}                    # the busy node is not idle
    assert (idle["c1"].action, idle["c1"].seconds_idle) == ("drain", 90)
    assert idle["c2"].action == "keep" and "idle 20 s of 60 s" in idle["c2"].reason
    assert p.groups["cpu"].decision == "down" and p.groups["cpu"].desired == 2
    assert p.drain_if_idle


def test_dry_run_is_the_auto_plan_marked_not_to_act():
    dem = demand([want({"CPU": 1}, 5), want({"CPU": 1, "GPU": 1}, 1)], [node("c1", "cpu", CPU_NODE, idle=300)])
    pods = [pod("c1", "cpu")]
    auto = plan(dem, [CPU, GPU], pods, NOW, Settings(mode=AUTO, idle_timeout_s=60))
    dry = plan(dem, [CPU, GPU], pods, NOW, Settings(mode=DRY_RUN, idle_timeout_s=60))
    assert dry.dry_run and not auto.dry_run
    a, d = auto.to_dict(), dry.to_dict()
    for key in ("mode", "dry_run"):
        a.pop(key), d.pop(key)
    assert a == d
    assert dry.create == {"cpu": 2, "gpu": 1}


def test_off_drains_busy_nodes_without_if_idle_and_never_at_random():
    dem = demand([], [node("c1", "cpu", CPU_NODE, BUSY, busy=3), node("c2", "cpu", CPU_NODE, BUSY, busy=1)])
    p = plan(dem, [with_bounds(CPU, 0, 3, replicas=1)], [pod("c1", "cpu"), pod("c2", "cpu")], NOW,
             Settings(mode=OFF))
    assert [d.pod for d in p.drain] == ["c2"]           # fewest busy workers first
    assert "1 busy workers finish first" in p.drain[0].reason
    assert not p.drain_if_idle and not p.delete


def test_no_create_and_delete_loop_for_a_stuck_group():
    """A pod stuck Unschedulable is neither deleted nor joined by more pods, tick after tick."""
    pods = [pod("c1", "cpu", phase="Pending", age=900, unschedulable_for=800)]
    for now in (NOW, NOW + 5, NOW + 600):
        p = plan(demand([want({"CPU": 1}, 4)]), [with_bounds(CPU, 2, 3)], pods, now, Settings())
        assert p.create == {"cpu": 0} and not p.delete and not p.drain
        assert p.groups["cpu"].decision == "backoff"
        assert "below min 2" in p.groups["cpu"].reason


@pytest.mark.parametrize("bad, field", [
    (GroupSpec("cpu", 3, 2, 0, {"CPU": 1}), "spec.workerGroups[cpu].minReplicas"),
    (GroupSpec("cpu", -1, 2, 0, {"CPU": 1}), "spec.workerGroups[cpu].minReplicas"),
])
def test_bad_bounds_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        plan(demand(), [bad], [], NOW, Settings())


@pytest.mark.parametrize("kwargs, field", [({"mode": "auto"}, "spec.autoscaler.mode"),
                                           ({"max_step_per_group": 0}, "spec.autoscaler.maxStepPerGroup")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Settings(**kwargs)


@pytest.mark.parametrize("shape, available, n", [
    ({"CPU": 1}, {"CPU": 4}, 4), ({"CPU": 0.5}, {"CPU": 1.5}, 3), ({"CPU": 0.1}, {"CPU": 0.3}, 3),
    ({"CPU": 1, "GPU": 1}, {"CPU": 8}, 0), ({}, {"CPU": 1}, float("inf")),
])
def test_times_fits_is_the_schedulers_rule(shape, available, n):
    assert times_fits(available, shape_of(shape)) == n


def test_format_shape_prints_memory_in_gi():
    assert format_shape({"CPU": 1, "memory": 2 * GI, "GPU": 1}) == "{CPU: 1, GPU: 1, memory: 2Gi}"


def test_pod_from_kubernetes_reads_group_phase_and_unschedulable():
    p = pod_from_kubernetes({
        "metadata": {"name": "demo-worker-cpu-x1", "creationTimestamp": "2026-12-02T16:00:00Z",
                     "labels": {"tasuki.dev/group": "cpu"}},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                                       "reason": "Unschedulable",
                                                       "lastTransitionTime": "2026-12-02T16:00:10Z"}]}})
    assert (p.group, p.phase, p.unschedulable_since - p.created_at, p.deleting) == ("cpu", "Pending", 10.0, False)


def test_replay_a_saved_snapshot():
    with open(DATA) as f:
        snapshot = json.load(f)
    p = replay(snapshot)
    got = {"create": {g: n for g, n in p.create.items() if n}, "drain": [d.pod for d in p.drain],
           "delete": [d.pod for d in p.delete], "unplaceable": [e["shape"] for e in p.unplaceable],
           "waiting": [[e["shape"], e["count"]] for e in p.waiting]}
    assert got == snapshot["expected"]

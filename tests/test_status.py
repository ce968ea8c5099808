"""tasuki_operator.status: the Cluster's .status from pods, the head's demand, the plan and the spec's errors."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from tasuki_operator import status as st
from tasuki_operator.autoscaler import replay
from tasuki_operator.spec import SpecError, cluster_schema, validate_spec

NOW = 1796227664.0                    # 2026-12-02T16:07:44Z
NOW_TEXT = "2026-12-02T16:07:44Z"
EARLIER = "2026-12-01T00:00:00Z"


def cluster(suspend=False, status=None, groups=None, mode="Auto", **spec):
    body = {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "u-1", "generation": 4},
            "spec": {"image": "tasuki/runtime:0.1.0", "suspend": suspend, "autoscaler": {"mode": mode},
                     "workerGroups": groups if groups is not None else [
                         {"name": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 3},
                         {"name": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2}], **spec}}
    if status is not None:
        body["status"] = status
    return body


def pod(name, role="worker", group=None, phase="Running", ready=True, scheduled=True, gpus=None, ip="10.0.0.5",
        deleting=False, cluster_name="demo", waiting=None, scheduler_message=None):
    group = group or ("head" if role == "head" else "cpu")
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False"}]
    if not scheduled:
        conditions[0].update(reason="Unschedulable", message=scheduler_message or "0/3 nodes are available")
    conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    limits = {"cpu": "1", "memory": "2Gi"}
    if gpus is not None:
        limits["nvidia.com/gpu"] = gpus
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": "ml", "creationTimestamp": "2026-12-02T16:00:00Z",
                      "labels": {"tasuki.dev/cluster": cluster_name, "tasuki.dev/role": role,
                                 "tasuki.dev/group": group}},
         "spec": {"containers": [{"name": "tasuki", "image": "x", "resources": {"limits": limits}}]},
         "status": {"phase": phase, "conditions": conditions}}
    if scheduled and ip:
        p["status"]["podIP"] = ip
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-12-02T16:07:00Z"
    if waiting:
        p["status"]["containerStatuses"] = [{"name": "tasuki", "state": {"waiting": {"reason": waiting}}}]
    return p


def node(name, group="cpu", idle=0.0, busy=0, state="alive", version="0.1.0", head=False):
    return {"node_id": f"id-{name}", "node_name": name, "group": group, "state": state, "version": version,
            "busy_workers": busy, "seconds_idle": idle, "is_head_node": head, "resources": {}, "available": {}}


HEAD = pod("demo-head", role="head", ip="10.0.0.2")
CPU1, CPU2 = pod("demo-worker-cpu-a"), pod("demo-worker-cpu-b")


def demand(*nodes, pending=(), version="0.1.0"):
    return {"pending": [{"shape": {"CPU": 1.0}, "count": n, "feasible": True} for n in pending],
            "nodes": [node("demo-head", group="head", head=True, idle=100.0, version=version), *nodes],
            "version": version}


def build(body=None, pods=(HEAD, CPU1, CPU2), dem=None, plan=None, errors=(), now=NOW, error=None):
    dem = demand(node("demo-worker-cpu-a"), node("demo-worker-cpu-b")) if dem is None else dem
    return st.build_status(body or cluster(), list(pods), None if dem == "none" else dem, plan, list(errors),
                           now, demand_error=error)


def cond(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def schema_errors(status):
    schema = cluster_schema()["properties"]["status"]
    return [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(json.loads(json.dumps(status)))]


# --- phases -----------------------------------------------------------------------------------------

PHASES = [
    # id, kwargs for build, phase
    ("running", {}, "Running"),
    ("no-head-pod", {"pods": (CPU1, CPU2)}, "Pending"),
    ("head-not-ready", {"pods": (pod("demo-head", role="head", ready=False), CPU1, CPU2)}, "Pending"),
    ("head-being-deleted", {"pods": (pod("demo-head", role="head", deleting=True), CPU1, CPU2)}, "Pending"),
    ("a-worker-short", {"pods": (HEAD, CPU1)}, "Scaling"),
    ("a-worker-starting", {"pods": (HEAD, CPU1, pod("demo-worker-cpu-b", ready=False))}, "Scaling"),
    ("one-too-many", {"pods": (HEAD, CPU1, CPU2, pod("demo-worker-cpu-c"))}, "Scaling"),
    ("suspended", {"body": cluster(suspend=True)}, "Suspended"),
    ("suspended-beats-pending", {"body": cluster(suspend=True), "pods": ()}, "Suspended"),
    ("invalid-spec", {"errors": [SpecError("spec.image", "spec.image must name the image")]}, "Failed"),
    ("invalid-beats-suspended", {"body": cluster(suspend=True), "errors": ["bad"]}, "Failed"),
]


@pytest.mark.parametrize("kwargs, phase", [p[1:] for p in PHASES], ids=[p[0] for p in PHASES])
def test_phase(kwargs, phase):
    s = build(**kwargs)
    assert s["phase"] == phase
    assert schema_errors(s) == []


def test_running_cluster_fields():
    s = build(pods=(HEAD, CPU1, pod("demo-worker-cpu-b", gpus="1"), pod("demo-worker-gpu-x", group="gpu", gpus="2",
                                                                          ready=False)),
              dem=demand(node("demo-worker-cpu-a", idle=30.0), node("demo-worker-cpu-b", busy=1), pending=(3, 4)))
    assert s["head"] == {"service": "demo-head", "address": "tasuki://demo-head.ml.svc:6380",
                         "podName": "demo-head", "podIP": "10.0.0.2"}
    assert s["groups"] == [{"name": "cpu", "ready": 2, "desired": 2, "pending": 0, "idle": 1},
                           {"name": "gpu", "ready": 0, "desired": 0, "pending": 0, "idle": 0}]
    assert (s["workers"], s["pendingTasks"], s["gpus"], s["idleWorkers"]) == ("2/2", 7, 1, 1)
    assert (s["replicas"], s["selector"]) == (2, "tasuki.dev/cluster=demo,tasuki.dev/role=worker,tasuki.dev/group=cpu")
    assert (s["version"], s["observedGeneration"]) == ("0.1.0", 4)
    assert s["phase"] == "Running"            # the gpu group's extra pod starting does not make cpu short


# --- desired ----------------------------------------------------------------------------------------

def plan_with(desired: dict, dry_run=False, **extra):
    return {"mode": "DryRun" if dry_run else "Auto", "dry_run": dry_run, "create": {}, "drain": [], "delete": [],
            "demand": [], "placed": [], "waiting": [], "unplaceable": [], "idle_nodes": [],
            "groups": {g: {"name": g, "decision": "hold", "desired": d, "reason": ""} for g, d in desired.items()},
            **extra}


DESIRED = [
    ("spec-replicas", {}, {"cpu": 2, "gpu": 0}),
    ("plan-wins", {"plan": plan_with({"cpu": 3, "gpu": 1})}, {"cpu": 3, "gpu": 1}),
    ("dry-run-plan-ignored", {"plan": plan_with({"cpu": 3, "gpu": 1}, dry_run=True)}, {"cpu": 2, "gpu": 0}),
    ("replicas-clamped-to-max", {"body": cluster(groups=[{"name": "cpu", "replicas": 9, "maxReplicas": 9},
                                                         {"name": "gpu", "minReplicas": 1, "maxReplicas": 2}])},
     {"cpu": 9, "gpu": 1}),
    ("spec-replicas-folds-in", {"body": cluster(replicas=1)}, {"cpu": 1, "gpu": 0}),
    ("suspended", {"body": cluster(suspend=True), "plan": plan_with({"cpu": 3})}, {"cpu": 0, "gpu": 0}),
    ("invalid", {"errors": ["x"]}, {"cpu": 0, "gpu": 0}),
]


@pytest.mark.parametrize("kwargs, expected", [d[1:] for d in DESIRED], ids=[d[0] for d in DESIRED])
def test_desired(kwargs, expected):
    s = build(**kwargs)
    assert {g["name"]: g["desired"] for g in s["groups"]} == expected
    assert s["workers"] == f"{sum(g['ready'] for g in s['groups'])}/{sum(expected.values())}"


def test_group_gone_from_the_spec_is_listed_while_it_has_pods():
    s = build(pods=(HEAD, CPU1, CPU2, pod("demo-worker-old-a", group="old")))
    assert s["groups"][-1] == {"name": "old", "ready": 1, "desired": 0, "pending": 0, "idle": 0}


def test_pods_of_another_cluster_and_ended_pods_are_not_counted():
    s = build(pods=(HEAD, CPU1, CPU2, pod("other-worker-cpu-a", cluster_name="other"),
                    pod("demo-worker-cpu-c", phase="Failed", ready=False)))
    assert s["groups"][0]["ready"] == 2 and s["replicas"] == 2


# --- idle: nodes mapped to pods by node_name --------------------------------------------------------

IDLE = [
    ("idle", node("demo-worker-cpu-a", idle=5.0), 1),
    ("busy", node("demo-worker-cpu-a", idle=5.0, busy=1), 0),
    ("zero-seconds", node("demo-worker-cpu-a", idle=0.0), 0),
    ("draining", node("demo-worker-cpu-a", idle=5.0, state="draining"), 0),
    ("dead", node("demo-worker-cpu-a", idle=5.0, state="dead"), 0),
    ("no-such-pod", node("demo-worker-cpu-zzz", idle=5.0), 0),
]


@pytest.mark.parametrize("entry, idle", [i[1:] for i in IDLE], ids=[i[0] for i in IDLE])
def test_idle_by_node_name(entry, idle):
    s = build(dem=demand(entry))
    assert s["groups"][0]["idle"] == idle and s["idleWorkers"] == idle


def test_the_head_node_is_never_idle_worker():
    s = build(dem=demand())                      # the head node idles 100 s
    assert s["idleWorkers"] == 0


# --- conditions -------------------------------------------------------------------------------------

CONDITIONS = [
    # id, kwargs, type, status, reason, text in message
    ("head-ready", {}, "HeadReady", "True", "HeadPodReady", "10.0.0.2"),
    ("head-missing", {"pods": (CPU1,)}, "HeadReady", "False", "HeadPodMissing", "demo-head"),
    ("head-unschedulable", {"pods": (pod("demo-head", role="head", phase="Pending", ready=False, scheduled=False,
                                         scheduler_message="0/3 nodes: Insufficient memory"),)},
     "HeadReady", "False", "HeadPodUnschedulable", "Insufficient memory"),
    ("head-pulling", {"pods": (pod("demo-head", role="head", phase="Pending", ready=False,
                                   waiting="ImagePullBackOff"),)},
     "HeadReady", "False", "HeadPodStarting", "ImagePullBackOff"),
    ("head-failed", {"pods": (pod("demo-head", role="head", phase="Failed", ready=False),)},
     "HeadReady", "False", "HeadPodFailed", "recreates"),
    ("workers-ready", {}, "WorkersReady", "True", "AllWorkersReady", "cpu 2/2"),
    ("no-workers", {"body": cluster(groups=[{"name": "cpu", "replicas": 0}]), "pods": (HEAD,)},
     "WorkersReady", "True", "NoWorkersDesired", "no worker"),
    ("scaling-down", {"pods": (HEAD, CPU1, CPU2, pod("demo-worker-cpu-c"))},
     "WorkersReady", "True", "ScalingDown", "3/2"),
    ("workers-unschedulable", {"pods": (HEAD, CPU1, pod("demo-worker-cpu-b", phase="Pending", ready=False,
                                                        scheduled=False, scheduler_message="Insufficient cpu"))},
     "WorkersReady", "False", "WorkersUnschedulable", "Insufficient cpu"),
    ("workers-starting", {"pods": (HEAD, CPU1, pod("demo-worker-cpu-b", ready=False))},
     "WorkersReady", "False", "WorkersStarting", "demo-worker-cpu-b"),
    ("workers-missing", {"pods": (HEAD, CPU1)}, "WorkersReady", "False", "WorkersMissing", "1 pods still to create"),
    ("workers-suspended", {"body": cluster(suspend=True)}, "WorkersReady", "False", "Suspended", "suspend"),
    ("workers-invalid", {"errors": ["x"]}, "WorkersReady", "False", "InvalidSpec", "SpecValid"),
    ("autoscaler-demand-read", {}, "AutoscalerHealthy", "True", "DemandRead", "Auto"),
    ("autoscaler-unreadable", {"dem": "none", "error": "connection refused"},
     "AutoscalerHealthy", "False", "DemandUnreadable", "connection refused"),
    ("autoscaler-plan", {"plan": plan_with({"cpu": 2}, create={"cpu": 1})},
     "AutoscalerHealthy", "True", "Autoscaling", "cpu +1"),
    ("autoscaler-dry-run", {"plan": plan_with({"cpu": 2}, dry_run=True)},
     "AutoscalerHealthy", "True", "DryRun", "dry run"),
    ("autoscaler-unplaceable", {"plan": plan_with({"cpu": 2}, unplaceable=[
        {"shape": {"CPU": 64.0}, "count": 1, "reason": "no worker group can ever fit {CPU: 64}"}])},
     "AutoscalerHealthy", "True", "UnplaceableDemand", "{CPU: 64}"),
    ("autoscaler-backoff", {"plan": {**plan_with({"cpu": 2}), "groups": {"cpu": {"decision": "backoff",
                                                                                  "desired": 2}}}},
     "AutoscalerHealthy", "True", "BackedOff", "cpu"),
    ("autoscaler-invalid", {"errors": ["x"]}, "AutoscalerHealthy", "False", "InvalidSpec", "invalid"),
    ("autoscaler-suspended", {"body": cluster(suspend=True)}, "AutoscalerHealthy", "True", "Suspended", "suspend"),
    ("not-suspended", {}, "Suspended", "False", "NotSuspended", "false"),
    ("suspending", {"body": cluster(suspend=True)}, "Suspended", "True", "Suspending", "3 pods still to remove"),
    ("suspended", {"body": cluster(suspend=True), "pods": ()}, "Suspended", "True", "Suspended", "Secret"),
    ("spec-valid", {}, "SpecValid", "True", "SpecValid", "checks"),
    ("versions-match", {}, "VersionMismatch", "False", "VersionsMatch", "0.1.0"),
    ("versions-differ", {"dem": demand(node("demo-worker-cpu-a", version="0.2.0"), node("demo-worker-cpu-b"))},
     "VersionMismatch", "True", "VersionsDiffer", "0.2.0 on demo-worker-cpu-a"),
    ("head-reports-another-version", {"dem": {**demand(node("demo-worker-cpu-a")), "version": "0.3.0"}},
     "VersionMismatch", "True", "VersionsDiffer", "0.3.0 (head)"),
    ("dead-node-version-ignored", {"dem": demand(node("demo-worker-cpu-a", version="0.0.9", state="dead"))},
     "VersionMismatch", "False", "VersionsMatch", "0.1.0"),
]


@pytest.mark.parametrize("kwargs, type_, status, reason, text", [c[1:] for c in CONDITIONS],
                         ids=[c[0] for c in CONDITIONS])
def test_condition(kwargs, type_, status, reason, text):
    s = build(**kwargs)
    c = cond(s, type_)
    assert (c["status"], c["reason"]) == (status, reason), c["message"]
    assert text in c["message"]
    assert c["lastTransitionTime"] == NOW_TEXT and c["observedGeneration"] == 4
    assert schema_errors(s) == []


def test_invalid_spec_names_every_field_path():
    spec = {"image": "", "workerGroups": [{"name": "cpu", "replicas": 5, "maxReplicas": 3}]}
    errors = validate_spec(spec)
    s = build(body=cluster(), errors=errors)
    message = cond(s, "SpecValid")["message"]
    assert s["phase"] == "Failed" and cond(s, "SpecValid")["reason"] == "InvalidSpec"
    assert message.startswith("invalid fields: spec.image, spec.workerGroups[0].replicas.")
    assert "(5) is above" in message


@pytest.mark.parametrize("error, expected", [
    (SpecError("spec.image", "spec.image must name the image"), "spec.image must name the image"),
    ({"path": "spec.head.numCpus", "message": "must be a number"}, "spec.head.numCpus: must be a number"),
    ("spec.suspend must be true or false", "spec.suspend must be true or false"),
])
def test_spec_errors_of_each_kind(error, expected):
    assert expected in cond(build(errors=[error]), "SpecValid")["message"]


def test_manifest_error_is_reported_with_its_field():
    from tasuki_operator.manifests import ManifestError
    e = ManifestError("spec.objectStoreMemory", "4Gi cannot fit the memory limit 2Gi")
    assert cond(build(errors=[e]), "SpecValid")["message"].startswith("invalid fields: spec.objectStoreMemory. ")


# --- lastTransitionTime -----------------------------------------------------------------------------

TRANSITIONS = [
    # id, previous status of HeadReady (None: no previous condition), now ready?, time expected
    ("unchanged-true-keeps-time", "True", True, EARLIER),
    ("unchanged-false-keeps-time", "False", False, EARLIER),
    ("false-to-true-changes", "False", True, NOW_TEXT),
    ("true-to-false-changes", "True", False, NOW_TEXT),
    ("new-condition-gets-now", None, True, NOW_TEXT),
]


@pytest.mark.parametrize("before, ready, expected", [t[1:] for t in TRANSITIONS], ids=[t[0] for t in TRANSITIONS])
def test_last_transition_time(before, ready, expected):
    previous = {"conditions": [] if before is None else [
        {"type": "HeadReady", "status": before, "reason": "Old", "message": "old", "lastTransitionTime": EARLIER}]}
    s = build(body=cluster(status=previous), pods=(pod("demo-head", role="head", ready=ready), CPU1, CPU2))
    c = cond(s, "HeadReady")
    assert c["lastTransitionTime"] == expected
    assert c["reason"] == ("HeadPodReady" if ready else "HeadPodStarting")     # reason and message are new


@pytest.mark.parametrize("old, new, expected", [
    ([], [st.condition("A", True, "R", "m")], [NOW_TEXT]),
    ([{"type": "A", "status": "True", "lastTransitionTime": EARLIER}], [st.condition("A", True, "R2", "m2")],
     [EARLIER]),
    ([{"type": "A", "status": "True", "lastTransitionTime": EARLIER}], [st.condition("A", "Unknown", "R", "m")],
     [NOW_TEXT]),
    ([{"type": "A", "status": "True"}], [st.condition("A", True, "R", "m")], [NOW_TEXT]),   # no time to keep
    ([{"type": "B", "status": "True", "lastTransitionTime": EARLIER}], [st.condition("A", True, "R", "m")],
     [NOW_TEXT]),
    (None, [st.condition("A", False, "R", "m"), st.condition("B", True, "R", "m")], [NOW_TEXT, NOW_TEXT]),
])
def test_merge_conditions(old, new, expected):
    merged = st.merge_conditions(old, new, NOW)
    assert [c["lastTransitionTime"] for c in merged] == expected
    assert [c["type"] for c in merged] == [c["type"] for c in new]      # types only in old are dropped


@pytest.mark.parametrize("args, error", [
    (("A", "yes", "R", "m"), "status must be one of"),
    (("A", True, "not camel", "m"), "CamelCase"),
    (("A", True, "", "m"), "CamelCase"),
    (("A", True, "1Reason", "m"), "CamelCase"),
])
def test_condition_refuses_bad_values(args, error):
    with pytest.raises(ValueError, match=error):
        st.condition(*args)


def test_condition_message_is_bounded():
    assert len(st.condition("A", True, "R", "x" * 100_000)["message"]) == st.MAX_MESSAGE_CHARS


@pytest.mark.parametrize("now, text", [(NOW, NOW_TEXT), (0, "1970-01-01T00:00:00Z"), (NOW + 0.9, NOW_TEXT)])
def test_format_time(now, text):
    assert st.format_time(now) == text


@pytest.mark.parametrize("now", ["2026-12-02T16:07:44Z", None, True])
def test_format_time_wants_seconds(now):
    with pytest.raises(TypeError, match="seconds since the epoch"):
        st.format_time(now)


# --- unreadable demand: last known values -----------------------------------------------------------

def test_unreadable_demand_keeps_what_only_the_head_knows():
    first = build(dem=demand(node("demo-worker-cpu-a", idle=9.0, version="0.2.0"), pending=(5,)))
    assert cond(first, "VersionMismatch")["status"] == "True"
    later = build(body=cluster(status=first), dem="none", error="timed out", now=NOW + 60)
    assert (later["version"], later["pendingTasks"], later["idleWorkers"]) == ("0.1.0", 5, 1)
    assert cond(later, "VersionMismatch") == cond(first, "VersionMismatch")      # carried, time kept
    assert cond(later, "AutoscalerHealthy")["status"] == "False"
    assert later["autoscaler"] == {"mode": "Auto", "reason": "no plan: the head's demand could not be read: timed out"}
    assert schema_errors(later) == []


def test_unreadable_demand_without_a_previous_status():
    s = build(dem="none")
    assert "version" not in s and s["pendingTasks"] == 0 and s["idleWorkers"] == 0
    assert all(c["type"] != "VersionMismatch" for c in s["conditions"])
    assert "not read yet" in cond(s, "AutoscalerHealthy")["message"]


# --- status.autoscaler ------------------------------------------------------------------------------

def test_autoscaler_section_is_the_plan_of_a_replayed_snapshot():
    with open(Path(__file__).parent / "data" / "autoscaler_snapshot.json") as f:
        snapshot = json.load(f)
    plan = replay(snapshot)
    body = cluster(groups=[{"name": "cpu", "replicas": 1, "maxReplicas": 3}, {"name": "gpu", "maxReplicas": 2}])
    s = st.build_status(body, snapshot["pods"], snapshot["demand"], plan, [], snapshot["now"])
    assert s["autoscaler"] == plan.to_dict()              # small: kept whole
    assert {g["name"]: g["desired"] for g in s["groups"]} == {n: d.desired for n, d in plan.groups.items()}
    assert s["autoscaler"]["unplaceable"][0]["shape"] == {"CPU": 64.0}
    assert cond(s, "AutoscalerHealthy")["reason"] == "UnplaceableDemand"
    assert schema_errors(s) == []


def big_plan(n):
    return plan_with({"cpu": 2}, placed=[{"shape": {"CPU": float(i)}, "count": i, "into": "new", "group": "cpu"}
                                         for i in range(n)],
                     idle_nodes=[{"node_id": f"n{i}", "pod": f"p{i}", "group": "cpu", "seconds_idle": 1.0,
                                  "action": "keep", "reason": "x" * 5000} for i in range(n)])


@pytest.mark.parametrize("n, kept", [(3, 3), (20, 20), (21, 20), (10_000, None)])
def test_autoscaler_section_is_bounded(n, kept):
    out = build(plan=big_plan(n))["autoscaler"]
    assert len(json.dumps(out, separators=(",", ":"))) <= st.MAX_AUTOSCALER_BYTES
    assert all(len(e["reason"]) <= st.MAX_TEXT_CHARS for e in out["idle_nodes"])
    if kept is not None:
        assert len(out["placed"]) == kept
        assert out.get("omitted", {}).get("placed", 0) == n - kept
    else:
        assert out["omitted"]["placed"] == n - len(out["placed"]) > 0


def test_trim_plan_falls_back_to_a_summary():
    plan = plan_with({f"g{i}": 1 for i in range(200)}, create={"g0": 1})
    out = st.trim_plan(plan, max_bytes=500)
    assert out == {"mode": "Auto", "dry_run": False, "create": {"g0": 1}, "omitted": {"groups": 200}}


def test_trim_plan_does_not_modify_its_argument():
    plan = big_plan(30)
    before = copy.deepcopy(plan)
    st.trim_plan(plan)
    assert plan == before


@pytest.mark.parametrize("kwargs, reason", [
    ({"errors": ["x"]}, "no plan: the spec is invalid"),
    ({"body": cluster(suspend=True)}, "no plan: the cluster is suspended"),
    ({}, "no plan: no plan made yet"),
])
def test_autoscaler_section_without_a_plan(kwargs, reason):
    assert build(**kwargs)["autoscaler"] == {"mode": "Auto", "reason": reason}


# --- the head section and odd names -----------------------------------------------------------------

def test_head_section_without_a_head_pod():
    s = build(pods=())
    assert s["head"] == {"service": "demo-head", "address": "tasuki://demo-head.ml.svc:6380"}


def test_a_ready_head_is_preferred_over_a_leftover_one():
    s = build(pods=(pod("demo-head-old", role="head", ready=False, ip="10.0.0.9"), HEAD, CPU1, CPU2))
    assert s["head"]["podName"] == "demo-head" and s["phase"] == "Running"


def test_an_invalid_cluster_name_does_not_raise():
    body = cluster()
    body["metadata"]["name"] = "Bad_Name"
    s = st.build_status(body, [], None, None, [SpecError("metadata.name", "metadata.name ('Bad_Name') ...")], NOW)
    assert s["phase"] == "Failed" and "address" not in s["head"]


# --- status_patch -----------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, patch", [
    ({"phase": "Running"}, {"phase": "Running"}, {}),
    ({"phase": "Pending"}, {"phase": "Running"}, {"phase": "Running"}),
    ({"phase": "Running", "version": "0.1.0"}, {"phase": "Running"}, {"version": None}),
    ({"autoscaler": {"mode": "Auto", "placed": [1]}}, {"autoscaler": {"mode": "Auto", "reason": "r"}},
     {"autoscaler": {"placed": None, "reason": "r"}}),
    ({"groups": [{"name": "a"}]}, {"groups": [{"name": "a"}, {"name": "b"}]},
     {"groups": [{"name": "a"}, {"name": "b"}]}),
    (None, {"phase": "Pending"}, {"phase": "Pending"}),
])
def test_status_patch(old, new, patch):
    assert st.status_patch(old, new) == patch


def test_status_patch_of_a_rebuilt_status_is_empty_when_nothing_changed():
    first = build()
    again = build(body=cluster(status=first), now=NOW + 30)
    assert st.status_patch(first, again) == {}

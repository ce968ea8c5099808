"""One reconcile decided (operator/tasuki_operator/reconcile.py): one table row per rule.

Each row is plain data as the controller reads it: the Cluster of examples/k8s/cpu-gpu-cluster.yaml
(with a uid) and a few spec changes, the pods built by manifests.worker_pod / head_pod with a status
and a creationTimestamp added, the head's GET /api/v1/demand (or None: it could not be read), and
the pods whose node the head said drained. The row names the exact actions, in order (type, pod or
object, cause, if_idle), and key words of each action's `why`.
"""
from __future__ import annotations

import base64
import copy
from pathlib import Path

import pytest
import yaml

from tasuki_operator.autoscaler import parse_time
from tasuki_operator.manifests import head_pod, pod_name, worker_pod
from tasuki_operator.reconcile import Create, Delete, Drain, Observed, decide

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "k8s" / "cpu-gpu-cluster.yaml"
CREATED = "2026-12-02T16:00:00Z"
NOW = parse_time(CREATED) + 600.0          # every pod is 10 minutes old (the idle timeout is 5 s)
OLD_IMAGE = "tasuki/runtime:0.1.0"         # the example's image
NEW_IMAGE = "tasuki/runtime:0.2.0"
GI = 2 ** 30
TOKEN = "fresh-token"
SUFFIXES = ("aaaaa", "bbbbb", "ccccc", "ddddd")
HEAD = "demo-head"


def cluster(spec: dict | None = None, autoscaler: dict | None = None, extra_group: str | None = None,
            **groups: dict) -> dict:
    """The example Cluster as the API returns it, with `spec` keys replaced, `autoscaler` keys and
    each named group's keys (cpu={...}, gpu={...}) changed, and a copy of the cpu group named
    `extra_group` appended."""
    c = yaml.safe_load(EXAMPLE.read_text())
    c["metadata"].update(uid="0b1c2d3e-0000-4000-8000-000000000013", generation=1)
    c["spec"].update(spec or {})
    c["spec"]["autoscaler"].update(autoscaler or {})
    for g in c["spec"]["workerGroups"]:
        g.update(groups.get(g["name"], {}))
    if extra_group:
        c["spec"]["workerGroups"].append({**copy.deepcopy(c["spec"]["workerGroups"][0]), "name": extra_group})
    return c


def status(phase: str, exit_code: int | None = None, reason: str | None = None) -> dict:
    """A Pod status: Running is Ready; Pending is scheduled, its container still starting; an ended
    pod's container terminated with `exit_code` and `reason`."""
    ready = "True" if phase == "Running" else "False"
    out = {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"},
                                          {"type": "Ready", "status": ready}]}
    if exit_code is not None:
        out["containerStatuses"] = [{"name": "tasuki", "ready": False, "restartCount": 0, "state": {
            "terminated": {"exitCode": exit_code, **({"reason": reason} if reason else {})}}}]
    return out


def observed_pod(pod: dict, phase: str, exit_code: int | None, reason: str | None, deleting: bool) -> dict:
    pod["metadata"]["creationTimestamp"] = CREATED
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-12-02T16:09:00Z"
    pod["status"] = status(phase, exit_code, reason)
    return pod


def worker(group: str, suffix: str, phase: str = "Running", image: str = OLD_IMAGE, exit_code: int | None = None,
           reason: str | None = None, deleting: bool = False) -> dict:
    """A worker pod of `group` named demo-worker-<group>-<suffix>, built from a Cluster whose image
    is `image` (a group not in the example is built from a copy of the cpu group)."""
    source = cluster({"image": image}, extra_group=None if group in ("cpu", "gpu") else group)
    return observed_pod(worker_pod(source, group, pod_name(source, group, suffix)), phase, exit_code, reason, deleting)


def head(phase: str = "Running", image: str = OLD_IMAGE, exit_code: int | None = None, reason: str | None = None,
         deleting: bool = False) -> dict:
    return observed_pod(head_pod(cluster({"image": image})), phase, exit_code, reason, deleting)


def name(group: str, suffix: str) -> str:
    return f"demo-worker-{group}-{suffix}"


CPU_NODE = {"CPU": 1.0, "memory": 2.0 * GI}
GPU_NODE = {"CPU": 1.0, "memory": 4.0 * GI, "GPU": 1.0}


def node(pod: str, busy: int = 0, idle: float = 0.0, state: str = "alive") -> dict:
    """The head's entry for the node of worker pod `pod` (node_name is the pod's name)."""
    group = pod.split("-")[2]
    resources = GPU_NODE if group == "gpu" else CPU_NODE
    available = {**resources, "CPU": 0.0} if busy else dict(resources)
    return {"node_id": f"n-{pod}", "node_name": pod, "group": group, "state": state, "busy_workers": busy,
            "seconds_idle": idle, "resources": resources, "available": available}


HEAD_NODE = {"node_id": "n-head", "node_name": HEAD, "group": "head", "state": "alive", "busy_workers": 0,
             "seconds_idle": 900.0, "resources": {"memory": 2.0 * GI}, "available": {"memory": 2.0 * GI},
             "is_head_node": True}


def demand(*nodes: dict, pending: tuple = ()) -> dict:
    """GET /api/v1/demand: `pending` as (shape, count) pairs; the head node and `nodes`."""
    return {"pending": [{"shape": shape, "count": count, "feasible": False} for shape, count in pending],
            "nodes": [HEAD_NODE, *nodes], "version": "0.1.0"}


def seen(c: dict, pods: list, head_demand: dict | None, drained=(), secret: bool = True,
         service: bool = True) -> Observed:
    return Observed(c, pods, secret, service, head_demand, frozenset(drained))


CPU1, CPU2, GPU1, OLD1 = name("cpu", "w0001"), name("cpu", "w0002"), name("gpu", "w0001"), name("old", "w0001")
SUSPENDED = cluster({"suspend": True})
NEW = cluster({"image": NEW_IMAGE})
CPU_MIN_1 = cluster(cpu={"minReplicas": 1, "replicas": 1})

# (id, observed, plan made, actions: ("Create", kind, object name, cause, why words),
#  ("Delete", pod, cause, why words), ("Drain", pod, if_idle, cause, why words))
CASES = [
    # --- the Secret, the Service, the head pod ----------------------------------------------------------------------
    ("nothing-exists", seen(cluster(), [], None, secret=False, service=False), True,
     [("Create", "Secret", "demo-token", "setup", ["token Secret was missing", "new token"]),
      ("Create", "Service", "demo-head", "setup", ["head Service", "missing"]),
      ("Create", "Pod", HEAD, "setup", ["no head pod"])]),
    ("only-the-service-missing", seen(cluster(), [head()], demand(), service=False), True,
     [("Create", "Service", "demo-head", "setup", ["head Service"])]),
    ("only-the-head-pod-missing", seen(cluster(), [], None), True,
     [("Create", "Pod", HEAD, "setup", ["no head pod"])]),
    ("all-present-nothing-to-do", seen(cluster(), [head(), worker("cpu", "w0001")], demand(node(CPU1, busy=1))),
     True, []),
    # --- ended pods ---------------------------------------------------------------------------------------------------
    ("ended-worker-replaced-for-min",
     seen(CPU_MIN_1, [head(), worker("cpu", "w0001", "Failed", exit_code=137, reason="OOMKilled")], demand()), True,
     [("Delete", CPU1, "ended", ["worker pod", "Failed", "exit code 137, OOMKilled", "plan replaces it"]),
      ("Create", "Pod", name("cpu", "aaaaa"), "min_replicas", ["+1 to keep min 1", "1 ended"])]),
    ("ended-worker-not-needed",
     seen(cluster(), [head(), worker("cpu", "w0001", "Succeeded", exit_code=0)], demand()), True,
     [("Delete", CPU1, "ended", ["Succeeded", "exit code 0"])]),
    ("ended-head-deleted-not-recreated-yet",
     seen(cluster(), [head("Failed", exit_code=1, reason="Error")], None), True,
     [("Delete", HEAD, "ended", ["head pod demo-head ended", "Failed", "exit code 1, Error", "new head pod"])]),
    ("ended-head-being-deleted-waits", seen(cluster(), [head("Failed", exit_code=1, deleting=True)], None), True, []),
    # --- spec.suspend -------------------------------------------------------------------------------------------------
    ("suspend-busy-worker-drained-not-if-idle",
     seen(SUSPENDED, [head(), worker("cpu", "w0001")], demand(node(CPU1, busy=2))), False,
     [("Drain", CPU1, False, "suspend", ["spec.suspend is true", "running tasks finish first"])]),
    ("suspend-drained-worker-deleted",
     seen(SUSPENDED, [head(), worker("cpu", "w0001")], demand(node(CPU1, state="draining")), drained=[CPU1]), False,
     [("Delete", CPU1, "suspend", ["spec.suspend is true", "confirmed its node drained"])]),
    ("suspend-never-registered-deleted",
     seen(SUSPENDED, [head(), worker("cpu", "w0001", "Pending")], demand()), False,
     [("Delete", CPU1, "suspend", ["no live node", "no work is on it"])]),
    ("suspend-demand-unreadable-waits", seen(SUSPENDED, [head(), worker("cpu", "w0001")], None), False, []),
    ("suspend-head-goes-last", seen(SUSPENDED, [head()], demand()), False,
     [("Delete", HEAD, "suspend", ["no worker is left", "head goes last", "Secret and Service stay"])]),
    ("suspend-head-gone-workers-deleted", seen(SUSPENDED, [worker("cpu", "w0001"), worker("gpu", "w0001")], None),
     False,
     [("Delete", CPU1, "suspend", ["head pod is gone"]), ("Delete", GPU1, "suspend", ["head pod is gone"])]),
    ("suspend-head-not-running-workers-deleted",
     seen(SUSPENDED, [head("Pending"), worker("cpu", "w0001")], None), False,
     [("Delete", CPU1, "suspend", ["not running"])]),
    ("suspend-drained-but-alive-again-drained-again",      # a restarted head forgot the drain
     seen(SUSPENDED, [head(), worker("cpu", "w0001")], demand(node(CPU1, busy=1)), drained=[CPU1]), False,
     [("Drain", CPU1, False, "suspend", ["running tasks finish first"])]),
    # --- image roll ---------------------------------------------------------------------------------------------------
    ("image-rolls-the-first-group-only",
     seen(NEW, [head(), worker("cpu", "w0001"), worker("cpu", "w0002", image=NEW_IMAGE), worker("gpu", "w0001")],
          demand(node(CPU1, busy=1), node(CPU2, busy=1), node(GPU1, busy=1))), True,
     [("Drain", CPU1, False, "image", [f"spec.image changed to {NEW_IMAGE}", "one at a time", "finish first"])]),
    ("image-rolls-the-next-group",
     seen(NEW, [head(), worker("cpu", "w0001", image=NEW_IMAGE), worker("gpu", "w0001")],
          demand(node(CPU1, busy=1), node(GPU1, busy=1))), True,
     [("Drain", GPU1, False, "image", [NEW_IMAGE])]),
    ("image-rolled-worker-drained-deleted",
     seen(NEW, [head(), worker("cpu", "w0001")], demand(), drained=[CPU1]), True,
     [("Delete", CPU1, "image", [NEW_IMAGE, "confirmed its node drained"])]),
    ("image-head-waits-for-workers",
     seen(NEW, [head(), worker("cpu", "w0001")], demand(node(CPU1, state="draining", busy=1))), True,
     [("Drain", CPU1, False, "image", [NEW_IMAGE])]),
    ("image-head-rolls-after-workers",
     seen(NEW, [head(), worker("cpu", "w0001", image=NEW_IMAGE)], demand(node(CPU1, busy=1))), True,
     [("Delete", HEAD, "image", [NEW_IMAGE, "workers have rolled", "same Service"])]),
    # --- a group removed from the spec --------------------------------------------------------------------------------
    ("removed-group-busy-drained",
     seen(cluster(), [head(), worker("old", "w0001")], demand(node(OLD1, busy=1))), True,
     [("Drain", OLD1, False, "removed_group", ["no longer in spec.workerGroups", "finish first"])]),
    ("removed-group-drained-deleted",
     seen(cluster(), [head(), worker("old", "w0001")], demand(), drained=[OLD1]), True,
     [("Delete", OLD1, "removed_group", ["no longer in spec.workerGroups", "confirmed"])]),
    ("removed-group-never-registered-deleted",
     seen(cluster(), [head(), worker("old", "w0001", "Pending")], demand()), True,
     [("Delete", OLD1, "removed_group", ["no live node"])]),
    # --- the autoscaler's plan ----------------------------------------------------------------------------------------
    ("auto-cpu-demand", seen(cluster(), [head()], demand(pending=(({"CPU": 1}, 2),))), True,
     [("Create", "Pod", name("cpu", "aaaaa"), "demand", ["+2 for 2 pending {CPU: 1} bundles"]),
      ("Create", "Pod", name("cpu", "bbbbb"), "demand", ["+2 for 2 pending"])]),
    ("auto-gpu-demand", seen(cluster(), [head()], demand(pending=(({"CPU": 1, "GPU": 1}, 1),))), True,
     [("Create", "Pod", name("gpu", "aaaaa"), "demand", ["+1 for 1 pending {CPU: 1, GPU: 1} bundles"])]),
    ("auto-min", seen(CPU_MIN_1, [head()], demand()), True,
     [("Create", "Pod", name("cpu", "aaaaa"), "min_replicas", ["+1 to keep min 1"])]),
    ("auto-min-and-demand", seen(CPU_MIN_1, [head()], demand(pending=(({"CPU": 1}, 3),))), True,
     [("Create", "Pod", name("cpu", "aaaaa"), "demand", ["+1 to keep min 1", "+2 for 2 pending"]),
      ("Create", "Pod", name("cpu", "bbbbb"), "demand", []),
      ("Create", "Pod", name("cpu", "ccccc"), "min_replicas", [])]),
    ("off-holds-replicas", seen(cluster(autoscaler={"mode": "Off"}, cpu={"replicas": 2}), [head()], demand()), True,
     [("Create", "Pod", name("cpu", "aaaaa"), "replicas", ["Off: +2 to hold replicas 2"]),
      ("Create", "Pod", name("cpu", "bbbbb"), "replicas", ["Off: +2"])]),
    ("off-scales-down-idle-first-not-if-idle",
     seen(cluster(autoscaler={"mode": "Off"}, cpu={"replicas": 1}), [head(), worker("cpu", "w0001"),
                                                                      worker("cpu", "w0002")],
          demand(node(CPU1, busy=1), node(CPU2, idle=2))), True,
     [("Drain", CPU2, False, "replicas", ["Off: replicas 1, 2 pods", "idle 2 s"])]),
    ("dry-run-acts-on-nothing",
     seen(cluster(autoscaler={"mode": "DryRun"}), [head(), worker("cpu", "w0001")],
          demand(node(CPU1, idle=30), pending=(({"GPU": 1}, 1),))), True, []),
    ("head-unreachable-creates-for-min", seen(CPU_MIN_1, [head()], None), True,
     [("Create", "Pod", name("cpu", "aaaaa"), "min_replicas", ["+1 to keep min 1"])]),
    ("head-unreachable-drained-pod-kept", seen(cluster(), [head(), worker("cpu", "w0001")], None, drained=[CPU1]),
     True, []),
    ("head-unreachable-off-deletes-nothing",
     seen(cluster(autoscaler={"mode": "Off"}, cpu={"replicas": 1}), [head(), worker("cpu", "w0001"),
                                                                      worker("cpu", "w0002")], None), True, []),
    ("idle-node-drained-if-idle", seen(cluster(), [head(), worker("cpu", "w0001")], demand(node(CPU1, idle=30))), True,
     [("Drain", CPU1, True, "idle", ["idle 30 s > 5 s"])]),
    ("idle-within-timeout-kept", seen(cluster(), [head(), worker("cpu", "w0001")], demand(node(CPU1, idle=4))), True,
     []),
    ("draining-node-asked-again",
     seen(cluster(), [head(), worker("cpu", "w0001")], demand(node(CPU1, busy=1, state="draining"))), True,
     [("Drain", CPU1, True, "idle", ["still draining", "1 busy workers"])]),
    ("drained-and-gone-deleted", seen(cluster(), [head(), worker("cpu", "w0001")], demand(), drained=[CPU1]), True,
     [("Delete", CPU1, "drained", ["the head confirmed", "drained"])]),
    ("drained-but-alive-again-kept",
     seen(cluster(), [head(), worker("cpu", "w0001")], demand(node(CPU1, idle=1)), drained=[CPU1]), True, []),
    # --- forced actions win over the plan's for the same pod ----------------------------------------------------------
    ("image-drain-wins-over-idle-drain",
     seen(NEW, [head(), worker("cpu", "w0001")], demand(node(CPU1, idle=30))), True,
     [("Drain", CPU1, False, "image", [NEW_IMAGE])]),
    ("image-delete-wins-over-drained-delete",
     seen(NEW, [head(), worker("cpu", "w0001"), worker("gpu", "w0001", image=NEW_IMAGE)],
          demand(node(GPU1, state="draining")), drained=[CPU1, GPU1]), True,
     [("Delete", CPU1, "image", ["confirmed its node drained"]),
      ("Delete", GPU1, "drained", ["the head confirmed node n-" + GPU1])]),
]


def summary(action) -> tuple:
    """What a row names of an action: type, object, (if_idle,) cause."""
    if isinstance(action, Create):
        return ("Create", action.kind, action.body["metadata"]["name"], action.cause)
    if isinstance(action, Delete):
        return ("Delete", action.pod, action.cause)
    assert isinstance(action, Drain), action
    return ("Drain", action.pod, action.if_idle, action.cause)


def group_of(pod: str) -> str:
    return "head" if pod == HEAD else pod.split("-")[2]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_decide(case):
    _, observed, planned, expected = case
    decision = decide(observed, NOW, TOKEN, iter(SUFFIXES))
    assert decision.spec_errors == []
    assert [summary(a) for a in decision.actions] == [tuple(row[:-1]) for row in expected], \
        [(summary(a), a.why) for a in decision.actions]
    for action, row in zip(decision.actions, expected):
        for word in row[-1]:
            assert word in action.why, (summary(action), word, action.why)
        if isinstance(action, (Drain, Delete)):
            assert action.group == group_of(action.pod)
        if isinstance(action, Drain):
            assert action.node_id == f"n-{action.pod}"
        if isinstance(action, Create) and action.kind == "Pod":
            assert action.group == group_of(action.body["metadata"]["name"])
            assert action.body["spec"]["containers"][0]["image"] == observed.cluster["spec"]["image"]
    assert (decision.plan is not None) == planned
    # no action names the same pod twice
    pods = [a.pod for a in decision.actions if isinstance(a, (Drain, Delete))]
    pods += [a.body["metadata"]["name"] for a in decision.actions if isinstance(a, Create) and a.kind == "Pod"]
    assert len(pods) == len(set(pods)), pods


def test_the_token_is_used_only_when_the_secret_is_missing():
    missing = decide(seen(cluster(), [], None, secret=False), NOW, TOKEN, iter(SUFFIXES))
    secret = missing.actions[0].body
    assert (secret["kind"], secret["metadata"]["name"], secret["immutable"]) == ("Secret", "demo-token", True)
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    present = decide(seen(cluster(), [], None), NOW, TOKEN, iter(SUFFIXES))
    assert not any(isinstance(a, Create) and a.kind == "Secret" for a in present.actions)
    assert TOKEN not in repr(present.actions)


def test_dry_run_reports_the_auto_plan():
    """DryRun: the plan Auto would act on, marked dry_run, and no action from it."""
    pods = [head(), worker("cpu", "w0001")]
    nodes = demand(node(CPU1, idle=30), pending=(({"GPU": 1}, 1),))
    dry = decide(seen(cluster(autoscaler={"mode": "DryRun"}), pods, nodes), NOW, TOKEN, iter(SUFFIXES))
    auto = decide(seen(cluster(), pods, nodes), NOW, TOKEN, iter(SUFFIXES))
    assert dry.actions == [] and dry.plan.dry_run
    assert dry.plan.create == auto.plan.create == {"cpu": 0, "gpu": 1}
    assert [d.pod for d in dry.plan.drain] == [d.pod for d in auto.plan.drain] == [CPU1]
    assert [summary(a) for a in auto.actions] == [("Create", "Pod", name("gpu", "aaaaa"), "demand"),
                                                  ("Drain", CPU1, True, "idle")]


def test_head_unreachable_plan_would_delete_but_decision_does_not():
    """The safety rule: without the node table every pod looks unregistered; the plan says delete
    (Off: two pods for replicas 1; Auto: a drained pod whose node is missing), the decision does not."""
    off = decide(seen(cluster(autoscaler={"mode": "Off"}, cpu={"replicas": 1}),
                      [head(), worker("cpu", "w0001"), worker("cpu", "w0002")], None), NOW, TOKEN, iter(SUFFIXES))
    assert [d.pod for d in off.plan.delete] == [CPU1] and off.actions == []
    auto = decide(seen(cluster(), [head(), worker("cpu", "w0001")], None, drained=[CPU1]), NOW, TOKEN, iter(SUFFIXES))
    assert [d.pod for d in auto.plan.delete] == [CPU1] and auto.actions == []


INVALID = [
    ("min-above-max", cluster(cpu={"minReplicas": 4, "replicas": 4}), "spec.workerGroups[0].minReplicas",
     ["minReplicas (4) is above", "maxReplicas (3)"]),
    ("object-store-does-not-fit-the-memory-limit",
     cluster(cpu={"resources": {"requests": {"cpu": "1", "memory": "768Mi"},
                                "limits": {"cpu": "1", "memory": "768Mi"}}}),
     "spec.workerGroups[0].resources.limits.memory",
     ["spec.objectStoreMemory (512Mi)", "does not fit", "(768Mi)", "at least 1Gi"]),
]


@pytest.mark.parametrize("c, path, words", [i[1:] for i in INVALID], ids=[i[0] for i in INVALID])
def test_an_invalid_spec_starts_and_deletes_nothing(c, path, words):
    """Even with the Secret, Service and head missing and an ended pod to clean: nothing."""
    pods = [worker("cpu", "w0001", "Failed", exit_code=1)]
    decision = decide(seen(c, pods, None, secret=False, service=False), NOW, TOKEN, iter(SUFFIXES))
    assert decision.actions == [] and decision.plan is None
    errors = [e for e in decision.spec_errors if e.path == path]
    assert errors, decision.spec_errors
    for word in words:
        assert word in errors[0].message, (word, errors[0].message)

"""One reconcile of a Cluster, decided: what to create, drain and delete, and why. Pure.

`decide(observed, now, token, suffixes)` takes what the controller read (the Cluster, its pods,
whether its Secret and Service exist, the head's demand or why it could not be read, the pods whose
node the head said drained) and returns a `Decision`: the actions, the autoscaler's plan and the
spec's problems. controller.py reads, calls this, carries the actions out and writes the status;
nothing here does I/O, reads a clock or draws random numbers (the fresh token and the pod-name
suffixes are arguments).

The rules, in order:
1. An invalid spec (spec.validate_spec, then manifests.check_cluster) starts nothing and deletes
   nothing: the decision is empty and the status says which field is wrong.
2. The token Secret and the head Service are created when missing (the Secret never rewritten:
   the token is generated once and survives head restarts).
3. Ended pods (Failed or Succeeded) are deleted: a worker is replaced by the autoscaler's plan
   in the same decision when the group still needs it (its min, Off mode's replicas, demand), the
   head is recreated once its old pod is gone.
4. `spec.suspend`: every worker is drained (busy or not: its tasks finish first) and deleted once
   the head says drained, or at once when the head never saw it or the head pod is gone; the head
   pod goes last. The Secret and Service stay.
5. Otherwise the head pod is created when there is none; workers whose image differs from
   spec.image roll one group at a time (drained like a suspend, the plan replaces them as they
   leave); the head rolls after the workers; pods of a group no longer in the spec are drained and
   deleted the same way.
6. The autoscaler's plan (autoscaler.plan) sizes each group; its pods to create, nodes to drain
   and drained pods to delete become actions, except in DryRun (reported only). While the head's
   demand cannot be read, nothing is drained or deleted on the plan's word: without the node table
   every pod looks unregistered, and a busy pod must never be taken for an empty one.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from . import autoscaler
from .autoscaler import GroupSpec, Plan, Settings
from .manifests import (CONTAINER, LABEL_GROUP, LABEL_ROLE, ManifestError, advertised_resources, check_cluster,
                        head_pod, head_pod_name, head_service, pod_name, token_secret, worker_pod)
from .spec import SpecError, validate_spec, with_defaults

__all__ = ["Observed", "Create", "Delete", "Drain", "Decision", "decide", "spec_errors", "group_specs", "settings"]

ENDED_PHASES = autoscaler.ENDED_PHASES
NODE_STATES = (autoscaler.ALIVE, autoscaler.DRAINING)

# causes: the low-cardinality "why" of an action, for metrics (scale decisions by direction and reason)
SETUP, DEMAND, MIN, REPLICAS, ENDED, IDLE, DRAINED, SUSPEND, IMAGE, REMOVED = (
    "setup", "demand", "min_replicas", "replicas", "ended", "idle", "drained", "suspend", "image", "removed_group")


@dataclass(frozen=True)
class Observed:
    """What the controller read for one Cluster."""
    cluster: dict                         # as the API returns it
    pods: list[dict]                      # its pods (label tasuki.dev/cluster=<name>)
    secret: bool                          # the token Secret exists
    service: bool                         # the head Service exists
    demand: dict | None                   # GET /api/v1/demand, None when it could not be read
    drained: frozenset[str] = frozenset()  # pods whose node the head's last drain answer said drained


class Create(NamedTuple):
    kind: str                             # Secret | Service | Pod
    body: dict
    group: str | None                     # a pod's tasuki.dev/group
    cause: str
    why: str


class Delete(NamedTuple):
    pod: str
    group: str
    cause: str
    why: str


class Drain(NamedTuple):
    pod: str
    node_id: str
    group: str
    if_idle: bool                         # True: the head refuses a busy node (scale-down); False: finish, then drain
    cause: str
    why: str


@dataclass
class Decision:
    actions: list = field(default_factory=list)   # Create | Drain | Delete, in the order to carry out
    plan: Plan | None = None
    spec_errors: list = field(default_factory=list)


# --- reading the spec ------------------------------------------------------------------------------
def spec_errors(cluster: Mapping) -> list:
    """The Cluster's problems: validate_spec's SpecErrors, else the first ManifestError of building
    its objects; [] when it is valid."""
    name = (cluster.get("metadata") or {}).get("name")
    errors = validate_spec(cluster.get("spec") or {}, name)
    if errors:
        return errors
    try:
        check_cluster(defaulted(cluster))
    except ManifestError as e:
        return [SpecError(e.field, str(e))]
    return []


def defaulted(cluster: Mapping) -> dict:
    """The Cluster with its spec's defaults applied (spec.replicas folded into workerGroups[0])."""
    return {**cluster, "spec": with_defaults(dict(cluster.get("spec") or {}))}


def group_specs(cluster: Mapping) -> list[GroupSpec]:
    """The worker groups as the autoscaler sees them (a valid, defaulted Cluster)."""
    out = []
    for i, g in enumerate(cluster["spec"].get("workerGroups") or []):
        out.append(GroupSpec(name=g["name"], min_replicas=g["minReplicas"], max_replicas=g["maxReplicas"],
                             replicas=g["replicas"],
                             shape=advertised_resources(g.get("resources"), g, path=f"spec.workerGroups[{i}]"),
                             labels=dict(g.get("labels") or {})))      # the nodes' labels (TASUKI_LABELS)
    return out


def settings(cluster: Mapping, pending_grace_s: float = autoscaler.DEFAULT_PENDING_GRACE_S) -> Settings:
    """spec.autoscaler (a valid, defaulted Cluster) as autoscaler.Settings; `pending_grace_s` is the
    operator's --pending-grace-seconds."""
    a = cluster["spec"].get("autoscaler") or {}
    return Settings(mode=a.get("mode", autoscaler.AUTO), idle_timeout_s=float(a.get("idleTimeoutSeconds", 60)),
                    max_step_per_group=a.get("maxStepPerGroup"), conserve_gpus=a.get("conserveGpus", True),
                    pending_grace_s=pending_grace_s)


# --- pods ------------------------------------------------------------------------------------------
def _name(pod: dict) -> str:
    return pod["metadata"]["name"]


def _labels(pod: dict) -> dict:
    return pod["metadata"].get("labels") or {}


def _ended(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ENDED_PHASES


def _leaving(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _image(pod: dict) -> str | None:
    for c in (pod.get("spec") or {}).get("containers") or ():
        if c.get("name") == CONTAINER:
            return c.get("image")
    return None


def _ended_why(pod: dict, role: str) -> str:
    status = pod.get("status") or {}
    detail = status.get("reason") or status.get("message") or ""
    for cs in status.get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated") or {}
        if term:
            detail = f"exit code {term.get('exitCode')}" + (f", {term['reason']}" if term.get("reason") else "")
    return (f"{role} pod {_name(pod)} ended ({status.get('phase')}{': ' + detail if detail else ''}); "
            + ("deleted so a new head pod can take its place at the same Service" if role == "head"
               else "deleted; the plan replaces it when its group still needs the pod"))


# --- the decision ----------------------------------------------------------------------------------
def decide(observed: Observed, now: float, token: str, suffixes: Iterator[str],
           pending_grace_s: float = autoscaler.DEFAULT_PENDING_GRACE_S) -> Decision:
    """The actions of one reconcile (see the module docstring). `token` is used only when the Secret
    is missing; `suffixes` yields a fresh pod-name suffix per pod created; `pending_grace_s` is how
    long a pod may stay Unschedulable before its group backs off."""
    errors = spec_errors(observed.cluster)
    if errors:
        return Decision(spec_errors=errors)
    cluster = defaulted(observed.cluster)
    spec = cluster["spec"]
    actions: list = []
    if not observed.secret:
        actions.append(Create("Secret", token_secret(cluster, token), None, SETUP,
                              "the cluster's token Secret was missing: a new token was generated"))
    if not observed.service:
        actions.append(Create("Service", head_service(cluster), None, SETUP,
                              "the head Service (runtime and metrics ports) was missing"))

    live = [p for p in observed.pods if not _ended(p) and not _leaving(p)]
    heads = [p for p in live if _labels(p).get(LABEL_ROLE) == "head"]
    workers = [p for p in live if _labels(p).get(LABEL_ROLE) == "worker"]
    for pod in observed.pods:
        if _ended(pod) and not _leaving(pod):
            role = _labels(pod).get(LABEL_ROLE, "worker")
            actions.append(Delete(_name(pod), _labels(pod).get(LABEL_GROUP, ""), ENDED, _ended_why(pod, role)))

    nodes = _nodes_by_pod(observed.demand)
    head_alive = observed.demand is not None or any((h.get("status") or {}).get("phase") == "Running" for h in heads)
    if spec.get("suspend"):
        actions += _retire(workers, nodes, observed, head_alive, SUSPEND, "spec.suspend is true")
        if not workers:
            actions += [Delete(_name(h), "head", SUSPEND, "spec.suspend is true and no worker is left: "
                               "the head goes last; the Secret and Service stay") for h in heads]
        return Decision(actions=actions)

    names = {_name(p) for p in observed.pods}
    if not heads and head_pod_name(cluster) not in names:
        actions.append(Create("Pod", head_pod(cluster), "head", SETUP, "the cluster has no head pod"))
    group_names = [g["name"] for g in spec.get("workerGroups") or []]
    removed = [p for p in workers if _labels(p).get(LABEL_GROUP) not in group_names]
    actions += _retire(removed, nodes, observed, head_alive, REMOVED,
                       "its group is no longer in spec.workerGroups")
    image = spec["image"]
    outdated = [p for p in workers if p not in removed and _image(p) != image]
    rolling = [p for p in outdated if _labels(p).get(LABEL_GROUP) == next(
        (g for g in group_names if any(_labels(q).get(LABEL_GROUP) == g for q in outdated)), None)]
    actions += _retire(rolling, nodes, observed, head_alive, IMAGE,
                       f"spec.image changed to {image}; groups roll one at a time")
    if not outdated:
        actions += [Delete(_name(h), "head", IMAGE, f"spec.image changed to {image} and the workers have rolled: "
                           "the head pod is recreated with the new image at the same Service")
                    for h in heads if _image(h) != image]

    forced = {a.pod for a in actions if isinstance(a, (Drain, Delete))}
    the_plan = _plan(cluster, observed, now, pending_grace_s)
    if not the_plan.dry_run:
        actions += _plan_actions(cluster, the_plan, observed, forced, suffixes)
    return Decision(actions=actions, plan=the_plan)


def _nodes_by_pod(demand: dict | None) -> dict[str, dict]:
    """The head's alive or draining nodes by pod name (node_name)."""
    return {n["node_name"]: n for n in (demand or {}).get("nodes") or ()
            if isinstance(n, dict) and n.get("node_name") and n.get("state") in NODE_STATES}


def _retire(pods: list[dict], nodes: dict[str, dict], observed: Observed, head_alive: bool, cause: str,
            because: str) -> list:
    """Drain-then-delete for pods that must go whether busy or not (suspend, image roll, removed group):
    a pod the head said drained (and does not report alive again: a restarted head forgot the drain),
    or has no live node for (while its demand is readable), or whose head is gone is deleted; one
    whose node is alive is drained (its tasks finish first); otherwise wait."""
    out: list = []
    for pod in pods:
        name, group = _name(pod), _labels(pod).get(LABEL_GROUP, "")
        node = nodes.get(name)
        if name in observed.drained and (node is None or node.get("state") != autoscaler.ALIVE):
            out.append(Delete(name, group, cause, f"{because}; the head confirmed its node drained"))
        elif not head_alive:
            out.append(Delete(name, group, cause, f"{because}; the head pod is gone or not running, so no work "
                                                  "can be on it"))
        elif node is not None:
            out.append(Drain(name, node["node_id"], group, False, cause,
                             f"{because}; its running tasks finish first"))
        elif observed.demand is not None:
            out.append(Delete(name, group, cause, f"{because}; the head has no live node for it (never "
                                                  "registered, or dead), so no work is on it"))
    return out


def _plan(cluster: dict, observed: Observed, now: float, pending_grace_s: float) -> Plan:
    infos = [autoscaler.pod_from_kubernetes(p, drained=_name(p) in observed.drained)
             for p in observed.pods if _labels(p).get(LABEL_ROLE) == "worker"]
    demand = observed.demand if observed.demand is not None else {"pending": [], "nodes": []}
    return autoscaler.plan(demand, group_specs(cluster), infos, now, settings(cluster, pending_grace_s))


def _plan_actions(cluster: dict, the_plan: Plan, observed: Observed, forced: set[str],
                  suffixes: Iterator[str]) -> list:
    out: list = []
    off = the_plan.mode == autoscaler.OFF
    for group, n in the_plan.create.items():
        d = the_plan.groups[group]
        for i in range(n):
            cause = REPLICAS if off else (DEMAND if i < d.for_demand else MIN)
            out.append(Create("Pod", worker_pod(cluster, group, pod_name(cluster, group, next(suffixes))), group,
                              cause, d.reason))
    if observed.demand is None:
        return out
    group_of = {_name(p): _labels(p).get(LABEL_GROUP, "") for p in observed.pods}
    for drain in the_plan.drain:
        if drain.pod not in forced:
            out.append(Drain(drain.pod, drain.node_id, group_of.get(drain.pod, ""), the_plan.drain_if_idle,
                             REPLICAS if off else IDLE, drain.reason))
    for delete in the_plan.delete:
        if delete.pod not in forced:
            out.append(Delete(delete.pod, group_of.get(delete.pod, ""),
                              DRAINED if delete.pod in observed.drained else REPLICAS, delete.reason))
    return out

"""A Cluster's `.status`, built from what the operator observed: pure, one function.

`build_status(cluster, pods, demand, plan, spec_errors, now, demand_error=None)` takes the Cluster as
the API returns it (its previous `.status` included), the cluster's pods (Kubernetes Pod JSON, labels
`tasuki.dev/role` and `tasuki.dev/group`), the head's GET /api/v1/demand (or None when it could not be
read, with `demand_error` saying why), the autoscaler's last plan (`Plan.to_dict()`, a Plan, or None),
the spec's problems (`spec.validate_spec`'s SpecErrors, ManifestErrors, or strings) and `now`, and
returns the complete status, as crd.yaml's status schema describes it. Callers: the kopf handlers
(after each reconcile and each autoscaler tick); they write it with `status_patch(old, new)` (a JSON
merge patch that also removes what is gone) or replace the status subresource.

`now` is seconds since the epoch (a float, the same `now` the autoscaler's plan takes); conditions'
lastTransitionTime is it, formatted as RFC 3339 UTC ("2026-12-02T16:07:44Z") by `format_time`.

The status, field by field:
- phase: Failed when the spec is invalid (spec_errors); else Suspended when spec.suspend; else Pending
  until the head pod is Ready; else Scaling while some group's ready != desired; else Running.
- head: podName, podIP, service `<name>-head`, address `tasuki://<name>-head.<namespace>.svc:6380`.
- groups[]: per worker group (the spec's, then any group that still has pods) `ready` (pod condition
  Ready), `desired`, `pending` (pods not yet scheduled: phase Pending, PodScheduled not True) and
  `idle` (pods whose node - the head's node entry with node_name = pod name - is alive, runs no task
  and reports seconds_idle > 0). `desired` is 0 when suspended or the spec is invalid; else the plan's
  per-group `desired` when a plan that acts is given (Auto and Off, not DryRun); else the group's
  replicas clamped to [minReplicas, maxReplicas] (what the operator creates and replaces).
- workers "ready/desired" over all groups; replicas and selector of the default group
  (workerGroups[0]: the scale subresource); pendingTasks (the sum of the head's pending counts);
  gpus (nvidia.com/gpu limits of Ready worker pods); idleWorkers; version (the head's runtime
  version); observedGeneration (metadata.generation).
- What only the head knows (version, pendingTasks, idle counts, VersionMismatch) is the last known
  value, from the previous status, while the demand cannot be read; AutoscalerHealthy=False says so.
- conditions (metav1.Condition: type, status "True"/"False", reason in CamelCase, message,
  lastTransitionTime kept from the previous status while the status value does not change,
  observedGeneration): SpecValid, HeadReady, WorkersReady (False tells "pods Pending" - with the
  scheduler's message - apart from "pods starting", kuberay#2188), AutoscalerHealthy (False when the
  head's demand could not be read or the spec is invalid; True, with reason UnplaceableDemand or
  BackedOff, when the autoscaler works but demand waits), Suspended, VersionMismatch (True when the
  head and its nodes report different runtime versions).
- autoscaler: the plan's dict, trimmed (`trim_plan`) to at most MAX_AUTOSCALER_BYTES of JSON: long
  strings shortened, lists cut to their first items with the number cut in `omitted`.
"""
from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from typing import Any

from .manifests import (GPU_RESOURCE, LABEL_CLUSTER, LABEL_GROUP, LABEL_ROLE, ManifestError, head_address,
                        head_pod_name, service_name)
from .quantity import gpu_count
from .spec import with_defaults

__all__ = ["PENDING", "RUNNING", "SCALING", "SUSPENDED", "FAILED", "SPEC_VALID", "HEAD_READY", "WORKERS_READY",
           "AUTOSCALER_HEALTHY", "SUSPENDED_CONDITION", "VERSION_MISMATCH", "format_time", "condition",
           "merge_conditions", "build_status", "trim_plan", "status_patch"]

PENDING, RUNNING, SCALING, SUSPENDED, FAILED = "Pending", "Running", "Scaling", "Suspended", "Failed"
SPEC_VALID, HEAD_READY, WORKERS_READY = "SpecValid", "HeadReady", "WorkersReady"
AUTOSCALER_HEALTHY, SUSPENDED_CONDITION, VERSION_MISMATCH = "AutoscalerHealthy", "Suspended", "VersionMismatch"
CONDITION_STATUSES = ("True", "False", "Unknown")
ENDED_PHASES = ("Failed", "Succeeded")
NODE_ALIVE, NODE_DRAINING = "alive", "draining"      # node states in the head's JSON

MAX_MESSAGE_CHARS = 2048           # one condition's message (the CRD allows 32768; kubectl describe stays readable)
MAX_AUTOSCALER_BYTES = 16 * 1024   # status.autoscaler as JSON (the whole object must stay far below etcd's 1.5 MiB)
MAX_LIST_ITEMS = 20                # items kept in each list of status.autoscaler, before shrinking further
MAX_TEXT_CHARS = 512               # one string in status.autoscaler
MAX_NAMES = 5                      # pod names listed in one message
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")   # metav1.Condition's reason pattern


# --- conditions -------------------------------------------------------------------------------------

def format_time(now: float) -> str:
    """RFC 3339 UTC to the second, as Kubernetes writes times: 1796227664.0 -> '2026-12-02T16:07:44Z'."""
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError(f"now must be seconds since the epoch (a float), got {now!r}")
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def condition(type_: str, status: bool | str, reason: str, message: str,
              observed_generation: int | None = None) -> dict:
    """One metav1.Condition without its lastTransitionTime (merge_conditions sets it). `status` is a
    bool or "True"/"False"/"Unknown"; `reason` is CamelCase; `message` is shortened to MAX_MESSAGE_CHARS."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    if status not in CONDITION_STATUSES:
        raise ValueError(f"condition {type_}: status must be one of {', '.join(CONDITION_STATUSES)}, got {status!r}")
    if not isinstance(reason, str) or not _REASON.match(reason) or len(reason) > 1024:
        raise ValueError(f"condition {type_}: reason {reason!r} must be CamelCase (a letter, then letters, digits, "
                         "'_', ',' or ':')")
    out = {"type": type_, "status": status, "reason": reason, "message": _shorten(message, MAX_MESSAGE_CHARS)}
    if observed_generation is not None:
        out["observedGeneration"] = observed_generation
    return out


def merge_conditions(old: list[dict] | None, new: list[dict], now: float) -> list[dict]:
    """`new` (in its order) with lastTransitionTime set: the previous one of the same type when its
    status did not change, `now` otherwise. Types only in `old` are dropped (the status is rebuilt)."""
    previous = {c.get("type"): c for c in old or () if isinstance(c, dict)}
    stamp = format_time(now)
    out = []
    for c in new:
        c = dict(c)
        before = previous.get(c["type"])
        if before is not None and before.get("status") == c["status"] and before.get("lastTransitionTime"):
            c["lastTransitionTime"] = before["lastTransitionTime"]
        else:
            c["lastTransitionTime"] = stamp
        out.append(c)
    return out


# --- pods -------------------------------------------------------------------------------------------

def _labels(pod: dict) -> dict:
    return (pod.get("metadata") or {}).get("labels") or {}


def _name(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("name") or ""


def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def _gone(pod: dict) -> bool:
    """Ended, or being deleted: no longer counted."""
    return _phase(pod) in ENDED_PHASES or bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _pod_condition(pod: dict, type_: str) -> dict:
    for c in (pod.get("status") or {}).get("conditions") or ():
        if c.get("type") == type_:
            return c
    return {}


def pod_ready(pod: dict) -> bool:
    """The pod is Ready and not being deleted."""
    return not _gone(pod) and _pod_condition(pod, "Ready").get("status") == "True"


def _unscheduled(pod: dict) -> bool:
    return _phase(pod) == "Pending" and not _gone(pod) and _pod_condition(pod, "PodScheduled").get("status") != "True"


def _why_not_running(pod: dict) -> str:
    """The scheduler's message, or the containers' waiting reasons (ImagePullBackOff...), for a message."""
    if _unscheduled(pod):
        c = _pod_condition(pod, "PodScheduled")
        return c.get("message") or c.get("reason") or "not scheduled yet"
    waiting = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        w = (cs.get("state") or {}).get("waiting") or {}
        if w.get("reason"):
            waiting.append(f"{cs.get('name')}: {w['reason']}" + (f" ({w['message']})" if w.get("message") else ""))
    return "; ".join(waiting) or f"phase {_phase(pod)}, not Ready"


def _pod_gpus(pod: dict) -> int:
    """nvidia.com/gpu of the pod's containers (limits, else requests); 0 for an unreadable amount."""
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or ():
        res = c.get("resources") or {}
        amount = (res.get("limits") or {}).get(GPU_RESOURCE, (res.get("requests") or {}).get(GPU_RESOURCE))
        if amount is not None:
            try:
                total += gpu_count(amount)
            except ValueError:
                pass
    return total


def _names(pods: list[dict]) -> str:
    names = sorted(_name(p) for p in pods)
    return ", ".join(names[:MAX_NAMES]) + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


# --- the status -------------------------------------------------------------------------------------

def _error_text(error: Any) -> tuple[str, str]:
    """(field path, message naming it) of a SpecError, a ManifestError, a {path, message} dict or a string."""
    if isinstance(error, dict):
        path, message = str(error.get("path") or ""), str(error.get("message") or "")
    else:
        path = str(getattr(error, "path", None) or getattr(error, "field", None) or "")
        message = str(getattr(error, "message", None) or error)
    if path and path not in message:
        message = f"{path}: {message}"
    return path, message


def _count(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _group_specs(spec: dict) -> list[dict]:
    groups = spec.get("workerGroups")
    return [g for g in groups if isinstance(g, dict) and isinstance(g.get("name"), str)] \
        if isinstance(groups, list) else []


def _plan_dict(plan: Any) -> dict | None:
    if plan is None:
        return None
    return plan.to_dict() if hasattr(plan, "to_dict") else dict(plan)


def _desired(group: dict, plan: dict | None, stopped: bool) -> int:
    if stopped:
        return 0
    decision = (plan or {}).get("groups", {}).get(group["name"]) if plan and not plan.get("dry_run") else None
    if isinstance(decision, dict) and _count(decision.get("desired"), -1) >= 0:
        return decision["desired"]
    low, want = _count(group.get("minReplicas")), _count(group.get("replicas"))
    high = _count(group.get("maxReplicas"), max(low, want))
    return max(low, min(want, high))


def build_status(cluster: dict, pods: list[dict], demand: dict | None, plan: Any, spec_errors: list,
                 now: float, demand_error: str | None = None) -> dict:
    """The Cluster's complete .status (see the module docstring). Never raises for what it observes:
    an invalid spec, a missing head or unreadable demand are reported, not errors."""
    meta = cluster.get("metadata") or {}
    name, generation = meta.get("name") or "", meta.get("generation")
    previous = cluster.get("status") or {}
    spec = with_defaults(cluster.get("spec") or {})
    plan = _plan_dict(plan)
    failed, suspended = bool(spec_errors), spec.get("suspend") is True
    mine = [p for p in pods if _labels(p).get(LABEL_CLUSTER, name) == name]
    heads = [p for p in mine if _labels(p).get(LABEL_ROLE) == "head"]
    workers = [p for p in mine if _labels(p).get(LABEL_ROLE) == "worker"]
    live_workers = [p for p in workers if not _gone(p)]

    # the head
    live_heads = sorted((p for p in heads if not _gone(p)), key=lambda p: (not pod_ready(p), _name(p)))
    head = live_heads[0] if live_heads else None
    head_status: dict[str, str] = {}
    try:
        head_status["service"] = service_name(cluster)
        head_status["address"] = f"tasuki://{head_address(cluster)}"
        expected_head = head_pod_name(cluster)
    except ManifestError:
        expected_head = f"{name}-head"
    if head is not None:
        head_status["podName"] = _name(head)
        if (head.get("status") or {}).get("podIP"):
            head_status["podIP"] = head["status"]["podIP"]
    head_ready = head is not None and pod_ready(head)

    # the head's view: nodes by pod name, versions, pending tasks
    nodes = [n for n in (demand or {}).get("nodes") or () if isinstance(n, dict)]
    by_pod = {n.get("node_name"): n for n in nodes
              if n.get("node_name") and n.get("state") in (NODE_ALIVE, NODE_DRAINING)}
    previous_groups = {g.get("name"): g for g in previous.get("groups") or () if isinstance(g, dict)}

    def idle(pod: dict) -> bool:
        n = by_pod.get(_name(pod))
        return (n is not None and n.get("state") == NODE_ALIVE and not n.get("busy_workers")
                and (n.get("seconds_idle") or 0) > 0 and not n.get("is_head_node"))

    # the groups
    specs = _group_specs(spec)
    names = [g["name"] for g in specs]
    names += sorted({_labels(p).get(LABEL_GROUP, "") for p in live_workers} - set(names) - {""})
    spec_by_name = {g["name"]: g for g in specs}
    groups = []
    for gname in names:
        members = [p for p in live_workers if _labels(p).get(LABEL_GROUP) == gname]
        g = spec_by_name.get(gname)
        groups.append({
            "name": gname,
            "ready": sum(1 for p in members if pod_ready(p)),
            "desired": _desired(g, plan, failed or suspended) if g else 0,
            "pending": sum(1 for p in members if _unscheduled(p)),
            "idle": (sum(1 for p in members if idle(p)) if demand is not None
                     else _count(previous_groups.get(gname, {}).get("idle"))),
            "_members": members,
        })
    ready, desired = sum(g["ready"] for g in groups), sum(g["desired"] for g in groups)

    status: dict[str, Any] = {}
    if failed:
        status["phase"] = FAILED
    elif suspended:
        status["phase"] = SUSPENDED
    elif not head_ready:
        status["phase"] = PENDING
    elif any(g["ready"] != g["desired"] for g in groups):
        status["phase"] = SCALING
    else:
        status["phase"] = RUNNING
    if isinstance(generation, int):
        status["observedGeneration"] = generation
    version = (demand or {}).get("version") if demand is not None else previous.get("version")
    if isinstance(version, str) and version:
        status["version"] = version
    status["workers"] = f"{ready}/{desired}"
    default = specs[0]["name"] if specs else None
    status["replicas"] = sum(1 for p in live_workers if _labels(p).get(LABEL_GROUP) == default) if default else 0
    status["selector"] = (f"{LABEL_CLUSTER}={name},{LABEL_ROLE}=worker"
                          + (f",{LABEL_GROUP}={default}" if default else ""))
    if demand is not None:
        status["pendingTasks"] = sum(_count(e.get("count")) for e in demand.get("pending") or () if isinstance(e, dict))
    else:
        status["pendingTasks"] = _count(previous.get("pendingTasks"))
    status["gpus"] = sum(_pod_gpus(p) for p in live_workers if pod_ready(p))
    status["idleWorkers"] = sum(g["idle"] for g in groups)
    status["head"] = head_status

    generation = generation if isinstance(generation, int) else None
    conditions = [
        _spec_condition(spec_errors, generation),
        _head_condition(head, heads, expected_head, suspended, generation),
        _workers_condition(groups, failed, suspended, generation),
        _autoscaler_condition(spec, demand, plan, demand_error, failed, suspended, generation),
        _suspended_condition(suspended, heads + workers, generation),
    ]
    mismatch = _version_condition(demand, nodes, generation) if demand is not None else next(
        (c for c in previous.get("conditions") or () if isinstance(c, dict) and c.get("type") == VERSION_MISMATCH),
        None)
    if mismatch is not None:
        conditions.append(mismatch)
    status["conditions"] = merge_conditions(previous.get("conditions"), conditions, now)
    status["groups"] = [{k: v for k, v in g.items() if k != "_members"} for g in groups]
    status["autoscaler"] = _autoscaler_section(spec, plan, demand, demand_error, failed, suspended)
    return status


def _spec_condition(spec_errors: list, generation: int | None) -> dict:
    if not spec_errors:
        return condition(SPEC_VALID, True, "SpecValid", "the spec passed the operator's checks", generation)
    texts = [_error_text(e) for e in spec_errors]
    paths = [p for p, _ in texts if p]
    return condition(SPEC_VALID, False, "InvalidSpec",
                     (f"invalid fields: {', '.join(dict.fromkeys(paths))}. " if paths else "")
                     + "; ".join(m for _, m in texts) + ". The operator starts no workers until the spec is fixed.",
                     generation)


def _head_condition(head: dict | None, heads: list[dict], expected: str, suspended: bool,
                    generation: int | None) -> dict:
    if head is None:
        if suspended:
            return condition(HEAD_READY, False, "Suspended", "spec.suspend is true: the head pod is removed",
                             generation)
        ended = [p for p in heads if _phase(p) in ENDED_PHASES]
        if ended:
            p = ended[0]
            why = (p.get("status") or {}).get("message") or (p.get("status") or {}).get("reason") or ""
            return condition(HEAD_READY, False, "HeadPodFailed", f"head pod {_name(p)} is {_phase(p)}"
                             + (f": {why}" if why else "") + "; the operator recreates it", generation)
        return condition(HEAD_READY, False, "HeadPodMissing", f"no head pod {expected} yet", generation)
    if suspended:
        return condition(HEAD_READY, False, "Suspended", f"spec.suspend is true: head pod {_name(head)} is being "
                         "removed", generation)
    if pod_ready(head):
        ip = (head.get("status") or {}).get("podIP")
        return condition(HEAD_READY, True, "HeadPodReady", f"head pod {_name(head)} is Ready"
                         + (f" at {ip}" if ip else ""), generation)
    if _unscheduled(head):
        return condition(HEAD_READY, False, "HeadPodUnschedulable",
                         f"head pod {_name(head)} is not scheduled: {_why_not_running(head)}", generation)
    return condition(HEAD_READY, False, "HeadPodStarting",
                     f"head pod {_name(head)} is not Ready yet: {_why_not_running(head)}", generation)


def _workers_condition(groups: list[dict], failed: bool, suspended: bool, generation: int | None) -> dict:
    if failed:
        return condition(WORKERS_READY, False, "InvalidSpec", "the spec is invalid (see SpecValid): no workers are "
                         "started", generation)
    if suspended:
        return condition(WORKERS_READY, False, "Suspended", "spec.suspend is true: worker pods are removed", generation)
    per_group = ", ".join(f"{g['name']} {g['ready']}/{g['desired']}" for g in groups)
    ready, desired = sum(g["ready"] for g in groups), sum(g["desired"] for g in groups)
    short = [g for g in groups if g["ready"] < g["desired"]]
    if not short:
        if desired == 0 and ready == 0:
            return condition(WORKERS_READY, True, "NoWorkersDesired", "no worker pod is desired now"
                             + (f" ({per_group})" if per_group else ""), generation)
        reason = "ScalingDown" if ready > desired else "AllWorkersReady"
        return condition(WORKERS_READY, True, reason, f"{ready}/{desired} worker pods ready ({per_group})", generation)
    members = [p for g in short for p in g["_members"] if not pod_ready(p)]
    unscheduled = [p for p in members if _unscheduled(p)]
    head = f"{ready}/{desired} worker pods ready ({per_group})"
    if unscheduled:
        return condition(WORKERS_READY, False, "WorkersUnschedulable",
                         f"{head}; {len(unscheduled)} pods Pending, not scheduled ({_names(unscheduled)}): "
                         f"{_why_not_running(unscheduled[0])}", generation)
    if members:
        return condition(WORKERS_READY, False, "WorkersStarting",
                         f"{head}; {len(members)} pods starting ({_names(members)}): {_why_not_running(members[0])}",
                         generation)
    missing = sum(g["desired"] - len(g["_members"]) for g in short if g["desired"] > len(g["_members"]))
    return condition(WORKERS_READY, False, "WorkersMissing", f"{head}; {missing} pods still to create", generation)


def _autoscaler_condition(spec: dict, demand: dict | None, plan: dict | None, demand_error: str | None,
                          failed: bool, suspended: bool, generation: int | None) -> dict:
    mode = (spec.get("autoscaler") or {}).get("mode") or "Auto"
    if failed:
        return condition(AUTOSCALER_HEALTHY, False, "InvalidSpec", "the autoscaler does not act on an invalid spec "
                         "(see SpecValid)", generation)
    if suspended:
        return condition(AUTOSCALER_HEALTHY, True, "Suspended", "spec.suspend is true: no demand to read", generation)
    if demand is None:
        return condition(AUTOSCALER_HEALTHY, False, "DemandUnreadable",
                         f"could not read the head's /api/v1/demand: {demand_error or 'not read yet'}; "
                         "pendingTasks, idle and version are the last known values", generation)
    if plan is None:
        return condition(AUTOSCALER_HEALTHY, True, "DemandRead", f"mode {mode}: demand read, no plan made yet",
                         generation)
    summary = _plan_summary(plan)
    unplaceable = [u for u in plan.get("unplaceable") or () if isinstance(u, dict)]
    backed_off = sorted(n for n, d in (plan.get("groups") or {}).items()
                        if isinstance(d, dict) and d.get("decision") == "backoff")
    if unplaceable:
        return condition(AUTOSCALER_HEALTHY, True, "UnplaceableDemand",
                         f"{summary}; unplaceable: "
                         + "; ".join(str(u.get("reason") or u.get("shape")) for u in unplaceable[:MAX_NAMES]),
                         generation)
    if backed_off:
        return condition(AUTOSCALER_HEALTHY, True, "BackedOff", f"{summary}; groups backed off (pods Unschedulable): "
                         + ", ".join(backed_off), generation)
    reason = {"DryRun": "DryRun", "Off": "AutoscalingOff"}.get(plan.get("mode") or mode, "Autoscaling")
    return condition(AUTOSCALER_HEALTHY, True, reason, summary, generation)


def _plan_summary(plan: dict) -> str:
    """'Auto: cpu +2; 1 drain; 4 bundles placed, 1 waiting, 1 unplaceable'."""
    parts = [f"{g} +{n}" for g, n in sorted((plan.get("create") or {}).items()) if n]
    counts = {k: sum(_count(e.get("count")) for e in plan.get(k) or () if isinstance(e, dict))
              for k in ("placed", "waiting", "unplaceable")}
    text = f"{plan.get('mode', '?')}{' (dry run)' if plan.get('dry_run') else ''}: "
    text += ", ".join(parts) if parts else "no pod to create"
    text += f"; {len(plan.get('drain') or ())} drains, {len(plan.get('delete') or ())} deletes"
    return text + (f"; {counts['placed']} bundles placed, {counts['waiting']} waiting, "
                   f"{counts['unplaceable']} unplaceable")


def _suspended_condition(suspended: bool, pods: list[dict], generation: int | None) -> dict:
    if not suspended:
        return condition(SUSPENDED_CONDITION, False, "NotSuspended", "spec.suspend is false", generation)
    live = [p for p in pods if not _gone(p)]
    if live:
        return condition(SUSPENDED_CONDITION, True, "Suspending", f"spec.suspend is true: {len(live)} pods still to "
                         f"remove ({_names(live)}); the Secret and Service are kept", generation)
    return condition(SUSPENDED_CONDITION, True, "Suspended", "spec.suspend is true: no pods run; the Secret and "
                     "Service are kept; set it to false to bring the pods back", generation)


def _version_condition(demand: dict, nodes: list[dict], generation: int | None) -> dict:
    head_version = demand.get("version")
    by_version: dict[str, list[str]] = {}
    for n in nodes:
        if n.get("state") in (NODE_ALIVE, NODE_DRAINING) and n.get("version"):
            by_version.setdefault(str(n["version"]), []).append(str(n.get("node_name") or n.get("node_id")))
    versions = set(by_version) | ({head_version} if head_version else set())
    if len(versions) <= 1:
        return condition(VERSION_MISMATCH, False, "VersionsMatch",
                         f"the head and its nodes run tasuki {next(iter(versions), 'unknown')}", generation)
    parts = []
    for v in sorted(versions):
        where = sorted(by_version.get(v, ()))
        names = ", ".join(where[:MAX_NAMES]) + (f" and {len(where) - MAX_NAMES} more" if len(where) > MAX_NAMES else "")
        parts.append(f"{v}{' (head)' if v == head_version else ''}" + (f" on {names}" if names else ""))
    return condition(VERSION_MISMATCH, True, "VersionsDiffer",
                     "the head and its nodes run different tasuki versions: " + "; ".join(parts)
                     + ". Use one image for the head and every worker group.", generation)


# --- status.autoscaler ------------------------------------------------------------------------------

def _autoscaler_section(spec: dict, plan: dict | None, demand: dict | None, demand_error: str | None,
                        failed: bool, suspended: bool) -> dict:
    mode = (spec.get("autoscaler") or {}).get("mode") or "Auto"
    if plan is not None and not failed and not suspended:
        return trim_plan(plan)
    why = ("the spec is invalid" if failed else "the cluster is suspended" if suspended else
           f"the head's demand could not be read: {demand_error or 'not read yet'}" if demand is None else
           "no plan made yet")
    return {"mode": mode, "reason": _shorten(f"no plan: {why}", MAX_TEXT_CHARS)}


def _shorten_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return _shorten(value, limit)
    if isinstance(value, dict):
        return {k: _shorten_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten_strings(v, limit) for v in value]
    return value


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def trim_plan(plan: dict, max_bytes: int = MAX_AUTOSCALER_BYTES) -> dict:
    """The plan's dict bounded to `max_bytes` of JSON: strings cut to MAX_TEXT_CHARS, then each
    top-level list cut to its first MAX_LIST_ITEMS (then 10, 5, 2, 0) items, the number cut recorded
    in `omitted` ({list: count}); if still too large, only mode, dry_run, create and omitted stay."""
    full = _shorten_strings(copy.deepcopy(plan), MAX_TEXT_CHARS)
    lists = [k for k, v in full.items() if isinstance(v, list)]
    for limit in (MAX_LIST_ITEMS, 10, 5, 2, 0):
        out = dict(full)
        omitted = {k: len(full[k]) - limit for k in lists if len(full[k]) > limit}
        for k in omitted:
            out[k] = full[k][:limit]
        if omitted:
            out["omitted"] = omitted
        if _size(out) <= max_bytes:
            return out
    out = {k: full[k] for k in ("mode", "dry_run", "create") if k in full}
    out["omitted"] = {k: len(full[k]) for k in lists if full[k]} | {"groups": len(full.get("groups") or {})}
    return out


# --- writing it -------------------------------------------------------------------------------------

def status_patch(old: dict | None, new: dict) -> dict:
    """A JSON merge patch (RFC 7386) from `old` to `new`: changed keys, None for removed ones, nested
    mappings patched key by key, lists replaced whole. {} when nothing changed (write nothing)."""
    old = old or {}
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        before = old.get(k)
        if isinstance(v, dict) and isinstance(before, dict):
            sub = status_patch(before, v)
            if sub:
                patch[k] = sub
        elif k not in old or before != v:
            patch[k] = copy.deepcopy(v)
    return patch

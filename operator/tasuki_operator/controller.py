"""The reconcile of one Cluster: read, decide, act, report. Blocking I/O through kube.py and head_api.py.

handlers.py runs one loop per Cluster (each in its own thread of a pool, so one slow Cluster or head
never delays another) that calls `Controller.reconcile(namespace, name, memory)` every
spec.autoscaler.pollIntervalSeconds, and at once when the Cluster or one of its pods changes. One
reconcile:

  read    the Cluster; if its spec is invalid: status (SpecValid=False naming the field), a Warning
          Event when the message changes, and nothing else. Else its Secret, Service and pods, and
          the head's GET /api/v1/demand (only while the head pod is Running; the token is the
          Secret's).
  decide  reconcile.decide: pure; the autoscaler's plan is inside it.
  act     each action in order: create (Secret, Service, head and worker pods), drain (POST the
          head's drain endpoint; a node it says drained is deleted at once), delete. Every pod
          created or deleted and every scale decision gets an Event with its reason. One failing
          action is logged and counted and does not stop the others.
  report  the status (status.build_status, written as a merge patch only when it changed), Events
          for what changed in the plan (unplaceable demand, back-off, a DryRun plan, an unreachable
          head), and the metrics (metrics.py).

`ClusterMemory` is what one Cluster's loop remembers between reconciles: the pods whose node the
head said drained (the head is the authority; this only spares a round trip), when each drain
began, when demand began to wait (for the pending-to-ready histogram) and the last message of each
deduplicated Event. Losing it (an operator restart) costs nothing but a repeated drain request.
"""
from __future__ import annotations

import base64
import logging
import random
import secrets
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import status as status_mod
from .autoscaler import DEFAULT_PENDING_GRACE_S
from .head_api import DEFAULT_HEAD_URL, HeadAPI, HeadAPIError, head_url
from .kube import Kube, KubeError
from .manifests import (API_VERSION, KIND, LABEL_GROUP, LABEL_ROLE, TOKEN_KEY, ManifestError, head_pod_name,
                        metrics_port, secret_name, service_name)
from .metrics import OperatorMetrics
from .reconcile import Create, Decision, Delete, Drain, Observed, decide, defaulted, spec_errors

__all__ = ["Controller", "ClusterMemory"]

log = logging.getLogger("tasuki_operator")

INVALID_RECHECK_S = 30.0       # an invalid Cluster is looked at again this often (an edit wakes it at once)
ERROR_RETRY_S = 5.0            # after an API or head error, the next try comes at most this late
SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
SUFFIX_LENGTH = 5              # as Kubernetes' generateName
TOKEN_BYTES = 32


@dataclass
class ClusterMemory:
    """One Cluster's loop state between reconciles (owned by that loop alone)."""
    drained: set[str] = field(default_factory=set)               # pods the head said drained
    drain_started: dict[str, float] = field(default_factory=dict)   # pod -> first drain request
    demand_since: float | None = None                            # when pending demand began, while it lasts
    awaiting_ready: dict[str, tuple[str, float]] = field(default_factory=dict)   # pod -> (group, demand since)
    said: dict[str, str] = field(default_factory=dict)           # Event key -> last message posted
    healthy: bool = True                                         # the last reconcile ran without error


def _suffixes() -> Iterator[str]:
    rng = random.SystemRandom()
    while True:
        yield "".join(rng.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


class Controller:
    """Reconciles Clusters. `head_url_template` is the --head-url template (head_api.head_url);
    `pending_grace_s` how long a pod may stay Unschedulable before its group backs off
    (--pending-grace-seconds); `clock` is injected for tests."""

    def __init__(self, kube: Kube, metrics: OperatorMetrics | None = None, head_url_template: str = DEFAULT_HEAD_URL,
                 clock: Callable[[], float] = time.time, head_timeout_s: float = 5.0,
                 pending_grace_s: float = DEFAULT_PENDING_GRACE_S) -> None:
        self.kube = kube
        self.metrics = metrics or OperatorMetrics()
        self.head_url_template = head_url_template
        self.clock = clock
        self.head_timeout_s = head_timeout_s
        self.pending_grace_s = pending_grace_s

    # --- one reconcile ------------------------------------------------------------------------------
    def reconcile(self, ns: str, name: str, memory: ClusterMemory) -> float | None:
        """Reconcile the Cluster `ns/name` once. Returns the seconds until the next reconcile, or None
        when the Cluster is gone (its loop ends)."""
        where = f"[{ns}/{name}]"
        self.metrics.start_counting(ns, name)
        try:
            delay = self._reconcile(ns, name, memory, where)
        except (KubeError, HeadAPIError) as e:
            memory.healthy = False
            self.metrics.reconciles.labels(ns, name, "error").inc()
            self.metrics.errors.labels(ns, name, "kube" if isinstance(e, KubeError) else "head").inc()
            log.warning("%s reconcile failed: %s; retrying in %g s", where, e, ERROR_RETRY_S)
            return ERROR_RETRY_S
        if delay is not None:
            memory.healthy = True
            self.metrics.reconciles.labels(ns, name, "ok").inc()
        else:
            self.metrics.forget(ns, name)
        return delay

    def _reconcile(self, ns: str, name: str, memory: ClusterMemory, where: str) -> float | None:
        cluster = self.kube.get_cluster(ns, name)
        if cluster is None:
            log.info("%s the Cluster is gone: its loop ends (its pods, Service and Secret go with it)", where)
            return None
        now = self.clock()
        errors = spec_errors(cluster)
        if errors:
            pods = self.kube.list_pods(ns, name)
            text = "; ".join(str(e) for e in errors)
            if memory.said.get("spec") is None:
                log.warning("%s the spec is invalid, nothing is started: %s", where, text)
            self._say(memory, cluster, "spec", "InvalidSpec", f"the spec is invalid, nothing is started: {text}",
                      "Warning")
            self._write_status(cluster, pods, None, None, errors, now, None)
            self._record_pods(ns, name, pods)
            return INVALID_RECHECK_S
        memory.said.pop("spec", None)
        spec = defaulted(cluster)["spec"]
        secret = self.kube.get_secret(ns, secret_name(cluster))
        service = self.kube.get_service(ns, service_name(cluster))
        pods = self.kube.list_pods(ns, name)
        token = token_of(secret)
        demand, demand_error = self._demand(cluster, pods, token)
        self._track_demand(ns, name, memory, demand, pods, now)

        started = time.perf_counter()
        decision = decide(Observed(cluster, pods, secret is not None, service is not None, demand,
                                   frozenset(memory.drained)), now, secrets.token_urlsafe(TOKEN_BYTES), _suffixes(),
                          self.pending_grace_s)
        self.metrics.plan_seconds.labels(ns, name).observe(time.perf_counter() - started)

        head = HeadAPI(self._head_url(cluster), token, self.head_timeout_s) if token else None
        self._act(cluster, decision, head, memory, now, where)
        self._explain(cluster, decision, demand, demand_error, memory)
        self._write_status(cluster, pods, demand, decision.plan, [], now, demand_error)
        self._record_pods(ns, name, pods)
        self._record_groups(ns, name, decision)
        self._forget_gone(memory, pods, decision)
        return float(spec["autoscaler"]["pollIntervalSeconds"])

    # --- reading --------------------------------------------------------------------------------------
    def _head_url(self, cluster: dict) -> str:
        meta = cluster["metadata"]
        return head_url(self.head_url_template, name=meta["name"], namespace=meta["namespace"],
                        service=service_name(cluster), port=metrics_port(cluster))

    def _demand(self, cluster: dict, pods: list[dict], token: str | None) -> tuple[dict | None, str | None]:
        """The head's demand, or None and why it could not be read."""
        heads = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_ROLE) == "head"
                 and not p["metadata"].get("deletionTimestamp")]
        running = [p for p in heads if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            phase = (heads[0].get("status") or {}).get("phase", "Pending") if heads else None
            return None, (f"the head pod {head_pod_name(cluster)} is {phase}, not Running yet" if heads
                          else f"the head pod {head_pod_name(cluster)} does not exist yet")
        if not token:
            return None, f"the Secret {secret_name(cluster)} has no key {TOKEN_KEY!r} yet"
        try:
            return HeadAPI(self._head_url(cluster), token, self.head_timeout_s).demand(), None
        except HeadAPIError as e:
            self.metrics.errors.labels(cluster["metadata"]["namespace"], cluster["metadata"]["name"], "head").inc()
            return None, str(e)

    def _track_demand(self, ns: str, name: str, memory: ClusterMemory, demand: dict | None, pods: list[dict],
                      now: float) -> None:
        """Pending-to-ready: when demand began to wait, and the pods created for it that became Ready."""
        if demand is not None:
            pending = sum(int(e.get("count", 0)) for e in demand.get("pending") or () if isinstance(e, dict))
            self.metrics.pending_tasks.labels(ns, name).set(pending)
            if pending and memory.demand_since is None:
                memory.demand_since = now
            elif not pending:
                memory.demand_since = None
        by_name = {p["metadata"]["name"]: p for p in pods}
        for pod, (group, since) in list(memory.awaiting_ready.items()):
            if pod not in by_name:
                del memory.awaiting_ready[pod]
            elif status_mod.pod_ready(by_name[pod]):
                self.metrics.pending_to_ready.labels(ns, name, group).observe(max(0.0, now - since))
                del memory.awaiting_ready[pod]

    # --- acting ---------------------------------------------------------------------------------------
    def _act(self, cluster: dict, decision: Decision, head: HeadAPI | None, memory: ClusterMemory, now: float,
             where: str) -> None:
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        scaled: Counter = Counter()
        reasons: dict[tuple[str, str], str] = {}
        for action in decision.actions:
            try:
                if isinstance(action, Create):
                    self._create(cluster, action, memory, now, where)
                    if action.kind == "Pod" and action.group != "head":
                        scaled[(action.group, "up")] += 1
                        reasons[(action.group, "up")] = action.why
                        self.metrics.scale_decisions.labels(ns, name, action.group, "up", action.cause).inc()
                elif isinstance(action, Drain):
                    if head is None:
                        log.warning("%s cannot drain pod %s: no token to authenticate to the head", where, action.pod)
                    elif self._drain(cluster, action, head, memory, now, where):
                        scaled[(action.group, "down")] += 1
                        reasons[(action.group, "down")] = action.why
                else:
                    self._delete(cluster, action, memory, now, where)
                    if action.group != "head":
                        scaled[(action.group, "down")] += 1
                        reasons[(action.group, "down")] = action.why
                        self.metrics.scale_decisions.labels(ns, name, action.group, "down", action.cause).inc()
            except (KubeError, HeadAPIError, ManifestError) as e:
                self.metrics.errors.labels(ns, name, "action").inc()
                log.warning("%s %s failed: %s", where, _describe(action), e)
        for (group, direction), n in sorted(scaled.items()):
            sign = "+" if direction == "up" else "-"
            self._event(cluster, "ScaleUp" if direction == "up" else "ScaleDown",
                        f"group {group}: {sign}{n} pod{'s' if n > 1 else ''}: {reasons[(group, direction)]}")

    def _create(self, cluster: dict, action: Create, memory: ClusterMemory, now: float, where: str) -> None:
        ns = cluster["metadata"]["namespace"]
        body_name = action.body["metadata"]["name"]
        if action.kind == "Secret":
            self.kube.create_secret(ns, action.body)
            self._event(cluster, "SecretCreated", f"Secret {body_name}: {action.why}")
        elif action.kind == "Service":
            self.kube.create_service(ns, action.body)
            self._event(cluster, "ServiceCreated", f"Service {body_name}: {action.why}")
        else:
            self.kube.create_pod(ns, action.body)
            role = "head" if action.group == "head" else f"worker pod of group {action.group}"
            self._event(cluster, "HeadCreated" if action.group == "head" else "PodCreated",
                        f"{role} {body_name} created ({action.cause}): {action.why}")
            if action.cause == "demand":
                memory.awaiting_ready[body_name] = (action.group, memory.demand_since or now)
        log.info("%s created %s %s (%s)", where, action.kind, body_name, action.cause)

    def _drain(self, cluster: dict, action: Drain, head: HeadAPI, memory: ClusterMemory, now: float,
               where: str) -> bool:
        """Ask the head to drain the node; delete its pod at once when the head says drained.
        True when the pod was deleted."""
        answer = head.drain(action.node_id, if_idle=action.if_idle)
        if answer.refused:
            memory.drain_started.pop(action.pod, None)
            log.info("%s the head refused to drain node %s of pod %s: %s", where, action.node_id, action.pod,
                     answer.message or "it is busy")
            return False
        memory.drain_started.setdefault(action.pod, now)
        if not answer.drained:
            self._say(memory, cluster, f"drain:{action.pod}", "Draining",
                      f"pod {action.pod} (node {action.node_id}) is draining: {answer.running_tasks} running "
                      f"tasks finish first ({action.why})")
            return False
        memory.drained.add(action.pod)
        self._delete(cluster, Delete(action.pod, action.group, action.cause,
                                     f"{action.why}; the head confirmed node {action.node_id} drained"),
                     memory, now, where)
        self.metrics.scale_decisions.labels(cluster["metadata"]["namespace"], cluster["metadata"]["name"],
                                            action.group, "down", action.cause).inc()
        return True

    def _delete(self, cluster: dict, action: Delete, memory: ClusterMemory, now: float, where: str) -> None:
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        self.kube.delete_pod(ns, action.pod)
        started = memory.drain_started.pop(action.pod, None)
        if started is not None:
            self.metrics.drain_seconds.labels(ns, name).observe(max(0.0, now - started))
        memory.drained.discard(action.pod)
        memory.said.pop(f"drain:{action.pod}", None)
        head = action.group == "head"
        self._event(cluster, "HeadDeleted" if head else "PodDeleted",
                    f"{'head' if head else f'worker pod of group {action.group}'} {action.pod} deleted "
                    f"({action.cause}): {action.why}")
        log.info("%s deleted pod %s (%s)", where, action.pod, action.cause)

    # --- reporting ------------------------------------------------------------------------------------
    def _explain(self, cluster: dict, decision: Decision, demand: dict | None, demand_error: str | None,
                 memory: ClusterMemory) -> None:
        """Events for what changed in the plan: unplaceable demand, back-off, a DryRun plan, the head."""
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        plan = decision.plan
        if demand_error and demand is None:
            self._say(memory, cluster, "head", "HeadUnreachable",
                      f"the head's demand cannot be read, so nothing is drained or deleted: {demand_error}",
                      "Warning" if "does not exist" not in demand_error and "not Running" not in demand_error
                      else "Normal")
        else:
            memory.said.pop("head", None)
        if plan is None:
            return
        unplaceable = sum(u.get("count", 0) for u in plan.unplaceable)
        self.metrics.unplaceable.labels(ns, name).set(unplaceable)
        if plan.unplaceable:
            self._say(memory, cluster, "unplaceable", "Unplaceable", "; ".join(
                f"{u['count']} {'requested' if u.get('requested') else 'pending'} bundles of shape {u['shape']}"
                + (f" with label_selector {u['label_selector']}" if u.get("label_selector") else "")
                + f" fit no worker group: {u['reason']}"
                for u in plan.unplaceable), "Warning")
        else:
            memory.said.pop("unplaceable", None)
        backoff = [f"group {d.name}: {d.reason}" for d in plan.groups.values() if d.decision == "backoff" or d.stuck]
        if backoff:
            self._say(memory, cluster, "backoff", "BackedOff", "; ".join(backoff), "Warning")
        else:
            memory.said.pop("backoff", None)
        if plan.dry_run:
            summary = "; ".join(f"group {d.name}: {d.decision} (+{d.create} create, {d.drain} drain): {d.reason}"
                                for d in plan.groups.values())
            self._say(memory, cluster, "dryrun", "DryRunPlan", f"DryRun, nothing done; the plan: {summary}")

    def _write_status(self, cluster: dict, pods: list[dict], demand: dict | None, plan, errors: list, now: float,
                      demand_error: str | None) -> None:
        new = status_mod.build_status(cluster, pods, demand, plan, errors, now, demand_error)
        patch = status_mod.status_patch(cluster.get("status"), new)
        if patch:
            self.kube.patch_cluster_status(cluster["metadata"]["namespace"], cluster["metadata"]["name"], patch)

    def _record_pods(self, ns: str, name: str, pods: list[dict]) -> None:
        counts: Counter = Counter()
        for p in pods:
            group = (p["metadata"].get("labels") or {}).get(LABEL_GROUP, "")
            phase = "Terminating" if p["metadata"].get("deletionTimestamp") else \
                (p.get("status") or {}).get("phase", "Pending")
            counts[(group, phase)] += 1
        self.metrics.set_pods(ns, name, dict(counts))

    def _record_groups(self, ns: str, name: str, decision: Decision) -> None:
        """Desired and ready worker pods per group, from the plan (none while suspended: all drop to 0)."""
        groups = decision.plan.groups if decision.plan is not None else {}
        self.metrics.set_group_pods(ns, name, {g: (d.desired, d.ready) for g, d in groups.items()})

    @staticmethod
    def _forget_gone(memory: ClusterMemory, pods: list[dict], decision: Decision) -> None:
        names = {p["metadata"]["name"] for p in pods}
        created = {a.body["metadata"]["name"] for a in decision.actions if isinstance(a, Create) and a.kind == "Pod"}
        alive = names | created
        memory.drained &= alive
        for pod in list(memory.drain_started):
            if pod not in alive:
                del memory.drain_started[pod]
        for key in [k for k in memory.said if k.startswith("drain:") and k[len("drain:"):] not in alive]:
            del memory.said[key]

    def _say(self, memory: ClusterMemory, cluster: dict, key: str, reason: str, message: str,
             type_: str = "Normal") -> None:
        """An Event that is posted again only when its message changes."""
        if memory.said.get(key) != message:
            memory.said[key] = message
            self._event(cluster, reason, message, type_)

    def _event(self, cluster: dict, reason: str, message: str, type_: str = "Normal") -> None:
        meta = cluster["metadata"]
        obj = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta}
        try:
            self.kube.post_event(meta["namespace"], obj, reason, message, type_)
        except KubeError as e:            # an Event lost is not worth failing the reconcile for
            self.metrics.errors.labels(meta["namespace"], meta["name"], "kube").inc()
            log.warning("[%s/%s] could not post Event %s (%s): %s", meta["namespace"], meta["name"], reason,
                        message, e)


def token_of(secret: dict | None) -> str | None:
    """The cluster token in the Cluster's Secret, or None."""
    data = (secret or {}).get("data") or {}
    try:
        return base64.b64decode(data[TOKEN_KEY]).decode() if data.get(TOKEN_KEY) else None
    except (ValueError, UnicodeDecodeError):
        return None


def _describe(action) -> str:
    if isinstance(action, Create):
        return f"creating {action.kind} {action.body['metadata']['name']}"
    if isinstance(action, Drain):
        return f"draining pod {action.pod} (node {action.node_id})"
    return f"deleting pod {action.pod}"

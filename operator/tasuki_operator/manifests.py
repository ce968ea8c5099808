"""A `Cluster` (tasuki.dev/v1alpha1) turned into the Secret, Service and Pods that run it: pure builders.

Callers: the kopf handlers (create/resume/update, the worker replacement and the autoscaler's scale-up)
read the Cluster, call these functions and send what they return to the API; nothing here does I/O,
reads a clock or draws random numbers (pod-name suffixes and the token are arguments). Every object is
a plain dict in Kubernetes JSON (camelCase), ready for the API or for `kubernetes-validate`.

The Cluster is the dict the API returns: `metadata` {name, namespace, uid} and `spec` as in the CRD
(image, imagePullPolicy, imagePullSecrets, head, workerGroups[], autoscaler, objectStoreMemory,
metrics, suspend). Fields the CRD would default may be missing; the defaults here are the same.

What each pod gets, and why:
- labels `tasuki.dev/cluster`, `tasuki.dev/role` (head|worker), `tasuki.dev/group` (`head` on the head
  pod) and an owner reference to the Cluster (controller, blockOwnerDeletion): deleting the Cluster
  deletes everything through garbage collection, no finalizer needed.
- the runtime is configured through TASUKI_* environment variables only (`tasuki start` reads each flag
  from its variable, see runtime/tasuki/cli.py ENV_FLAGS): the token from the cluster's Secret by
  secretKeyRef (never plain text in the Pod), TASUKI_NODE_NAME / TASUKI_NODE_GROUP from the downward API
  (the head reports both per node; that is how the operator maps nodes to pods), the advertised CPUs
  (fractions as they are: 1500m -> 1.5), GPUs, memory (the pod's limit: TASUKI_MEMORY, the same figure
  the autoscaler packs by) and custom resources, the object store size, the pod IP, and the pod's own
  `labels` from the spec as the node's labels (TASUKI_LABELS: what label_selector matches). The head runs
  `tasuki start --head --block`, a worker `tasuki start --address $(TASUKI_ADDRESS) --block`, where
  TASUKI_ADDRESS is the head Service's DNS name: a recreated head is found at the same address. These
  are the container's `args`, not its `command`, so the image's ENTRYPOINT stays PID 1 (dumb-init in
  docker/'s images: signals forwarded, orphans reaped); an image of your own must exec its arguments.
- /dev/shm is a memory-backed emptyDir of the object store plus SHM_HEADROOM_BYTES. Its pages count
  against the container's memory limit, so a store that cannot fit the limit (with room for the
  processes too) is refused here, naming both fields and numbers, instead of dying at start
  (KubeRay sizes /dev/shm from requests and fails late: kuberay#201).
- restartPolicy Never on workers (a restarted container would rejoin as a new, empty node and get work
  the operator means to drain: kuberay#1192/#1238); Always on the head.
- terminationGracePeriodSeconds covers a drain (DRAIN_TIMEOUT_S) plus `tasuki start`'s own shutdown.
- enableServiceLinks is off: Kubernetes would otherwise inject <SERVICE>_PORT variables, and a Service
  named `tasuki` in the namespace would set TASUKI_PORT=tcp://... under the runtime's feet.

A spec these builders cannot turn into valid objects raises ManifestError, whose `field` is the path
(e.g. `spec.workerGroups[1].resources.limits.memory`); the handlers report it as a permanent error, a
condition and an Event.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from tasuki.labels import key_problem, value_problem

from .quantity import cpu_cores, format_bytes, format_number, gpu_count, memory_bytes, parse_quantity

__all__ = [
    "ManifestError", "labels", "owner_reference", "token_secret", "secret_name", "head_service", "service_name",
    "head_address", "metrics_port", "pod_name", "head_pod_name", "head_pod", "worker_pod", "worker_probes", "find_group",
    "advertised_resources", "check_requests_within_limits", "object_store_bytes", "shm_size", "check_cluster",
]

API_VERSION = "tasuki.dev/v1alpha1"
KIND = "Cluster"
LABEL_CLUSTER = "tasuki.dev/cluster"
LABEL_ROLE = "tasuki.dev/role"
LABEL_GROUP = "tasuki.dev/group"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "tasuki-operator"
RESERVED_PREFIX = "tasuki.dev/"               # label and annotation keys the spec may not set
HEAD_GROUP = "head"                           # the tasuki.dev/group of the head pod; no worker group may use it

TOKEN_KEY = "token"                           # the key in the cluster's Secret
CONTAINER = "tasuki"
RUNTIME_PORT = 6380                           # the head's runtime port (runtime config.DEFAULT_PORT)
DEFAULT_METRICS_PORT = 8080                   # the head's HTTP port: /metrics, /healthz, /api/v1 (runtime default)
DEFAULT_SERVICE_TYPE = "ClusterIP"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")

SHM_DIR = "/dev/shm"
SHM_VOLUME = "dshm"
SHM_HEADROOM_BYTES = 256 << 20                # /dev/shm beyond the object store: other users of shm (PyTorch...)
PROCESS_MEMORY_BYTES = 256 << 20              # at least this much of the memory limit is left to the processes
MIN_OBJECT_STORE_BYTES = 64 << 20             # the runtime's smallest store (node.py store_size)
STORE_FRACTION = 0.3                          # default store: this share of the pod's memory (runtime STORE_FRACTION)
DEFAULT_OBJECT_STORE_BYTES = 512 << 20        # default store of a pod with no memory limit nor request

GPU_RESOURCE = "nvidia.com/gpu"
RESERVED_RESOURCES = ("CPU", "GPU", "memory")  # names tasukiResources may not use

DRAIN_TIMEOUT_S = 30                          # seconds a node agent has to finish its work when drained
STOP_MARGIN_S = 30                            # then `tasuki start --block` stops its children (15 s) and exits
TERMINATION_GRACE_S = DRAIN_TIMEOUT_S + STOP_MARGIN_S

PROBE_PERIOD_S = 10
PROBE_TIMEOUT_S = 5
READY_PERIOD_S = 2                            # readiness: Ready within 2 s of registering (the first probe, at the
READY_FAILURES = 15                           # container's start, fails), out of the Service after 30 s of failures
LIVE_DELAY_S = 30                             # liveness: 30 s to start, then
LIVE_FAILURES = 6                             # 60 s of failures before the kubelet acts
WORKER_LIVE_DELAY_S = 90                      # `tasuki start` gives a worker 60 s to register with the head

# The file `tasuki start --block` writes once its node agent has registered with the head (runtime
# config.cluster_file()); the worker probes look at it and at nothing remote, see worker_probes().
WORKER_PROBE_SCRIPT = 'test -s "${TASUKI_TMPDIR:-/tmp/tasuki-`id -u`}/cluster.json"'   # no $(...): the kubelet expands that

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_CLUSTER_NAME = 63 - len("-token")        # `<name>-token`, `<name>-head` must be DNS-1035 labels (Service)
MAX_GROUP_NAME = 63                          # a label value
# environment variables the operator sets; spec env may not set them too (a duplicate would win silently)
OPERATOR_ENV = frozenset({
    "TASUKI_TOKEN", "TASUKI_ADDRESS", "TASUKI_NODE_NAME", "TASUKI_NODE_GROUP", "TASUKI_NODE_IP_ADDRESS",
    "TASUKI_NUM_CPUS", "TASUKI_NUM_GPUS", "TASUKI_RESOURCES", "TASUKI_OBJECT_STORE_MEMORY", "TASUKI_PORT",
    "TASUKI_METRICS_PORT", "TASUKI_METRICS_HOST", "TASUKI_DRAIN_TIMEOUT_S",
    "TASUKI_MEMORY", "TASUKI_LABELS", "TASUKI_HEAD_EXPECT_RESTART",
})


class ManifestError(ValueError):
    """A Cluster spec that cannot become valid objects. `field` is the path (spec.head.resources...);
    the message names it, gives the values and says what to change."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def _checked(parse: Callable, value: Any, field: str):
    """parse(value, field), with its ValueError turned into a ManifestError for `field`."""
    try:
        return parse(value, field)
    except ValueError as e:
        raise ManifestError(field, str(e).removeprefix(f"{field}: ")) from None


# --- names, labels, ownership --------------------------------------------------------------------
def _meta(cluster: Mapping) -> tuple[str, str]:
    meta = cluster.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    if not name:
        raise ManifestError("metadata.name", "the Cluster has no name")
    if not namespace:
        raise ManifestError("metadata.namespace", f"the Cluster {name!r} has no namespace")
    if len(name) > MAX_CLUSTER_NAME or not _DNS_LABEL.fullmatch(name) or not name[0].isalpha():
        raise ManifestError("metadata.name", f"{name!r} cannot name the cluster's Service and Secret: use at "
                            f"most {MAX_CLUSTER_NAME} lower-case letters, digits and '-', starting with a letter")
    return name, namespace


def _spec(cluster: Mapping) -> Mapping:
    return cluster.get("spec") or {}


def _group_name_checked(group: Any, field: str) -> str:
    if not isinstance(group, str) or len(group) > MAX_GROUP_NAME or not _DNS_LABEL.fullmatch(group):
        raise ManifestError(field, f"{group!r} is not a valid group name: use at most {MAX_GROUP_NAME} lower-case "
                            f"letters, digits and '-' (it goes into pod names and labels)")
    return group


def labels(cluster: Mapping, role: str | None = None, group: str | None = None) -> dict[str, str]:
    """The labels the operator puts on what it makes: tasuki.dev/cluster (and app.kubernetes.io/
    managed-by) always; on pods tasuki.dev/role (head|worker) and tasuki.dev/group (`head` for the
    head, whatever `group` says). Selectors for the cluster's pods use the same keys."""
    name, _ = _meta(cluster)
    out = {LABEL_CLUSTER: name, LABEL_MANAGED_BY: MANAGED_BY}
    if role is None:
        if group is not None:
            raise ValueError(f"a group label ({group!r}) needs a role")
        return out
    if role not in ("head", "worker"):
        raise ValueError(f"role must be 'head' or 'worker', got {role!r}")
    out[LABEL_ROLE] = role
    out[LABEL_GROUP] = HEAD_GROUP if role == "head" else _group_name_checked(group, "group")
    return out


def owner_reference(cluster: Mapping) -> dict[str, Any]:
    """The owner reference that makes the Cluster own an object: deleting the Cluster deletes it."""
    name, _ = _meta(cluster)
    uid = (cluster.get("metadata") or {}).get("uid")
    if not uid:
        raise ManifestError("metadata.uid", f"the Cluster {name!r} has no uid; build objects from the Cluster "
                            f"as the API returned it")
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _metadata(cluster: Mapping, name: str, object_labels: dict, annotations: dict | None = None) -> dict:
    _, namespace = _meta(cluster)
    meta = {"name": name, "namespace": namespace, "labels": object_labels,
            "ownerReferences": [owner_reference(cluster)]}
    if annotations:
        meta["annotations"] = annotations
    return meta


def secret_name(cluster: Mapping) -> str:
    """`<cluster>-token`: the Secret that holds the cluster's token under key `token`."""
    return f"{_meta(cluster)[0]}-token"


def service_name(cluster: Mapping) -> str:
    """`<cluster>-head`: the head's Service, the address workers and clients use."""
    return f"{_meta(cluster)[0]}-head"


def head_address(cluster: Mapping) -> str:
    """HOST:PORT of the head's runtime port through its Service: `<cluster>-head.<namespace>.svc:6380`."""
    _, namespace = _meta(cluster)
    return f"{service_name(cluster)}.{namespace}.svc:{RUNTIME_PORT}"


def head_pod_name(cluster: Mapping) -> str:
    """`<cluster>-head`: the default name of the (single) head pod."""
    return f"{_meta(cluster)[0]}-head"


def pod_name(cluster: Mapping, group: str, suffix: str) -> str:
    """`<cluster>-worker-<group>-<suffix>`, or `<cluster>-head-<suffix>` for group "head".

    The caller draws the suffix (five random lower-case letters and digits, as Kubernetes'
    generateName does) so this stays pure; it must be a DNS label."""
    name, _ = _meta(cluster)
    if not isinstance(suffix, str) or not _DNS_LABEL.fullmatch(suffix):
        raise ValueError(f"pod name suffix {suffix!r} must be lower-case letters, digits and '-'")
    if group == HEAD_GROUP:
        return f"{name}-head-{suffix}"
    return f"{name}-worker-{_group_name_checked(group, 'group')}-{suffix}"


# --- the Secret and the Service ------------------------------------------------------------------
def token_secret(cluster: Mapping, token: str) -> dict[str, Any]:
    """The cluster's Secret `<cluster>-token`: the token under key `token` (base64, as Kubernetes
    stores it). The caller generates the token once and keeps the Secret across head restarts; the
    Secret is immutable, so a token never changes under running pods."""
    if not isinstance(token, str) or not token:
        raise ValueError("the cluster token must be a non-empty string")
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": _metadata(cluster, secret_name(cluster), labels(cluster)),
        "type": "Opaque",
        "immutable": True,
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode("ascii")},
    }


def _metrics(cluster: Mapping) -> tuple[int, bool]:
    """(the head's HTTP port, whether the head pod gets Prometheus scrape annotations)."""
    metrics = _spec(cluster).get("metrics") or {}
    port = metrics.get("port", DEFAULT_METRICS_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535 or port == RUNTIME_PORT:
        raise ManifestError("spec.metrics.port", f"{port!r} is not a usable port: give 1-65535, other than the "
                            f"runtime port {RUNTIME_PORT}")
    return port, bool(metrics.get("scrapeAnnotations", True))


def metrics_port(cluster: Mapping) -> int:
    """The head's HTTP port (spec.metrics.port): /metrics, /healthz and the /api/v1 the operator reads."""
    return _metrics(cluster)[0]


def head_service(cluster: Mapping) -> dict[str, Any]:
    """The head's Service `<cluster>-head`: the runtime port 6380 (named `tasuki`) and the HTTP port
    (`metrics`: /metrics, /healthz, /api/v1), selecting the head pod by its labels; its type from
    spec.head.serviceType (default ClusterIP)."""
    head = _spec(cluster).get("head") or {}
    port, _ = _metrics(cluster)
    service_type = head.get("serviceType") or DEFAULT_SERVICE_TYPE
    if service_type not in SERVICE_TYPES:
        raise ManifestError("spec.head.serviceType", f"{service_type!r} is not one of {', '.join(SERVICE_TYPES)}")
    selector = {k: v for k, v in labels(cluster, "head").items() if k != LABEL_MANAGED_BY}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(cluster, service_name(cluster), labels(cluster)),
        "spec": {
            "type": service_type,
            "selector": selector,
            "ports": [
                {"name": "tasuki", "port": RUNTIME_PORT, "targetPort": "tasuki", "protocol": "TCP"},
                {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP",
                 "appProtocol": "http"},
            ],
        },
    }


# --- resources -----------------------------------------------------------------------------------
def _amount(resources: Mapping, key: str, path: str) -> tuple[Any, str] | None:
    """(resources.limits[key], its path) if set, else (resources.requests[key], its path), else None."""
    for part in ("limits", "requests"):
        value = (resources.get(part) or {}).get(key)
        if value is not None:
            return value, f"{path}.resources.{part}.{key}"
    return None


def advertised_resources(resources: Mapping | None, overrides: Mapping | None = None, *,
                         path: str = "spec") -> dict[str, float | int]:
    """The shape a node in this pod offers the scheduler, from the container's Kubernetes resources.

    - "CPU": `overrides["numCpus"]` if set (0 keeps work off the node), else limits.cpu, else
      requests.cpu; fractions are kept (500m -> 0.5). Required: without it the runtime would count
      the whole machine's cores.
    - "GPU": `overrides["numGpus"]` if set, else nvidia.com/gpu (limits, else requests); present only
      when more than 0, as in the runtime's node totals.
    - "memory": the pod's memory in bytes (limits, else requests), when known: the autoscaler packs
      by it and the node advertises exactly it (TASUKI_MEMORY), so both agree on what fits. As in
      KubeRay, the whole figure: the object store's /dev/shm shares it, so size the limit for both.
    - custom resources from `overrides["tasukiResources"]` ({"ssd": 1}), as floats.

    `overrides` is the head's or the group's spec, `path` its field path (`spec.workerGroups[0]`) for
    errors (ManifestError)."""
    resources = resources or {}
    overrides = overrides or {}
    shape: dict[str, float | int] = {}
    if overrides.get("numCpus") is not None:
        shape["CPU"] = _checked(cpu_cores, overrides["numCpus"], f"{path}.numCpus")
    elif (found := _amount(resources, "cpu", path)) is not None:
        shape["CPU"] = _checked(cpu_cores, *found)
    else:
        raise ManifestError(f"{path}.resources.limits.cpu", f"no CPU amount: set resources.limits.cpu (or "
                            f"requests.cpu), or {path}.numCpus, so the node does not claim the whole machine")
    if overrides.get("numGpus") is not None:
        gpus = _checked(gpu_count, overrides["numGpus"], f"{path}.numGpus")
    elif (found := _amount(resources, GPU_RESOURCE, path)) is not None:
        gpus = _checked(gpu_count, *found)
    else:
        gpus = 0
    if gpus:
        shape["GPU"] = float(gpus)
    if (found := _amount(resources, "memory", path)) is not None:
        shape["memory"] = _checked(memory_bytes, *found)
    custom = overrides.get("tasukiResources") or {}
    if not isinstance(custom, Mapping):
        raise ManifestError(f"{path}.tasukiResources", f"must map resource names to amounts, got {custom!r}")
    for name, amount in custom.items():
        field = f"{path}.tasukiResources.{name}"
        if name in RESERVED_RESOURCES:
            raise ManifestError(field, f"{name!r} is not a custom resource: CPUs and GPUs come from resources "
                                f"(or numCpus/numGpus), memory from resources.limits.memory")
        value = _checked(parse_quantity, amount, field)
        if value < 0:
            raise ManifestError(field, f"{amount!r} is negative; give 0 or more")
        shape[str(name)] = float(value)
    return shape


def check_requests_within_limits(resources: Mapping | None, *, path: str = "spec") -> None:
    """ManifestError if a request is above its limit (the API server would refuse the Pod, later and
    less clearly), naming both fields and values."""
    resources = resources or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for key in sorted(set(requests) & set(limits)):
        request = _checked(parse_quantity, requests[key], f"{path}.resources.requests.{key}")
        limit = _checked(parse_quantity, limits[key], f"{path}.resources.limits.{key}")
        if request > limit:
            raise ManifestError(f"{path}.resources.requests.{key}", f"{requests[key]!r} is above "
                                f"{path}.resources.limits.{key} ({limits[key]!r}); Kubernetes refuses such a pod")


def object_store_bytes(cluster: Mapping, resources: Mapping | None, *, path: str = "spec") -> int:
    """The object store size for a pod with these resources: spec.objectStoreMemory if set; else
    STORE_FRACTION of the pod's memory (limits, else requests), at most what fits beside the headroom
    and the processes, at least MIN_OBJECT_STORE_BYTES; else DEFAULT_OBJECT_STORE_BYTES."""
    spec = _spec(cluster)
    if spec.get("objectStoreMemory") is not None:
        size = _checked(memory_bytes, spec["objectStoreMemory"], "spec.objectStoreMemory")
        if size < MIN_OBJECT_STORE_BYTES:
            raise ManifestError("spec.objectStoreMemory", f"{spec['objectStoreMemory']!r} is below the smallest "
                                f"object store, {format_bytes(MIN_OBJECT_STORE_BYTES)}")
        return size
    found = _amount(resources or {}, "memory", path)
    if found is None:
        return DEFAULT_OBJECT_STORE_BYTES
    memory = _checked(memory_bytes, *found)
    room = memory - SHM_HEADROOM_BYTES - PROCESS_MEMORY_BYTES
    return max(MIN_OBJECT_STORE_BYTES, min(int(memory * STORE_FRACTION), room))


def shm_size(store_bytes: int, memory_limit: int | None = None, *, store_field: str = "spec.objectStoreMemory",
             limit_field: str = "resources.limits.memory") -> int:
    """The sizeLimit of the pod's /dev/shm in bytes: the object store plus SHM_HEADROOM_BYTES.

    tmpfs pages count against the container's memory limit, so with a limit the store, the headroom
    and PROCESS_MEMORY_BYTES for the processes must fit inside it; otherwise ManifestError (field
    `limit_field`) names both fields and numbers and says what to change."""
    size = store_bytes + SHM_HEADROOM_BYTES
    need = size + PROCESS_MEMORY_BYTES
    if memory_limit is not None and need > memory_limit:
        largest = memory_limit - SHM_HEADROOM_BYTES - PROCESS_MEMORY_BYTES
        lower = (f", or lower {store_field} to at most {format_bytes(largest)}" if largest >= MIN_OBJECT_STORE_BYTES
                 else f" (it leaves no room for even the smallest object store, "
                      f"{format_bytes(MIN_OBJECT_STORE_BYTES)})")
        raise ManifestError(limit_field, f"{store_field} ({format_bytes(store_bytes)}) plus "
                            f"{format_bytes(SHM_HEADROOM_BYTES)} of /dev/shm headroom and "
                            f"{format_bytes(PROCESS_MEMORY_BYTES)} for the tasuki processes ({format_bytes(need)}) "
                            f"does not fit {limit_field} ({format_bytes(memory_limit)}): /dev/shm is memory "
                            f"counted inside the pod's limit. Raise the limit to at least {format_bytes(need)}"
                            f"{lower}")
    return size


# --- pods ----------------------------------------------------------------------------------------
def find_group(cluster: Mapping, group_name: str) -> tuple[int, Mapping]:
    """(index, spec) of the worker group named `group_name`; ManifestError if there is none."""
    groups = _spec(cluster).get("workerGroups") or []
    for index, group in enumerate(groups):
        if group.get("name") == group_name:
            return index, group
    names = ", ".join(repr(g.get("name")) for g in groups) or "none"
    raise ManifestError("spec.workerGroups", f"no worker group named {group_name!r} (the groups: {names})")


def head_pod(cluster: Mapping, pod_name: str | None = None) -> dict[str, Any]:
    """The head Pod: `tasuki start --head --block`, the runtime and HTTP ports, /healthz probes on the
    HTTP port, restartPolicy Always, Prometheus scrape annotations unless spec.metrics says not.
    `pod_name` defaults to head_pod_name(cluster), `<cluster>-head`."""
    head = _spec(cluster).get("head") or {}
    port, scrape = _metrics(cluster)
    env = [
        _value("TASUKI_PORT", str(RUNTIME_PORT)),
        _value("TASUKI_METRICS_PORT", str(port)),
        _value("TASUKI_METRICS_HOST", "0.0.0.0"),      # the kubelet's probes and the Service reach the pod IP
        _value("TASUKI_HEAD_EXPECT_RESTART", "1"),      # a head pod evicted or deleted comes back (restartPolicy
    ]                                                   # Always, or the operator): its workers wait and rejoin
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": PROBE_PERIOD_S,
             "timeoutSeconds": PROBE_TIMEOUT_S}
    container_extra = {
        "args": ["tasuki", "start", "--head", "--block"],
        "ports": [{"name": "tasuki", "containerPort": RUNTIME_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {**probe, "periodSeconds": READY_PERIOD_S, "failureThreshold": READY_FAILURES},
        "livenessProbe": {**probe, "initialDelaySeconds": LIVE_DELAY_S, "failureThreshold": LIVE_FAILURES},
    }
    annotations = ({"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
                   if scrape else {})
    return _pod(cluster, head, "spec.head", pod_name or head_pod_name(cluster), "head", HEAD_GROUP,
                env, container_extra, annotations, restart_policy="Always")


def worker_pod(cluster: Mapping, group_name: str, pod_name: str) -> dict[str, Any]:
    """A worker Pod of group `group_name`, named `pod_name` (see pod_name()): joins the head through
    its Service (`tasuki start --address $(TASUKI_ADDRESS) --block`), restartPolicy Never."""
    index, group = find_group(cluster, group_name)
    path = f"spec.workerGroups[{index}]"
    _group_name_checked(group_name, f"{path}.name")
    if group_name == HEAD_GROUP:
        raise ManifestError(f"{path}.name", f"{HEAD_GROUP!r} is the head's group label; name the group otherwise")
    container_extra = {
        "args": ["tasuki", "start", "--address", "$(TASUKI_ADDRESS)", "--block"],
        **worker_probes(),
    }
    return _pod(cluster, group, path, pod_name, "worker", group_name,
                [_value("TASUKI_ADDRESS", head_address(cluster))], container_extra, {}, restart_policy="Never")


def worker_probes() -> dict[str, dict]:
    """A worker's readinessProbe and livenessProbe: an exec probe that `tasuki start --block` has
    written its cluster file, which it does once its node agent has registered with the head.

    Why nothing remote: with restartPolicy Never a failed liveness probe ends the pod for good, so a
    probe through the head (`tasuki status`) would kill every worker while the head restarts, just
    when they should rejoin it; it would also cost the head a query per worker per period. Why no TCP
    check: the node agent listens on a port it picks itself. A node agent that dies ends the container
    anyway (`--block` exits when a child does)."""
    probe = {"exec": {"command": ["sh", "-c", WORKER_PROBE_SCRIPT]}, "periodSeconds": PROBE_PERIOD_S,
             "timeoutSeconds": PROBE_TIMEOUT_S}
    return {"readinessProbe": {**probe, "periodSeconds": READY_PERIOD_S, "failureThreshold": READY_FAILURES},
            "livenessProbe": {**probe, "initialDelaySeconds": WORKER_LIVE_DELAY_S, "failureThreshold": LIVE_FAILURES}}


def _value(name: str, value: str) -> dict:
    return {"name": name, "value": value}


def _field_ref(name: str, field_path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}}


def _runtime_env(cluster: Mapping, shape: Mapping, store: int, node_labels: Mapping) -> list[dict]:
    """The variables every node agent reads (see `tasuki start`): token, identity, resources, store, labels."""
    custom = {k: v for k, v in shape.items() if k not in RESERVED_RESOURCES}
    memory = [_value("TASUKI_MEMORY", str(int(shape["memory"])))] if "memory" in shape else []
    return [
        {"name": "TASUKI_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret_name(cluster), "key": TOKEN_KEY}}},
        _field_ref("TASUKI_NODE_NAME", "metadata.name"),
        _field_ref("TASUKI_NODE_GROUP", f"metadata.labels['{LABEL_GROUP}']"),
        _field_ref("TASUKI_NODE_IP_ADDRESS", "status.podIP"),
        _value("TASUKI_NUM_CPUS", format_number(shape["CPU"])),
        _value("TASUKI_NUM_GPUS", str(int(shape.get("GPU", 0)))),      # "0", so the runtime does not probe the host
        _value("TASUKI_RESOURCES", json.dumps(custom, sort_keys=True)),
        _value("TASUKI_OBJECT_STORE_MEMORY", str(store)),
        _value("TASUKI_DRAIN_TIMEOUT_S", str(DRAIN_TIMEOUT_S)),
        *memory,
        _value("TASUKI_LABELS", json.dumps(dict(node_labels), sort_keys=True)),
    ]


def _overrides(part: Mapping, path: str) -> tuple[list, dict, dict, list, list]:
    """The spec's env, labels, annotations, volumes and volumeMounts, refused where they would
    replace what the operator sets."""
    env = list(part.get("env") or [])
    for i, item in enumerate(env):
        if item.get("name") in OPERATOR_ENV:
            raise ManifestError(f"{path}.env[{i}].name", f"{item.get('name')} is set by the operator from the spec; "
                                f"change the spec field instead (resources, numCpus, objectStoreMemory, metrics)")
    user_labels = dict(part.get("labels") or {})
    user_annotations = dict(part.get("annotations") or {})
    for kind, keys in (("labels", user_labels), ("annotations", user_annotations)):
        for key in keys:
            if key.startswith(RESERVED_PREFIX) or key == LABEL_MANAGED_BY:
                raise ManifestError(f"{path}.{kind}.{key}", f"{key!r} is the operator's; choose another key")
    for key, value in user_labels.items():         # they become the node's labels too (TASUKI_LABELS)
        problem = key_problem(key) or value_problem(key, value)
        if problem:
            raise ManifestError(f"{path}.labels.{key}", f"{problem}; it is a pod label and the node's label")
    volumes = list(part.get("volumes") or [])
    for i, volume in enumerate(volumes):
        if volume.get("name") == SHM_VOLUME:
            raise ManifestError(f"{path}.volumes[{i}].name", f"{SHM_VOLUME!r} is the operator's /dev/shm volume; "
                                f"rename yours")
    mounts = list(part.get("volumeMounts") or [])
    for i, mount in enumerate(mounts):
        if mount.get("mountPath") == SHM_DIR:
            raise ManifestError(f"{path}.volumeMounts[{i}].mountPath", f"{SHM_DIR} holds the object store; mount "
                                f"yours elsewhere")
    return env, user_labels, user_annotations, volumes, mounts


def _pod(cluster: Mapping, part: Mapping, path: str, name: str, role: str, group: str, role_env: list,
         container_extra: dict, annotations: dict, *, restart_policy: str) -> dict[str, Any]:
    """What head and worker pods share: resources, advertised shape, /dev/shm, env, overrides."""
    spec = _spec(cluster)
    image = spec.get("image")
    if not image or not isinstance(image, str):
        raise ManifestError("spec.image", "no image: give the tasuki runtime image, e.g. tasuki/runtime:0.1.0")
    resources = dict(part.get("resources") or {})
    shape = advertised_resources(resources, part, path=path)
    check_requests_within_limits(resources, path=path)
    store = object_store_bytes(cluster, resources, path=path)
    limit_field = f"{path}.resources.limits.memory"
    limit = (resources.get("limits") or {}).get("memory")
    limit_bytes = _checked(memory_bytes, limit, limit_field) if limit is not None else None
    store_field = "spec.objectStoreMemory" if spec.get("objectStoreMemory") is not None else "the default object store"
    shm = shm_size(store, limit_bytes, store_field=store_field, limit_field=limit_field)
    user_env, user_labels, user_annotations, user_volumes, user_mounts = _overrides(part, path)

    container: dict[str, Any] = {"name": CONTAINER, "image": image}
    if spec.get("imagePullPolicy"):
        container["imagePullPolicy"] = spec["imagePullPolicy"]
    container["args"] = container_extra["args"]
    container["env"] = _runtime_env(cluster, shape, store, user_labels) + role_env + user_env
    if resources:
        container["resources"] = resources                 # as given: nvidia.com/gpu and all
    container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": SHM_DIR}, *user_mounts]
    container |= {k: v for k, v in container_extra.items() if k != "args"}

    pod_spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": format_bytes(shm)}},
                    *user_volumes],
    }
    pull_secrets = spec.get("imagePullSecrets") or []
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [dict(s) if isinstance(s, Mapping) else {"name": s} for s in pull_secrets]
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "affinity"):
        if part.get(key):
            pod_spec[key] = part[key]
    pod_labels = {**user_labels, **labels(cluster, role, group)}
    pod_annotations = {**annotations, **user_annotations}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _metadata(cluster, name, pod_labels, pod_annotations),
            "spec": pod_spec}


def check_cluster(cluster: Mapping) -> None:
    """Raise ManifestError for the first part of the spec that cannot become valid objects (names,
    image, ports, resources, /dev/shm against the memory limits, duplicate group names), for the head
    and every group. Call it before creating anything: an invalid Cluster starts nothing."""
    head_service(cluster)
    head_pod(cluster)
    seen: dict[str, int] = {}
    for index, group in enumerate(_spec(cluster).get("workerGroups") or []):
        name = _group_name_checked(group.get("name"), f"spec.workerGroups[{index}].name")
        if name in seen:
            raise ManifestError(f"spec.workerGroups[{index}].name", f"{name!r} is also the name of "
                                f"spec.workerGroups[{seen[name]}]; group names must differ")
        seen[name] = index
        worker_pod(cluster, name, pod_name(cluster, name, "check"))

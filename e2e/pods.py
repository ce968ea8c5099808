"""What a kubelet decides about a pod, as pure functions and classes over plain data: no I/O, no
clock (`now` is an argument). e2e/kubelet.py does the I/O around them (the API, docker, threads);
tests/test_images.py uses container_env() and docker_run_args() to run the operator's pods.

- IpAllocator: a stable 127.x.y.z pod IP per (namespace, name).
- container_env(), docker_run_args(): a Pod (one container) -> its environment (env, envFrom,
  Secrets, ConfigMaps, the downward API, resourceFieldRef) and `docker run` options and arguments
  (command/args with $(VAR) expanded, limits, /dev/shm, emptyDirs, user). A pod that cannot become
  a container is a ContainerConfigError with Kubernetes' reason. bind_to_pod_ip(): "0.0.0.0" in
  the env becomes the pod IP (all pods share the host's network).
- container_state(), pod_status(), restart_after_exit(), backoff_s(): docker's state -> the pod's
  status (phase, conditions, containerStatuses); what an exit leads to under the restartPolicy.
- Probe: one probe's bookkeeping (due when, ready or failed after which results).
- service_addresses(), hosts_text(), resolve_name(): Service names -> the selected pod's IP, as
  hosts-file lines and lookups.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from tasuki_operator.quantity import cpu_cores, memory_bytes, parse_quantity

Obj = dict[str, Any]

HOST_IP = "127.0.0.1"                     # status.hostIP: the node's address
BACKOFF_BASE_S, BACKOFF_MAX_S = 0.5, 10.0    # restart backoff: 0.5 s doubling, at most 10 s
PROBE_DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1,
                  "failureThreshold": 3}
HOSTS_BEGIN, HOSTS_END = "# --- Service names (e2e kubelet) ---", "# --- end of Service names ---"


class ContainerConfigError(Exception):
    """A pod that cannot be turned into a container yet: `reason` as Kubernetes names it
    (CreateContainerConfigError, ErrImageNeverPull, ...), `message` for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def timestamp(now: float) -> str:
    """A Kubernetes timestamp (RFC 3339, seconds, UTC) for the epoch time `now`."""
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- pod IPs ---------------------------------------------------------------------------------------
class IpAllocator:
    """Pod IPs under `prefix` ("127.21" or "127.21.5"): one per (namespace, name), the same again for
    a pod recreated under the same name; never .0 or .255 in the last byte."""

    def __init__(self, prefix: str):
        octets = prefix.split(".")
        if not (1 <= len(octets) <= 3 and octets[0] == "127" and all(o.isdigit() and int(o) < 256 for o in octets)):
            raise ValueError(f"ip_prefix {prefix!r} is not a loopback prefix such as '127.21' or '127.21.5'")
        self.prefix, self.free_octets = prefix, 4 - len(octets)
        self.assigned: dict[tuple[str, str], str] = {}

    def ip_for(self, namespace: str, name: str) -> str:
        key = (namespace, name)
        if key not in self.assigned:
            n = len(self.assigned)                        # the n-th address: last byte 1..254
            last, rest = n % 254 + 1, n // 254
            higher = [(rest >> (8 * i)) & 255 for i in reversed(range(self.free_octets - 1))]
            if rest >> (8 * (self.free_octets - 1)):
                raise ValueError(f"no pod IP left under {self.prefix} for pod {namespace}/{name}")
            self.assigned[key] = ".".join([self.prefix, *map(str, higher), str(last)])
        return self.assigned[key]


# --- pod -> container --------------------------------------------------------------------------------
def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, an undefined one stays as written,
    and $$ is a literal $ ("$$(VAR)" -> "$(VAR)")."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def the_container(pod: Mapping) -> Obj:
    """The pod's one container; a ContainerConfigError for init containers or more than one."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    where = f"pod {pod['metadata'].get('namespace')}/{pod['metadata']['name']}"
    if spec.get("initContainers"):
        raise ContainerConfigError("CreateContainerConfigError", f"{where} has initContainers; the e2e kubelet "
                                   f"runs one container per pod and no init containers")
    if len(containers) != 1:
        names = [c.get("name") for c in containers]
        raise ContainerConfigError("CreateContainerConfigError", f"{where} has {len(containers)} containers "
                                   f"{names}; the e2e kubelet runs exactly one container per pod")
    return containers[0]


def references(pod: Mapping) -> set[tuple[str, str]]:
    """The ("Secret"|"ConfigMap", name) objects the container's env and envFrom read."""
    container = the_container(pod)
    out = set()
    for item in container.get("envFrom") or []:
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key in item:
                out.add((kind, item[key]["name"]))
    for item in container.get("env") or []:
        source = item.get("valueFrom") or {}
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in source:
                out.add((kind, source[key]["name"]))
    return out


def field_value(pod: Mapping, path: str, pod_ip: str, host_ip: str = HOST_IP) -> str:
    """A downward-API fieldRef's value."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", ""), "status.podIP": pod_ip, "status.hostIP": host_ip,
              "spec.nodeName": spec.get("nodeName", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", "default")}
    if path not in simple:
        raise ContainerConfigError("CreateContainerConfigError", f"fieldRef {path!r} is not one the e2e kubelet "
                                   f"knows ({', '.join(sorted(simple))}, metadata.labels['k'], "
                                   f"metadata.annotations['k'])")
    return simple[path]


def resource_value(container: Mapping, ref: Mapping, node_cpus: float, node_memory: int) -> str:
    """A resourceFieldRef's value: the limit (the node's capacity without one) or request, divided by
    the divisor and rounded up, as Kubernetes does."""
    kind, _, what = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    amount = (resources.get(kind) or {}).get(what)
    if amount is None and kind == "requests":
        amount = (resources.get("limits") or {}).get(what)
    if what == "cpu":
        value = cpu_cores(amount) if amount is not None else node_cpus
    elif what in ("memory", "ephemeral-storage"):
        value = memory_bytes(amount) if amount is not None else node_memory
    else:
        value = float(parse_quantity(amount or 0))
    divisor = float(parse_quantity(ref.get("divisor") or 1))
    return str(math.ceil(value / divisor))


def container_env(pod: Mapping, *, pod_ip: str, objects: Mapping[tuple[str, str], Mapping[str, str] | None],
                  host_ip: str = HOST_IP, node_cpus: float = 1.0, node_memory: int = 1 << 30) -> dict[str, str]:
    """The container's environment, in Kubernetes' order (envFrom, then env, each `value` expanded
    with the variables before it). `objects` maps ("Secret"|"ConfigMap", name) to its decoded data,
    None for one that does not exist. A missing object or key not marked optional is a
    ContainerConfigError (CreateContainerConfigError, as in Kubernetes)."""
    container = the_container(pod)
    ns = pod["metadata"].get("namespace", "")

    def data(kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        found = objects.get((kind, name))
        if found is None and not optional:
            raise ContainerConfigError("CreateContainerConfigError", f'{kind.lower()} "{name}" not found in '
                                       f"namespace {ns}: create it, or mark the reference optional")
        return found

    env: dict[str, str] = {}
    for item in container.get("envFrom") or []:
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key in item:
                found = data(kind, item[key]["name"], bool(item[key].get("optional")))
                env |= {item.get("prefix", "") + k: v for k, v in (found or {}).items()}
    for item in container.get("env") or []:
        name, source = item["name"], item.get("valueFrom")
        if source is None:
            env[name] = expand(item.get("value", ""), env)
        elif "fieldRef" in source:
            env[name] = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            env[name] = resource_value(container, source["resourceFieldRef"], node_cpus, node_memory)
        else:
            kind, key = ("Secret", "secretKeyRef") if "secretKeyRef" in source else ("ConfigMap", "configMapKeyRef")
            ref = source[key]
            found = data(kind, ref["name"], bool(ref.get("optional")))
            if found is not None and ref["key"] in found:
                env[name] = found[ref["key"]]
            elif not ref.get("optional"):
                raise ContainerConfigError("CreateContainerConfigError", f"couldn't find key {ref['key']} in "
                                           f"{kind} {ns}/{ref['name']} (for env {name})")
    return env


def bind_to_pod_ip(env: Mapping[str, str], pod_ip: str) -> dict[str, str]:
    """`env` with every value "0.0.0.0" replaced by the pod IP. In a pod's own network namespace
    "all addresses" means the pod's; under `docker run --network host` it would mean every address of
    the machine, so a head listening on 0.0.0.0:8080 (TASUKI_METRICS_HOST) would take port 8080 from
    every other pod, and another pod's probes would reach it."""
    return {key: pod_ip if value == "0.0.0.0" else value for key, value in env.items()}


def docker_run_args(pod: Mapping, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(`docker run` options, the arguments after the image) for the pod's container with the
    environment `env` (container_env()): --network host, the env, --entrypoint and arguments from
    command/args with $(VAR) expanded, --cpus and --memory (= --memory-swap) from the limits
    (nvidia.com/gpu is not passed: no GPU here; the operator hands the count to `tasuki start`),
    --shm-size from a Memory emptyDir at /dev/shm, --tmpfs for other Memory emptyDirs and an
    anonymous volume for disk ones, --user from the securityContext. Names and labels are the caller's."""
    container = the_container(pod)
    spec = pod.get("spec") or {}
    options = ["--network", "host"]
    limits = (container.get("resources") or {}).get("limits") or {}
    if "cpu" in limits:
        options += ["--cpus", f"{cpu_cores(limits['cpu']):g}"]
    if "memory" in limits:
        memory = str(memory_bytes(limits["memory"]))
        options += ["--memory", memory, "--memory-swap", memory]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"]) or {}
        if "emptyDir" not in volume:
            raise ContainerConfigError("CreateContainerConfigError", f"volume {mount['name']!r} is not an emptyDir;"
                                       f" the e2e kubelet mounts emptyDir volumes only")
        empty_dir, path = volume["emptyDir"] or {}, mount["mountPath"]
        size = empty_dir.get("sizeLimit")
        if empty_dir.get("medium") == "Memory" and path == "/dev/shm":
            if size:
                options += ["--shm-size", str(memory_bytes(size))]
        elif empty_dir.get("medium") == "Memory":
            options += ["--tmpfs", f"{path}:size={memory_bytes(size)}" if size else path]
        else:
            options += ["--volume", path]
    security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    if security.get("runAsUser") is not None:
        group = security.get("runAsGroup")
        options += ["--user", f"{security['runAsUser']}" + (f":{group}" if group is not None else "")]
    if container.get("workingDir"):
        options += ["--workdir", container["workingDir"]]
    command = [expand(word, env) for word in container.get("command") or []]
    args = [expand(word, env) for word in container.get("args") or []]
    if command:                               # `command` replaces the image's ENTRYPOINT, `args` its CMD
        options += ["--entrypoint", command[0]]
        args = command[1:] + args
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    return options, args


# --- container state -> pod status ---------------------------------------------------------------------
def _docker_time(text: str) -> str:
    """Docker's "2026-12-03T08:48:09.123456789Z" as a Kubernetes timestamp."""
    return text[:19] + "Z"


def container_state(docker_state: Mapping) -> Obj:
    """A Kubernetes container state ({running: ...} or {terminated: ...} or {waiting: ...}) from
    docker inspect's .State."""
    status = docker_state.get("Status")
    if status in ("running", "paused", "restarting") or docker_state.get("Running"):
        return {"running": {"startedAt": _docker_time(docker_state["StartedAt"])}}
    if status in ("exited", "dead"):
        code = int(docker_state.get("ExitCode", 0))
        reason = "OOMKilled" if docker_state.get("OOMKilled") else "Completed" if code == 0 else "Error"
        out = {"exitCode": code, "reason": reason, "startedAt": _docker_time(docker_state["StartedAt"]),
               "finishedAt": _docker_time(docker_state["FinishedAt"])}
        if docker_state.get("Error"):
            out["message"] = docker_state["Error"]
        return {"terminated": out}
    return {"waiting": {"reason": "ContainerCreating"}}


def restart_after_exit(restart_policy: str, exit_code: int) -> str:
    """What an exited container becomes: "restart", or the pod's final phase "Succeeded"/"Failed"."""
    if restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0):
        return "restart"
    return "Succeeded" if exit_code == 0 else "Failed"


def backoff_s(restart_count: int) -> float:
    """How long an exited container waits before its next start (Kubernetes: 10 s doubling to 5 min;
    shorter here, for tests that kill containers)."""
    return min(BACKOFF_BASE_S * 2 ** restart_count, BACKOFF_MAX_S)


@dataclasses.dataclass
class PodRecord:
    """What the kubelet knows of one pod's container, from which pod_status() writes its status."""
    ip: str
    image: str = ""
    container_name: str = "main"
    state: Obj = dataclasses.field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = dataclasses.field(default_factory=dict)
    restart_count: int = 0
    started: bool = False
    ready: bool = False
    phase: str = "Pending"                  # Pending until the first start, then Running, Succeeded or Failed
    start_time: str | None = None


def pod_status(record: PodRecord, previous: Mapping | None, now: float) -> Obj:
    """The pod's status from the record; a condition's lastTransitionTime is kept from `previous`
    (the pod's current status) while its status stays the same."""
    earlier = {c["type"]: c for c in (previous or {}).get("conditions") or []}
    at = timestamp(now)

    def condition(kind: str, true: bool, reason: str = "") -> Obj:
        status = "True" if true else "False"
        before = earlier.get(kind)
        since = before["lastTransitionTime"] if before and before.get("status") == status else at
        out = {"type": kind, "status": status, "lastTransitionTime": since}
        if reason and not true:
            out["reason"] = reason
        return out
    ready = record.ready and "running" in record.state
    container = {"name": record.container_name, "image": record.image, "imageID": "", "ready": ready,
                 "started": record.started and "running" in record.state, "restartCount": record.restart_count,
                 "state": record.state, "lastState": record.last_state}
    status = {"phase": record.phase, "podIP": record.ip, "podIPs": [{"ip": record.ip}], "hostIP": HOST_IP,
              "hostIPs": [{"ip": HOST_IP}],
              "conditions": [condition("PodScheduled", True), condition("Initialized", True),
                             condition("ContainersReady", ready, "ContainersNotReady"),
                             condition("Ready", ready, "ContainersNotReady")],
              "containerStatuses": [container]}
    if record.start_time:
        status["startTime"] = record.start_time
    return status


# --- probes ----------------------------------------------------------------------------------------------
class Probe:
    """One probe's bookkeeping (kind "startup", "readiness" or "liveness") for one run of a container
    started at `since`: when it is due, and what its results so far mean. Running it is the caller's.

    readiness: `ok` False until successThreshold successes in a row, False again after
    failureThreshold failures in a row. liveness and startup: `failed` after failureThreshold
    failures in a row (the container is then restarted); startup: `ok` after one success (the other
    probes wait for it)."""

    def __init__(self, kind: str, spec: Mapping, since: float):
        self.kind, self.since = kind, since
        self.spec = {**PROBE_DEFAULTS, **{k: v for k, v in spec.items() if k in PROBE_DEFAULTS}}
        self.action = spec
        self.successes = self.failures = 0
        self.last: float | None = None
        self.ok = kind == "liveness"
        self.failed = False

    def next_at(self) -> float:
        if self.last is None:
            return self.since + self.spec["initialDelaySeconds"]
        return self.last + self.spec["periodSeconds"]

    def done(self) -> bool:
        """No more runs in this container's life: it failed, or it is a startup probe that succeeded."""
        return self.failed or (self.kind == "startup" and self.ok)

    def due(self, now: float) -> bool:
        return not self.done() and now >= self.next_at()

    def record(self, success: bool, now: float) -> None:
        self.last = now
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= (1 if self.kind != "readiness" else self.spec["successThreshold"]):
                self.ok = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.spec["failureThreshold"]:
                self.ok = False
                self.failed = self.kind != "readiness"      # readiness only takes the pod out of Ready


def probes_for(container: Mapping, since: float) -> dict[str, Probe]:
    return {kind: Probe(kind, container[f"{kind}Probe"], since)
            for kind in ("startup", "readiness", "liveness") if container.get(f"{kind}Probe")}


def probe_port(container: Mapping, port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"the probe's port {port!r} is not a port name of container {container.get('name')!r}")


# --- Service names -----------------------------------------------------------------------------------------
def service_addresses(services: list[Mapping], pods: list[Mapping], ips: Mapping[tuple[str, str], str],
                      known: Mapping[tuple[str, str], str] | None = None) -> dict[tuple[str, str], str]:
    """(namespace, service) -> the IP of the pod its selector picks: a ready pod first, then any not
    terminating and not finished, by name. A Service with no such pod keeps its `known` address."""
    out = {}
    for service in services:
        meta, selector = service["metadata"], (service.get("spec") or {}).get("selector") or {}
        ns = meta.get("namespace", "")
        candidates = []
        for pod in pods:
            pm = pod["metadata"]
            labels = pm.get("labels") or {}
            phase = (pod.get("status") or {}).get("phase")
            if (pm.get("namespace", "") != ns or not selector or pm.get("deletionTimestamp")
                    or phase in ("Succeeded", "Failed") or (ns, pm["name"]) not in ips
                    or any(labels.get(k) != v for k, v in selector.items())):
                continue
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            candidates.append((not ready, pm["name"]))
        key = (ns, meta["name"])
        if candidates:
            out[key] = ips[(ns, min(candidates)[1])]
        elif known and key in known:
            out[key] = known[key]
    return out


def host_names(namespace: str, service: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def hosts_text(base: str, addresses: Mapping[tuple[str, str], str], namespaces: set[str] | None = None) -> str:
    """`base` (a hosts file) with its block of Service names replaced by those of `addresses` (of
    `namespaces`, all when None): one line per Service, its IP and its four names."""
    begin = base.find(HOSTS_BEGIN)
    if begin >= 0:
        end = base.find(HOSTS_END, begin)
        base = base[:begin] + (base[end + len(HOSTS_END):].lstrip("\n") if end >= 0 else "")
    lines = [f"{ip}\t{' '.join(host_names(ns, svc))}" for (ns, svc), ip in sorted(addresses.items())
             if namespaces is None or ns in namespaces]
    if base and not base.endswith("\n"):
        base += "\n"
    return base + "\n".join([HOSTS_BEGIN, *lines, HOSTS_END]) + "\n"


def resolve_name(host: str, addresses: Mapping[tuple[str, str], str]) -> str | None:
    """A Service DNS name (svc.ns, svc.ns.svc, svc.ns.svc.cluster.local, or a bare svc when only one
    namespace has it) -> its IP."""
    parts = host.rstrip(".").split(".")
    if parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]) and len(parts) >= 2:
        return addresses.get((parts[1], parts[0]))
    if len(parts) == 1:
        found = {ip for (_, svc), ip in addresses.items() if svc == parts[0]}
        return found.pop() if len(found) == 1 else None
    return None

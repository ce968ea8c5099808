"""The local target's kubelet (and scheduler): runs the Pods of some namespaces as Docker containers.

Who calls it: the e2e suite's local platform (tests/test_images.py uses only e2e/pods.py). It
plays one node against a Kubernetes API (the emulation of tests/kube_emulator.py, or any API server
that speaks the same JSON), as a real kubelet does for the pods the tasuki operator builds:

    API watch (pods, services) --> main thread --> one PodWorker thread per pod (uid)
                                       |              |  docker run/start/stop/rm/exec, probes,
    docker events (our label) ---------+--> wakes --> |  PATCH pods/NAME/status, final DELETE
                                       |
                                       +--> hosts files (Service names -> the selected pod's IP)

- Scheduling: a pod of a watched namespace without spec.nodeName gets ours (a patch), then runs.
  One container per pod, no init containers: a pod with more is refused with a message in its
  status (the operator builds none).
- Pod IP: a 127.x.y.z address of its own per (namespace, name), stable for this Kubelet's life: a
  head pod deleted and recreated under the same name gets the same address, so workers find it
  again. Containers run with `--network host`; a process binds its pod IP (TASUKI_NODE_IP_ADDRESS
  from status.podIP does that for tasuki).
- Service names resolve through /etc/hosts: docker's hosts file of each container (.HostsPath,
  rewritten in place: it is bind-mounted) gets `svc`, `svc.ns`, `svc.ns.svc` and
  `svc.ns.svc.cluster.local` of every Service of its namespace, mapped to the IP of the pod the
  selector picks (a ready one first). A Service whose pod is gone keeps its last address, as a
  ClusterIP resolves with no endpoints; ports are the pod's own (a Service's `port` must equal the
  container port, as the operator's do: there is no kube-proxy to translate).
- Status comes from the container's real state (docker events wake a pod's worker; docker inspect
  reads the state): phase, conditions, containerStatuses, restartCount; probes (exec, httpGet,
  tcpSocket) as Kubernetes runs them; restartPolicy decides what an exited container becomes (a
  restart is `docker start` of the same container after a backoff; a failed liveness or startup
  probe stops it first).
- Deletion: the API sets deletionTimestamp (graceful deletion); the worker runs `docker stop --time
  <deletionGracePeriodSeconds>` (SIGTERM, SIGKILL after the grace period), removes the container,
  then sends DELETE with gracePeriodSeconds=0, which removes the pod.

Not done: a Node object, kube-proxy (see above), image pulls (imagePullPolicy is ignored: images
are local), volumes other than emptyDir, CPU requests as shares, pod IPs that outlive the Kubelet.

The decisions are pure, in e2e/pods.py (pod -> container, docker state -> status, probes, Service
names), tested without Docker; this module is the I/O around them: HTTP to the API, the docker CLI,
threads.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from .pods import (ContainerConfigError, IpAllocator, Obj, PodRecord, Probe, backoff_s, bind_to_pod_ip,
                   container_env,
                   container_state, docker_run_args, host_names, hosts_text, pod_status, probe_port, probes_for,
                   references, resolve_name, restart_after_exit, service_addresses, the_container, timestamp)

__all__ = ["Kubelet", "PodWorker", "docker", "docker_problem", "SETUP_HINT"]

DOCKER_TIMEOUT_S = 120                    # one docker command on a loaded machine
API_TIMEOUT_S = 30                        # one API request
WATCH_TIMEOUT_S = 30                      # a watch is reopened after this (from the last resourceVersion)
DOCKER_EXEC_SLACK_S = 2.0                 # added to an exec probe's timeoutSeconds: `docker exec` itself is slow when loaded
POLL_S = 2.0                              # a worker re-reads its container's state at least this often
EXIT_LOG_LINES = 5                        # lines of a failed container's output in log()
CONFIG_RETRY_S = 1.0                      # a pod waiting on a missing Secret/ConfigMap/image retries this often
SETUP_HINT = ("run `.ci/setup-docker.sh` as root: it installs docker.io, starts dockerd without a bridge or "
              "iptables rules and makes the base image tasuki-base:bookworm")


# --- I/O: docker and the API --------------------------------------------------------------------------------
def docker(*args: str, check: bool = True, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess:
    """One docker command; a RuntimeError naming it and its output when it fails and `check`."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`docker {' '.join(args)}` exited with {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def docker_problem() -> str | None:
    """Why Docker cannot run pods here (with what to do), or None when `docker info` answers."""
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    except FileNotFoundError:
        return f"there is no `docker` command: {SETUP_HINT}"
    if info.returncode != 0:
        return f"Docker is not answering (`docker info`: {(info.stderr or info.stdout).strip()[:300]}): {SETUP_HINT}"
    return None


class PodWorker(threading.Thread):
    """Owns one pod (one uid) from scheduling to the final DELETE: its container, probes and status.
    The Kubelet's main thread hands it the pod's latest version (update()) and wakes it; docker
    events wake it too."""

    def __init__(self, kubelet: "Kubelet", pod: Obj):
        meta = pod["metadata"]
        super().__init__(name=f"kubelet-pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet, self.pod = kubelet, pod
        self.ns, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.wake = threading.Event()
        self.gone = False                       # the API removed the pod (a DELETED event)
        self.cid: str | None = None             # the docker container's id, once created
        self.record = PodRecord(ip=kubelet.allocator.ip_for(self.ns, self.pod_name))
        self.probes: dict[str, Probe] = {}
        self.next_start = 0.0
        self.published: Obj | None = None
        self.hosts_path, self.added_names = "", set()

    def update(self, pod: Obj | None) -> None:
        if pod is None:
            self.gone = True
        else:
            self.pod = pod
        self.wake.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:                  # noqa: BLE001 - said in the log, then the pod is left as it is
            self.kubelet.note(f"{self.ns}/{self.pod_name}: the worker failed: {type(e).__name__}: {e}")
            if self.cid and not self.gone:
                docker("rm", "--force", self.cid, check=False)

    def _run(self) -> None:
        k = self.kubelet
        if not (self.pod.get("spec") or {}).get("nodeName"):
            self.pod = k.api("PATCH", k.pod_path(self.ns, self.pod_name), {"spec": {"nodeName": k.node_name}})
            k.note(f"{self.ns}/{self.pod_name}: scheduled to {k.node_name}, pod IP {self.record.ip}")
        try:
            container = the_container(self.pod)
            self.record.container_name, self.record.image = container["name"], container.get("image", "")
        except ContainerConfigError as e:
            self._waiting(e.reason, e.message)
        self._publish()                           # Pending, with its pod IP
        while not k.stopping.is_set():
            pod = self.pod
            if self.gone or pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            now = time.time()
            timeout = POLL_S
            if self.record.phase in ("Succeeded", "Failed"):
                timeout = None
            elif self.cid is None or "terminated" in self.record.state and self.next_start:
                if now >= self.next_start:
                    self._start(pod)
                    continue
                timeout = self.next_start - now
            else:
                self._observe(pod, now)
                if "terminated" in self.record.state:
                    continue                      # the branches above wait for the restart or for deletion
                due = [p.next_at() for kind, p in self.probes.items()      # only those _observe() would run
                       if not p.done() and (kind == "startup" or self.record.started)]
                if due:
                    timeout = max(0.0, min([timeout, *(t - time.time() for t in due)]))
            self._publish()
            self.wake.wait(timeout)
            self.wake.clear()

    def _waiting(self, reason: str, message: str) -> None:
        if self.record.state.get("waiting", {}).get("reason") != reason:
            self.kubelet.note(f"{self.ns}/{self.pod_name}: {reason}: {message}")
        self.record.state = {"waiting": {"reason": reason, "message": message}}
        self.next_start = time.time() + CONFIG_RETRY_S
        self._publish()

    def _start(self, pod: Obj) -> None:
        """Create and start the container (first start), or start it again (a restart)."""
        k = self.kubelet
        if self.cid is not None:              # a restart of the exited container: same id, hosts file, labels
            self.record.last_state = self.record.state
            self.record.restart_count += 1
            docker("start", self.cid)
            k.add_hosts_file(self.ns, self.hosts_path, self.added_names)    # docker rewrites it at a start
            k.note(f"{self.ns}/{self.pod_name}: container restarted (restartCount {self.record.restart_count})")
            self._after_start()
            return
        try:
            container = the_container(pod)
            objects = {ref: k.read_data(self.ns, *ref) for ref in references(pod)}
            env = container_env(pod, pod_ip=self.record.ip, objects=objects, node_cpus=float(os.cpu_count() or 1),
                                node_memory=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
            options, arguments = docker_run_args(pod, bind_to_pod_ip(env, self.record.ip))
            image = container.get("image", "")
            if docker("image", "inspect", image, check=False).returncode != 0:
                raise ContainerConfigError("ErrImageNeverPull", f"image {image!r} is not on this machine and no "
                                           f"image can be pulled here: build it (docker/build.sh) or use a local one")
        except ContainerConfigError as e:
            self._waiting(e.reason, e.message)
            return
        name = f"{k.label}-{self.ns}-{self.pod_name}-{self.uid[:8]}"
        labels = {k.label: str(os.getpid()), f"{k.label}.instance": k.instance, f"{k.label}.namespace": self.ns,
                  f"{k.label}.pod": self.pod_name, f"{k.label}.uid": self.uid}
        label_args = [a for key, value in labels.items() for a in ("--label", f"{key}={value}")]
        with k.lock:                          # the names as of now, in the hosts file from the first instant
            names = {host: ip for (ns, svc), ip in k.addresses.items() if ns == self.ns for host in host_names(ns, svc)}
        add_hosts = [a for host, ip in names.items() for a in ("--add-host", f"{host}:{ip}")]
        proc = docker("run", "--detach", "--name", name, *label_args, *add_hosts, *options, image, *arguments,
                      check=False)
        if proc.returncode != 0:
            docker("rm", "--force", name, check=False)
            self._waiting("RunContainerError", (proc.stderr or proc.stdout).strip()[:500])
            return
        self.cid = proc.stdout.strip()
        with k.lock:
            k.containers[(self.ns, self.pod_name)] = self
        self.hosts_path = json.loads(docker("inspect", "--format", "{{json .HostsPath}}", self.cid).stdout)
        self.added_names = set(names)
        k.add_hosts_file(self.ns, self.hosts_path, self.added_names)
        k.note(f"{self.ns}/{self.pod_name}: container {name} started ({image} {' '.join(arguments)})")
        self.record.phase = "Running"
        self.record.start_time = self.record.start_time or timestamp(time.time())
        self._after_start()

    def _after_start(self) -> None:
        self.next_start = 0.0
        self.probes = probes_for(the_container(self.pod), time.time())
        self.record.started = "startup" not in self.probes
        self.record.ready = "readiness" not in self.probes
        self._observe(self.pod, time.time())

    def _observe(self, pod: Obj, now: float) -> None:
        """Read the container's state; run the probes that are due; decide what an exit means."""
        state = json.loads(docker("inspect", "--format", "{{json .State}}", self.cid).stdout)
        was_running = "running" in self.record.state
        self.record.state = container_state(state)
        if "terminated" in self.record.state:
            if was_running or not self.next_start:
                self._exited(pod)
            return
        for kind in ("startup", "liveness", "readiness"):
            probe = self.probes.get(kind)
            if probe is None or (kind != "startup" and not self.record.started) or not probe.due(time.time()):
                continue
            success = self.kubelet.run_probe(self, probe)
            probe.record(success, time.time())
            self.kubelet.note(f"{self.ns}/{self.pod_name}: {kind} probe {'succeeded' if success else 'failed'}",
                              quiet=success and probe.successes > 1)
            if kind == "startup" and probe.ok:
                self.record.started = True
            if kind == "readiness":
                self.record.ready = probe.ok
            if probe.failed:
                grace = int((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
                self.kubelet.note(f"{self.ns}/{self.pod_name}: {kind} probe failed {probe.failures} times: "
                                  f"stopping the container")
                docker("stop", "--time", str(grace), self.cid, timeout=grace + DOCKER_TIMEOUT_S)
                self.wake.set()
                return

    def _exited(self, pod: Obj) -> None:
        terminated = self.record.state["terminated"]
        policy = (pod.get("spec") or {}).get("restartPolicy", "Always")
        decision = restart_after_exit(policy, terminated["exitCode"])
        tail = docker("logs", "--tail", str(EXIT_LOG_LINES), self.cid, check=False)
        output = "\n    ".join((tail.stdout + tail.stderr).strip().splitlines()[-EXIT_LOG_LINES:])
        self.kubelet.note(f"{self.ns}/{self.pod_name}: container exited with {terminated['exitCode']} "
                          f"({terminated['reason']}); restartPolicy {policy}: {decision}"
                          + (f"; its last output:\n    {output}" if output and terminated["exitCode"] else ""))
        self.record.ready = False
        if decision == "restart":
            self.next_start = time.time() + backoff_s(self.record.restart_count)
        else:
            self.record.phase = decision

    def _terminate(self, pod: Obj) -> None:
        """The pod is being deleted: stop the container within the grace period, remove it, then
        remove the pod (DELETE with gracePeriodSeconds=0)."""
        k = self.kubelet
        grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        if self.cid:
            if not self.gone:
                k.note(f"{self.ns}/{self.pod_name}: deleting: docker stop --time {grace} (SIGTERM, then SIGKILL)")
                docker("stop", "--time", str(grace), self.cid, check=False, timeout=grace + DOCKER_TIMEOUT_S)
                state = json.loads(docker("inspect", "--format", "{{json .State}}", self.cid).stdout)
                self.record.state, self.record.ready = container_state(state), False
                if "terminated" in self.record.state:
                    k.note(f"{self.ns}/{self.pod_name}: stopped with exit code "
                           f"{self.record.state['terminated']['exitCode']}")
                self._publish()
            docker("rm", "--force", "--volumes", self.cid, check=False)
        k.forget(self)
        if not self.gone:
            try:
                k.api("DELETE", k.pod_path(self.ns, self.pod_name), {"gracePeriodSeconds": 0,
                                                                      "preconditions": {"uid": self.uid}})
            except urllib.error.HTTPError as e:
                if e.code not in (404, 409):          # gone already, or a new pod under the same name
                    raise
        k.note(f"{self.ns}/{self.pod_name}: deleted")

    def _publish(self) -> None:
        status = pod_status(self.record, self.published or self.pod.get("status"), time.time())
        if status == self.published or self.gone:
            return
        k = self.kubelet
        try:
            k.api("PATCH", k.pod_path(self.ns, self.pod_name) + "/status", {"status": status})
            self.published = status
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise


class Kubelet:
    """Plays kubelet (and scheduler) for one node against a Kubernetes API (the emulation's URL): runs each
    Pod of `namespaces` as a Docker container (--network host, the pod IP a 127.x.y.z address of its own).

    Containers carry the label `label`=<this process's pid> (start() removes those of dead processes),
    and `<label>.instance`, `.namespace`, `.pod`, `.uid`. `hosts_file`, when given, gets the Service
    names of every watched namespace, rewritten in place like the containers' own hosts files."""

    def __init__(self, api_url: str, namespaces: list[str], *, ip_prefix: str = "127.21", node_name: str = "e2e-node",
                 label: str = "tasuki-e2e", hosts_file: str | os.PathLike | None = None) -> None:
        self.api_url, self.namespaces, self.node_name, self.label = api_url.rstrip("/"), list(namespaces), node_name, label
        self.hosts_file = os.fspath(hosts_file) if hosts_file else None
        self.allocator = IpAllocator(ip_prefix)
        self.instance = uuid.uuid4().hex[:12]
        self.stopping = threading.Event()
        self.lock = threading.Lock()                 # guards what follows (the main thread and the workers)
        self.workers: dict[str, PodWorker] = {}      # by pod uid
        self.containers: dict[tuple[str, str], PodWorker] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self.services: dict[tuple[str, str], Obj] = {}
        self.addresses: dict[tuple[str, str], str] = {}
        self.hosts_files: dict[str, tuple[str, str]] = {}    # path -> (namespace, its original text)
        self._log: list[str] = []
        self._events: "list[tuple[str, str, Any]]" = []
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._docker_events: subprocess.Popen | None = None

    # --- public ---
    def start(self) -> "Kubelet":
        """Check Docker, remove leftovers of dead runs, then watch pods and services in the background."""
        if problem := docker_problem():
            raise RuntimeError(f"the e2e kubelet cannot run pods: {problem}")
        listed = docker("ps", "--all", "--filter", f"label={self.label}",
                        "--format", f'{{{{.ID}}}} {{{{.Label "{self.label}"}}}}').stdout.split()
        stale = [cid for cid, pid in zip(listed[::2], listed[1::2]) if not os.path.exists(f"/proc/{pid}")]
        if stale:
            docker("rm", "--force", "--volumes", *stale, check=False)
        if self.hosts_file:
            self.hosts_files[self.hosts_file] = ("", open(self.hosts_file).read() if os.path.exists(self.hosts_file)
                                                 else "127.0.0.1\tlocalhost\n")
            self._write_hosts()
        self._docker_events = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
             "--filter", f"label={self.label}.instance={self.instance}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
        targets = [(self._follow_docker, ())] + [(self._watch, (plural, ns)) for ns in self.namespaces
                                                  for plural in ("pods", "services")]
        targets.append((self._main, ()))
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True, name=f"kubelet-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        self.note(f"started: node {self.node_name}, namespaces {self.namespaces}, pod IPs {self.allocator.prefix}.*")
        return self

    def stop(self) -> None:
        """Stop the threads and remove every container this Kubelet started (docker rm -f)."""
        self.stopping.set()
        self._wake.set()
        for worker in list(self.workers.values()):
            worker.wake.set()
        if self._docker_events:
            self._docker_events.kill()
            self._docker_events.wait()
        for worker in list(self.workers.values()):
            worker.join(10)
        ids = docker("ps", "--all", "--quiet", "--filter", f"label={self.label}.instance={self.instance}",
                     check=False).stdout.split()
        if ids:
            docker("rm", "--force", "--volumes", *ids, check=False)
        self.note(f"stopped: {len(ids)} containers removed")

    def pod_ip(self, namespace: str, name: str) -> str | None:
        with self.lock:
            return self.allocator.assigned.get((namespace, name))

    def container(self, namespace: str, name: str) -> str | None:
        with self.lock:
            worker = self.containers.get((namespace, name))
        return worker.cid if worker else None

    def kill_container(self, namespace: str, name: str, signal: str = "KILL") -> None:
        """`docker kill`: the pod's restartPolicy decides what follows."""
        cid = self.container(namespace, name)
        if cid is None:
            raise LookupError(f"pod {namespace}/{name} has no container on node {self.node_name}")
        docker("kill", "--signal", signal, cid)
        self.note(f"{namespace}/{name}: container killed with SIG{signal.upper().removeprefix('SIG')}")

    def resolve(self, host: str) -> str | None:
        with self.lock:
            return resolve_name(host, self.addresses)

    def log(self) -> list[str]:
        with self.lock:
            return list(self._log)

    # --- for the workers ---
    def note(self, message: str, quiet: bool = False) -> None:
        if quiet:
            return
        now = time.time()
        line = f"{time.strftime('%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d} {message}"
        with self.lock:
            self._log.append(line)

    def pod_path(self, namespace: str, name: str) -> str:
        return f"/api/v1/namespaces/{namespace}/pods/{name}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        request = urllib.request.Request(self.api_url + path, method=method, headers={"Content-Type": content_type},
                                         data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as response:
            return json.loads(response.read() or b"null")

    def read_data(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        """A Secret's data (base64-decoded) or a ConfigMap's, None when there is none."""
        try:
            obj = self.api("GET", f"/api/v1/namespaces/{namespace}/{kind.lower()}s/{name}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        data = dict(obj.get("data") or {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data |= obj.get("stringData") or {}
        return data

    def run_probe(self, worker: PodWorker, probe: Probe) -> bool:
        action, timeout = probe.action, probe.spec["timeoutSeconds"]
        try:
            if "exec" in action:
                return docker("exec", worker.cid, *action["exec"]["command"], check=False,
                              timeout=timeout + DOCKER_EXEC_SLACK_S).returncode == 0
            container = the_container(worker.pod)
            if "httpGet" in action:
                get = action["httpGet"]
                url = (f"{get.get('scheme', 'HTTP').lower()}://{get.get('host') or worker.record.ip}:"
                       f"{probe_port(container, get['port'])}{get.get('path', '/')}")
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in action:
                port = probe_port(container, action["tcpSocket"]["port"])
                with socket.create_connection((worker.record.ip, port), timeout=timeout):
                    return True
        except (OSError, subprocess.TimeoutExpired, ValueError):
            return False
        return False

    def add_hosts_file(self, namespace: str, path: str, added: set[str]) -> None:
        """Keep the container's hosts file at `path` current from now on; its lines for the names
        `added` (docker run --add-host) make way for the block of Service names."""
        with self.lock:
            with open(path) as f:
                base = "".join(line for line in f.readlines() if not set(line.split()[1:]) & added)
            self.hosts_files[path] = (namespace, base)
        self._write_hosts()

    def forget(self, worker: PodWorker) -> None:
        with self.lock:
            if self.containers.get((worker.ns, worker.pod_name)) is worker:
                del self.containers[(worker.ns, worker.pod_name)]
            self.workers.pop(worker.uid, None)
            if worker.cid:
                self.hosts_files = {p: v for p, v in self.hosts_files.items() if worker.cid not in p}

    # --- threads ---
    def _post(self, kind: str, event: str, obj: Any) -> None:
        with self.lock:
            self._events.append((kind, event, obj))
        self._wake.set()

    def _watch(self, plural: str, namespace: str) -> None:
        """List, then watch from the list's resourceVersion; again after each close or error."""
        path = f"/api/v1/namespaces/{namespace}/{plural}"
        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listed = self.api("GET", path)
                    rv = listed["metadata"]["resourceVersion"]
                    self._post(plural, "SYNC", (namespace, listed["items"]))
                query = urllib.parse.urlencode({"watch": "true", "resourceVersion": rv,
                                                "timeoutSeconds": WATCH_TIMEOUT_S})
                with urllib.request.urlopen(f"{self.api_url}{path}?{query}", timeout=WATCH_TIMEOUT_S + 10) as r:
                    for line in r:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            rv = None
                            break
                        rv = event["object"]["metadata"]["resourceVersion"]
                        self._post(plural, event["type"], event["object"])
            except (OSError, ValueError, KeyError):
                if self.stopping.wait(0.5):
                    return
                rv = None

    def _follow_docker(self) -> None:
        """docker events of our containers: wake the pod's worker."""
        assert self._docker_events and self._docker_events.stdout
        for line in self._docker_events.stdout:
            try:
                cid = json.loads(line).get("id", "")
            except ValueError:
                continue
            with self.lock:
                workers = [w for w in self.workers.values() if w.cid == cid]
            for worker in workers:
                worker.wake.set()

    def _main(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            with self.lock:
                events, self._events = self._events, []
            for kind, event, obj in events:
                if kind == "pods":
                    self._pod_event(event, obj)
                else:
                    self._service_event(event, obj)
            if events:
                self._update_addresses()

    def _pod_event(self, event: str, obj: Any) -> None:
        if event == "SYNC":
            namespace, items = obj
            seen = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in items}
            for key in [k for k in self.pods if k[0] == namespace and k not in seen]:
                self._pod_event("DELETED", self.pods[key])
            for pod in items:
                self._pod_event("MODIFIED", pod)
            return
        meta = obj["metadata"]
        key, uid = (meta["namespace"], meta["name"]), meta["uid"]
        node = (obj.get("spec") or {}).get("nodeName")
        if node and node != self.node_name:
            return
        worker = self.workers.get(uid)
        if event == "DELETED":
            self.pods.pop(key, None)
            if worker:
                worker.update(None)
            return
        self.pods[key] = obj
        if worker:
            if meta.get("deletionTimestamp") and not worker.pod["metadata"].get("deletionTimestamp"):
                worker.update(obj)
            else:
                worker.pod = obj
            return
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and not meta.get("deletionTimestamp"):
            return                                   # finished before this Kubelet started
        with self.lock:
            worker = self.workers[uid] = PodWorker(self, obj)
        worker.start()

    def _service_event(self, event: str, obj: Any) -> None:
        if event == "SYNC":
            namespace, items = obj
            self.services = {k: v for k, v in self.services.items() if k[0] != namespace}
            for service in items:
                self.services[(namespace, service["metadata"]["name"])] = service
            return
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event == "DELETED":
            self.services.pop(key, None)
        else:
            self.services[key] = obj

    def _update_addresses(self) -> None:
        with self.lock:
            known = {k: v for k, v in self.addresses.items() if k in self.services}
            addresses = service_addresses(list(self.services.values()), list(self.pods.values()),
                                          self.allocator.assigned, known)
            changed = addresses != self.addresses
            self.addresses = addresses
        if changed:
            self.note("Service names: " + ", ".join(f"{svc}.{ns}={ip}" for (ns, svc), ip in sorted(addresses.items())))
            self._write_hosts()

    def _write_hosts(self) -> None:
        """Rewrite every hosts file in place (each is bind-mounted somewhere: a rename would not show)."""
        with self.lock:
            for path, (namespace, base) in list(self.hosts_files.items()):
                text = hosts_text(base, self.addresses, {namespace} if namespace else None)
                try:
                    with open(path, "r+") as f:
                        if f.read() != text:
                            f.seek(0)
                            f.write(text)
                            f.truncate()
                except FileNotFoundError:
                    if path == self.hosts_file:
                        with open(path, "w") as f:
                            f.write(text)
                    else:
                        del self.hosts_files[path]         # its container was removed

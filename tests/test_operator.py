"""The real operator process (`tasuki-operator`) against the Kubernetes API emulation and fake heads.

One operator process watches all namespaces for the whole module; each test makes its Cluster in a
namespace of its own, with a FakeHead of its own reached through `--head-url
http://127.0.0.1:{port}` and the Cluster's spec.metrics.port set to that head's port. The emulator has
no kubelet: `kubelet()` plays it, marking pods Running and Ready, and `register()` plays the node
agent, adding the pod's node to the fake head. Every wait is on a condition.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kopf")
from conftest import operator_healthy                                    # noqa: E402
from fake_head import FakeHead                                           # noqa: E402
from kube_emulator import KubeEmulator                                   # noqa: E402
from kubectl import MISSING, kubectl_path                                # noqa: E402
from tasuki_operator import rbac                                         # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "operator" / "tasuki_operator" / "crd.yaml"
WAIT_S = 30.0
GRACE_S = 2.0            # --pending-grace-seconds: a pod Unschedulable this long backs its group off


def wait_for(what: str, check, timeout: float = WAIT_S, logs=None):
    """Poll `check()` until it returns something truthy; fail naming `what` (and the operator's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = logs() if logs else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n--- operator log (tail) ---\n{tail}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, kube: KubeEmulator, proc: subprocess.Popen, log_path: Path, metrics_port: int):
        self.kube, self.proc, self.log_path, self.metrics_port = kube, proc, log_path, metrics_port

    @classmethod
    @contextlib.contextmanager
    def running(cls, kube: KubeEmulator, log_path: Path, head_url: str, *args: str):
        """The operator (`python -m tasuki_operator.main --standalone`) against `kube`, its heads at
        `head_url`, with `args`; yields once its /healthz answers, and stops it (SIGTERM) after."""
        port = free_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tasuki_operator.main", "--kubeconfig", str(kube.kubeconfig_path),
                 "--standalone", "--head-url", head_url, "--metrics-host", "127.0.0.1",
                 "--metrics-port", str(port), "--log-level", "DEBUG", *args],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT)
        s = cls(kube, proc, log_path, port)

        try:
            s.wait("the operator's /healthz", lambda: operator_healthy(proc, port, s.logs))
            yield s
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"the operator did not stop within 30 s of SIGTERM:\n{s.logs()}")

    def logs(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait(self, what, check, timeout=WAIT_S):
        return wait_for(what, check, timeout, self.logs)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    # --- the cluster under test ---------------------------------------------------------------------
    def apply(self, cluster: dict) -> dict:
        return self.kube.create(cluster)

    def cluster(self, ns: str, name: str) -> dict:
        return self.kube.get("clusters.tasuki.dev", name, ns)

    def pods(self, ns: str, selector: str = "") -> list[dict]:
        return self.kube.list("pods", ns, label_selector=selector or None)

    def workers(self, ns: str, group: str | None = None) -> list[dict]:
        sel = "tasuki.dev/role=worker" + (f",tasuki.dev/group={group}" if group else "")
        return self.pods(ns, sel)

    def events(self, ns: str, reason: str | None = None) -> list[dict]:
        return [e for e in self.kube.list("events", ns) if reason is None or e.get("reason") == reason]

    def kubelet(self, ns: str, pod: dict, ip: str = "127.0.0.1") -> None:
        """Mark the pod Running and Ready, as a kubelet would."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.kube.set_status("pods", pod["metadata"]["name"], {
            "phase": "Running", "podIP": ip,
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                           {"type": "Ready", "status": "True", "lastTransitionTime": now}]}, ns)

    def head_ready(self, ns: str, name: str, head: FakeHead) -> dict:
        """Wait for the head pod and the Secret, mark the head Running/Ready and give the fake head the token."""
        pod = self.wait("the head pod", lambda: self.kube.get("pods", f"{name}-head", ns))
        secret = self.wait("the token Secret", lambda: self.kube.get("secrets", f"{name}-token", ns))
        import base64
        head.token = base64.b64decode(secret["data"]["token"]).decode()
        self.kubelet(ns, pod)
        return pod

    def register(self, head: FakeHead, pod: dict, **node) -> str:
        """The pod's node agent joins the head; returns its node id."""
        name = pod["metadata"]["name"]
        head.add_node(f"n-{name}", node_name=name, group=pod["metadata"]["labels"]["tasuki.dev/group"], **node)
        return f"n-{name}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with KubeEmulator() as kube:
        kube.apply_crd(CRD)
        with Stack.running(kube, tmp_path_factory.mktemp("operator") / "operator.log", "http://127.0.0.1:{port}",
                           "--pending-grace-seconds", str(GRACE_S)) as s:
            yield s


def demo(ns: str, head: FakeHead, name: str = "demo", **autoscaler) -> dict:
    """The issue's manifest, in namespace `ns`, its head's HTTP port the fake head's."""
    return {
        "apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "image": "tasuki/runtime:0.1.0", "objectStoreMemory": "512Mi",
            "metrics": {"port": head.port},
            "head": {"numCpus": 0, "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                                 "limits": {"cpu": "1", "memory": "2Gi"}}},
            "autoscaler": {"mode": "Auto", "pollIntervalSeconds": 1, "idleTimeoutSeconds": 5, **autoscaler},
            "workerGroups": [
                {"name": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 3,
                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}},
                {"name": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2,
                 "resources": {"requests": {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "1"},
                               "limits": {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "1"}}},
            ],
        },
    }


def condition(cluster: dict, type_: str) -> dict:
    return next((c for c in (cluster.get("status") or {}).get("conditions") or () if c["type"] == type_), {})


# --- the scenarios -----------------------------------------------------------------------------------
def test_apply_makes_secret_service_and_head_then_scales_cpu_and_gpu(stack):
    ns = "scale"
    with FakeHead() as head:
        cluster = stack.apply(demo(ns, head))
        uid = cluster["metadata"]["uid"]
        pod = stack.head_ready(ns, "demo", head)
        svc = stack.wait("the head Service", lambda: stack.kube.get("services", "demo-head", ns))
        secret = stack.kube.get("secrets", "demo-token", ns)
        for obj in (pod, svc, secret):
            assert obj["metadata"]["ownerReferences"][0]["uid"] == uid, obj["metadata"]
            assert obj["metadata"]["labels"]["tasuki.dev/cluster"] == "demo"
        assert pod["metadata"]["labels"]["tasuki.dev/role"] == "head"
        assert pod["metadata"]["labels"]["tasuki.dev/group"] == "head"
        status = stack.wait("phase Running", lambda: (c := stack.cluster(ns, "demo")).get("status", {}).get("phase") == "Running"
                            and c)["status"]
        assert status["head"]["podName"] == "demo-head"
        assert status["head"]["address"] == f"tasuki://demo-head.{ns}.svc:6380"
        assert status["workers"] == "0/0" and status["version"] == "0.0.0-fake"
        assert {e["reason"] for e in stack.events(ns)} >= {"SecretCreated", "ServiceCreated", "HeadCreated"}

        # CPU demand: CPU pods up to max 3, and no GPU pod (conserveGpus)
        head.set_demand([{"shape": {"CPU": 1}, "count": 5}])
        cpu = stack.wait("3 CPU pods", lambda: len(w := stack.workers(ns, "cpu")) == 3 and w)
        stack.wait("the plan to say 2 bundles wait", lambda: any(
            "wait" in d.get("reason", "") or d.get("decision") == "hold"
            for d in (stack.cluster(ns, "demo").get("status", {}).get("autoscaler") or {}).get("groups", {}).values()))
        assert stack.workers(ns, "gpu") == [], "a CPU-only bundle started a GPU pod"
        assert all(p["metadata"]["ownerReferences"][0]["uid"] == uid for p in cpu)
        env = {e["name"]: e for e in cpu[0]["spec"]["containers"][0]["env"]}
        assert env["TASUKI_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "demo-token", "key": "token"}
        assert stack.wait("PodCreated events", lambda: len(stack.events(ns, "PodCreated")) >= 3)
        assert any("group cpu: +" in e["message"] for e in stack.events(ns, "ScaleUp"))

        # the pods start and register: the demand is placed, the status counts them
        for p in cpu:
            stack.kubelet(ns, p)
            stack.register(head, p, resources={"CPU": 1.0}, available={"CPU": 0.0}, busy_workers=1)
        head.set_demand([{"shape": {"CPU": 1}, "count": 2}])
        stack.wait("workers 3/3", lambda: stack.cluster(ns, "demo").get("status", {}).get("workers") == "3/3")
        stack.wait("pending-to-ready observed", lambda: re.search(
            r'tasuki_operator_pending_to_ready_seconds_count\{cluster="demo",group="cpu",namespace="scale"\} 3\.0',
            stack.metrics()))
        assert len(stack.workers(ns, "cpu")) == 3, "more than maxReplicas"

        # GPU demand goes to the GPU group only
        head.set_demand([{"shape": {"CPU": 1, "GPU": 1}, "count": 1}])
        gpu = stack.wait("a GPU pod", lambda: stack.workers(ns, "gpu"))
        assert len(gpu) == 1 and len(stack.workers(ns, "cpu")) == 3
        limits = gpu[0]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        m = stack.wait("the scale-up metrics", lambda: (m := stack.metrics()) and re.search(
            r'tasuki_operator_scale_decisions_total\{cluster="demo",direction="up",group="gpu",'
            r'namespace="scale",reason="demand"\} 1\.0', m) and m)
        assert re.search(r'tasuki_operator_scale_decisions_total\{cluster="demo",direction="up",group="cpu",'
                         r'namespace="scale",reason="demand"\} 3\.0', m), m


def test_idle_nodes_drained_then_deleted_busy_node_kept(stack):
    ns = "idle"
    with FakeHead() as head:
        stack.apply(demo(ns, head, idleTimeoutSeconds=1))
        stack.head_ready(ns, "demo", head)
        head.set_demand([{"shape": {"CPU": 1}, "count": 2}])
        pods = stack.wait("2 CPU pods", lambda: len(w := stack.workers(ns, "cpu")) == 2 and w)
        busy, idle = sorted(pods, key=lambda p: p["metadata"]["name"])
        busy_id = stack.register(head, busy, busy_workers=1, available={"CPU": 0.0})
        idle_id = stack.register(head, idle, available={"CPU": 0.0})
        for p in pods:
            stack.kubelet(ns, p)
        head.set_demand([])
        head.set_idle(idle_id, 30.0)
        stack.wait("the idle pod deleted", lambda: not stack.kube.get("pods", idle["metadata"]["name"], ns))
        # the drain came first, and the head confirmed it
        assert {"node_id": idle_id, "if_idle": True} in head.drains
        assert head.node(idle_id)["state"] == "draining"
        deleted = stack.wait("PodDeleted event", lambda: stack.events(ns, "PodDeleted"))
        assert "drained" in deleted[0]["message"] and idle["metadata"]["name"] in deleted[0]["message"]
        # the busy node is never deleted: a few more polls, and its drains (if any) were refused
        polls = len(head.requests)
        stack.wait("three more polls", lambda: len(head.requests) >= polls + 6)
        assert stack.kube.get("pods", busy["metadata"]["name"], ns) is not None
        assert head.node(busy_id)["state"] == "alive"
        assert re.search(r'tasuki_operator_drain_duration_seconds_count\{cluster="demo",namespace="idle"\} 1\.0',
                         stack.metrics())


def test_deleted_worker_replaced_and_min_held(stack):
    ns = "replace"
    with FakeHead() as head:
        cluster = demo(ns, head)
        cluster["spec"]["workerGroups"][0].update(minReplicas=1, replicas=1)
        stack.apply(cluster)
        stack.head_ready(ns, "demo", head)
        first = stack.wait("the min pod", lambda: stack.workers(ns, "cpu"))[0]["metadata"]["name"]
        stack.kube.delete("pods", first, ns)
        second = stack.wait("a replacement", lambda: [p for p in stack.workers(ns, "cpu")
                                                      if p["metadata"]["name"] != first])
        assert len(stack.workers(ns, "cpu")) == 1
        # a worker that failed (restartPolicy Never) is deleted and replaced too
        stack.kube.set_status("pods", second[0]["metadata"]["name"], {"phase": "Failed", "reason": "OOMKilled"}, ns)
        stack.wait("the failed pod replaced", lambda: [p for p in stack.workers(ns, "cpu")
                                                       if p["metadata"]["name"] not in (first, second[0]["metadata"]["name"])])
        assert any("OOMKilled" in e["message"] for e in stack.events(ns, "PodDeleted"))
        # the head pod deleted: recreated, same Service
        stack.kube.delete("pods", "demo-head", ns)
        stack.wait("a new head pod", lambda: stack.kube.get("pods", "demo-head", ns))
        assert stack.kube.get("services", "demo-head", ns) is not None


def test_suspend_drains_everything_then_resume(stack):
    ns = "suspend"
    with FakeHead() as head:
        cluster = demo(ns, head)
        cluster["spec"]["workerGroups"][0].update(minReplicas=1, replicas=1)
        stack.apply(cluster)
        stack.head_ready(ns, "demo", head)
        pod = stack.wait("the min pod", lambda: stack.workers(ns, "cpu"))[0]
        stack.kubelet(ns, pod)
        node = stack.register(head, pod, busy_workers=1)
        stack.kube.patch("clusters.tasuki.dev", "demo", {"spec": {"suspend": True}}, ns)
        stack.wait("a drain of the busy node", lambda: {"node_id": node, "if_idle": False} in head.drains)
        # busy: the head says draining, not drained, so the pod stays
        polls = len(head.drains)
        stack.wait("more drain requests", lambda: len(head.drains) >= polls + 2)
        assert stack.kube.get("pods", pod["metadata"]["name"], ns) is not None
        assert stack.kube.get("pods", "demo-head", ns) is not None, "the head went before its workers"
        head.set_busy(node, 0)                         # its tasks finished
        stack.wait("the worker deleted", lambda: not stack.workers(ns))
        stack.wait("the head deleted", lambda: not stack.kube.get("pods", "demo-head", ns))
        c = stack.wait("phase Suspended", lambda: (c := stack.cluster(ns, "demo")).get("status", {}).get("phase") == "Suspended" and c)
        assert condition(c, "Suspended")["status"] == "True"
        assert stack.kube.get("secrets", "demo-token", ns) and stack.kube.get("services", "demo-head", ns)
        token = head.token
        stack.kube.patch("clusters.tasuki.dev", "demo", {"spec": {"suspend": False}}, ns)
        stack.head_ready(ns, "demo", head)
        assert head.token == token, "the token changed across a suspend"
        stack.wait("the min pod back", lambda: stack.workers(ns, "cpu"))


def test_spec_edits_scale_and_roll_the_image(stack):
    ns = "edits"
    with FakeHead() as head:
        cluster = demo(ns, head, mode="Off")
        stack.apply(cluster)
        stack.head_ready(ns, "demo", head)
        # Off: spec.replicas (the scale subresource) holds the default group
        stack.kube.patch("clusters.tasuki.dev", "demo", {"spec": {"replicas": 2}}, ns)
        pods = stack.wait("2 CPU pods", lambda: len(w := stack.workers(ns, "cpu")) == 2 and w)
        for p in pods:
            stack.kubelet(ns, p)
            stack.register(head, p)
        stack.wait("scale status", lambda: stack.cluster(ns, "demo").get("status", {}).get("replicas") == 2)
        # an edit of another group leaves these pods alone
        groups = copy.deepcopy(stack.cluster(ns, "demo")["spec"]["workerGroups"])
        groups[1]["maxReplicas"] = 4
        stack.kube.patch("clusters.tasuki.dev", "demo", {"spec": {"workerGroups": groups}}, ns)
        stack.wait("the edit seen", lambda: stack.cluster(ns, "demo").get("status", {}).get("observedGeneration")
                   == stack.cluster(ns, "demo")["metadata"]["generation"])
        assert {p["metadata"]["name"] for p in stack.workers(ns)} == {p["metadata"]["name"] for p in pods}
        # the image changes: workers drain (if_idle False) and are replaced with the new image, then the head
        stack.kube.patch("clusters.tasuki.dev", "demo", {"spec": {"image": "tasuki/runtime:0.2.0"}}, ns)
        old = {p["metadata"]["name"] for p in pods}
        stack.wait("old workers replaced", lambda: (w := stack.workers(ns, "cpu")) and not old & {
            p["metadata"]["name"] for p in w} and len(w) == 2)
        assert all(p["spec"]["containers"][0]["image"] == "tasuki/runtime:0.2.0" for p in stack.workers(ns, "cpu"))
        assert all({"node_id": f"n-{n}", "if_idle": False} in head.drains for n in old)
        stack.wait("the head rolled", lambda: (h := stack.kube.get("pods", "demo-head", ns)) and
                   h["spec"]["containers"][0]["image"] == "tasuki/runtime:0.2.0")


def test_unschedulable_group_backs_off_and_demand_goes_elsewhere(stack):
    ns = "backoff"
    with FakeHead() as head:
        cluster = demo(ns, head)
        small, _ = cluster["spec"]["workerGroups"]
        big = {**copy.deepcopy(small), "name": "big", "maxReplicas": 2}
        big["resources"] = {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}
        cluster["spec"]["workerGroups"] = [small, big]
        stack.apply(cluster)
        stack.head_ready(ns, "demo", head)
        head.set_demand([{"shape": {"CPU": 1}, "count": 1}])
        pod = stack.wait("a pod of the cheapest group", lambda: stack.workers(ns, "cpu"))[0]
        assert stack.workers(ns, "big") == []
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        stack.kube.set_status("pods", pod["metadata"]["name"], {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": now,
             "message": "0/3 nodes are available: 3 Insufficient cpu."}]}, ns)
        stack.wait("the demand moved to the big group", lambda: stack.workers(ns, "big"), timeout=GRACE_S + WAIT_S)
        event = stack.wait("a BackedOff Event", lambda: stack.events(ns, "BackedOff"))[0]
        assert event["type"] == "Warning" and "group cpu" in event["message"]
        c = stack.wait("the back-off in status", lambda: (c := stack.cluster(ns, "demo")).get("status", {}).get(
            "autoscaler", {}).get("groups", {}).get("cpu", {}).get("decision") == "backoff" and c)
        assert condition(c, "WorkersReady")["status"] == "False"
        # the stuck pod is kept, not deleted and re-created (kuberay#859): a few polls later it is the same pod
        polls = len(head.requests)
        stack.wait("more polls", lambda: len(head.requests) >= polls + 4)
        assert [p["metadata"]["name"] for p in stack.workers(ns, "cpu")] == [pod["metadata"]["name"]]
        assert len(stack.workers(ns, "big")) == 1


def test_invalid_spec_refused_with_field_path(stack):
    ns = "invalid"
    with FakeHead() as head:
        cluster = demo(ns, head)
        cluster["spec"]["workerGroups"][1]["minReplicas"] = 3          # > maxReplicas 2
        stack.apply(cluster)
        c = stack.wait("phase Failed", lambda: (c := stack.cluster(ns, "demo")).get("status", {}).get("phase") == "Failed" and c)
        cond = condition(c, "SpecValid")
        assert cond["status"] == "False" and "spec.workerGroups[1]" in cond["message"], cond
        event = stack.wait("an InvalidSpec Event", lambda: stack.events(ns, "InvalidSpec"))[0]
        assert event["type"] == "Warning" and "spec.workerGroups[1]" in event["message"]
        assert stack.pods(ns) == [] and stack.kube.get("services", "demo-head", ns) is None
        # fixed: it starts
        stack.kube.patch("clusters.tasuki.dev", "demo", {"spec": {"workerGroups": [
            cluster["spec"]["workerGroups"][0], {**cluster["spec"]["workerGroups"][1], "minReplicas": 0}]}}, ns)
        stack.wait("the head pod", lambda: stack.kube.get("pods", "demo-head", ns))


def test_dry_run_reports_without_acting(stack):
    ns = "dryrun"
    with FakeHead() as head:
        stack.apply(demo(ns, head, mode="DryRun"))
        stack.head_ready(ns, "demo", head)
        head.set_demand([{"shape": {"CPU": 1}, "count": 2}, {"shape": {"CPU": 64}, "count": 1, "feasible": False}])
        c = stack.wait("the plan in status", lambda: (c := stack.cluster(ns, "demo")).get("status", {}).get(
            "autoscaler", {}).get("groups", {}).get("cpu", {}).get("create") == 2 and c)
        plan = c["status"]["autoscaler"]
        assert plan["dry_run"] is True
        assert plan["unplaceable"][0]["shape"] == {"CPU": 64} and plan["unplaceable"][0]["count"] == 1
        stack.wait("a DryRunPlan Event", lambda: stack.events(ns, "DryRunPlan"))
        assert "CPU: 64" in stack.wait("an Unplaceable Event", lambda: stack.events(ns, "Unplaceable"))[0]["message"]
        assert stack.workers(ns) == []
        assert re.search(r'tasuki_operator_unplaceable_bundles\{cluster="demo",namespace="dryrun"\} 1\.0',
                         stack.metrics())


def test_one_slow_head_does_not_delay_another_cluster(stack):
    ns = "isolation"
    with FakeHead() as slow, FakeHead() as fast:
        stack.apply(demo(ns, slow, name="slow"))
        stack.apply(demo(ns, fast, name="fast"))
        stack.head_ready(ns, "slow", slow)
        stack.head_ready(ns, "fast", fast)
        stack.wait("both polled", lambda: slow.requests and fast.requests)
        slow.delay = 4.0                                # each answer just inside the 5 s request timeout
        polls = len(slow.requests)
        stack.wait("the slow head polled again", lambda: len(slow.requests) > polls)
        started = time.monotonic()
        fast.set_demand([{"shape": {"CPU": 1}, "count": 1}])
        stack.wait("the fast cluster's pod", lambda: stack.pods(ns, "tasuki.dev/cluster=fast,tasuki.dev/role=worker"))
        took = time.monotonic() - started
        slow.delay = 0.0
        assert took < 3.5, f"the fast cluster waited {took:.1f} s behind the slow head"


def test_kubectl_get_tkc_columns(stack, tmp_path):
    binary = kubectl_path()
    assert binary, MISSING
    ns = "kubectl"
    with FakeHead() as head:
        path = tmp_path / "demo.yaml"
        path.write_text(yaml.safe_dump(demo(ns, head, mode="Off")))
        run = lambda *a: subprocess.run([binary, "--kubeconfig", str(stack.kube.kubeconfig_path), *a],  # noqa: E731
                                        capture_output=True, text=True, timeout=60, check=True).stdout
        run("apply", "--validate=false", "-f", str(path))
        stack.head_ready(ns, "demo", head)
        stack.wait("phase Running", lambda: stack.cluster(ns, "demo").get("status", {}).get("phase") == "Running")
        header, row = run("get", "tkc", "-n", ns, "-o", "wide").splitlines()
        assert header.split()[:6] == ["NAME", "PHASE", "READY", "PENDING", "GPUS", "VERSION"], header
        assert row.split()[:6] == ["demo", "Running", "0/0", "0", "0", "0.0.0-fake"], row
        assert f"tasuki://demo-head.{ns}.svc:6380" in row
        # autoscaling Off: kubectl scale drives the default group through the scale subresource
        run("scale", "tkc/demo", "-n", ns, "--replicas", "2")
        stack.wait("2 CPU pods", lambda: len(stack.workers(ns, "cpu")) == 2)
        stack.wait("READY 0/2", lambda: run("get", "tkc", "demo", "-n", ns).splitlines()[1].split()[2] == "0/2")
        run("delete", "tkc", "demo", "-n", ns)
        stack.wait("everything gone with the Cluster", lambda: not stack.pods(ns) and not stack.kube.get(
            "services", "demo-head", ns) and not stack.kube.get("secrets", "demo-token", ns))


def test_every_api_call_is_allowed_by_rbac(stack):
    """Runs last in this module: every request the operator (kopf included) made so far is in rbac.yaml."""
    rules = rbac.load_rules()
    ops = [a for a in stack.kube.audit if not a["agent"].startswith("kubectl")]      # kubectl is the user
    assert ops, "no requests recorded"
    denied = sorted({(a["verb"], a["apiGroup"], a["resource"], a.get("subresource") or "", a.get("name") or "")
                     for a in ops if a["resource"] != "customresourcedefinitions"
                     and not rbac.allows(rules, a["verb"], a["apiGroup"], a["resource"], a.get("subresource"),
                                         a.get("name"))})
    assert not denied, f"requests not covered by rbac.yaml: {denied}"

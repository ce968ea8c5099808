"""The local target's kubelet (e2e/kubelet.py): its pure decisions (e2e/pods.py) table-driven, then real
pods as Docker containers against the Kubernetes API emulation (tests/kube_emulator.py).

The Docker tests need dockerd and the base image tasuki-base:bookworm (`.ci/setup-docker.sh`); they
FAIL without them, saying so, unless TASUKI_SKIP_DOCKER=1. Their containers carry the label
`tasuki-e2e-kubelet=<pid>` and pod IPs 127.31.<pid % 250>.x."""
from __future__ import annotations

import base64
import os
import subprocess
import time

import pytest

from conftest import wait_until
from e2e import kubelet as kl
from e2e import pods
from e2e.pods import ContainerConfigError, IpAllocator, PodRecord, Probe

IMAGE = os.environ.get("TASUKI_BASE_IMAGE", "tasuki-base:bookworm")
NS = "kubelet"
LABEL = "tasuki-e2e-kubelet"


def pod(container: dict | None = None, *, name: str = "p", labels: dict | None = None, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": "u-1", "labels": labels or {"app": "a"},
                         "annotations": {"note": "n"}},
            "spec": {"nodeName": "node", "containers": [{"name": "c", "image": IMAGE, **(container or {})}], **spec}}


# --- pure: pod IPs ---------------------------------------------------------------------------------------------
def test_pod_ips_are_stable_per_namespace_and_name_and_skip_0_and_255():
    ips = IpAllocator("127.31.7")
    assert [ips.ip_for("a", "head"), ips.ip_for("a", "w"), ips.ip_for("b", "head"), ips.ip_for("a", "head")] == \
        ["127.31.7.1", "127.31.7.2", "127.31.7.3", "127.31.7.1"]
    wide = IpAllocator("127.31")
    addresses = [wide.ip_for("ns", str(i)) for i in range(256)]
    assert addresses[0] == "127.31.0.1" and addresses[253] == "127.31.0.254" and addresses[254] == "127.31.1.1"
    for i in range(254 - 3):                          # 3 given out above: 254 in all
        ips.ip_for("x", str(i))
    assert ips.ip_for("x", "250") == "127.31.7.254"
    with pytest.raises(ValueError, match="no pod IP left under 127.31.7"):
        ips.ip_for("x", "one-too-many")
    with pytest.raises(ValueError, match="not a loopback prefix"):
        IpAllocator("10.0")


# --- pure: the container's env, command and docker options ---------------------------------------------------------
@pytest.mark.parametrize("text,env,expected", [
    ("$(A)", {"A": "1"}, "1"),
    ("x$(A)y$(B)", {"A": "1", "B": "2"}, "x1y2"),
    ("$(MISSING)", {}, "$(MISSING)"),                 # undefined stays as written
    ("$$(A)", {"A": "1"}, "$(A)"),                    # $$ escapes
    ("$A ${A}", {"A": "1"}, "$A ${A}"),               # only $(...) is Kubernetes' syntax
])
def test_expand(text, env, expected):
    assert pods.expand(text, env) == expected


SECRET = {("Secret", "s"): {"token": "t0k"}, ("ConfigMap", "cm"): {"k": "v", "k2": "v2"}}


@pytest.mark.parametrize("item,expected", [
    ({"value": "plain"}, "plain"),
    ({"valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}, "t0k"),
    ({"valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}, "v"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, "p"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}, NS),
    ({"valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}, "u-1"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}, "a"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}}}, "n"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, "127.31.0.9"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}, pods.HOST_IP),
    ({"valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}, "node"),
    ({"valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}, "default"),
    ({"valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, "2"),            # 1500m rounds up
    ({"valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}, "1500"),
    ({"valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}, "512"),
    ({"valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}}, str(512 << 20)),   # request = limit
    ({"valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}}, "250"),
])
def test_env_values(item, expected):
    container = {"env": [{"name": "X", **item}],
                 "resources": {"limits": {"cpu": "1500m", "memory": "512Mi"}, "requests": {"cpu": "250m"}}}
    assert pods.container_env(pod(container), pod_ip="127.31.0.9", objects=SECRET) == {"X": expected}


def test_env_order_expansion_and_env_from():
    container = {"envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}, "prefix": "S_"}],
                 "env": [{"name": "A", "value": "a"}, {"name": "B", "value": "$(A)-$(k)-$(LATER)"},
                         {"name": "LATER", "value": "l"}]}
    assert pods.container_env(pod(container), pod_ip="ip", objects=SECRET) == \
        {"k": "v", "k2": "v2", "S_token": "t0k", "A": "a", "B": "a-v-$(LATER)", "LATER": "l"}


@pytest.mark.parametrize("item,message", [
    ({"valueFrom": {"secretKeyRef": {"name": "nope", "key": "token"}}}, 'secret "nope" not found in namespace kubelet'),
    ({"valueFrom": {"secretKeyRef": {"name": "s", "key": "nokey"}}}, "couldn't find key nokey in Secret kubelet/s"),
    ({"valueFrom": {"configMapKeyRef": {"name": "nocm", "key": "k"}}}, 'configmap "nocm" not found'),
    ({"valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}, "fieldRef 'status.phase' is not one"),
])
def test_env_problems_are_create_container_config_errors(item, message):
    with pytest.raises(ContainerConfigError, match=message.replace("'", ".").replace('"', '.')) as e:
        pods.container_env(pod({"env": [{"name": "X", **item}]}), pod_ip="ip", objects={**SECRET, ("Secret", "nope"): None})
    assert e.value.reason == "CreateContainerConfigError"


def test_optional_references_may_be_missing():
    container = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}}],
                 "envFrom": [{"configMapRef": {"name": "nocm", "optional": True}}]}
    assert pods.container_env(pod(container), pod_ip="ip", objects={}) == {}
    assert pods.references(pod(container)) == {("Secret", "nope"), ("ConfigMap", "nocm")}


@pytest.mark.parametrize("container,spec,options,arguments", [
    ({"args": ["tasuki", "start", "--address", "$(ADDR)"]}, {},
     [], ["tasuki", "start", "--address", "h:6380"]),
    ({"command": ["sh", "-c"], "args": ["echo $(ADDR)"]}, {},
     ["--entrypoint", "sh"], ["-c", "echo h:6380"]),
    ({"resources": {"limits": {"cpu": "1500m", "memory": "1Gi", "nvidia.com/gpu": "1"}}}, {},
     ["--cpus", "1.5", "--memory", str(1 << 30), "--memory-swap", str(1 << 30)], []),    # no GPU flag
    ({"volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": "/scratch"},
                       {"name": "disk", "mountPath": "/data"}]},
     {"volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "600Mi"}},
                  {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                  {"name": "disk", "emptyDir": {}}]},
     ["--shm-size", str(600 << 20), "--tmpfs", "/scratch:size=1048576", "--volume", "/data"], []),
    ({"securityContext": {"runAsGroup": 7}}, {"securityContext": {"runAsUser": 1000}},
     ["--user", "1000:7"], []),
])
def test_docker_run_args(container, spec, options, arguments):
    got_options, got_arguments = pods.docker_run_args(pod(container, **spec), {"ADDR": "h:6380"})
    assert got_options == ["--network", "host", *options, "--env", "ADDR=h:6380"]
    assert got_arguments == arguments


def test_all_addresses_become_the_pod_ip_under_the_host_network():
    assert pods.bind_to_pod_ip({"HOST": "0.0.0.0", "URL": "http://0.0.0.0:80", "X": "1"}, "127.31.0.4") == \
        {"HOST": "127.31.0.4", "URL": "http://0.0.0.0:80", "X": "1"}


@pytest.mark.parametrize("spec,message", [
    ({"containers": [{"name": "a"}, {"name": "b"}]}, r"has 2 containers \['a', 'b'\]; the e2e kubelet runs exactly one"),
    ({"initContainers": [{"name": "i"}]}, "has initContainers"),
])
def test_pods_it_cannot_run_are_explained(spec, message):
    p = pod()
    p["spec"] |= spec
    with pytest.raises(ContainerConfigError, match=message):
        pods.docker_run_args(p, {})


def test_the_operators_pods_become_containers():
    from tasuki_operator import manifests
    cluster = {"apiVersion": manifests.API_VERSION, "kind": manifests.KIND,
               "metadata": {"name": "c", "namespace": NS, "uid": "uid-c"},
               "spec": {"image": IMAGE, "objectStoreMemory": "200Mi",
                        "head": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                        "workerGroups": [{"name": "gpu", "resources": {"limits": {"cpu": "1", "memory": "1Gi",
                                                                                  "nvidia.com/gpu": "1"}}}]}}
    worker = manifests.worker_pod(cluster, "gpu", manifests.pod_name(cluster, "gpu", "x"))
    objects = {("Secret", manifests.secret_name(cluster)): {manifests.TOKEN_KEY: "tok"}}
    env = pods.container_env(worker, pod_ip="127.31.0.2", objects=objects)
    assert env["TASUKI_TOKEN"] == "tok" and env["TASUKI_NODE_IP_ADDRESS"] == "127.31.0.2"
    assert env["TASUKI_NODE_GROUP"] == "gpu" and env["TASUKI_NUM_GPUS"] == "1"
    options, arguments = pods.docker_run_args(worker, env)
    assert arguments == ["tasuki", "start", "--address", manifests.head_address(cluster), "--block"]
    assert "--shm-size" in options and "--gpus" not in options


# --- pure: status -------------------------------------------------------------------------------------------------
RUNNING = {"Status": "running", "Running": True, "StartedAt": "2026-12-03T08:00:00.123456789Z",
           "FinishedAt": "0001-01-01T00:00:00Z", "ExitCode": 0}


@pytest.mark.parametrize("docker_state,expected", [
    (RUNNING, {"running": {"startedAt": "2026-12-03T08:00:00Z"}}),
    ({**RUNNING, "Status": "exited", "Running": False, "ExitCode": 0, "FinishedAt": "2026-12-03T08:00:05.1Z"},
     {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-12-03T08:00:00Z",
                     "finishedAt": "2026-12-03T08:00:05Z"}}),
    ({**RUNNING, "Status": "exited", "Running": False, "ExitCode": 137, "FinishedAt": "2026-12-03T08:00:05Z"},
     {"terminated": {"exitCode": 137, "reason": "Error", "startedAt": "2026-12-03T08:00:00Z",
                     "finishedAt": "2026-12-03T08:00:05Z"}}),
    ({**RUNNING, "Status": "exited", "Running": False, "ExitCode": 137, "OOMKilled": True,
      "FinishedAt": "2026-12-03T08:00:05Z"},
     {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-12-03T08:00:00Z",
                     "finishedAt": "2026-12-03T08:00:05Z"}}),
    ({"Status": "created"}, {"waiting": {"reason": "ContainerCreating"}}),
])
def test_container_state(docker_state, expected):
    assert pods.container_state(docker_state) == expected


@pytest.mark.parametrize("policy,code,expected", [
    ("Always", 0, "restart"), ("Always", 1, "restart"),
    ("OnFailure", 0, "Succeeded"), ("OnFailure", 2, "restart"),
    ("Never", 0, "Succeeded"), ("Never", 137, "Failed"),
])
def test_restart_after_exit(policy, code, expected):
    assert pods.restart_after_exit(policy, code) == expected


def test_backoff_doubles_up_to_a_cap():
    assert [pods.backoff_s(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_pod_status_conditions_keep_their_transition_times():
    record = PodRecord(ip="127.31.0.1", image="img", container_name="c", phase="Running", started=True,
                       state={"running": {"startedAt": "2026-12-03T08:00:00Z"}}, start_time="2026-12-03T08:00:00Z")
    first = pods.pod_status(record, None, 1000.0)
    assert first["phase"] == "Running" and first["podIP"] == "127.31.0.1" and first["podIPs"] == [{"ip": "127.31.0.1"}]
    assert {c["type"]: c["status"] for c in first["conditions"]} == \
        {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "False", "Ready": "False"}
    (container,) = first["containerStatuses"]
    assert container == {"name": "c", "image": "img", "imageID": "", "ready": False, "started": True,
                         "restartCount": 0, "state": record.state, "lastState": {}}
    record.ready = True
    second = pods.pod_status(record, first, 2000.0)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["PodScheduled"] == pods.timestamp(1000.0) and times["Ready"] == pods.timestamp(2000.0)
    assert second["containerStatuses"][0]["ready"] is True


# --- pure: probes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,spec,results,ok,failed", [
    ("readiness", {}, [], False, False),                                   # not ready before a success
    ("readiness", {}, [True], True, False),
    ("readiness", {"successThreshold": 2}, [True], False, False),
    ("readiness", {"successThreshold": 2}, [True, True], True, False),
    ("readiness", {}, [True, False, False], True, False),                  # 2 failures < failureThreshold 3
    ("readiness", {}, [True, False, False, False], False, False),          # out, never "failed"
    ("liveness", {}, [], True, False),
    ("liveness", {"failureThreshold": 2}, [False, True, False], True, False),   # in a row only
    ("liveness", {"failureThreshold": 2}, [False, False], False, True),    # -> restart
    ("startup", {}, [False, True], True, False),
    ("startup", {"failureThreshold": 1}, [False], False, True),
])
def test_probe_results(kind, spec, results, ok, failed):
    probe = Probe(kind, spec, since=0.0)
    for i, result in enumerate(results):
        probe.record(result, float(i))
    assert (probe.ok, probe.failed) == (ok, failed)


def test_probe_timing_honours_initial_delay_and_period():
    probe = Probe("readiness", {"initialDelaySeconds": 5, "periodSeconds": 2}, since=100.0)
    assert not probe.due(104.9) and probe.due(105.0)
    probe.record(True, 105.0)
    assert not probe.due(106.9) and probe.due(107.0)
    startup = Probe("startup", {}, since=0.0)
    startup.record(True, 0.0)
    assert not startup.due(1000.0) and startup.done()    # a startup probe stops once it succeeded
    live = Probe("liveness", {"failureThreshold": 1}, since=0.0)
    assert not live.done()
    live.record(False, 0.0)
    assert live.done() and not live.due(1000.0)


def test_probe_port_by_number_or_name():
    container = {"name": "c", "ports": [{"name": "metrics", "containerPort": 8080}]}
    assert pods.probe_port(container, 80) == 80 and pods.probe_port(container, "81") == 81
    assert pods.probe_port(container, "metrics") == 8080
    with pytest.raises(ValueError, match="'http' is not a port name of container 'c'"):
        pods.probe_port(container, "http")


# --- pure: Service names --------------------------------------------------------------------------------------------
def service(name: str, selector: dict, ns: str = NS) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector}}


def status_pod(name: str, labels: dict, ready: bool = False, ns: str = NS, **meta) -> dict:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels, **meta},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}}


@pytest.mark.parametrize("candidates,known,expected", [
    ([status_pod("head", {"role": "head"})], {}, "127.31.0.1"),
    ([status_pod("b", {"role": "head"}), status_pod("a", {"role": "head"})], {}, "127.31.0.2"),  # by name
    ([status_pod("b", {"role": "head"}, ready=True), status_pod("a", {"role": "head"})], {}, "127.31.0.3"),  # ready
    ([status_pod("head", {"role": "head"}, deletionTimestamp="x")], {}, None),     # terminating: not picked
    ([status_pod("head", {"role": "head"}, deletionTimestamp="x")], {(NS, "svc"): "127.31.0.1"}, "127.31.0.1"),
    ([status_pod("w", {"role": "worker"})], {}, None),
    ([status_pod("head", {"role": "head"}, ns="other")], {}, None),
])
def test_service_addresses(candidates, known, expected):
    ips = {(NS, "head"): "127.31.0.1", (NS, "a"): "127.31.0.2", (NS, "b"): "127.31.0.3", (NS, "w"): "127.31.0.4",
           ("other", "head"): "127.31.0.5"}
    got = pods.service_addresses([service("svc", {"role": "head"})], candidates, ips, known)
    assert got.get((NS, "svc")) == expected


def test_hosts_text_replaces_its_block_and_keeps_the_rest():
    base = "127.0.0.1\tlocalhost\n"
    once = pods.hosts_text(base, {(NS, "svc"): "127.31.0.1", ("other", "x"): "127.31.0.2"}, {NS})
    assert once == (f"127.0.0.1\tlocalhost\n{pods.HOSTS_BEGIN}\n"
                    f"127.31.0.1\tsvc svc.{NS} svc.{NS}.svc svc.{NS}.svc.cluster.local\n{pods.HOSTS_END}\n")
    again = pods.hosts_text(once, {(NS, "svc"): "127.31.0.7"}, None)
    assert again.count(pods.HOSTS_BEGIN) == 1 and "127.31.0.7\tsvc" in again and "127.31.0.1" not in again


@pytest.mark.parametrize("host,expected", [
    ("svc", "127.31.0.1"), (f"svc.{NS}", "127.31.0.1"), (f"svc.{NS}.svc", "127.31.0.1"),
    (f"svc.{NS}.svc.cluster.local", "127.31.0.1"), (f"svc.{NS}.svc.cluster.local.", "127.31.0.1"),
    ("dup", None),                                          # a bare name in two namespaces is ambiguous
    ("dup.b", "127.31.0.3"), ("nope", None), (f"svc.{NS}.pod", None),
])
def test_resolve_name(host, expected):
    addresses = {(NS, "svc"): "127.31.0.1", ("a", "dup"): "127.31.0.2", ("b", "dup"): "127.31.0.3"}
    assert pods.resolve_name(host, addresses) == expected


# --- with Docker and the API emulation --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """An API emulation and a Kubelet for namespace NS, writing Service names to a hosts file too;
    (emulator, kubelet)."""
    if os.environ.get("TASUKI_SKIP_DOCKER") == "1":
        pytest.skip("TASUKI_SKIP_DOCKER=1: the kubelet's Docker tests are left out")
    problem = kl.docker_problem()
    if problem is None and kl.docker("image", "inspect", IMAGE, check=False).returncode != 0:
        problem = f"the base image {IMAGE} is missing: {kl.SETUP_HINT}"
    if problem:
        pytest.fail(f"{problem} (or set TASUKI_SKIP_DOCKER=1 to leave these tests out)", pytrace=False)
    from kube_emulator import KubeEmulator
    with KubeEmulator() as kube:
        hosts = tmp_path_factory.mktemp("kubelet") / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n")
        kubelet = kl.Kubelet(kube.url, [NS], ip_prefix=f"127.31.{os.getpid() % 250 + 1}", label=LABEL,
                             hosts_file=hosts).start()
        try:
            yield kube, kubelet
        finally:
            kubelet.stop()
            print("\n".join(kubelet.log()))
            left = kl.docker("ps", "-aq", "--filter", f"label={LABEL}.instance={kubelet.instance}").stdout.split()
            assert not left, f"containers left behind: {left}"


def phase_of(kube, name: str) -> str | None:
    obj = kube.get("pods", name, NS)
    return obj and (obj.get("status") or {}).get("phase")


def container_status(kube, name: str) -> dict:
    obj = kube.get("pods", name, NS)
    return ((obj or {}).get("status") or {}).get("containerStatuses", [{}])[0]


def is_ready(kube, name: str) -> bool:
    obj = kube.get("pods", name, NS) or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions", []))


def logs(kubelet, name: str) -> str:
    return kl.docker("logs", kubelet.container(NS, name)).stdout


def sh(script: str, name: str, **spec) -> dict:
    p = pod({"command": ["sh", "-c", script]}, name=name, **spec)
    del p["metadata"]["uid"], p["spec"]["nodeName"]
    return p


def test_env_from_a_secret_and_a_field_ref_then_succeeded_or_failed_with_the_exit_code(node):
    kube, kubelet = node
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS},
                 "data": {"token": base64.b64encode(b"s3cret").decode()}})
    for name, code in (("job-ok", 0), ("job-bad", 3)):
        p = sh(f"echo token=$TOKEN ip=$IP name=$(NAME); exit {code}", name, restartPolicy="Never")
        p["spec"]["containers"][0]["env"] = [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        kube.create(p)
    for name, phase, code in (("job-ok", "Succeeded", 0), ("job-bad", "Failed", 3)):
        wait_until(lambda: phase_of(kube, name) == phase, 30, f"{name} {phase}", interval=0.1)
        status = container_status(kube, name)
        assert status["state"]["terminated"]["exitCode"] == code and status["restartCount"] == 0
        assert kube.get("pods", name, NS)["spec"]["nodeName"] == kubelet.node_name
        assert logs(kubelet, name).strip() == f"token=s3cret ip={kubelet.pod_ip(NS, name)} name={name}"
        assert kube.get("pods", name, NS)["status"]["podIP"] == kubelet.pod_ip(NS, name)


def test_a_missing_secret_or_image_keeps_the_pod_pending_with_a_reason(node):
    kube, kubelet = node
    p = sh("true", "no-secret")
    p["spec"]["containers"][0]["env"] = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
    kube.create(p)
    bad_image = sh("true", "no-image")
    bad_image["spec"]["containers"][0]["image"] = "tasuki-test/does-not-exist:1"
    kube.create(bad_image)
    for name, reason in (("no-secret", "CreateContainerConfigError"), ("no-image", "ErrImageNeverPull")):
        wait_until(lambda: container_status(kube, name).get("state", {}).get("waiting", {}).get("reason") == reason,
                   20, f"{name} waiting with {reason}", interval=0.1)
        assert phase_of(kube, name) == "Pending"
    assert 'secret "later" not found' in container_status(kube, "no-secret")["state"]["waiting"]["message"]
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "later", "namespace": NS},
                 "stringData": {}, "data": {"k": base64.b64encode(b"v").decode()}})
    wait_until(lambda: phase_of(kube, "no-secret") in ("Running", "Succeeded"), 20, "the pod to start", interval=0.1)
    for name in ("no-secret", "no-image"):
        kube.delete("pods", name, NS)


def test_readiness_probe_turns_the_pod_ready(node):
    kube, kubelet = node
    p = sh("sleep 1; touch /tmp/ready; exec sleep 300", "probed", terminationGracePeriodSeconds=1)
    p["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["test", "-e", "/tmp/ready"]},
                                                    "periodSeconds": 1}
    kube.create(p)
    wait_until(lambda: phase_of(kube, "probed") == "Running", 20, "Running", interval=0.1)
    assert not is_ready(kube, "probed")
    wait_until(lambda: is_ready(kube, "probed"), 20, "Ready", interval=0.1)
    assert container_status(kube, "probed")["ready"] is True
    kube.delete("pods", "probed", NS)


def test_a_killed_container_of_a_restart_always_pod_is_restarted(node):
    kube, kubelet = node
    kube.create(sh("exec sleep 300", "restarted", restartPolicy="Always", terminationGracePeriodSeconds=1))
    wait_until(lambda: phase_of(kube, "restarted") == "Running", 20, "Running", interval=0.1)
    kubelet.kill_container(NS, "restarted")
    wait_until(lambda: container_status(kube, "restarted").get("restartCount") == 1
               and "running" in container_status(kube, "restarted")["state"], 20, "a restart", interval=0.1)
    status = container_status(kube, "restarted")
    assert status["lastState"]["terminated"]["exitCode"] == 137 and phase_of(kube, "restarted") == "Running"
    kube.delete("pods", "restarted", NS)


def test_delete_sends_sigterm_and_the_pod_goes_after(node, tmp_path):
    kube, kubelet = node
    script = "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    kube.create(sh(script, "graceful", terminationGracePeriodSeconds=20))
    wait_until(lambda: phase_of(kube, "graceful") == "Running" and "up" in logs(kubelet, "graceful"), 20, "up",
               interval=0.1)
    cid = kubelet.container(NS, "graceful")
    started = time.monotonic()
    kube.delete("pods", "graceful", NS)
    assert kube.get("pods", "graceful", NS)["metadata"]["deletionGracePeriodSeconds"] == 20
    wait_until(lambda: kube.get("pods", "graceful", NS) is None, 20, "the pod to go", interval=0.1)
    assert time.monotonic() - started < 10               # TERM ended it, not the 20 s SIGKILL
    assert subprocess.run(["docker", "inspect", cid], capture_output=True).returncode != 0   # removed
    assert any("graceful: deleting: docker stop --time 20" in line for line in kubelet.log())
    assert any("graceful: stopped with exit code 0" in line for line in kubelet.log())   # its TERM trap ran


def test_a_service_name_resolves_to_the_selected_pod_and_follows_it(node):
    kube, kubelet = node
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "head", "namespace": NS},
                 "spec": {"selector": {"role": "head"}, "ports": [{"port": 80}]}})
    lookup = "python3 -c 'import socket,sys; print(socket.gethostbyname(sys.argv[1]))'"
    kube.create(sh("exec sleep 300", "client", terminationGracePeriodSeconds=1))
    wait_until(lambda: phase_of(kube, "client") == "Running", 20, "the client pod", interval=0.1)
    kube.create(sh("exec sleep 300", "head-0", labels={"role": "head"}, terminationGracePeriodSeconds=1))
    head_ip = wait_until(lambda: kubelet.pod_ip(NS, "head-0"), 10, "head-0's IP")

    def resolved(host: str) -> str:
        return kl.docker("exec", kubelet.container(NS, "client"), "sh", "-c", f"{lookup} {host}",
                         check=False).stdout.strip()
    wait_until(lambda: resolved("head") == head_ip, 20, "`head` to resolve in the client", interval=0.2)
    for host in (f"head.{NS}", f"head.{NS}.svc", f"head.{NS}.svc.cluster.local"):
        assert resolved(host) == head_ip and kubelet.resolve(host) == head_ip
    inode = os.stat(kubelet.hosts_file).st_ino
    assert f"{head_ip}\thead head.{NS} " in open(kubelet.hosts_file).read()      # the operator's /etc/hosts
    kube.delete("pods", "head-0", NS)                       # the head goes; a new one under another name
    wait_until(lambda: kube.get("pods", "head-0", NS) is None, 20, "the head pod to go", interval=0.1)
    kube.create(sh("exec sleep 300", "head-1", labels={"role": "head"}, terminationGracePeriodSeconds=1))
    new_ip = wait_until(lambda: kubelet.pod_ip(NS, "head-1"), 10, "head-1's IP")
    assert new_ip != head_ip
    wait_until(lambda: resolved(f"head.{NS}") == new_ip, 20, "the name to follow the new head", interval=0.2)
    assert f"{new_ip}\thead " in open(kubelet.hosts_file).read() and os.stat(kubelet.hosts_file).st_ino == inode
    kube.delete("pods", "head-1", NS)
    wait_until(lambda: kube.get("pods", "head-1", NS) is None, 20, "head-1 to go", interval=0.1)
    kube.create(sh("exec sleep 300", "head-1", labels={"role": "head"}, terminationGracePeriodSeconds=1))
    wait_until(lambda: phase_of(kube, "head-1") == "Running", 20, "head-1 again", interval=0.1)
    assert kubelet.pod_ip(NS, "head-1") == new_ip             # recreated under its name: the same IP
    for name in ("client", "head-1"):
        kube.delete("pods", name, NS)


def test_a_failing_liveness_probe_restarts_the_container(node):
    kube, kubelet = node
    p = sh("exec sleep 300", "unlive", terminationGracePeriodSeconds=1)
    p["spec"]["containers"][0]["livenessProbe"] = {"exec": {"command": ["false"]}, "periodSeconds": 1,
                                                   "failureThreshold": 1}
    kube.create(p)
    wait_until(lambda: container_status(kube, "unlive").get("restartCount", 0) >= 1, 30, "a restart", interval=0.1)
    assert any("unlive: liveness probe failed 1 times" in line for line in kubelet.log())
    kube.delete("pods", "unlive", NS)


def test_a_pod_deleted_while_its_container_starts_leaves_no_container(node):
    kube, kubelet = node
    kube.create(sh("exec sleep 300", "brief", terminationGracePeriodSeconds=1))
    wait_until(lambda: (kube.get("pods", "brief", NS) or {}).get("spec", {}).get("nodeName"), 10, "scheduling",
               interval=0.02)
    kube.delete("pods", "brief", NS)
    wait_until(lambda: kube.get("pods", "brief", NS) is None, 20, "the pod to go", interval=0.1)
    left = kl.docker("ps", "-aq", "--filter", f"label={LABEL}.pod=brief").stdout.split()
    assert not left, f"the deleted pod's container is left: {left}"


def test_without_docker_start_says_to_run_the_setup_script(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))                       # no `docker` command
    with pytest.raises(RuntimeError, match=r"cannot run pods: there is no `docker` command: run `.ci/setup-docker.sh`"):
        kl.Kubelet("http://127.0.0.1:9", [NS]).start()


def test_http_and_tcp_probes_reach_the_pod_ip_on_a_named_port(node):
    kube, kubelet = node
    p = sh("sleep 0.5; exec python3 -m http.server --bind $POD_IP 18431", "web", terminationGracePeriodSeconds=1)
    container = p["spec"]["containers"][0]
    container["env"] = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    container["ports"] = [{"name": "http", "containerPort": 18431}]
    container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    container["livenessProbe"] = {"tcpSocket": {"port": 18431}, "periodSeconds": 1, "initialDelaySeconds": 2}
    kube.create(p)
    wait_until(lambda: is_ready(kube, "web"), 20, "Ready by its httpGet probe", interval=0.1)
    wait_until(lambda: any("web: liveness probe succeeded" in line for line in kubelet.log()), 20,
               "a tcpSocket liveness success", interval=0.1)
    assert container_status(kube, "web")["restartCount"] == 0
    kube.delete("pods", "web", NS)


def test_a_started_pod_is_not_polled_in_a_loop(node, monkeypatch):
    """After its startup probe succeeds, a worker waits for the next readiness period or a docker
    event: a few inspects a second at most (the machine has 2 cores)."""
    kube, kubelet = node
    p = sh("exec sleep 300", "calm", terminationGracePeriodSeconds=1)
    p["spec"]["containers"][0]["startupProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    p["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    kube.create(p)
    wait_until(lambda: is_ready(kube, "calm"), 20, "Ready", interval=0.1)
    calls = []
    real = kl.docker
    monkeypatch.setattr(kl, "docker", lambda *args, **kw: calls.append(args[0]) or real(*args, **kw))
    time.sleep(2.0)                                    # a measurement over time, not a wait for a condition
    monkeypatch.setattr(kl, "docker", real)
    assert calls.count("inspect") <= 8, calls
    kube.delete("pods", "calm", NS)

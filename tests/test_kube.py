"""tasuki_operator.kube against the Kubernetes API emulation (tests/kube_emulator.py) over real HTTP.

Each Kube call is sent by the official client to the emulator; the objects come from manifests.py
for the example Cluster, so what is tested is what the controller will send. The RBAC coverage test
the issue asks for is here: after every Kube method has run, every request the emulator saw is
allowed by rbac.yaml; and an emulator that enforces a set of rules turns a missing rule into a
KubeForbidden whose message names the verb, the resource, the namespace and what to fix.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

for _needed in ("aiohttp", "jsonpatch", "kmock", "yaml", "kubernetes"):   # the test extra
    pytest.importorskip(_needed)
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_emulator import ApiError, KubeEmulator  # noqa: E402

from tasuki_operator import manifests, rbac  # noqa: E402
from tasuki_operator.kube import (Kube, KubeConflict, KubeError, KubeForbidden, KubeUnreachable,  # noqa: E402
                                  forbidden_message)

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "operator" / "tasuki_operator" / "crd.yaml"
EXAMPLE = ROOT / "examples" / "k8s" / "cpu-cluster.yaml"
NS = "ml"


class EnforcingAudit(list):
    """Put in place of the emulator's audit log: each request is checked against `rules` as it is
    logged, and refused with a 403 Status (as the real API server's authorizer would) when they do
    not allow it."""

    def __init__(self, rules: list[dict]):
        super().__init__()
        self.rules = rules

    def append(self, entry: dict) -> None:
        super().append(entry)
        if not rbac.allows(self.rules, entry["verb"], entry["apiGroup"], entry["resource"], entry["subresource"],
                           entry["name"]):
            raise ApiError(403, "Forbidden", f'{entry["resource"]} is forbidden: User "system:serviceaccount:'
                           f'tasuki:tasuki-operator" cannot {entry["verb"]} resource "{entry["resource"]}" in '
                           f'API group "{entry["apiGroup"]}" in the namespace "{entry["namespace"]}"')


@pytest.fixture()
def emulator():
    with KubeEmulator() as kube:
        kube.apply_crd(CRD)
        kube.apply_crd(CRD.with_name("job_crd.yaml"))
        yield kube


@pytest.fixture()
def cluster(emulator):
    """The example Cluster, created in namespace NS (as the API returns it: with a uid)."""
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"]["namespace"] = NS
    return emulator.create(body, namespace=NS)


def enforce(emulator: KubeEmulator, rules: list[dict]) -> None:
    emulator.call(lambda: setattr(emulator.store, "audit", EnforcingAudit(rules)))


def exercise_every_call(k: Kube, cluster: dict) -> None:
    """Every Kube method, including the 404 and 409 paths, as the controller uses them."""
    name = cluster["metadata"]["name"]
    assert k.get_cluster(NS, name)["metadata"]["uid"] == cluster["metadata"]["uid"]
    assert k.get_secret(NS, manifests.secret_name(cluster)) is None
    k.create_secret(NS, manifests.token_secret(cluster, "t0ken"))
    k.create_secret(NS, manifests.token_secret(cluster, "other"))            # 409: the existing one
    k.get_secret(NS, manifests.secret_name(cluster))
    k.create_service(NS, manifests.head_service(cluster))
    pod = k.create_pod(NS, manifests.head_pod(cluster))
    k.create_pod(NS, manifests.head_pod(cluster))                            # 409
    k.list_pods(NS, name)
    k.patch_cluster_status(NS, name, {"phase": "Pending"})
    k.post_event(NS, pod, "PodCreated", "created the head pod")
    k.delete_pod(NS, pod["metadata"]["name"])
    k.delete_pod(NS, pod["metadata"]["name"])                                # 404
    k.delete_secret(NS, manifests.secret_name(cluster))
    k.delete_secret(NS, manifests.secret_name(cluster))                      # 404
    # a tasuki Job's calls (job_controller): its inline Cluster, its status, its ConfigMap, its TTL
    inline = {"apiVersion": manifests.API_VERSION, "kind": "Cluster", "metadata": {"name": "inline", "namespace": NS},
              "spec": cluster["spec"]}
    k.create_cluster(NS, inline)
    k.create_cluster(NS, inline)                                             # 409: the existing one
    k.patch_cluster(NS, "inline", {"spec": {"workerGroups": cluster["spec"]["workerGroups"]}})
    assert k.delete_cluster(NS, "inline") and not k.delete_cluster(NS, "inline")      # then 404
    assert k.get_job(NS, "j") is None and k.get_configmap(NS, "code") is None
    with pytest.raises(KubeError, match="HTTP 404"):
        k.patch_job_status(NS, "j", {"jobStatus": "PENDING"})                # no such Job: 404, yet allowed
    assert not k.delete_job(NS, "j")                                         # 404
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": rbac.LEADER_LEASE},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    assert k.get_lease(NS, rbac.LEADER_LEASE) is None                        # 404
    created = k.create_lease(NS, lease)
    with pytest.raises(KubeConflict):
        k.create_lease(NS, lease)                                            # 409: it exists
    k.replace_lease(NS, rbac.LEADER_LEASE, {**created, "spec": {**created["spec"], "holderIdentity": "b"}})
    with pytest.raises(KubeConflict):
        k.replace_lease(NS, rbac.LEADER_LEASE, created)                      # 409: a stale resourceVersion


# --- each call ------------------------------------------------------------------------------------
def test_pods_create_list_by_label_and_delete(emulator, cluster):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    name = cluster["metadata"]["name"]
    group = cluster["spec"]["workerGroups"][0]["name"]
    built = manifests.worker_pod(cluster, group, manifests.pod_name(cluster, group, "abcde"))
    created = k.create_pod(NS, built)
    assert created["metadata"]["uid"] and created["metadata"]["namespace"] == NS
    assert created["spec"] == built["spec"]                  # nothing lost on the way through the client
    assert created["metadata"]["ownerReferences"] == [manifests.owner_reference(cluster)]
    emulator.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "stranger", "namespace": NS, "labels": {manifests.LABEL_CLUSTER: "another"}}, "spec": {}})
    assert [p["metadata"]["name"] for p in k.list_pods(NS, name)] == [built["metadata"]["name"]]
    assert k.list_pods(NS, "nobody") == []
    assert k.delete_pod(NS, built["metadata"]["name"]) is True
    assert emulator.get("pods", built["metadata"]["name"], NS) is None
    assert k.delete_pod(NS, built["metadata"]["name"]) is False           # 404 is fine
    assert k.list_pods(NS, name) == []


def test_create_of_an_existing_object_returns_the_existing_one(emulator, cluster):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    first = k.create_secret(NS, manifests.token_secret(cluster, "first"))
    again = k.create_secret(NS, manifests.token_secret(cluster, "second"))
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["data"] == first["data"] == manifests.token_secret(cluster, "first")["data"]
    svc = k.create_service(NS, manifests.head_service(cluster))
    assert k.create_service(NS, manifests.head_service(cluster))["metadata"]["uid"] == svc["metadata"]["uid"]
    assert len(emulator.list("services", NS)) == 1


def test_secret_get_and_delete(emulator, cluster):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    secret_name = manifests.secret_name(cluster)
    assert k.get_secret(NS, secret_name) is None
    k.create_secret(NS, manifests.token_secret(cluster, "t0ken"))
    assert k.get_secret(NS, secret_name)["data"] == manifests.token_secret(cluster, "t0ken")["data"]
    assert k.delete_secret(NS, secret_name) is True
    assert k.get_secret(NS, secret_name) is None
    assert k.delete_secret(NS, secret_name) is False


def test_cluster_get_and_status_patch(emulator, cluster):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    name = cluster["metadata"]["name"]
    assert k.get_cluster(NS, name)["spec"] == cluster["spec"]
    assert k.get_cluster(NS, "absent") is None
    assert k.get_cluster("elsewhere", name) is None
    k.patch_cluster_status(NS, name, {"phase": "Pending", "head": {"podName": "h"}})
    out = k.patch_cluster_status(NS, name, {"phase": "Running", "head": None})
    assert out["status"] == {"phase": "Running"}                          # merge patch: None removes
    stored = emulator.get("clusters.tasuki.dev", name, NS)
    assert stored["status"] == {"phase": "Running"}
    assert stored["spec"] == cluster["spec"] and stored["metadata"]["generation"] == 1
    with pytest.raises(KubeError) as err:
        k.patch_cluster_status(NS, "absent", {"phase": "Running"})
    assert err.value.status == 404 and "absent" in str(err.value) and "clusters.tasuki.dev/status" in str(err.value)


@pytest.mark.parametrize("type_", ["Normal", "Warning"])
def test_post_event(emulator, cluster, type_):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    k.post_event(NS, cluster, "ScaleUp", "x" * 2000, type_=type_)
    k.post_event(NS, cluster, "ScaleUp", "again", type_=type_)              # a second one is a new Event
    events = emulator.list("events", NS)
    assert sorted(len(e["message"]) for e in events) == [5, 1024]    # the long one cut to the limit
    event = max(events, key=lambda e: len(e["message"]))
    assert event["involvedObject"] == {"apiVersion": manifests.API_VERSION, "kind": "Cluster",
                                       "name": cluster["metadata"]["name"], "namespace": NS,
                                       "uid": cluster["metadata"]["uid"],
                                       "resourceVersion": cluster["metadata"]["resourceVersion"]}
    assert (event["reason"], event["type"], event["message"][-2:]) == ("ScaleUp", type_, "x…")
    assert event["source"] == {"component": "tasuki-operator"} and event["firstTimestamp"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"type_": "Info"}, "type_ must be one of"),
    ({"reason": ""}, "reason must be"),
    ({"involved_object": {"metadata": {"name": "x"}}}, "needs kind and metadata.name"),
])
def test_post_event_refuses_bad_arguments(emulator, cluster, kwargs, needle):
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    args = {"involved_object": cluster, "reason": "ScaleUp", "message": "m", **kwargs}
    with pytest.raises(ValueError, match=needle):
        k.post_event(NS, **args)
    assert emulator.list("events", NS) == []


def _kubeconfig(tmp_path: Path, port: int) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return kubeconfig


@pytest.mark.parametrize("listening", [False, True], ids=["refused", "never-answers"])
def test_an_unreachable_server_is_reported_within_the_timeout(tmp_path, listening):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if listening:
            s.listen(8)                            # the kernel accepts the connection; nobody answers
        port = s.getsockname()[1]
        k = Kube.from_kubeconfig(_kubeconfig(tmp_path, port), timeout=1.0)
        assert k.api_client.rest_client.pool_manager.connection_pool_kw["retries"].total is False
        started = time.monotonic()
        with pytest.raises(KubeUnreachable, match=f"127.0.0.1:{port}") as err:
            k.list_pods(NS, "c")
        elapsed = time.monotonic() - started
    assert elapsed < 3.0                           # one attempt, bounded by the 1 s timeout
    assert (err.value.verb, err.value.resource, err.value.namespace) == ("list", "pods", NS)


def test_timeout_must_be_positive(emulator):
    with pytest.raises(ValueError, match="timeout"):
        Kube.from_kubeconfig(emulator.kubeconfig_path, timeout=0)


# --- RBAC ---------------------------------------------------------------------------------------
def test_every_request_the_kube_calls_make_is_allowed_by_rbac_yaml(emulator, cluster):
    """The issue's coverage test: run every Kube method, then check each request as RBAC saw it."""
    start = len(emulator.audit)                    # the fixture's own CRD and Cluster writes are not ours
    exercise_every_call(Kube.from_kubeconfig(emulator.kubeconfig_path), cluster)
    audit = emulator.audit[start:]
    seen = {(a["verb"], a["apiGroup"], a["resource"], a["subresource"]) for a in audit}
    assert seen == {("get", "tasuki.dev", "clusters", None), ("patch", "tasuki.dev", "clusters", "status"),
                    ("list", "", "pods", None), ("create", "", "pods", None), ("get", "", "pods", None),
                    ("delete", "", "pods", None), ("create", "", "services", None),
                    ("get", "", "secrets", None), ("create", "", "secrets", None), ("delete", "", "secrets", None),
                    ("create", "", "events", None),
                    ("get", "coordination.k8s.io", "leases", None), ("create", "coordination.k8s.io", "leases", None),
                    ("update", "coordination.k8s.io", "leases", None),
                    ("create", "tasuki.dev", "clusters", None), ("patch", "tasuki.dev", "clusters", None),
                    ("delete", "tasuki.dev", "clusters", None), ("get", "tasuki.dev", "jobs", None),
                    ("patch", "tasuki.dev", "jobs", "status"), ("delete", "tasuki.dev", "jobs", None),
                    ("get", "", "configmaps", None)}
    rules = rbac.load_rules()
    refused = [a for a in audit if not rbac.allows(rules, a["verb"], a["apiGroup"], a["resource"],
                                                   a["subresource"], a["name"])]
    assert refused == []


def test_the_calls_also_pass_an_emulator_that_enforces_rbac_yaml(emulator, cluster):
    enforce(emulator, rbac.load_rules())
    exercise_every_call(Kube.from_kubeconfig(emulator.kubeconfig_path), cluster)


@pytest.mark.parametrize("verb, group, resource, sub, name", [
    ("list", "", "secrets", None, None),                      # never granted: it would read every Secret
    ("watch", "", "secrets", None, None),
    ("update", "", "secrets", None, "c-token"),
    ("create", "rbac.authorization.k8s.io", "roles", None, None),
    ("get", "coordination.k8s.io", "leases", None, "someone-elses-lease"),
    ("update", "tasuki.dev", "jobs", None, "j"),
])
def test_a_request_outside_rbac_yaml_is_not_allowed(verb, group, resource, sub, name):
    assert not rbac.allows(rbac.load_rules(), verb, group, resource, sub, name)
    message = forbidden_message(verb, group, resource, sub, "ml", name)
    assert f"may not {verb} " in message and resource in message and 'namespace "ml"' in message
    assert "rbac.yaml" in message and "has no rule for it" in message and f"add verb {verb!r}" in message


def test_forbidden_message_when_rbac_yaml_allows_it_blames_the_installed_role():
    message = forbidden_message("delete", "", "pods", None, "ml", "p", server_message="pods \"p\" is forbidden")
    assert "rbac.yaml allows it" in message and "not bound" in message and 'The API server said: pods "p"' in message


def test_a_403_names_verb_resource_namespace_and_the_fix(emulator, cluster):
    rules = [r for r in rbac.load_rules() if r["resources"] != ["pods"]]        # an out-of-date Role: no pods
    enforce(emulator, rules)
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)
    with pytest.raises(KubeForbidden) as err:
        k.delete_pod(NS, "p")
    e = err.value
    assert (e.status, e.verb, e.resource, e.namespace, e.name) == (403, "delete", "pods", NS, "p")
    assert 'may not delete pods "p" in namespace "ml"' in str(e)
    assert "rbac.yaml allows it" in str(e)                     # the Role in the cluster is what lacks it
    assert "cannot delete resource" in str(e)                  # and the server's own words
    with pytest.raises(KubeForbidden, match="may not list pods in namespace"):
        k.list_pods(NS, "c")
    with pytest.raises(KubeForbidden, match="may not create pods"):
        k.create_pod(NS, manifests.head_pod(cluster))
    assert k.get_secret(NS, "absent") is None                  # what the rules allow still works


def test_a_body_the_client_refuses_is_a_kube_error(emulator):
    """kubernetes>=37 checks dict bodies against its models and raises a ValueError (pydantic's) before
    sending: it must come out as a KubeError that names the request, like every other failure."""
    k = Kube.from_kubeconfig(emulator.kubeconfig_path)

    def refuse(*args, **kwargs):
        raise ValueError("1 validation error for V1Pod: spec.containers: Input should be a valid list")
    with pytest.raises(KubeError, match=r"create pods in namespace 'ns': the Kubernetes client refused the "
                                        r"request body .*spec.containers"):
        k._call(refuse, verb="create", api_group="", resource="pods", namespace="ns")

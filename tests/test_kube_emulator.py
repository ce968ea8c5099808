"""The Kubernetes API emulation (tests/kube_emulator.py) over real HTTP, and a kopf operator against it.

Each test talks HTTP to a server on 127.0.0.1 (urllib, the official `kubernetes` client, or kopf),
never to the store directly, except to arrange or assert through the emulator's own helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

for _needed in ("aiohttp", "jsonpatch", "kmock", "yaml"):    # the test extra; skip cleanly without them
    pytest.importorskip(_needed)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_emulator import KubeEmulator, parse_label_selector  # noqa: E402
from kubectl import MISSING, kubectl_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "operator" / "tasuki_operator" / "crd.yaml"
CLUSTERS = "/apis/tasuki.dev/v1alpha1/namespaces/ml/clusters"
CONFIGMAPS = "/api/v1/namespaces/ns/configmaps"


@pytest.fixture(scope="module")
def kube():
    with KubeEmulator() as emulator:
        emulator.apply_crd(CRD)
        yield emulator


def http(kube: KubeEmulator, method: str, path: str, body=None, content_type: str = "application/json",
         query: dict | None = None) -> tuple[int, dict]:
    """One request; returns (status code, decoded JSON body)."""
    url = kube.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def watch(kube: KubeEmulator, path: str, query: dict, timeout: float = 10.0) -> list[tuple[str, dict]]:
    """A watch read to its end (the server closes it after timeoutSeconds): [(type, object)]."""
    url = kube.url + path + "?" + urllib.parse.urlencode({"watch": "true", **query})
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return [(e["type"], e["object"]) for e in map(json.loads, r.read().splitlines())]


def cluster(name: str, labels: dict | None = None, **spec) -> dict:
    return {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"image": "tasuki/runtime:0.1.0", **spec}}


def configmap(name: str, labels: dict | None = None, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}, **meta},
            "data": {"k": "v"}}


def wait_until(predicate, timeout: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return value


# --- 1. resourceVersion, 409, 422 -------------------------------------------------------------------

def test_resource_versions_are_monotonic_on_objects_and_lists(kube):
    code, a = http(kube, "POST", CONFIGMAPS, configmap("rv-a"))
    assert code == 201
    code, b = http(kube, "POST", CONFIGMAPS, configmap("rv-b"))
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    _, patched = http(kube, "PATCH", CONFIGMAPS + "/rv-a", {"data": {"k": "w"}}, "application/merge-patch+json")
    assert int(patched["metadata"]["resourceVersion"]) > int(b["metadata"]["resourceVersion"])
    _, listed = http(kube, "GET", CONFIGMAPS)
    assert listed["kind"] == "ConfigMapList"
    assert int(listed["metadata"]["resourceVersion"]) >= int(patched["metadata"]["resourceVersion"])
    # a write that changes nothing keeps the resourceVersion
    _, same = http(kube, "PATCH", CONFIGMAPS + "/rv-a", {"data": {"k": "w"}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == patched["metadata"]["resourceVersion"]


@pytest.mark.parametrize("method,content_type,make_body", [
    ("PATCH", "application/merge-patch+json", lambda rv: {"metadata": {"resourceVersion": rv}, "data": {"k": "x"}}),
    ("PATCH", "application/strategic-merge-patch+json",
     lambda rv: {"metadata": {"resourceVersion": rv}, "data": {"k": "x"}}),
    ("PUT", "application/json", lambda rv: {**configmap("stale"), "metadata": {"name": "stale", "resourceVersion": rv},
                                       "data": {"k": "x"}}),
])
def test_stale_resource_version_is_a_409_conflict(kube, method, content_type, make_body):
    http(kube, "DELETE", CONFIGMAPS + "/stale")
    _, created = http(kube, "POST", CONFIGMAPS, configmap("stale"))
    stale = created["metadata"]["resourceVersion"]
    http(kube, "PATCH", CONFIGMAPS + "/stale", {"data": {"k": "moved on"}}, "application/merge-patch+json")
    code, status = http(kube, method, CONFIGMAPS + "/stale", make_body(stale), content_type)
    assert (code, status["reason"]) == (409, "Conflict")
    assert kube.get("configmaps", "stale", "ns")["data"] == {"k": "moved on"}
    # the current resourceVersion is accepted
    current = kube.get("configmaps", "stale", "ns")["metadata"]["resourceVersion"]
    code, _ = http(kube, method, CONFIGMAPS + "/stale", make_body(current), content_type)
    assert code == 200
    assert kube.get("configmaps", "stale", "ns")["data"] == {"k": "x"}


def test_json_patch_test_op_guards_on_resource_version_like_kopfs_finalizer_patch(kube):
    _, created = http(kube, "POST", CONFIGMAPS, configmap("jp"))
    rv = created["metadata"]["resourceVersion"]
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
           {"op": "add", "path": "/metadata/finalizers", "value": ["kopf.zalando.org/KopfFinalizerMarker"]}]
    code, patched = http(kube, "PATCH", CONFIGMAPS + "/jp", ops, "application/json-patch+json")
    assert code == 200 and patched["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
    code, status = http(kube, "PATCH", CONFIGMAPS + "/jp", ops, "application/json-patch+json")   # rv is stale now
    assert (code, status["reason"]) == (422, "Invalid")
    code, _ = http(kube, "PATCH", CONFIGMAPS + "/jp", [{"op": "remove", "path": "/metadata/finalizers"}],
                   "application/json-patch+json")
    assert code == 200 and "finalizers" not in kube.get("configmaps", "jp", "ns")["metadata"]


# --- 2. uid, creationTimestamp, generation, namespace, 201 ------------------------------------------

def test_create_fills_metadata_and_answers_201(kube):
    code, obj = http(kube, "POST", CLUSTERS, cluster("meta"))
    assert code == 201
    meta = obj["metadata"]
    assert meta["namespace"] == "ml" and meta["generation"] == 1 and len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    code, again = http(kube, "POST", CLUSTERS, cluster("meta"))
    assert (code, again["reason"]) == (409, "AlreadyExists")
    code, generated = http(kube, "POST", CONFIGMAPS, {"metadata": {"generateName": "gen-"}})
    assert code == 201 and generated["metadata"]["name"].startswith("gen-") and len(generated["metadata"]["name"]) == 9


@pytest.mark.parametrize("path,patch,generation", [
    ("", {"spec": {"suspend": True}}, 2),                          # spec change: bumped
    ("", {"metadata": {"labels": {"a": "b"}}}, 1),                 # metadata only: not bumped
    ("/status", {"status": {"phase": "Running"}}, 1),              # status only: not bumped
])
def test_generation_is_bumped_by_spec_changes_only(kube, path, patch, generation):
    name = f"gen-{len(kube.list('clusters', 'ml'))}"
    http(kube, "POST", CLUSTERS, cluster(name))
    code, obj = http(kube, "PATCH", f"{CLUSTERS}/{name}{path}", patch, "application/merge-patch+json")
    assert code == 200 and obj["metadata"]["generation"] == generation


def test_official_client_create_returns_the_object(kube):
    kubernetes = pytest.importorskip("kubernetes")
    client = kubernetes.config.new_client_from_config(config_file=kube.kubeconfig_path)
    try:
        api = kubernetes.client.CustomObjectsApi(client)
        made = api.create_namespaced_custom_object("tasuki.dev", "v1alpha1", "ml", "clusters", cluster("official"))
        assert made["metadata"]["uid"] == kube.get("clusters", "official", "ml")["metadata"]["uid"]
        core = kubernetes.client.CoreV1Api(client)
        cm = core.create_namespaced_config_map("ns", configmap("official"))
        assert cm.metadata.namespace == "ns" and cm.metadata.resource_version
        with pytest.raises(kubernetes.client.ApiException) as err:
            core.read_namespaced_config_map("missing", "ns")
        assert err.value.status == 404
    finally:
        client.close()


# --- 3. selectors and watch -------------------------------------------------------------------------

@pytest.mark.parametrize("selector,labels,expected", [
    ("a=b", {"a": "b"}, True), ("a=b", {"a": "c"}, False), ("a==b", {"a": "b"}, True),
    ("a!=b", {"a": "c"}, True), ("a!=b", {}, True), ("a!=b", {"a": "b"}, False),
    ("a=b,c", {"a": "b", "c": ""}, True), ("a=b,c", {"a": "b"}, False),
    ("!c", {"a": "b"}, True), ("!c", {"c": "x"}, False),
    ("a in (b, x)", {"a": "x"}, True), ("a in (b,x),c", {"a": "x"}, False), ("a notin (b,x)", {"a": "y"}, True),
    ("a notin (b,x)", {"a": "b"}, False), ("", {}, True),
])
def test_label_selector(selector, labels, expected):
    assert parse_label_selector(selector)(labels) is expected


def test_list_filters_by_label_and_field_selectors(kube):
    for name, labels in [("sel-1", {"role": "worker", "group": "cpu"}), ("sel-2", {"role": "worker", "group": "gpu"}),
                         ("sel-3", {"role": "head"})]:
        http(kube, "POST", "/api/v1/namespaces/sel/configmaps", configmap(name, labels))
    cases = [({"labelSelector": "role=worker"}, ["sel-1", "sel-2"]),
             ({"labelSelector": "role=worker,group!=gpu"}, ["sel-1"]),
             ({"labelSelector": "group"}, ["sel-1", "sel-2"]),
             ({"fieldSelector": "metadata.name=sel-3"}, ["sel-3"]),
             ({"fieldSelector": "metadata.name!=sel-3", "labelSelector": "group in (gpu)"}, ["sel-2"])]
    for query, names in cases:
        _, listed = http(kube, "GET", "/api/v1/namespaces/sel/configmaps", query=query)
        assert [o["metadata"]["name"] for o in listed["items"]] == names, query
    code, status = http(kube, "GET", "/api/v1/namespaces/sel/configmaps", query={"labelSelector": "a=(b"})
    assert code == 400
    code, deleted = http(kube, "DELETE", "/api/v1/namespaces/sel/configmaps", query={"labelSelector": "role=worker"})
    assert code == 200 and [o["metadata"]["name"] for o in deleted["items"]] == ["sel-1", "sel-2"]
    assert [o["metadata"]["name"] for o in kube.list("configmaps", "sel")] == ["sel-3"]


def test_watch_from_a_resource_version_replays_and_honours_timeout_and_selectors(kube):
    path = "/api/v1/namespaces/w/configmaps"
    _, listed = http(kube, "GET", path)
    since = listed["metadata"]["resourceVersion"]
    http(kube, "POST", path, configmap("w-1", {"app": "x"}))
    http(kube, "POST", path, configmap("w-2", {"app": "y"}))
    http(kube, "PATCH", path + "/w-1", {"data": {"k": "2"}}, "application/merge-patch+json")
    http(kube, "PATCH", path + "/w-2", {"metadata": {"labels": {"app": "x"}}}, "application/merge-patch+json")
    http(kube, "PATCH", path + "/w-1", {"metadata": {"labels": {"app": "z"}}}, "application/merge-patch+json")
    http(kube, "DELETE", path + "/w-2")
    started = time.monotonic()
    events = watch(kube, path, {"resourceVersion": since, "labelSelector": "app=x", "timeoutSeconds": "1"})
    assert 0.9 < time.monotonic() - started < 8
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "w-1"), ("MODIFIED", "w-1"), ("ADDED", "w-2"), ("DELETED", "w-1"), ("DELETED", "w-2")]
    # without a resourceVersion: the current matching objects, as ADDED
    events = watch(kube, path, {"labelSelector": "app=z", "timeoutSeconds": "1"})
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "w-1")]


def test_watch_streams_changes_as_they_happen(kube):
    path = "/api/v1/namespaces/live/configmaps"
    _, listed = http(kube, "GET", path)
    received: list[tuple[str, str]] = []

    def reader() -> None:
        for t, o in watch(kube, path, {"resourceVersion": listed["metadata"]["resourceVersion"],
                                       "timeoutSeconds": "3"}):
            received.append((t, o["metadata"]["name"]))
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_until(lambda: any(m == "GET" and "watch=true" in p and "/live/" in p for m, p in kube.requests),
                   10, "the watch request")
        kube.create(configmap("live-1", namespace="live"))
        kube.delete("configmaps", "live-1", "live")
    finally:
        thread.join(15)
    assert not thread.is_alive()
    assert received == [("ADDED", "live-1"), ("DELETED", "live-1")]


# --- 4. status and scale subresources, PUT ----------------------------------------------------------

def test_status_and_spec_are_split(kube):
    http(kube, "POST", CLUSTERS, {**cluster("split"), "status": {"phase": "Ignored"}})
    assert "status" not in kube.get("clusters", "split", "ml")            # status on create is dropped
    code, obj = http(kube, "PATCH", CLUSTERS + "/split/status",
                     {"spec": {"image": "changed"}, "status": {"phase": "Running"}}, "application/merge-patch+json")
    assert code == 200 and obj["status"] == {"phase": "Running"} and obj["spec"]["image"] == "tasuki/runtime:0.1.0"
    code, obj = http(kube, "PATCH", CLUSTERS + "/split",
                     {"spec": {"image": "v2"}, "status": {"phase": "Failed"}}, "application/merge-patch+json")
    assert code == 200 and obj["status"] == {"phase": "Running"} and obj["spec"]["image"] == "v2"
    current = kube.get("clusters", "split", "ml")
    code, obj = http(kube, "PUT", CLUSTERS + "/split",
                     {**current, "spec": {"image": "v3"}, "status": {"phase": "Failed"}})
    assert code == 200 and obj["spec"] == {"image": "v3"} and obj["status"] == {"phase": "Running"}
    code, obj = http(kube, "PUT", CLUSTERS + "/split/status",
                     {**obj, "spec": {"image": "no"}, "status": {"phase": "X"}})
    assert code == 200 and obj["spec"] == {"image": "v3"} and obj["status"] == {"phase": "X"}
    code, _ = http(kube, "PATCH", CONFIGMAPS + "/missing/status", {}, "application/merge-patch+json")
    assert code == 404                                            # configmaps have no status subresource


def test_scale_subresource_reads_and_writes_spec_replicas(kube):
    http(kube, "POST", CLUSTERS, cluster("scaled", replicas=1))
    kube.set_status("clusters", "scaled", {"replicas": 1, "selector": "tasuki.dev/cluster=scaled"}, "ml")
    code, scale = http(kube, "GET", CLUSTERS + "/scaled/scale")
    assert code == 200 and scale["kind"] == "Scale" and scale["spec"] == {"replicas": 1}
    assert scale["status"] == {"replicas": 1, "selector": "tasuki.dev/cluster=scaled"}
    code, scale = http(kube, "PATCH", CLUSTERS + "/scaled/scale", {"spec": {"replicas": 3}},
                       "application/merge-patch+json")
    assert code == 200 and scale["spec"] == {"replicas": 3}
    assert kube.get("clusters", "scaled", "ml")["spec"]["replicas"] == 3
    code, _ = http(kube, "PUT", CLUSTERS + "/scaled/scale", {**scale, "spec": {"replicas": -1}})
    assert code == 422


def test_strategic_merge_patch_merges_named_list_items(kube):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smp"},
           "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}
    code, created = http(kube, "POST", "/api/v1/namespaces/ns/pods", pod)
    assert code == 201 and created["status"] == {"phase": "Pending"}
    _, patched = http(kube, "PATCH", "/api/v1/namespaces/ns/pods/smp", {"spec": {"containers": [
        {"name": "b", "image": "b:2"}]}}, "application/strategic-merge-patch+json")
    assert patched["spec"]["containers"] == [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]
    _, patched = http(kube, "PATCH", "/api/v1/namespaces/ns/pods/smp", {"spec": {"containers": [
        {"name": "c", "image": "c:1"}]}}, "application/merge-patch+json")
    assert patched["spec"]["containers"] == [{"name": "c", "image": "c:1"}]


# --- 5. finalizers and garbage collection ----------------------------------------------------------

def test_finalizers_hold_an_object_until_removed(kube):
    http(kube, "POST", CONFIGMAPS, configmap("fin", finalizers=["example.com/hold"]))
    code, obj = http(kube, "DELETE", CONFIGMAPS + "/fin")
    assert code == 200 and obj["metadata"]["deletionTimestamp"]
    assert kube.get("configmaps", "fin", "ns") is not None
    http(kube, "PATCH", CONFIGMAPS + "/fin", {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert kube.get("configmaps", "fin", "ns") is None


PODS = "/api/v1/namespaces/ns/pods"


def pod(name: str, node: str | None = "node-1", grace: int | None = None, **meta) -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "i"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta}, "spec": spec}


@pytest.mark.parametrize("node,spec_grace,query,body,expected", [
    ("node-1", None, None, None, 30),                   # the default grace period
    ("node-1", 7, None, None, 7),                       # the pod's terminationGracePeriodSeconds
    ("node-1", 7, {"gracePeriodSeconds": "3"}, None, 3),   # the request's, in the query (kubectl, the client)
    ("node-1", 7, None, {"gracePeriodSeconds": 2}, 2),  # ... or in the DeleteOptions body
    ("node-1", 7, None, {"gracePeriodSeconds": -1}, 7),  # negative: the default
    ("node-1", 7, {"gracePeriodSeconds": "0"}, None, None),   # 0: gone at once (--force --grace-period=0)
    (None, 7, None, None, None),                        # not bound to a node: no kubelet to wait for
])
def test_deleting_a_bound_pod_is_graceful(kube, node, spec_grace, query, body, expected):
    name = f"grace-{node}-{spec_grace}-{query}-{body}".lower().replace(" ", "").translate(
        str.maketrans("", "", "{}':,"))
    http(kube, "POST", PODS, pod(name, node, spec_grace))
    code, obj = http(kube, "DELETE", f"{PODS}/{name}", body, query=query)
    assert code == 200
    left = kube.get("pods", name, "ns")
    if expected is None:
        assert left is None
        return
    assert left["metadata"]["deletionGracePeriodSeconds"] == expected == obj["metadata"]["deletionGracePeriodSeconds"]
    assert left["metadata"]["deletionTimestamp"]
    kube.set_status("pods", name, {"phase": "Running"}, "ns")         # the kubelet's writes keep it
    assert kube.get("pods", name, "ns")["status"]["phase"] == "Running"
    kube.delete("pods", name, "ns", grace_period_seconds=0)
    assert kube.get("pods", name, "ns") is None


def test_graceful_deletion_is_a_modified_event_then_a_deleted_one_and_only_shortens(kube):
    http(kube, "POST", PODS, pod("grace-watch", grace=20))
    rv = kube.resource_version
    http(kube, "DELETE", f"{PODS}/grace-watch")
    again = http(kube, "DELETE", f"{PODS}/grace-watch", {"gracePeriodSeconds": 60})[1]
    assert again["metadata"]["deletionGracePeriodSeconds"] == 20        # a longer grace changes nothing
    shorter = http(kube, "DELETE", f"{PODS}/grace-watch", query={"gracePeriodSeconds": "5"})[1]
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    http(kube, "DELETE", f"{PODS}/grace-watch", query={"gracePeriodSeconds": "0"})
    events = watch(kube, PODS, {"resourceVersion": str(rv), "timeoutSeconds": "1",
                                "fieldSelector": "metadata.name=grace-watch"})
    assert [(t, o["metadata"].get("deletionGracePeriodSeconds")) for t, o in events] == \
        [("MODIFIED", 20), ("MODIFIED", 5), ("DELETED", 5)]


def test_deletecollection_of_bound_pods_is_graceful_too(kube):
    for name in ("coll-a", "coll-b"):
        http(kube, "POST", PODS, pod(name, labels={"coll": "yes"}))
    http(kube, "DELETE", PODS, query={"labelSelector": "coll=yes", "gracePeriodSeconds": "4"})
    assert [p["metadata"]["deletionGracePeriodSeconds"] for p in kube.list("pods", "ns", "coll=yes")] == [4, 4]
    http(kube, "DELETE", PODS, query={"labelSelector": "coll=yes", "gracePeriodSeconds": "0"})
    assert kube.list("pods", "ns", "coll=yes") == []


def test_a_terminating_pod_with_a_finalizer_waits_for_it_after_the_final_delete(kube):
    http(kube, "POST", PODS, pod("grace-fin", grace=5, finalizers=["example.com/hold"]))
    http(kube, "DELETE", f"{PODS}/grace-fin")
    http(kube, "DELETE", f"{PODS}/grace-fin", query={"gracePeriodSeconds": "0"})
    left = kube.get("pods", "grace-fin", "ns")
    assert left["metadata"]["deletionGracePeriodSeconds"] == 0
    kube.patch("pods", "grace-fin", {"metadata": {"finalizers": None}}, "ns")
    assert kube.get("pods", "grace-fin", "ns") is None


@pytest.mark.parametrize("policy,survivors", [
    (None, set()),                                      # background: dependents and their dependents go
    ("Orphan", {"gc-child", "gc-grandchild", "gc-co-owned"}),
])
def test_deleting_an_owner_collects_its_dependents(kube, policy, survivors):
    ns = f"gc-{policy or 'bg'}".lower()
    owner = kube.create(cluster("gc-owner") | {"metadata": {"name": "gc-owner", "namespace": ns}})
    other = kube.create(configmap("gc-other", namespace=ns))

    def ref(obj, kind):
        return {"apiVersion": obj["apiVersion"], "kind": kind, "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"], "controller": True}
    child = kube.create(configmap("gc-child", namespace=ns, ownerReferences=[ref(owner, "Cluster")]))
    kube.create(configmap("gc-grandchild", namespace=ns, ownerReferences=[ref(child, "ConfigMap")]))
    kube.create(configmap("gc-co-owned", namespace=ns,
                          ownerReferences=[ref(owner, "Cluster"), ref(other, "ConfigMap")]))
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gc-pod", "namespace": ns,
                                                                  "ownerReferences": [ref(owner, "Cluster")]}})
    query = {"propagationPolicy": policy} if policy else None
    code, _ = http(kube, "DELETE", f"/apis/tasuki.dev/v1alpha1/namespaces/{ns}/clusters/gc-owner", query=query)
    assert code == 200
    left = {o["metadata"]["name"] for o in kube.list("configmaps", ns)} - {"gc-other"}
    if policy is None:
        survivors = {"gc-co-owned"}                     # still owned by gc-other
    assert left == survivors
    assert (kube.get("pods", "gc-pod", ns) is None) is (policy is None)
    if policy == "Orphan":
        assert kube.get("configmaps", "gc-child", ns)["metadata"]["ownerReferences"] == []


# --- 6. CRD registration, discovery, lists with kind ------------------------------------------------

def test_posted_crd_registers_the_resource(kube):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Cluster",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    code, _ = http(kube, "GET", "/apis/example.com/v1/widgets")
    assert code == 404
    code, created = http(kube, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert code == 201
    assert {c["type"]: c["status"] for c in created["status"]["conditions"]} == {
        "NamesAccepted": "True", "Established": "True"}
    _, groups = http(kube, "GET", "/apis")
    assert {"groupVersion": "example.com/v1", "version": "v1"} in next(
        g for g in groups["groups"] if g["name"] == "example.com")["versions"]
    _, resources = http(kube, "GET", "/apis/example.com/v1")
    assert resources["resources"][0] | {"verbs": None} == {
        "name": "widgets", "singularName": "widget", "namespaced": False, "kind": "Widget",
        "shortNames": ["wd"], "categories": [], "verbs": None}
    code, _ = http(kube, "POST", "/apis/example.com/v1/widgets", {"metadata": {"name": "w"}})
    assert code == 201
    _, listed = http(kube, "GET", "/apis/example.com/v1/widgets")
    assert listed["kind"] == "WidgetList" and [i["kind"] for i in listed["items"]] == ["Widget"]
    assert "namespace" not in listed["items"][0]["metadata"]
    code, _ = http(kube, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert code == 200
    code, _ = http(kube, "GET", "/apis/example.com/v1/widgets")
    assert code == 404


def test_the_tasuki_crd_is_served_with_status_and_scale(kube):
    _, resources = http(kube, "GET", "/apis/tasuki.dev/v1alpha1")
    names = {r["name"]: r for r in resources["resources"]}
    assert set(names) == {"clusters", "clusters/status", "clusters/scale"}
    assert names["clusters"]["shortNames"] == ["tkc"] and names["clusters"]["namespaced"] is True
    _, core = http(kube, "GET", "/api/v1")
    assert core["groupVersion"] == "v1" and "pods/status" in {r["name"] for r in core["resources"]}


# --- kubectl: Table responses and the everyday verbs ------------------------------------------------

def test_table_responses_carry_the_printer_columns(kube):
    http(kube, "POST", CLUSTERS, cluster("tabled"))
    kube.set_status("clusters", "tabled", {"phase": "Running", "workers": "2/3", "head": {"address": "tasuki://h"}},
                    "ml")
    query = urllib.parse.urlencode({"fieldSelector": "metadata.name=tabled"})
    req = urllib.request.Request(kube.url + CLUSTERS + "?" + query,
                                 headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        table = json.load(r)
    assert table["kind"] == "Table"
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [("Name", 0), ("Phase", 0), ("Ready", 0), ("Pending", 0), ("GPUs", 0), ("Version", 0),
                       ("Age", 0), ("Head", 1), ("Idle", 1)]
    [row] = table["rows"]
    assert row["cells"][:3] == ["tabled", "Running", "2/3"] and row["cells"][7] == "tasuki://h"
    assert row["object"]["metadata"]["name"] == "tabled"


def test_kubectl_apply_get_scale_delete(tmp_path):
    binary = kubectl_path()
    assert binary, MISSING                # fails, not skips: the test setup installs kubectl
    with KubeEmulator() as kube:
        def kubectl(*args: str) -> str:
            done = subprocess.run([binary, *args], env={**os.environ, "KUBECONFIG": kube.kubeconfig_path},
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done.stdout
        kubectl("create", "--validate=false", "-f", str(CRD))
        manifest = tmp_path / "demo.yaml"
        manifest.write_text("apiVersion: tasuki.dev/v1alpha1\nkind: Cluster\nmetadata: {name: demo, namespace: ml}\n"
                            "spec: {image: tasuki/runtime:0.1.0, replicas: 1}\n")
        assert "created" in kubectl("apply", "--validate=false", "-f", str(manifest))
        kube.set_status("clusters", "demo", {"phase": "Running", "workers": "1/1", "head": {"address": "tasuki://h"}},
                        "ml")
        header, row = kubectl("get", "tkc", "-n", "ml", "-o", "wide").splitlines()
        assert header.split() == ["NAME", "PHASE", "READY", "PENDING", "GPUS", "VERSION", "AGE", "HEAD", "IDLE"]
        assert row.split()[:3] == ["demo", "Running", "1/1"] and "tasuki://h" in row
        kubectl("scale", "tkc/demo", "-n", "ml", "--replicas", "3")
        assert kube.get("clusters", "demo", "ml")["spec"]["replicas"] == 3
        kubectl("patch", "tkc", "demo", "-n", "ml", "--subresource=status", "--type=merge",
                "-p", '{"status": {"phase": "Scaling"}}')
        assert kube.get("clusters", "demo", "ml")["status"]["phase"] == "Scaling"
        kubectl("delete", "tkc", "demo", "-n", "ml")
        assert kube.get("clusters", "demo", "ml") is None


def test_stop_closes_open_watches_and_ends_the_server_thread():
    kube = KubeEmulator().start()
    ended = threading.Event()

    def reader() -> None:
        try:
            watch(kube, "/api/v1/namespaces/x/configmaps", {}, timeout=30)   # no timeoutSeconds: open until stop
        except OSError:
            pass
        ended.set()
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        wait_until(lambda: any("watch=true" in p for _, p in kube.requests), 10, "the watch request")
    finally:
        kube.stop()
    assert ended.wait(10) and not kube._thread.is_alive()
    thread.join(5)
    assert not Path(kube.kubeconfig_path).exists()


# --- end to end: a kopf operator ------------------------------------------------------------------

def test_a_kopf_operator_creates_owned_objects_patches_status_and_gc_follows(kube, monkeypatch):
    kopf = pytest.importorskip("kopf")
    from kopf.testing import KopfRunner
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig_path)
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)       # a registry of our own has no default login handlers
    def login(**kwargs):
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_):
        settings.scanning.disabled = True
        settings.posting.enabled = True
        settings.watching.server_timeout = 10
        settings.networking.request_timeout = 10

    @kopf.on.create("tasuki.dev", "v1alpha1", "clusters", registry=registry)
    def create(body, name, namespace, patch, **_):
        kopf.adopt(owned := {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-config"},
                             "data": {"image": body["spec"]["image"]}}, owner=body)
        import kubernetes
        client = kubernetes.config.new_client_from_config(config_file=kube.kubeconfig_path)
        try:
            kubernetes.client.CoreV1Api(client).create_namespaced_config_map(namespace, owned)
        finally:
            client.close()
        patch.status["phase"] = "Running"
        kopf.info(body, reason="Configured", message=f"ConfigMap {name}-config created")

    deleted: list[str] = []

    @kopf.on.delete("tasuki.dev", "v1alpha1", "clusters", registry=registry)
    def delete(name, **_):                  # a deletion handler: kopf puts its finalizer on the Cluster
        deleted.append(name)

    with KopfRunner(["run", "--standalone", "--namespace", "e2e", "--verbose"], registry=registry,
                    timeout=60) as runner:
        kube.create(cluster("e2e") | {"metadata": {"name": "e2e", "namespace": "e2e"}})
        config = wait_until(lambda: kube.get("configmaps", "e2e-config", "e2e"), 30, "the ConfigMap")
        owner = kube.get("clusters", "e2e", "e2e")
        assert config["data"] == {"image": "tasuki/runtime:0.1.0"}
        assert config["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        wait_until(lambda: (kube.get("clusters", "e2e", "e2e") or {}).get("status", {}).get("phase") == "Running",
                   30, "status.phase Running")
        assert wait_until(lambda: kube.get("clusters", "e2e", "e2e")["metadata"].get("finalizers"), 30,
                          "kopf's finalizer")
        kube.delete("clusters", "e2e", "e2e")
        wait_until(lambda: kube.get("clusters", "e2e", "e2e") is None, 30, "the Cluster to go (finalizer removed)")
        assert kube.get("configmaps", "e2e-config", "e2e") is None
        assert deleted == ["e2e"]
        wait_until(lambda: [e for e in kube.list("events", "e2e", field_selector="involvedObject.name=e2e")
                            if e["reason"] == "Configured"], 30, f"kopf's Event (requests: {kube.requests})")
    used = {(a["verb"], a["apiGroup"], a["resource"] + (f"/{a['subresource']}" if a["subresource"] else ""))
            for a in kube.audit if a["namespace"] == "e2e"}
    assert {("watch", "tasuki.dev", "clusters"), ("patch", "tasuki.dev", "clusters"),
            ("patch", "tasuki.dev", "clusters/status"), ("create", "", "configmaps"), ("create", "", "events")} <= used
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None
    assert ".<locals>.create' succeeded" in runner.output and ".<locals>.delete' succeeded" in runner.output
    problems = [line for line in runner.output.splitlines() if ("[ERROR" in line or "[WARNING" in line)
                and "OS signals are ignored" not in line]       # KopfRunner runs kopf in a thread
    assert problems == [], runner.output

"""tasuki_operator.manifests: a Cluster turned into its Secret, Service and Pods (pure builders).

Table-driven: resources -> advertised resources, GPU limits, /dev/shm sizing and its refusal, env,
probes, labels, owner references, template overrides; and every object built validates against the
real Kubernetes schemas (kubernetes-validate, strict) for each version 1.29..1.37 it ships.
"""
from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tasuki_operator import manifests as m
from tasuki_operator.manifests import ManifestError
from tasuki_operator.quantity import parse_quantity

Mi, Gi = 1 << 20, 1 << 30

# The manifest of issue 13, exactly as written (test_crd checks that this example is that manifest),
# plus the uid the API server would add.
ISSUE_MANIFEST = (Path(__file__).resolve().parent.parent / "examples" / "k8s" / "cpu-gpu-cluster.yaml").read_text()
UID = "6f1d2c3b-0000-4000-8000-1234567890ab"

# Every pod-template override the CRD allows, on the head and on a group.
OVERRIDES = {
    "nodeSelector": {"pool": "tasuki"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
    "env": [{"name": "OMP_NUM_THREADS", "value": "1"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                {"name": "cache", "emptyDir": {}}],
    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True},
                     {"name": "cache", "mountPath": "/root/.cache"}],
    "labels": {"team": "ml", "app.kubernetes.io/part-of": "research"},
    "annotations": {"example.com/owner": "alice", "prometheus.io/path": "/custom"},
    "serviceAccountName": "tasuki-runner",
}


def issue_cluster() -> dict:
    cluster = yaml.safe_load(ISSUE_MANIFEST)
    cluster["metadata"]["uid"] = UID
    return cluster


def make_cluster(**spec) -> dict:
    """A one-group cluster ("cpu", 1 CPU, 2Gi) with `spec` fields replaced."""
    base = {"image": "tasuki/runtime:0.1.0",
            "head": {"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}},
            "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 4,
                              "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}]}
    return {"apiVersion": m.API_VERSION, "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "ml", "uid": UID}, "spec": base | spec}


def full_cluster() -> dict:
    """Everything set: pull policy and secrets, service type, metrics, overrides, custom resources."""
    cluster = make_cluster(
        imagePullPolicy="IfNotPresent", imagePullSecrets=[{"name": "regcred"}], objectStoreMemory="1Gi",
        metrics={"port": 9090, "scrapeAnnotations": True},
        head={"numCpus": 0, "serviceType": "LoadBalancer",
              "resources": {"requests": {"cpu": "500m", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
              **copy.deepcopy(OVERRIDES)},
        workerGroups=[{"name": "a100", "replicas": 0, "minReplicas": 0, "maxReplicas": 8,
                       "resources": {"requests": {"cpu": "7500m", "memory": "30Gi", "nvidia.com/gpu": 2},
                                     "limits": {"cpu": "7500m", "memory": "30Gi", "nvidia.com/gpu": 2}},
                       "tasukiResources": {"ssd": 1, "a100": 2}, **copy.deepcopy(OVERRIDES)}])
    return cluster


def env_of(pod: dict) -> dict[str, dict]:
    entries = pod["spec"]["containers"][0]["env"]
    assert len({e["name"] for e in entries}) == len(entries), "duplicate env names"
    return {e["name"]: e for e in entries}


def env_value(pod: dict, name: str) -> str:
    return env_of(pod)[name]["value"]


def shm_volume(pod: dict) -> dict:
    return next(v for v in pod["spec"]["volumes"] if v["name"] == m.SHM_VOLUME)


# --- advertised resources --------------------------------------------------------------------------
@pytest.mark.parametrize("resources, overrides, expected", [
    ({"limits": {"cpu": "1", "memory": "2Gi"}}, None, {"CPU": 1.0, "memory": 2 * Gi}),
    ({"limits": {"cpu": "500m"}}, None, {"CPU": 0.5}),                                  # fractional CPU
    ({"limits": {"cpu": 1.5, "memory": "1G"}}, None, {"CPU": 1.5, "memory": 10**9}),
    ({"requests": {"cpu": "250m", "memory": "1Gi"}}, None, {"CPU": 0.25, "memory": Gi}),   # requests only
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "3"}}, None, {"CPU": 3.0}),           # limits win
    ({"requests": {"memory": "1Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}, None, {"CPU": 2.0, "memory": 3 * Gi}),
    ({"limits": {"cpu": "8", "nvidia.com/gpu": "2"}}, None, {"CPU": 8.0, "GPU": 2.0}),
    ({"requests": {"cpu": "8", "nvidia.com/gpu": 1}}, None, {"CPU": 8.0, "GPU": 1.0}),
    ({"limits": {"cpu": "4", "nvidia.com/gpu": "0"}}, None, {"CPU": 4.0}),              # no "GPU": 0, as the runtime
    ({"limits": {"cpu": "1"}}, {"numCpus": 0}, {"CPU": 0.0}),                           # 0 keeps work off the head
    ({"limits": {"cpu": "4"}}, {"numCpus": 2.5}, {"CPU": 2.5}),
    ({"limits": {"cpu": "4"}}, {"numCpus": "1500m"}, {"CPU": 1.5}),
    ({"limits": {"cpu": "4", "nvidia.com/gpu": 4}}, {"numGpus": 1}, {"CPU": 4.0, "GPU": 1.0}),
    ({"limits": {"cpu": "4", "nvidia.com/gpu": 4}}, {"numGpus": 0}, {"CPU": 4.0}),
    (None, {"numCpus": 2}, {"CPU": 2.0}),
    ({"limits": {"cpu": "2"}}, {"tasukiResources": {"ssd": 1, "tpu_slice": 0.5, "big": "2k"}},
     {"CPU": 2.0, "ssd": 1.0, "tpu_slice": 0.5, "big": 2000.0}),
])
def test_advertised_resources(resources, overrides, expected):
    assert m.advertised_resources(resources, overrides, path="spec.workerGroups[0]") == expected


@pytest.mark.parametrize("resources, overrides, field, message", [
    ({}, None, "spec.workerGroups[0].resources.limits.cpu", "no CPU amount"),
    ({"limits": {"memory": "1Gi"}}, {}, "spec.workerGroups[0].resources.limits.cpu", "numCpus"),
    ({"limits": {"cpu": "1K"}}, None, "spec.workerGroups[0].resources.limits.cpu", "'1K' is not a quantity"),
    ({"requests": {"cpu": "-1"}}, None, "spec.workerGroups[0].resources.requests.cpu", "negative"),
    ({"limits": {"cpu": "1", "nvidia.com/gpu": "500m"}}, None,
     "spec.workerGroups[0].resources.limits.nvidia.com/gpu", "whole number"),
    ({"limits": {"cpu": "1", "memory": "2GB"}}, None, "spec.workerGroups[0].resources.limits.memory", "'2GB'"),
    ({"limits": {"cpu": "1"}}, {"numCpus": -2}, "spec.workerGroups[0].numCpus", "negative"),
    ({"limits": {"cpu": "1"}}, {"numGpus": 1.5}, "spec.workerGroups[0].numGpus", "whole number"),
    ({"limits": {"cpu": "1"}}, {"tasukiResources": {"GPU": 1}}, "spec.workerGroups[0].tasukiResources.GPU",
     "not a custom resource"),
    ({"limits": {"cpu": "1"}}, {"tasukiResources": {"CPU": 1}}, "spec.workerGroups[0].tasukiResources.CPU",
     "not a custom resource"),
    ({"limits": {"cpu": "1"}}, {"tasukiResources": {"ssd": -1}}, "spec.workerGroups[0].tasukiResources.ssd",
     "negative"),
    ({"limits": {"cpu": "1"}}, {"tasukiResources": {"ssd": "lots"}}, "spec.workerGroups[0].tasukiResources.ssd",
     "not a quantity"),
    ({"limits": {"cpu": "1"}}, {"tasukiResources": [1]}, "spec.workerGroups[0].tasukiResources", "must map"),
])
def test_advertised_resources_refuses(resources, overrides, field, message):
    with pytest.raises(ManifestError, match=re.escape(message)) as err:
        m.advertised_resources(resources, overrides, path="spec.workerGroups[0]")
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ")


@pytest.mark.parametrize("group, num_cpus, num_gpus, resources_env", [
    ("cpu", "1", "0", "{}"),
    ("gpu", "1", "1", "{}"),
])
def test_the_issue_manifest_advertises_through_env(group, num_cpus, num_gpus, resources_env):
    pod = m.worker_pod(issue_cluster(), group, f"demo-worker-{group}-x1y2z")
    assert env_value(pod, "TASUKI_NUM_CPUS") == num_cpus
    assert env_value(pod, "TASUKI_NUM_GPUS") == num_gpus
    assert env_value(pod, "TASUKI_RESOURCES") == resources_env


def test_custom_and_fractional_resources_reach_the_runtime_env():
    pod = m.worker_pod(full_cluster(), "a100", "demo-worker-a100-aaaaa")
    assert env_value(pod, "TASUKI_NUM_CPUS") == "7.5"
    assert env_value(pod, "TASUKI_NUM_GPUS") == "2"
    assert json.loads(env_value(pod, "TASUKI_RESOURCES")) == {"a100": 2.0, "ssd": 1.0}   # no CPU, GPU, memory


def test_memory_and_labels_reach_the_runtime_env():
    """The node advertises the memory the autoscaler packs by, and carries the pod's own labels (issue 16)."""
    pod = m.worker_pod(full_cluster(), "a100", "demo-worker-a100-aaaaa")
    group = full_cluster()["spec"]["workerGroups"][0]
    assert int(env_value(pod, "TASUKI_MEMORY")) == m.advertised_resources(group["resources"], group)["memory"]
    assert json.loads(env_value(pod, "TASUKI_LABELS")) == group.get("labels", {})
    head = m.head_pod(full_cluster())
    assert int(env_value(head, "TASUKI_MEMORY")) == 4 * Gi
    assert json.loads(env_value(head, "TASUKI_LABELS")) == OVERRIDES["labels"]     # user labels only
    pod = m.worker_pod(make_cluster(workerGroups=[{"name": "cpu", "resources": {"limits": {"cpu": "1500m"}}}]),
                       "cpu", "demo-worker-cpu-abcde")
    assert "TASUKI_MEMORY" not in env_of(pod) and env_value(pod, "TASUKI_NUM_CPUS") == "1.5"


def test_the_head_advertises_no_cpu_when_numcpus_is_0():
    pod = m.head_pod(issue_cluster())
    assert env_value(pod, "TASUKI_NUM_CPUS") == "0"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "1"     # the pod still gets its CPU


@pytest.mark.parametrize("group, gpus", [("cpu", None), ("gpu", "1")])
def test_gpu_limits_are_kept(group, gpus):
    pod = m.worker_pod(issue_cluster(), group, "demo-worker-x-abcde")
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"].get("nvidia.com/gpu") == gpus
    assert resources["requests"].get("nvidia.com/gpu") == gpus
    assert resources == m.find_group(issue_cluster(), group)[1]["resources"]         # copied as given


# --- /dev/shm --------------------------------------------------------------------------------------
@pytest.mark.parametrize("store, limit, size", [
    ("512Mi", "2Gi", 768 * Mi),
    ("1Gi", "2Gi", 1280 * Mi),
    ("1536Mi", "2Gi", 1792 * Mi),                 # exactly fits: 1.5Gi + 256Mi + 256Mi = 2Gi
    ("3Gi", None, 3 * Gi + 256 * Mi),             # no limit: nothing to fit
    ("100M", "1Gi", 10**8 + 256 * Mi),
])
def test_shm_is_the_store_plus_headroom(store, limit, size):
    resources = {"limits": {"cpu": "1", **({"memory": limit} if limit else {})}}
    group = {"name": "cpu", "replicas": 1, "resources": resources}
    cluster = make_cluster(objectStoreMemory=store, workerGroups=[group],
                           head={"resources": {"limits": {"cpu": "1"}}})
    pod = m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")
    volume = shm_volume(pod)
    assert volume["emptyDir"]["medium"] == "Memory"
    assert parse_quantity(volume["emptyDir"]["sizeLimit"]) == size
    assert {"name": m.SHM_VOLUME, "mountPath": "/dev/shm"} in pod["spec"]["containers"][0]["volumeMounts"]
    assert env_value(pod, "TASUKI_OBJECT_STORE_MEMORY") == str(int(parse_quantity(store)))
    if limit:                                     # the whole of /dev/shm is counted inside the memory limit
        assert size + m.PROCESS_MEMORY_BYTES <= parse_quantity(limit)


@pytest.mark.parametrize("resources, store", [
    ({"limits": {"cpu": "1", "memory": "10Gi"}}, 3 * Gi),                       # 30% of the limit
    ({"requests": {"cpu": "1", "memory": "10Gi"}}, 3 * Gi),                     # of the request, without a limit
    ({"limits": {"cpu": "1", "memory": "1Gi"}}, int(Gi * 0.3)),
    ({"limits": {"cpu": "1", "memory": "700Mi"}}, 188 * Mi),                    # capped so that it fits
    ({"limits": {"cpu": "1"}}, m.DEFAULT_OBJECT_STORE_BYTES),                   # no memory known at all
])
def test_default_object_store(resources, store):
    cluster = make_cluster(workerGroups=[{"name": "cpu", "resources": resources}])
    assert m.object_store_bytes(cluster, resources, path="spec.workerGroups[0]") == store
    pod = m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")
    assert env_value(pod, "TASUKI_OBJECT_STORE_MEMORY") == str(store)


def test_the_store_that_does_not_fit_is_refused_with_both_numbers():
    cluster = make_cluster(objectStoreMemory="3Gi")
    with pytest.raises(ManifestError) as err:
        m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")
    assert err.value.field == "spec.workerGroups[0].resources.limits.memory"
    assert str(err.value) == (
        "spec.workerGroups[0].resources.limits.memory: spec.objectStoreMemory (3Gi) plus 256Mi of /dev/shm "
        "headroom and 256Mi for the tasuki processes (3584Mi) does not fit spec.workerGroups[0].resources.limits."
        "memory (2Gi): /dev/shm is memory counted inside the pod's limit. Raise the limit to at least 3584Mi, "
        "or lower spec.objectStoreMemory to at most 1536Mi")


@pytest.mark.parametrize("spec, field, message", [
    ({"objectStoreMemory": "3Gi"}, "spec.head.resources.limits.memory", "spec.objectStoreMemory (3Gi)"),
    ({"objectStoreMemory": "1537Mi"}, "spec.head.resources.limits.memory", "at most 1536Mi"),
    ({"head": {"resources": {"limits": {"cpu": "1", "memory": "512Mi"}}}}, "spec.head.resources.limits.memory",
     "the default object store (64Mi)"),
    ({"objectStoreMemory": "1Mi"}, "spec.objectStoreMemory", "below the smallest object store, 64Mi"),
    ({"objectStoreMemory": "lots"}, "spec.objectStoreMemory", "'lots' is not a quantity"),
])
def test_head_memory_refusals(spec, field, message):
    with pytest.raises(ManifestError, match=re.escape(message)) as err:
        m.head_pod(make_cluster(**spec))
    assert err.value.field == field


@pytest.mark.parametrize("store, limit, fits", [
    (512 * Mi, 2 * Gi, True), (1536 * Mi, 2 * Gi, True), (1536 * Mi + 1, 2 * Gi, False), (64 * Mi, None, True),
    (64 * Mi, 512 * Mi, False),
])
def test_shm_size(store, limit, fits):
    if fits:
        assert m.shm_size(store, limit) == store + m.SHM_HEADROOM_BYTES
    else:
        with pytest.raises(ManifestError, match="does not fit"):
            m.shm_size(store, limit)


# --- env -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", ["head", "worker"])
def test_the_token_comes_from_the_secret_never_in_plain_text(build):
    cluster = issue_cluster()
    token = "s3cr3t-token-value"
    pod = m.head_pod(cluster) if build == "head" else m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")
    assert env_of(pod)["TASUKI_TOKEN"] == {"name": "TASUKI_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "demo-token", "key": "token"}}}
    secret = m.token_secret(cluster, token)
    assert secret["metadata"]["name"] == "demo-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    assert token not in json.dumps(pod)


@pytest.mark.parametrize("build, name, field_path", [
    ("head", "TASUKI_NODE_NAME", "metadata.name"),
    ("head", "TASUKI_NODE_GROUP", "metadata.labels['tasuki.dev/group']"),
    ("head", "TASUKI_NODE_IP_ADDRESS", "status.podIP"),
    ("worker", "TASUKI_NODE_NAME", "metadata.name"),
    ("worker", "TASUKI_NODE_GROUP", "metadata.labels['tasuki.dev/group']"),
    ("worker", "TASUKI_NODE_IP_ADDRESS", "status.podIP"),
])
def test_downward_api_env(build, name, field_path):
    cluster = issue_cluster()
    pod = m.head_pod(cluster) if build == "head" else m.worker_pod(cluster, "gpu", "demo-worker-gpu-abcde")
    assert env_of(pod)[name]["valueFrom"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}


@pytest.mark.parametrize("build, group", [("head", "head"), ("worker", "cpu"), ("worker", "gpu")])
def test_the_group_env_reads_the_group_label(build, group):
    """TASUKI_NODE_GROUP is the downward API on the label: it can never disagree with it."""
    cluster = issue_cluster()
    pod = m.head_pod(cluster) if build == "head" else m.worker_pod(cluster, group, f"demo-worker-{group}-abcde")
    label = re.fullmatch(r"metadata\.labels\['(.+)'\]", env_of(pod)["TASUKI_NODE_GROUP"]["valueFrom"]["fieldRef"][
        "fieldPath"])[1]
    assert pod["metadata"]["labels"][label] == group


def test_head_env_and_command():
    pod = m.head_pod(make_cluster(metrics={"port": 9100}))
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["tasuki", "start", "--head", "--block"]
    assert env_value(pod, "TASUKI_PORT") == "6380"
    assert env_value(pod, "TASUKI_METRICS_PORT") == "9100"
    assert env_value(pod, "TASUKI_METRICS_HOST") == "0.0.0.0"
    assert env_value(pod, "TASUKI_HEAD_EXPECT_RESTART") == "1"      # an evicted head leaves its workers waiting
    assert "TASUKI_ADDRESS" not in env_of(pod)
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in container["ports"]
    assert {"name": "tasuki", "containerPort": 6380, "protocol": "TCP"} in container["ports"]


def test_workers_join_through_the_head_service():
    cluster = issue_cluster()
    pod = m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["tasuki", "start", "--address", "$(TASUKI_ADDRESS)", "--block"]
    service = m.head_service(cluster)
    assert env_value(pod, "TASUKI_ADDRESS") == f"{service['metadata']['name']}.ml.svc:6380"
    # every $(VAR) the kubelet expands in the command is defined before it is used
    referenced = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(container["args"]))
    assert referenced and set(referenced) <= set(env_of(pod))
    assert env_value(pod, "TASUKI_DRAIN_TIMEOUT_S") == str(m.DRAIN_TIMEOUT_S)


# --- probes, lifecycle -----------------------------------------------------------------------------
def test_head_probes_use_healthz_on_the_metrics_port():
    pod = m.head_pod(issue_cluster())
    container = pod["spec"]["containers"][0]
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["failureThreshold"] * container["livenessProbe"]["periodSeconds"] >= 30
    assert pod["spec"]["restartPolicy"] == "Always"


def test_worker_probes_are_local():
    pod = m.worker_pod(issue_cluster(), "cpu", "demo-worker-cpu-abcde")
    container = pod["spec"]["containers"][0]
    for kind in ("readinessProbe", "livenessProbe"):
        command = container[kind]["exec"]["command"]
        assert command[:2] == ["sh", "-c"] and "cluster.json" in command[2]
        assert "$(" not in " ".join(command)              # the kubelet would expand $(...) in an exec probe
        assert "status" not in command[2]                 # nothing that asks the head
    # the liveness probe gives `tasuki start` its 60 s to register before the first check
    assert container["livenessProbe"]["initialDelaySeconds"] >= 60
    assert pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("build", ["head", "worker"])
def test_grace_period_covers_a_drain_and_service_links_are_off(build):
    cluster = issue_cluster()
    pod = m.head_pod(cluster) if build == "head" else m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")
    assert pod["spec"]["terminationGracePeriodSeconds"] > m.DRAIN_TIMEOUT_S + 15
    assert pod["spec"]["enableServiceLinks"] is False


# --- labels, names, owner references ---------------------------------------------------------------
@pytest.mark.parametrize("role, group, expected", [
    (None, None, {"tasuki.dev/cluster": "demo", "app.kubernetes.io/managed-by": "tasuki-operator"}),
    ("head", None, {"tasuki.dev/cluster": "demo", "app.kubernetes.io/managed-by": "tasuki-operator",
                    "tasuki.dev/role": "head", "tasuki.dev/group": "head"}),
    ("worker", "gpu", {"tasuki.dev/cluster": "demo", "app.kubernetes.io/managed-by": "tasuki-operator",
                       "tasuki.dev/role": "worker", "tasuki.dev/group": "gpu"}),
])
def test_labels(role, group, expected):
    assert m.labels(issue_cluster(), role, group) == expected


@pytest.mark.parametrize("role, group, error", [("boss", None, ValueError), (None, "gpu", ValueError),
                                                 ("worker", "GPU!", ManifestError), ("worker", None, ManifestError)])
def test_labels_refuse(role, group, error):
    with pytest.raises(error):
        m.labels(issue_cluster(), role, group)


def built_objects(cluster: dict) -> list[dict]:
    objects = [m.token_secret(cluster, "token-abc"), m.head_service(cluster), m.head_pod(cluster)]
    for group in cluster["spec"]["workerGroups"]:
        objects.append(m.worker_pod(cluster, group["name"], m.pod_name(cluster, group["name"], "k7x2q")))
    return objects


@pytest.mark.parametrize("make", [issue_cluster, full_cluster], ids=["issue", "full"])
def test_everything_is_labelled_and_owned_by_the_cluster(make):
    cluster = make()
    for obj in built_objects(cluster):
        meta = obj["metadata"]
        assert meta["namespace"] == cluster["metadata"]["namespace"]
        assert meta["labels"]["tasuki.dev/cluster"] == "demo"
        assert meta["ownerReferences"] == [{"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster", "name": "demo",
                                            "uid": UID, "controller": True, "blockOwnerDeletion": True}]
        if obj["kind"] == "Pod":
            role = "head" if obj["spec"]["restartPolicy"] == "Always" else "worker"
            assert meta["labels"]["tasuki.dev/role"] == role
            assert meta["labels"]["tasuki.dev/group"] in ["head", *(g["name"] for g in cluster["spec"]["workerGroups"])]


def test_the_service_selects_the_head_pod_only():
    cluster = issue_cluster()
    selector = m.head_service(cluster)["spec"]["selector"]
    head = m.head_pod(cluster)["metadata"]["labels"]
    worker = m.worker_pod(cluster, "cpu", "demo-worker-cpu-abcde")["metadata"]["labels"]
    assert selector.items() <= head.items()
    assert not selector.items() <= worker.items()


@pytest.mark.parametrize("spec, service_type, metrics_port", [
    ({}, "ClusterIP", 8080),
    ({"head": {"serviceType": "NodePort", "resources": {"limits": {"cpu": "1"}}}, "metrics": {"port": 9000}},
     "NodePort", 9000),
])
def test_head_service(spec, service_type, metrics_port):
    service = m.head_service(make_cluster(**spec))
    assert service["metadata"]["name"] == "demo-head"
    assert service["spec"]["type"] == service_type
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("tasuki", 6380, "tasuki"), ("metrics", metrics_port, "metrics")}


def test_the_secret_is_immutable_and_keyed_token():
    secret = m.token_secret(issue_cluster(), "abc")
    assert secret["immutable"] is True
    assert list(secret["data"]) == ["token"]
    with pytest.raises(ValueError):
        m.token_secret(issue_cluster(), "")


@pytest.mark.parametrize("group, suffix, name", [
    ("cpu", "ab12c", "demo-worker-cpu-ab12c"),
    ("gpu-a100", "zzzzz", "demo-worker-gpu-a100-zzzzz"),
    ("head", "q1w2e", "demo-head-q1w2e"),
])
def test_pod_name(group, suffix, name):
    assert m.pod_name(issue_cluster(), group, suffix) == name


@pytest.mark.parametrize("group, suffix", [("cpu", "AB12C"), ("cpu", ""), ("cpu", "a_b"), ("Bad Group", "abcde")])
def test_pod_name_refuses(group, suffix):
    with pytest.raises(ValueError):
        m.pod_name(issue_cluster(), group, suffix)


def test_head_pod_name_and_given_name():
    assert m.head_pod(issue_cluster())["metadata"]["name"] == "demo-head"
    assert m.head_pod(issue_cluster(), "demo-head-x1x1x")["metadata"]["name"] == "demo-head-x1x1x"


# --- overrides ------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", ["head", "worker"])
def test_template_overrides_are_applied(build):
    cluster = full_cluster()
    pod = m.head_pod(cluster) if build == "head" else m.worker_pod(cluster, "a100", "demo-worker-a100-abcde")
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert spec["nodeSelector"] == OVERRIDES["nodeSelector"]
    assert spec["tolerations"] == OVERRIDES["tolerations"]
    assert spec["affinity"] == OVERRIDES["affinity"]
    assert spec["serviceAccountName"] == "tasuki-runner"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["env"][-2:] == OVERRIDES["env"]                                   # appended after ours
    assert spec["volumes"][0]["name"] == m.SHM_VOLUME and spec["volumes"][1:] == OVERRIDES["volumes"]
    assert container["volumeMounts"][1:] == OVERRIDES["volumeMounts"]
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "ml" and labels["app.kubernetes.io/part-of"] == "research"
    assert labels["tasuki.dev/role"] == build
    assert pod["metadata"]["annotations"]["example.com/owner"] == "alice"


def test_scrape_annotations_on_the_head_and_the_spec_may_change_them():
    annotations = m.head_pod(full_cluster())["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert annotations["prometheus.io/path"] == "/custom"                      # the spec's annotation wins
    assert m.head_pod(issue_cluster())["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}


@pytest.mark.parametrize("metrics", [{"scrapeAnnotations": False}, {"port": 9000, "scrapeAnnotations": False}])
def test_scrape_annotations_off(metrics):
    pod = m.head_pod(make_cluster(metrics=metrics))
    assert "annotations" not in pod["metadata"]


def test_pull_secrets_given_as_names():
    pod = m.head_pod(make_cluster(imagePullSecrets=["a", {"name": "b"}]))
    assert pod["spec"]["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]


@pytest.mark.parametrize("override, field, message", [
    ({"env": [{"name": "X", "value": "1"}, {"name": "TASUKI_NUM_CPUS", "value": "8"}]},
     "spec.workerGroups[0].env[1].name", "set by the operator"),
    ({"env": [{"name": "TASUKI_TOKEN", "value": "plain"}]}, "spec.workerGroups[0].env[0].name", "set by the operator"),
    ({"labels": {"tasuki.dev/role": "head"}}, "spec.workerGroups[0].labels.tasuki.dev/role", "operator's"),
    ({"labels": {"app.kubernetes.io/managed-by": "me"}},
     "spec.workerGroups[0].labels.app.kubernetes.io/managed-by", "operator's"),
    ({"annotations": {"tasuki.dev/x": "1"}}, "spec.workerGroups[0].annotations.tasuki.dev/x", "operator's"),
    ({"volumes": [{"name": "dshm", "emptyDir": {}}]}, "spec.workerGroups[0].volumes[0].name", "/dev/shm volume"),
    ({"env": [{"name": "TASUKI_LABELS", "value": "{}"}]}, "spec.workerGroups[0].env[0].name", "set by the operator"),
    ({"env": [{"name": "TASUKI_MEMORY", "value": "1"}]}, "spec.workerGroups[0].env[0].name", "set by the operator"),
    ({"labels": {"zone": "a b"}}, "spec.workerGroups[0].labels.zone", "has the value 'a b'"),
    ({"volumeMounts": [{"name": "x", "mountPath": "/dev/shm"}]}, "spec.workerGroups[0].volumeMounts[0].mountPath",
     "object store"),
])
def test_overrides_that_would_replace_the_operators_are_refused(override, field, message):
    group = {"name": "cpu", "resources": {"limits": {"cpu": "1", "memory": "2Gi"}}, **override}
    with pytest.raises(ManifestError, match=re.escape(message)) as err:
        m.worker_pod(make_cluster(workerGroups=[group]), "cpu", "demo-worker-cpu-abcde")
    assert err.value.field == field


# --- whole-spec checks -------------------------------------------------------------------------------
def _with(cluster: dict, path: tuple, value) -> dict:
    target = cluster
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return cluster


@pytest.mark.parametrize("path, value, field, message", [
    (("spec", "image"), None, "spec.image", "no image"),
    (("metadata", "name"), "Demo", "metadata.name", "lower-case"),
    (("metadata", "name"), "d" * 58, "metadata.name", "at most 57"),
    (("metadata", "uid"), None, "metadata.uid", "no uid"),
    (("spec", "metrics"), {"port": 6380}, "spec.metrics.port", "runtime port"),
    (("spec", "metrics"), {"port": 70000}, "spec.metrics.port", "1-65535"),
    (("spec", "head", "serviceType"), "ExternalName", "spec.head.serviceType", "ExternalName"),
    (("spec", "workerGroups", 1, "name"), "cpu", "spec.workerGroups[1].name", "also the name of spec.workerGroups[0]"),
    (("spec", "workerGroups", 1, "name"), "GPU", "spec.workerGroups[1].name", "not a valid group name"),
    (("spec", "workerGroups", 1, "name"), "head", "spec.workerGroups[1].name", "head's group label"),
    (("spec", "workerGroups", 1, "resources"), {"limits": {"cpu": "1", "memory": "1000Mi"}},
     "spec.workerGroups[1].resources.limits.memory", "does not fit"),
    (("spec", "workerGroups", 1, "resources", "limits", "memory"), "1Gi",
     "spec.workerGroups[1].resources.requests.memory", "'4Gi' is above spec.workerGroups[1].resources.limits.memory"),
    (("spec", "workerGroups", 0, "resources", "requests", "cpu"), "1500m",
     "spec.workerGroups[0].resources.requests.cpu", "'1500m' is above"),
])
def test_check_cluster_refuses_with_the_field_path(path, value, field, message):
    cluster = _with(issue_cluster(), path, value)
    with pytest.raises(ManifestError, match=re.escape(message)) as err:
        m.check_cluster(cluster)
    assert err.value.field == field


def test_check_cluster_accepts_the_issue_manifest_and_the_full_one():
    m.check_cluster(issue_cluster())
    m.check_cluster(full_cluster())


def test_an_unknown_group_is_named():
    with pytest.raises(ManifestError, match=r"no worker group named 'tpu' \(the groups: 'cpu', 'gpu'\)"):
        m.worker_pod(issue_cluster(), "tpu", "demo-worker-tpu-abcde")


def test_builders_do_not_change_the_cluster():
    cluster = full_cluster()
    before = copy.deepcopy(cluster)
    objects = built_objects(cluster)
    assert cluster == before
    objects[2]["spec"]["containers"][0]["env"].append({"name": "Y", "value": "2"})   # nor share lists with it
    objects[2]["spec"]["volumes"].append({"name": "z", "emptyDir": {}})
    assert cluster == before


# --- the real Kubernetes schemas ----------------------------------------------------------------------
def kubernetes_versions() -> list[str]:
    """Every minor version 1.29+ that kubernetes-validate ships schemas for (1.29..1.37 at least)."""
    versions = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    return sorted((v for v in versions if tuple(map(int, v.split("."))) >= (1, 29)),
                  key=lambda v: tuple(map(int, v.split("."))))


def test_kubernetes_validate_ships_1_29_to_1_37():
    assert {f"1.{minor}" for minor in range(29, 38)} <= set(kubernetes_versions())


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("make", [issue_cluster, full_cluster], ids=["issue", "full"])
def test_every_object_validates_strictly(make, version):
    objects = built_objects(make())
    assert [o["kind"] for o in objects][:3] == ["Secret", "Service", "Pod"]
    for obj in objects:
        assert kubernetes_validate.validate(obj, version, strict=True) == version


def test_strict_validation_would_catch_a_mistake():
    """The check above can fail: a misspelt field is refused by the strict schema."""
    pod = m.head_pod(issue_cluster())
    pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.37", strict=True)

"""tasuki_operator.spec: the defaults a Cluster gets (from crd.yaml) and the checks the operator makes itself."""
from __future__ import annotations

import copy

import pytest

from tasuki_operator import spec as spec_module
from tasuki_operator.spec import InvalidSpec, SpecError, checked_spec, validate_spec, with_defaults


def cluster_spec(**changes) -> dict:
    """Issue 13's spec (two groups, cpu and gpu), with top-level fields replaced by `changes`."""
    spec = {
        "image": "tasuki/runtime:0.1.0",
        "objectStoreMemory": "512Mi",
        "head": {"numCpus": 0, "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                             "limits": {"cpu": "1", "memory": "2Gi"}}},
        "autoscaler": {"mode": "Auto", "pollIntervalSeconds": 1, "idleTimeoutSeconds": 5},
        "workerGroups": [
            {"name": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 3,
             "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}},
            {"name": "gpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2,
             "resources": {"requests": {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "1"},
                           "limits": {"cpu": "1", "memory": "4Gi", "nvidia.com/gpu": "1"}}},
        ],
    }
    spec.update(changes)
    return spec


def group(name="g", **fields) -> dict:
    return {"name": name, **fields}


# --- defaults -------------------------------------------------------------------------------------

def test_defaults_of_a_minimal_spec():
    assert with_defaults({"image": "i"}) == {
        "image": "i",
        "suspend": False,
        "head": {"serviceType": "ClusterIP"},
        "workerGroups": [],
        "autoscaler": {"mode": "Auto", "idleTimeoutSeconds": 60, "pollIntervalSeconds": 5, "conserveGpus": True},
        "metrics": {"port": 8080, "scrapeAnnotations": True},
    }


@pytest.mark.parametrize("given, expected", [
    # replicas and minReplicas default to 0; maxReplicas to the larger of the two
    ({}, {"replicas": 0, "minReplicas": 0, "maxReplicas": 0}),
    ({"replicas": 3}, {"replicas": 3, "minReplicas": 0, "maxReplicas": 3}),
    ({"minReplicas": 2, "replicas": 2}, {"replicas": 2, "minReplicas": 2, "maxReplicas": 2}),
    ({"maxReplicas": 10}, {"replicas": 0, "minReplicas": 0, "maxReplicas": 10}),
    ({"replicas": 1, "maxReplicas": 4}, {"replicas": 1, "minReplicas": 0, "maxReplicas": 4}),
    # an invalid count is left for validate_spec to report, not used to derive maxReplicas
    ({"replicas": "3"}, {"replicas": "3", "minReplicas": 0}),
])
def test_group_count_defaults(given, expected):
    out = with_defaults({"image": "i", "workerGroups": [group("a"), group("b", **given)]})
    counts = {k: out["workerGroups"][1][k] for k in ("replicas", "minReplicas", "maxReplicas")
              if k in out["workerGroups"][1]}
    assert counts == expected


@pytest.mark.parametrize("top, first, expected_top, expected_first", [
    (None, {"replicas": 2, "maxReplicas": 5}, 2, 2),            # unset: mirrored from workerGroups[0]
    (4, {"replicas": 2, "maxReplicas": 5}, 4, 4),               # set (kubectl scale): wins
    (0, {"replicas": 2, "maxReplicas": 5}, 0, 0),
    (3, {"replicas": 1}, 3, 3),                                 # and maxReplicas unset follows it
])
def test_spec_replicas_is_the_default_groups_count(top, first, expected_top, expected_first):
    spec = {"image": "i", "workerGroups": [group("a", **first), group("b", replicas=7, maxReplicas=9)]}
    if top is not None:
        spec["replicas"] = top
    out = with_defaults(spec)
    assert (out["replicas"], out["workerGroups"][0]["replicas"]) == (expected_top, expected_first)
    assert out["workerGroups"][0]["maxReplicas"] >= expected_first
    assert out["workerGroups"][1]["replicas"] == 7                 # other groups untouched


def test_defaults_keep_what_is_set_and_never_modify_the_input():
    spec = cluster_spec(suspend=True, metrics={"port": 9000})
    before = copy.deepcopy(spec)
    out = with_defaults(spec)
    assert spec == before
    assert out["suspend"] is True and out["metrics"] == {"port": 9000, "scrapeAnnotations": True}
    assert out["autoscaler"] == {"mode": "Auto", "pollIntervalSeconds": 1, "idleTimeoutSeconds": 5,
                                 "conserveGpus": True}
    assert out["head"]["numCpus"] == 0 and out["head"]["serviceType"] == "ClusterIP"
    out["workerGroups"][0]["resources"]["limits"]["cpu"] = "8"
    assert spec["workerGroups"][0]["resources"]["limits"]["cpu"] == "1"


def test_defaults_come_from_the_crd(monkeypatch):
    """One source: change the CRD's default and with_defaults follows."""
    crd = copy.deepcopy(spec_module.load_crd())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    autoscaler = spec_schema["properties"]["autoscaler"]
    autoscaler["properties"]["idleTimeoutSeconds"]["default"] = 999
    monkeypatch.setattr(spec_module, "load_crd", lambda: crd)
    assert with_defaults({"image": "i"})["autoscaler"]["idleTimeoutSeconds"] == 999


def test_null_fields_get_their_defaults():
    out = with_defaults({"image": "i", "autoscaler": None, "suspend": None})
    assert out["autoscaler"]["mode"] == "Auto" and out["suspend"] is False


# --- validation -----------------------------------------------------------------------------------

def test_the_issue_spec_is_valid():
    assert validate_spec(cluster_spec(), "demo") == []
    assert checked_spec(cluster_spec(), "demo") == with_defaults(cluster_spec())


@pytest.mark.parametrize("groups, path, message", [
    ([group("cpu"), group("gpu", replicas=5, maxReplicas=3)], "spec.workerGroups[1].replicas",
     "spec.workerGroups[1].replicas (5) is above spec.workerGroups[1].maxReplicas (3): "
     "lower replicas or raise maxReplicas"),
    ([group("cpu", replicas=1, minReplicas=2, maxReplicas=4)], "spec.workerGroups[0].replicas",
     "spec.workerGroups[0].replicas (1) is below spec.workerGroups[0].minReplicas (2): "
     "raise replicas or lower minReplicas"),
    ([group("cpu", minReplicas=3, maxReplicas=2, replicas=3)], "spec.workerGroups[0].minReplicas",
     "spec.workerGroups[0].minReplicas (3) is above spec.workerGroups[0].maxReplicas (2)"),
    ([group("cpu", minReplicas=2)], "spec.workerGroups[0].replicas",            # replicas defaults to 0
     "spec.workerGroups[0].replicas (0) is below spec.workerGroups[0].minReplicas (2)"),
    ([group("cpu", replicas=-1)], "spec.workerGroups[0].replicas", "must be at least 0, got -1"),
    ([group("cpu", maxReplicas=2.5)], "spec.workerGroups[0].maxReplicas", "must be a whole number, got 2.5"),
    ([group("cpu", replicas=True)], "spec.workerGroups[0].replicas", "must be a whole number, got True"),
    ([group("CPU")], "spec.workerGroups[0].name", "('CPU') must be a DNS-1123 label of at most 40 characters"),
    ([group("gpu-")], "spec.workerGroups[0].name", "must be a DNS-1123 label"),
    ([group("a" * 41)], "spec.workerGroups[0].name", "must be a DNS-1123 label"),
    ([{"replicas": 1}], "spec.workerGroups[0].name", "(None) must be a DNS-1123 label"),
    ([group("head")], "spec.workerGroups[0].name", "is reserved for the head pod"),
    ([group("cpu"), group("gpu"), group("cpu")], "spec.workerGroups[2].name",
     "spec.workerGroups[2].name ('cpu') is already the name of spec.workerGroups[0]; group names must be unique"),
    (["cpu"], "spec.workerGroups[0]", "spec.workerGroups[0] must be a mapping, got 'cpu'"),
    ({"name": "cpu"}, "spec.workerGroups", "spec.workerGroups must be a list"),
    ([group("cpu", numGpus=-1)], "spec.workerGroups[0].numGpus", "must be at least 0"),
    ([group("cpu", numCpus="2")], "spec.workerGroups[0].numCpus", "must be a number of at least 0, got '2'"),
    ([group("cpu", tasukiResources={"GPU": 1})], "spec.workerGroups[0].tasukiResources.GPU",
     "GPU cannot be a custom resource"),
    ([group("cpu", tasukiResources={"1ssd": 1})], "spec.workerGroups[0].tasukiResources.1ssd",
     "is not a resource name"),
    ([group("cpu", tasukiResources={"ssd": -1})], "spec.workerGroups[0].tasukiResources.ssd",
     "must be a number of at least 0, got -1"),
    ([group("cpu", env=[{"value": "x"}])], "spec.workerGroups[0].env[0].name", "needs a name"),
    ([group("cpu", nodeSelector={"gpu": True})], "spec.workerGroups[0].nodeSelector.gpu",
     "must be a string, got True (quote it)"),
])
def test_group_errors(groups, path, message):
    errors = validate_spec(cluster_spec(workerGroups=groups))
    assert [e for e in errors if e.path == path and message in e.message], errors


@pytest.mark.parametrize("value, ok", [
    ("1", True), ("500m", True), ("1.5", True), ("2Gi", True), ("1e3", True), ("+1", True), (".5", True),
    (4, True), (0, True), ("0.5Ki", True),
    ("2GB", False), ("1K", False), ("1 Gi", False), ("", False), ("-1", False), (-1, False), (1.5, False),
    (True, False), (None, False), ("1e999999999999", False), ("Gi", False),
])
def test_quantities(value, ok):
    spec = cluster_spec()
    spec["workerGroups"][0]["resources"] = {"limits": {"memory": value}}
    errors = validate_spec(spec)
    paths = [e.path for e in errors]
    assert (paths == []) == ok, errors
    if not ok:
        assert paths == ["spec.workerGroups[0].resources.limits.memory"]
        assert repr(value) in errors[0].message or str(value) in errors[0].message


@pytest.mark.parametrize("resources, path, message", [
    ({"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}, "spec.head.resources.requests.cpu",
     "spec.head.resources.requests.cpu (2) is above spec.head.resources.limits.cpu (1500m)"),
    ({"requests": {"memory": "1Gi"}, "limits": {"memory": "1000Mi"}}, "spec.head.resources.requests.memory",
     "is above spec.head.resources.limits.memory (1000Mi)"),
    ({"requests": "1"}, "spec.head.resources.requests", "must be a mapping"),
])
def test_resource_errors(resources, path, message):
    errors = validate_spec(cluster_spec(head={"resources": resources}))
    assert [e for e in errors if e.path == path and message in e.message], errors


@pytest.mark.parametrize("resources", [
    {"requests": {"cpu": "1"}, "limits": {"cpu": "1000m"}},            # equal, written differently
    {"requests": {"memory": "1Gi"}, "limits": {"memory": 1073741824}},
    {"requests": {"cpu": "500m"}},                                      # no limit to compare with
    {"limits": {"nvidia.com/gpu": 1}},
])
def test_resources_that_are_fine(resources):
    assert validate_spec(cluster_spec(head={"resources": resources})) == []


@pytest.mark.parametrize("changes, path, message", [
    ({"image": ""}, "spec.image", "spec.image must name the tasuki runtime image"),
    ({"image": None}, "spec.image", "got None"),
    ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy", "must be one of Always, IfNotPresent, Never"),
    ({"objectStoreMemory": "512MB"}, "spec.objectStoreMemory", "('512MB') is not a Kubernetes quantity"),
    ({"suspend": "yes"}, "spec.suspend", "must be true or false"),
    ({"head": {"numCpus": -1}}, "spec.head.numCpus", "must be a number of at least 0"),
    ({"head": {"serviceType": "Ingress"}}, "spec.head.serviceType", "must be one of ClusterIP, NodePort, LoadBalancer"),
    ({"head": {"affinity": []}}, "spec.head.affinity", "must be a mapping"),
    ({"head": {"tolerations": {"key": "x"}}}, "spec.head.tolerations", "must be a list"),
    ({"head": {"serviceAccountName": 3}}, "spec.head.serviceAccountName", "must be a string"),
    ({"autoscaler": {"mode": "Manual"}}, "spec.autoscaler.mode", "must be one of Auto, DryRun, Off, got 'Manual'"),
    ({"autoscaler": {"mode": False}}, "spec.autoscaler.mode", 'quote it, e.g. mode: "Off"'),
    ({"autoscaler": {"idleTimeoutSeconds": -5}}, "spec.autoscaler.idleTimeoutSeconds", "must be at least 0, got -5"),
    ({"autoscaler": {"pollIntervalSeconds": 0}}, "spec.autoscaler.pollIntervalSeconds", "must be at least 1, got 0"),
    ({"autoscaler": {"maxStepPerGroup": 0}}, "spec.autoscaler.maxStepPerGroup", "must be at least 1, got 0"),
    ({"autoscaler": {"conserveGpus": "true"}}, "spec.autoscaler.conserveGpus", "must be true or false"),
    ({"autoscaler": "Auto"}, "spec.autoscaler", "spec.autoscaler must be a mapping"),
    ({"metrics": {"port": 0}}, "spec.metrics.port", "must be between 1 and 65535, got 0"),
    ({"metrics": {"port": 70000}}, "spec.metrics.port", "must be between 1 and 65535"),
    ({"replicas": 5}, "spec.replicas",
     "spec.replicas (5) is above spec.workerGroups[0].maxReplicas (3): lower replicas or raise maxReplicas"),
    ({"replicas": -1}, "spec.replicas", "spec.replicas must be at least 0, got -1"),
    ({"replicas": 1, "workerGroups": []}, "spec.replicas",
     "and there is none: add a worker group or remove spec.replicas"),
])
def test_spec_errors(changes, path, message):
    errors = validate_spec(cluster_spec(**changes))
    assert [e for e in errors if e.path == path and message in e.message], errors


def test_spec_replicas_within_bounds_is_fine_even_when_the_group_field_is_not():
    """spec.replicas wins over workerGroups[0].replicas, so only the count in force is checked."""
    spec = cluster_spec(replicas=2)
    spec["workerGroups"][0]["replicas"] = 99
    assert validate_spec(spec) == []
    assert checked_spec(spec)["workerGroups"][0]["replicas"] == 2


@pytest.mark.parametrize("name, ok", [
    ("demo", True), ("a", True), ("tasuki-1", True), ("a" * 50, True),
    ("a" * 51, False), ("1demo", False), ("Demo", False), ("demo-", False), ("demo.ml", False), ("", False),
])
def test_cluster_names(name, ok):
    errors = validate_spec(cluster_spec(), name)
    assert (errors == []) == ok
    if not ok:
        assert [e.path for e in errors] == ["metadata.name"]


def test_every_error_is_reported_at_once():
    spec = cluster_spec(image="", autoscaler={"mode": "Sometimes"},
                        workerGroups=[group("Bad"), group("ok", replicas=4, maxReplicas=1)])
    assert [e.path for e in validate_spec(spec)] == [
        "spec.image", "spec.workerGroups[0].name", "spec.workerGroups[1].replicas", "spec.autoscaler.mode"]


@pytest.mark.parametrize("spec", [None, [], "image: x", 3])
def test_a_spec_that_is_not_a_mapping(spec):
    assert validate_spec(spec) == [SpecError("spec", f"spec must be a mapping, got {spec!r}")]


def test_checked_spec_raises_with_every_error():
    spec = cluster_spec(replicas=9, metrics={"port": -1})
    with pytest.raises(InvalidSpec) as caught:
        checked_spec(spec, "demo")
    assert [e.path for e in caught.value.errors] == ["spec.replicas", "spec.metrics.port"]
    assert str(caught.value) == "; ".join(e.message for e in caught.value.errors)
    assert isinstance(caught.value, ValueError)

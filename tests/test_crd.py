"""The Cluster CRD (operator/tasuki_operator/crd.yaml) and the examples in examples/k8s/.

- The CRD is a valid apiextensions.k8s.io/v1 object for every Kubernetes version from 1.29 to 1.37
  (kubernetes-validate, strict), and its schema is structural (the rules the API server enforces on
  CRDs, which kubernetes-validate does not check).
- Every example, and the manifest of issue 13 as written, validates against the CRD's own
  openAPIV3Schema (jsonschema, after `to_json_schema` translates the Kubernetes extensions), and so
  does tasuki_operator.spec.validate_spec; invalid manifests are refused at the field's path.
- Printer columns, subresources and defaults are the ones the issue asks for.

The CEL rules (x-kubernetes-validations) are not evaluated here: no API server runs in these tests.
tests/test_spec.py tests the operator's own copy of those checks; here we check that each rule
names only fields that exist.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from tasuki_operator import spec as spec_module
from tasuki_operator.spec import to_json_schema

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "operator" / "tasuki_operator" / "crd.yaml"
EXAMPLES = sorted(p for p in (ROOT / "examples" / "k8s").glob("*.yaml") if not p.name.startswith("job-"))  # Jobs:
# tests/test_job_crd.py

# Issue 13's manifest, character for character: it "must apply and work exactly as written".
ISSUE_MANIFEST = """\
apiVersion: tasuki.dev/v1alpha1
kind: Cluster
metadata: {name: demo, namespace: ml}
spec:
  image: tasuki/runtime:0.1.0
  objectStoreMemory: 512Mi
  head:
    numCpus: 0
    resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "1", memory: 2Gi}}
  autoscaler: {mode: Auto, pollIntervalSeconds: 1, idleTimeoutSeconds: 5}
  workerGroups:
    - name: cpu
      replicas: 0
      minReplicas: 0
      maxReplicas: 3
      resources: {requests: {cpu: "1", memory: 2Gi}, limits: {cpu: "1", memory: 2Gi}}
    - name: gpu
      replicas: 0
      minReplicas: 0
      maxReplicas: 2
      resources:
        requests: {cpu: "1", memory: 4Gi, nvidia.com/gpu: "1"}
        limits: {cpu: "1", memory: 4Gi, nvidia.com/gpu: "1"}
"""


def load_crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def version_schema(crd: dict) -> dict:
    (version,) = crd["spec"]["versions"]
    return version


@pytest.fixture(scope="module")
def crd() -> dict:
    return load_crd()


@pytest.fixture(scope="module")
def validator(crd):
    schema = to_json_schema(version_schema(crd)["schema"]["openAPIV3Schema"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors_of(validator, obj) -> list[tuple[str, str]]:
    return [("/".join(map(str, e.absolute_path)), e.message) for e in validator.iter_errors(obj)]


# --- the CRD as a Kubernetes object ---------------------------------------------------------------

KUBE_VERSIONS = sorted({v for v in all_versions() if (1, 29) <= tuple(map(int, v.split(".")[:2])) <= (1, 37)},
                       key=lambda v: tuple(map(int, v.split("."))))


def test_kubernetes_validate_has_the_versions_we_promise():
    assert [v.rsplit(".", 1)[0] for v in KUBE_VERSIONS] == [f"1.{m}" for m in range(29, 38)]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_is_a_valid_customresourcedefinition(crd, version):
    assert kubernetes_validate.validate(crd, version, strict=True) == version.rsplit(".", 1)[0]


def test_crd_strict_validation_catches_a_typo(crd):
    """The check above can fail: a misspelt field in the CRD is refused."""
    bad = copy.deepcopy(crd)
    version_schema(bad)["subresources"]["scale"]["specReplicaPath"] = ".spec.replicas"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[-1], strict=True)


def test_crd_names(crd):
    assert crd["metadata"]["name"] == "clusters.tasuki.dev"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("tasuki.dev", "Namespaced")
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == \
        ("Cluster", "clusters", "cluster", ["tkc"])
    version = version_schema(crd)
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_the_package_ships_the_crd_that_spec_reads(crd):
    assert spec_module.load_crd() == crd
    assert spec_module.CRD_PATH.resolve() == CRD_FILE.resolve()


# --- structural schema ----------------------------------------------------------------------------

def walk(node, path="openAPIV3Schema"):
    """(path, node) for every schema node: properties, additionalProperties, items, anyOf branches."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")


def structural_problems(schema: dict) -> list[str]:
    """What the API server would refuse in a CRD schema (the rules of "structural schemas"): a type
    at every node unless int-or-string or preserve-unknown-fields; anyOf without types except the
    int-or-string pattern; list-map keys required or defaulted; defaults valid at their node."""
    problems = []
    for path, node in walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            if "type" in node:
                problems.append(f"{path}: int-or-string with a type")
            if node.get("anyOf") != [{"type": "integer"}, {"type": "string"}]:
                problems.append(f"{path}: int-or-string must spell anyOf [integer, string] and nothing else")
        elif "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        elif "anyOf" in node or "oneOf" in node or "allOf" in node:
            problems.append(f"{path}: a junctor outside the int-or-string pattern")
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                if key not in item.get("required", []) and "default" not in item["properties"][key]:
                    problems.append(f"{path}: list-map key {key} is neither required nor defaulted")
        if "default" in node:
            errors = list(jsonschema.Draft202012Validator(to_json_schema(node)).iter_errors(node["default"]))
            problems += [f"{path}: default {node['default']!r}: {e.message}" for e in errors]
        if node.get("type") == "object" and "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
    metadata = schema["properties"]["metadata"]
    if metadata != {"type": "object"}:
        problems.append("openAPIV3Schema.metadata: only type: object is allowed")
    return problems


def test_schema_is_structural(crd):
    assert structural_problems(version_schema(crd)["schema"]["openAPIV3Schema"]) == []


@pytest.mark.parametrize("spoil, problem", [
    (lambda s: s["properties"]["spec"]["properties"]["image"].pop("type"), "image: no type"),
    (lambda s: s["properties"]["spec"]["properties"]["suspend"].update(default="no"), "suspend: default 'no'"),
    (lambda s: s["properties"]["spec"]["properties"]["objectStoreMemory"].update(type="string"),
     "objectStoreMemory: int-or-string with a type"),
])
def test_structural_check_can_fail(crd, spoil, problem):
    schema = copy.deepcopy(version_schema(crd)["schema"]["openAPIV3Schema"])
    spoil(schema)
    assert any(problem in p for p in structural_problems(schema)), structural_problems(schema)


def test_every_enum_value_is_a_string(crd):
    """YAML 1.1 (PyYAML, and kubectl's parser) reads a bare Off, On, Yes, No as a boolean: the enum of
    autoscaler.mode must hold the string "Off"."""
    for path, node in walk(version_schema(crd)["schema"]["openAPIV3Schema"]):
        for value in node.get("enum", []):
            assert isinstance(value, str), (path, value)


def cel_rules(schema: dict):
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, node, rule


def test_every_cel_rule_names_existing_fields(crd):
    """A misspelt field in a CEL rule makes the API server refuse the CRD (or the rule never match):
    each `self.<field>` must be a property of the node the rule sits on, and each rule says why."""
    schema = version_schema(crd)["schema"]["openAPIV3Schema"]
    rules = list(cel_rules(schema))
    assert len(rules) >= 7
    for path, node, rule in rules:
        assert rule.get("message") or rule.get("messageExpression"), path
        text = rule["rule"] + rule.get("messageExpression", "")
        for field in re.findall(r"self\.([A-Za-z]+)", text):
            assert field in node.get("properties", {}), f"{path}: rule {rule['rule']!r} names unknown {field}"
        for field in re.findall(r"workerGroups\[0\]\.([A-Za-z]+)", text):
            assert field in node["properties"]["workerGroups"]["items"]["properties"], (path, field)
        if "fieldPath" in rule:
            assert rule["fieldPath"].lstrip(".") in node["properties"], (path, rule["fieldPath"])


def test_replica_rules_are_on_each_group(crd):
    group = version_schema(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["workerGroups"]
    rules = {r["rule"] for r in group["items"]["x-kubernetes-validations"]}
    assert rules == {"self.replicas >= self.minReplicas",
                     "!has(self.maxReplicas) || self.replicas <= self.maxReplicas",
                     "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas"}
    assert (group["x-kubernetes-list-type"], group["x-kubernetes-list-map-keys"]) == ("map", ["name"])


def test_spec_module_uses_the_crd_patterns(crd):
    spec = version_schema(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["objectStoreMemory"]["pattern"] == spec_module.QUANTITY_PATTERN
    assert spec["head"]["properties"]["resources"]["properties"]["limits"]["additionalProperties"]["pattern"] == \
        spec_module.QUANTITY_PATTERN
    name = spec["workerGroups"]["items"]["properties"]["name"]
    assert (name["pattern"], name["maxLength"]) == (spec_module.GROUP_NAME_PATTERN, spec_module.GROUP_NAME_MAX_LENGTH)
    root_rule = version_schema(crd)["schema"]["openAPIV3Schema"]["x-kubernetes-validations"][0]["rule"]
    assert spec_module.CLUSTER_NAME_PATTERN in root_rule
    assert f"<= {spec_module.CLUSTER_NAME_MAX_LENGTH}" in root_rule


# --- subresources and printer columns -------------------------------------------------------------

def schema_at(schema: dict, json_path: str) -> dict:
    node = schema
    for part in json_path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_subresources(crd):
    version = version_schema(crd)
    schema = version["schema"]["openAPIV3Schema"]
    assert version["subresources"]["status"] == {}
    scale = version["subresources"]["scale"]
    assert scale == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                     "labelSelectorPath": ".status.selector"}
    for path in scale.values():               # Kubernetes takes plain paths only: no array index
        assert re.fullmatch(r"(\.[A-Za-z]+)+", path), path
    assert schema_at(schema, scale["specReplicasPath"])["type"] == "integer"
    assert schema_at(schema, scale["statusReplicasPath"])["type"] == "integer"
    assert schema_at(schema, scale["labelSelectorPath"])["type"] == "string"
    assert "default" not in schema_at(schema, scale["specReplicasPath"])   # unset: workerGroups[0].replicas


EXPECTED_COLUMNS = [  # name, type, jsonPath, priority
    ("Phase", "string", ".status.phase", 0),
    ("Ready", "string", ".status.workers", 0),
    ("Pending", "integer", ".status.pendingTasks", 0),
    ("GPUs", "integer", ".status.gpus", 0),
    ("Version", "string", ".status.version", 0),
    ("Age", "date", ".metadata.creationTimestamp", 0),
    ("Head", "string", ".status.head.address", 1),
    ("Idle", "integer", ".status.idleWorkers", 1),
]


def test_printer_columns(crd):
    version = version_schema(crd)
    columns = [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in version["additionalPrinterColumns"]]
    assert columns == EXPECTED_COLUMNS
    schema = version["schema"]["openAPIV3Schema"]
    for name, kind, path, _ in columns:       # each column reads a status field of its type
        if path.startswith(".status."):
            assert schema_at(schema, path)["type"] == kind, name


# --- defaults -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, default", [
    ("spec.suspend", False),
    ("spec.head.serviceType", "ClusterIP"),
    ("spec.workerGroups", []),
    ("spec.workerGroups[].replicas", 0),
    ("spec.workerGroups[].minReplicas", 0),
    ("spec.autoscaler.mode", "Auto"),
    ("spec.autoscaler.idleTimeoutSeconds", 60),
    ("spec.autoscaler.pollIntervalSeconds", 5),
    ("spec.autoscaler.conserveGpus", True),
    ("spec.metrics.port", 8080),
    ("spec.metrics.scrapeAnnotations", True),
    ("spec.head", {}),
    ("spec.autoscaler", {}),
    ("spec.metrics", {}),
])
def test_defaults(crd, path, default):
    nodes = dict(walk(version_schema(crd)["schema"]["openAPIV3Schema"]))
    assert nodes["openAPIV3Schema." + path]["default"] == default


@pytest.mark.parametrize("path", ["spec.workerGroups[].maxReplicas", "spec.replicas", "spec.autoscaler.maxStepPerGroup",
                                  "spec.head.numCpus", "spec.objectStoreMemory", "spec.imagePullPolicy"])
def test_fields_without_a_static_default(crd, path):
    """Unset means something the operator works out (see tasuki_operator.spec), never a fixed value."""
    nodes = dict(walk(version_schema(crd)["schema"]["openAPIV3Schema"]))
    assert "default" not in nodes["openAPIV3Schema." + path]


# --- examples and manifests -----------------------------------------------------------------------

def test_the_examples_are_there():
    assert sorted(p.name for p in EXAMPLES) == ["autoscale-from-zero.yaml", "cpu-cluster.yaml",
                                               "cpu-gpu-cluster.yaml", "dryrun-cluster.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(validator, path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1
    manifest = docs[0]
    assert (manifest["apiVersion"], manifest["kind"]) == ("tasuki.dev/v1alpha1", "Cluster")
    assert errors_of(validator, manifest) == []
    assert spec_module.validate_spec(manifest["spec"], manifest["metadata"]["name"]) == []


def test_the_issue_manifest_is_accepted_as_written(validator):
    manifest = yaml.safe_load(ISSUE_MANIFEST)
    assert errors_of(validator, manifest) == []
    assert spec_module.validate_spec(manifest["spec"], "demo") == []
    example = yaml.safe_load((ROOT / "examples" / "k8s" / "cpu-gpu-cluster.yaml").read_text())
    assert example == manifest
    gpu = manifest["spec"]["workerGroups"][1]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and manifest["spec"]["head"]["numCpus"] == 0


def spoiled(change) -> dict:
    manifest = yaml.safe_load(ISSUE_MANIFEST)
    change(manifest["spec"])
    return manifest


def _set(obj, path, value):
    *parents, last = path
    for key in parents:
        obj = obj.setdefault(key, {}) if isinstance(obj, dict) else obj[key]
    obj[last] = value
    return obj


@pytest.mark.parametrize("path, value, where, says", [
    (("workerGroups", 0, "name"), "CPU_pool", "spec/workerGroups/0/name", "does not match"),
    (("workerGroups", 0, "name"), "-cpu", "spec/workerGroups/0/name", "does not match"),
    (("workerGroups", 0, "name"), "x" * 41, "spec/workerGroups/0/name", "is too long"),
    (("workerGroups", 1, "replicas"), -1, "spec/workerGroups/1/replicas", "less than the minimum"),
    (("workerGroups", 1, "maxReplicas"), "2", "spec/workerGroups/1/maxReplicas", "is not of type 'integer'"),
    (("workerGroups", 0, "resources", "limits", "memory"), "2GB", "spec/workerGroups/0/resources/limits/memory",
     "does not match"),
    (("workerGroups", 0, "resources", "limits", "cpu"), "-1", "spec/workerGroups/0/resources/limits/cpu",
     "does not match"),
    (("workerGroups", 0, "resources", "limits", "cpu"), 1.5, "spec/workerGroups/0/resources/limits/cpu",
     "is not valid under any of the given schemas"),
    (("objectStoreMemory",), "512 Mi", "spec/objectStoreMemory", "does not match"),
    (("autoscaler", "mode"), "Manual", "spec/autoscaler/mode", "is not one of"),
    (("autoscaler", "mode"), False, "spec/autoscaler/mode", "is not one of"),     # a bare YAML Off
    (("autoscaler", "pollIntervalSeconds"), 0, "spec/autoscaler/pollIntervalSeconds", "less than the minimum"),
    (("autoscaler", "idleTimeout"), 60, "spec/autoscaler", "'idleTimeout' was unexpected"),
    (("workerGroups", 0, "maxReplica"), 3, "spec/workerGroups/0", "'maxReplica' was unexpected"),
    (("head", "serviceType"), "Ingress", "spec/head/serviceType", "is not one of"),
    (("metrics", "port"), 70000, "spec/metrics/port", "greater than the maximum"),
    (("workerGroups", 0, "tasukiResources"), {"ssd": -1}, "spec/workerGroups/0/tasukiResources/ssd",
     "less than the minimum"),
    (("imagePullPolicy",), "Sometimes", "spec/imagePullPolicy", "is not one of"),
])
def test_invalid_manifest_is_refused_at_the_path(validator, path, value, where, says):
    manifest = spoiled(lambda spec: _set(spec, path, value))
    errors = errors_of(validator, manifest)
    assert any(p == where and says in m for p, m in errors), errors


def test_missing_image_is_refused(validator):
    manifest = spoiled(lambda spec: spec.pop("image"))
    assert ("spec", "'image' is a required property") in errors_of(validator, manifest)


def test_deep_kubernetes_types_pass_through(validator):
    """affinity, volumes and env[].valueFrom keep whatever Kubernetes fields they hold."""
    def change(spec):
        group = spec["workerGroups"][0]
        group["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
        group["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        group["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        group["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert errors_of(validator, spoiled(change)) == []


def test_status_schema_takes_what_the_operator_writes(validator):
    manifest = yaml.safe_load(ISSUE_MANIFEST)
    manifest["status"] = {
        "phase": "Scaling", "observedGeneration": 3, "version": "0.1.0", "workers": "1/3", "replicas": 1,
        "selector": "tasuki.dev/cluster=demo,tasuki.dev/group=cpu", "pendingTasks": 12, "gpus": 1,
        "idleWorkers": 0,
        "head": {"podName": "demo-head", "podIP": "10.0.0.5", "service": "demo-head",
                 "address": "tasuki://demo-head.ml.svc:6380"},
        "groups": [{"name": "cpu", "ready": 1, "desired": 2, "pending": 1, "idle": 0}],
        "conditions": [{"type": "HeadReady", "status": "True", "reason": "PodReady", "message": "",
                        "lastTransitionTime": "2026-12-01T00:00:00Z", "observedGeneration": 3}],
        "autoscaler": {"mode": "Auto", "unplaceable": [{"shape": {"CPU": 64}, "count": 2, "reason": "..."}]},
    }
    assert errors_of(validator, manifest) == []
    manifest["status"]["phase"] = "Ready"
    assert [p for p, _ in errors_of(validator, manifest)] == ["status/phase"]

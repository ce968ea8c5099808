"""The Job CRD (operator/tasuki_operator/job_crd.yaml, jobs.tasuki.dev) and the Job examples in examples/k8s/.

- A valid apiextensions.k8s.io/v1 object for Kubernetes 1.29 to 1.37 (kubernetes-validate, strict) with a
  structural schema (test_crd's checks), names, status subresource and the printer columns of the issue.
- Every examples/k8s/job-*.yaml validates against the CRD's openAPIV3Schema (jsonschema) and by the
  operator's own checks (job_plan.spec_errors, which run the Cluster's rules on an inline spec.cluster);
  invalid manifests are refused at the field's path. CEL rules are not evaluated here (no API server):
  job_plan.spec_errors checks their intent (tests/test_job_plan.py), and each rule names existing fields.
"""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tasuki_operator import job_plan
from tasuki_operator import spec as spec_module
from tasuki_operator.spec import to_json_schema
from test_crd import KUBE_VERSIONS, cel_rules, errors_of, schema_at, structural_problems, version_schema

ROOT = Path(__file__).resolve().parent.parent
JOB_CRD = ROOT / "operator" / "tasuki_operator" / "job_crd.yaml"
EXAMPLES = sorted((ROOT / "examples" / "k8s").glob("job-*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(JOB_CRD.read_text())


@pytest.fixture(scope="module")
def validator(crd):
    schema = to_json_schema(version_schema(crd)["schema"]["openAPIV3Schema"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_crd_is_a_valid_customresourcedefinition(crd, version):
    assert kubernetes_validate.validate(crd, version, strict=True) == version.rsplit(".", 1)[0]


def test_schema_is_structural(crd):
    assert structural_problems(version_schema(crd)["schema"]["openAPIV3Schema"]) == []


def test_names_and_subresources(crd):
    assert crd["metadata"]["name"] == "jobs.tasuki.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == ("Job", "jobs", "job", ["tkj"])
    assert crd["spec"]["scope"] == "Namespaced"
    assert version_schema(crd)["subresources"] == {"status": {}}


def test_printer_columns(crd):
    version = version_schema(crd)
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == [("Status", ".status.jobStatus"), ("Cluster", ".status.clusterName"),
                       ("Attempts", ".status.attempts"), ("Duration", ".status.duration"),
                       ("Age", ".metadata.creationTimestamp")]
    schema = version["schema"]["openAPIV3Schema"]
    for c in version["additionalPrinterColumns"]:
        if c["jsonPath"].startswith(".status."):
            assert schema_at(schema, c["jsonPath"])["type"] == c["type"], c["name"]


def test_status_enum_is_the_head_s(crd):
    status = version_schema(crd)["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["jobStatus"]["enum"] == ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]
    assert set(job_plan.CONDITION_TYPES) == {"Submitted", "Complete", "Failed", "Suspended"}


def test_cel_rules_name_existing_fields_and_the_cluster_name_rule(crd):
    schema = version_schema(crd)["schema"]["openAPIV3Schema"]
    rules = list(cel_rules(schema))
    assert len(rules) >= 3
    for path, node, rule in rules:
        assert rule.get("message"), path
        for field in re.findall(r"(?<![A-Za-z])self\.([A-Za-z]+)", rule["rule"]):
            assert field in node.get("properties", {}), f"{path}: rule {rule['rule']!r} names unknown {field}"
    root = schema["x-kubernetes-validations"][0]["rule"]
    assert spec_module.CLUSTER_NAME_PATTERN in root and f"<= {spec_module.CLUSTER_NAME_MAX_LENGTH}" in root


def test_the_examples_are_there():
    assert [p.name for p in EXAMPLES] == ["job-inline-cluster.yaml", "job-on-cluster.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(validator, path):
    (manifest,) = yaml.safe_load_all(path.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("tasuki.dev/v1alpha1", "Job")
    assert errors_of(validator, manifest) == []
    assert job_plan.spec_errors(manifest) == []


def test_the_inline_example_runs_weekly_features_from_a_configmap():
    (manifest,) = yaml.safe_load_all((ROOT / "examples" / "k8s" / "job-inline-cluster.yaml").read_text())
    assert "weekly_features.py" in manifest["spec"]["entrypoint"] and manifest["spec"]["workingDir"]["configMap"]
    assert (ROOT / "examples" / "weekly_features.py").exists()


def job(**spec) -> dict:
    return {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Job", "metadata": {"name": "j", "namespace": "ml"},
            "spec": {"entrypoint": "python x.py", "clusterName": "c", **spec}}


@pytest.mark.parametrize("spec, where", [
    ({"backoffLimit": -1}, "spec/backoffLimit"),
    ({"activeDeadlineSeconds": 0}, "spec/activeDeadlineSeconds"),
    ({"workingDir": {"path": "relative"}}, "spec/workingDir/path"),
    ({"env": [{"value": "x"}]}, "spec/env/0"),
    ({"env": [{"name": "1BAD", "value": "x"}]}, "spec/env/0/name"),
    ({"suspend": "yes"}, "spec/suspend"),
    ({"entrypoint": ""}, "spec/entrypoint"),
])
def test_invalid_manifest_is_refused_at_the_path(validator, spec, where):
    assert where in {p for p, _ in errors_of(validator, job(**spec))}, errors_of(validator, job(**spec))

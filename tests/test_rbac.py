"""tasuki_operator.rbac and rbac.yaml: least privilege, checked rule by rule, and the Role / ClusterRole
objects valid for Kubernetes 1.29 to 1.37."""
from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest
import yaml

from tasuki_operator import rbac

RULES = rbac.load_rules()
K8S_VERSIONS = [f"1.{minor}" for minor in range(29, 38)]


# --- the file itself ------------------------------------------------------------------------------

def test_no_wildcard_anywhere():
    text = rbac.RBAC_PATH.read_text()
    rules_part = yaml.safe_load(text)["rules"]
    for i, rule in enumerate(rules_part):
        for key, values in rule.items():
            assert all("*" not in v for v in values), f"rules[{i}].{key} has a wildcard: {values}"


def test_no_rights_on_rbac_objects():
    assert all("rbac.authorization.k8s.io" not in r["apiGroups"] for r in RULES)
    for resource in ("roles", "rolebindings", "clusterroles", "clusterrolebindings"):
        for verb in rbac.VERBS + ("bind", "escalate"):
            assert not rbac.allows(RULES, verb, "rbac.authorization.k8s.io", resource), (verb, resource)


def test_secret_verbs_are_exactly_create_get_delete():
    verbs = {v for r in RULES if "" in r["apiGroups"] and "secrets" in r["resources"] for v in r["verbs"]}
    assert verbs == {"create", "get", "delete"}


def test_the_leader_lease_rule_names_the_lease():
    named = [r for r in RULES if "leases" in r["resources"] and r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [rbac.LEADER_LEASE] for r in named)


def test_no_cluster_scoped_kopf_rights():
    """kopf runs with scanning disabled and standalone: no CRD, namespace or KopfPeering rights."""
    groups = {g for r in RULES for g in r["apiGroups"]}
    assert groups == {"tasuki.dev", "", "events.k8s.io", "coordination.k8s.io"}
    assert not rbac.allows(RULES, "list", "apiextensions.k8s.io", "customresourcedefinitions")
    assert not rbac.allows(RULES, "list", "", "namespaces")


# --- allows(): the calls the controller makes, and some it must not be able to make ---------------

ALLOWED = [
    # verb, group, resource, subresource, name
    ("list", "tasuki.dev", "clusters", None, None),
    ("watch", "tasuki.dev", "clusters", None, None),
    ("get", "tasuki.dev", "clusters", None, "demo"),
    ("patch", "tasuki.dev", "clusters", None, "demo"),            # kopf: finalizers, annotations
    ("patch", "tasuki.dev", "clusters", "status", "demo"),        # build_status
    ("update", "tasuki.dev", "clusters", "status", "demo"),
    ("get", "tasuki.dev", "clusters", "scale", "demo"),
    ("create", "", "pods", None, None),
    ("delete", "", "pods", None, "demo-worker-cpu-k2x9q"),
    ("list", "", "pods", None, None),
    ("watch", "", "pods", None, None),
    ("get", "", "pods", None, "demo-head"),
    ("create", "", "services", None, None),
    ("patch", "", "services", None, "demo-head"),
    ("get", "", "services", None, "demo-head"),
    ("create", "", "secrets", None, None),
    ("get", "", "secrets", None, "demo-token"),
    ("delete", "", "secrets", None, "demo-token"),
    ("create", "", "events", None, None),
    ("patch", "", "events", None, "demo.17a2b3"),
    ("create", "events.k8s.io", "events", None, None),
    ("create", "coordination.k8s.io", "leases", None, None),
    ("get", "coordination.k8s.io", "leases", None, rbac.LEADER_LEASE),
    ("update", "coordination.k8s.io", "leases", None, rbac.LEADER_LEASE),
    # tasuki Jobs (job_controller): the Job, its status, its inline Cluster, its working directory
    ("list", "tasuki.dev", "jobs", None, None),
    ("watch", "tasuki.dev", "jobs", None, None),
    ("get", "tasuki.dev", "jobs", None, "weekly"),
    ("patch", "tasuki.dev", "jobs", None, "weekly"),
    ("delete", "tasuki.dev", "jobs", None, "weekly"),              # ttlSecondsAfterFinished
    ("patch", "tasuki.dev", "jobs", "status", "weekly"),
    ("create", "tasuki.dev", "clusters", None, None),              # an inline spec.cluster
    ("delete", "tasuki.dev", "clusters", None, "weekly"),          # shutdownAfterFinish
    ("get", "", "configmaps", None, "weekly-code"),                # spec.workingDir.configMap
]

REFUSED = [
    ("list", "", "secrets", None, None),                          # would read every Secret in the namespace
    ("watch", "", "secrets", None, None),
    ("update", "", "secrets", None, "demo-token"),
    ("patch", "", "secrets", None, "demo-token"),
    ("deletecollection", "", "pods", None, None),
    ("update", "", "pods", None, "demo-head"),
    ("patch", "", "pods", "status", "demo-head"),
    ("create", "", "pods", "exec", "demo-head"),                  # a subresource is not its parent
    ("create", "", "pods", "eviction", "demo-head"),
    ("get", "", "pods", "log", "demo-head"),
    ("update", "tasuki.dev", "clusters", "scale", "demo"),
    ("update", "tasuki.dev", "jobs", None, "weekly"),
    ("create", "tasuki.dev", "jobs", None, None),                  # Jobs are the user's, never made by us
    ("update", "tasuki.dev", "jobs", "status", "weekly"),
    ("list", "", "configmaps", None, None),
    ("create", "", "configmaps", None, None),
    ("create", "apps", "deployments", None, None),
    ("create", "rbac.authorization.k8s.io", "roles", None, None),
    ("create", "rbac.authorization.k8s.io", "rolebindings", None, None),
    ("get", "coordination.k8s.io", "leases", None, "someone-elses-lease"),
    ("update", "coordination.k8s.io", "leases", None, None),      # a named rule never matches a nameless request
    ("delete", "coordination.k8s.io", "leases", None, rbac.LEADER_LEASE),
    ("get", "tasuki.dev", "workers", None, None),
    ("get", "other.dev", "clusters", None, "demo"),
]


@pytest.mark.parametrize("verb, group, resource, sub, name", ALLOWED)
def test_allows_the_calls_the_controller_makes(verb, group, resource, sub, name):
    assert rbac.allows(RULES, verb, group, resource, sub, name)


@pytest.mark.parametrize("verb, group, resource, sub, name", REFUSED)
def test_refuses_what_the_controller_must_not_do(verb, group, resource, sub, name):
    assert not rbac.allows(RULES, verb, group, resource, sub, name)


WILDCARD_CASES = [
    ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, ("get", "x", "pods", None, None), True),
    ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, ("get", "", "pods", "log", None), True),
    ({"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]}, ("get", "", "pods", "status", None), True),
    ({"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]}, ("get", "", "pods", None, None), False),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}, ("delete", "", "pods", None, "p"), True),
    ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]},
     ("get", "", "pods", None, "b"), False),
]


@pytest.mark.parametrize("rule, call, expected", WILDCARD_CASES)
def test_allows_follows_kubernetes_matching(rule, call, expected):
    assert rbac.allows([rule], *call) is expected


# --- the objects ----------------------------------------------------------------------------------

def test_role_and_cluster_role_carry_the_file_rules():
    r, c = rbac.role("ml", "tasuki-operator"), rbac.cluster_role("tasuki-operator")
    assert (r["kind"], r["metadata"]["namespace"], r["metadata"]["name"]) == ("Role", "ml", "tasuki-operator")
    assert c["kind"] == "ClusterRole" and "namespace" not in c["metadata"]
    assert r["rules"] == c["rules"] == RULES


def test_load_rules_returns_a_copy():
    rules = rbac.load_rules()
    rules[0]["verbs"].append("deletecollection")
    assert "deletecollection" not in rbac.load_rules()[0]["verbs"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("make", [lambda: rbac.role("ml", "tasuki-operator"),
                                  lambda: rbac.cluster_role("tasuki-operator")], ids=["Role", "ClusterRole"])
def test_objects_validate_strictly(make, version):
    assert kubernetes_validate.validate(make(), version, strict=True) == version


def test_strict_validation_would_catch_a_bad_rule():
    obj = rbac.role("ml", "tasuki-operator")
    obj["rules"] = copy.deepcopy(obj["rules"]) + [{"apiGroups": [""], "resources": ["pods"], "verb": ["get"]}]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, "1.37", strict=True)


@pytest.mark.parametrize("bad, message", [
    ({"rules": []}, "non-empty list `rules`"),
    ({"rules": [{"apiGroups": [""], "resources": ["pods"]}]}, "rules[0].verbs"),
    ({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "nonResourceURLs": ["/x"]}]},
     "unknown keys"),
    ({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["gett"]}]}, "['gett']"),
])
def test_a_malformed_file_is_refused_with_the_rule(monkeypatch, bad, message):
    monkeypatch.setattr(rbac, "_rules_text", lambda: yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=re.escape(message)):
        rbac.load_rules()


@pytest.mark.parametrize("call", [lambda: rbac.role("", "x"), lambda: rbac.role("ml", ""),
                                  lambda: rbac.cluster_role("")])
def test_objects_need_names(call):
    with pytest.raises(ValueError):
        call()

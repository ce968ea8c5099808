"""The operator's Kubernetes permissions: read from rbac.yaml (the one place they live), checked, and
turned into Role / ClusterRole objects.

Pure: no kopf, no kubernetes client; the only I/O is reading the packaged rbac.yaml once. Callers:
the tests (tests/test_rbac.py; the emulator tests ask `allows` about every API call the operator made;
tests/test_charts.py compares the chart's Roles with load_rules()). The Helm chart reads rbac.yaml
itself. rbac.yaml says why each rule is there and what RBAC cannot narrow.

`allows(rules, verb, api_group, resource, subresource, name)` answers as the Kubernetes RBAC
authorizer does for one request: a rule matches when its apiGroups hold the group, its resources hold
`resource` or `resource/subresource`, its verbs hold the verb, and, when it lists resourceNames, the
request names one of them (a request without a name, such as create, list or watch, never matches a
rule with resourceNames). `*` is honoured as Kubernetes does ("*" and "*/subresource"), although
rbac.yaml uses none.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RBAC_PATH", "RBAC_API_VERSION", "LEADER_LEASE", "VERBS", "load_rules", "allows", "role", "cluster_role"]

RBAC_PATH = Path(__file__).with_name("rbac.yaml")
RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"
LEADER_LEASE = "tasuki-operator"          # the coordination.k8s.io Lease of leader election (rbac.yaml names it)
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
LABELS = {"app.kubernetes.io/name": "tasuki-operator", "app.kubernetes.io/part-of": "tasuki"}
_RULE_KEYS = {"apiGroups", "resources", "verbs", "resourceNames"}


@functools.cache
def _rules_text() -> str:
    return RBAC_PATH.read_text(encoding="utf-8")


def load_rules() -> list[dict]:
    """The rules of rbac.yaml as PolicyRule dicts (a fresh copy each call: callers may modify it).

    Raises ValueError naming the rule (its index) when the file is malformed: a rule without
    apiGroups, resources or verbs, an unknown key or verb."""
    data = yaml.safe_load(_rules_text())
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list) or not rules:
        raise ValueError(f"{RBAC_PATH}: expected a mapping with a non-empty list `rules`")
    for i, rule in enumerate(rules):
        where = f"{RBAC_PATH}: rules[{i}]"
        if not isinstance(rule, dict):
            raise ValueError(f"{where} must be a mapping, got {rule!r}")
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}; a rule has {sorted(_RULE_KEYS)}")
        for key in ("apiGroups", "resources", "verbs"):
            value = rule.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where}.{key} must be a non-empty list of strings, got {value!r}")
        bad = [v for v in rule["verbs"] if v not in VERBS]
        if bad:
            raise ValueError(f"{where}.verbs has {bad}: use {', '.join(VERBS)}")
    return copy.deepcopy(rules)


def _resource_matches(rule_resources: list[str], resource: str, subresource: str | None) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule_resources:
        if r == "*" or r == combined or (subresource and r == f"*/{subresource}"):
            return True
    return False


def allows(rules: list[dict], verb: str, api_group: str, resource: str, subresource: str | None = None,
           name: str | None = None) -> bool:
    """Would `rules` let one request through? `api_group` is "" for the core group (pods, secrets,
    events), `resource` the plural ("pods"), `subresource` e.g. "status" or "scale", `name` the
    object's name when the request has one (get, update, patch, delete)."""
    for rule in rules:
        if verb not in rule.get("verbs", ()) and "*" not in rule.get("verbs", ()):
            continue
        groups = rule.get("apiGroups", ())
        if api_group not in groups and "*" not in groups:
            continue
        if not _resource_matches(rule.get("resources", ()), resource, subresource):
            continue
        names = rule.get("resourceNames")
        if names and name not in names:
            continue
        return True
    return False


def _object(kind: str, metadata: dict[str, Any]) -> dict:
    return {"apiVersion": RBAC_API_VERSION, "kind": kind, "metadata": {**metadata, "labels": dict(LABELS)},
            "rules": load_rules()}


def role(namespace: str, name: str) -> dict:
    """The Role for one watched namespace: rbac.yaml's rules, named `name` in `namespace`."""
    if not namespace or not name:
        raise ValueError(f"a Role needs a namespace and a name, got namespace={namespace!r} name={name!r}")
    return _object("Role", {"name": name, "namespace": namespace})


def cluster_role(name: str) -> dict:
    """The ClusterRole for all-namespaces mode: the same rules, cluster-wide."""
    if not name:
        raise ValueError(f"a ClusterRole needs a name, got {name!r}")
    return _object("ClusterRole", {"name": name})

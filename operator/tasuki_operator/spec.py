"""A Cluster's spec: its defaults (read from crd.yaml, the one source) and the checks the operator makes itself.

Pure: no kopf, no kubernetes client, no I/O beyond reading the packaged crd.yaml once. The handlers call
`checked_spec(body["spec"], name)` on every create, resume and update: it returns the spec with every
default filled in, or raises InvalidSpec listing each problem with its field path. An invalid Cluster
starts no workers; the handler turns InvalidSpec into a condition and an Event naming the fields.

Why the operator checks what the CRD already says: the CRD's x-kubernetes-validations (CEL) rules, such
as minReplicas <= replicas <= maxReplicas, are evaluated only by API servers that support them (and not
by test emulators), and an object stored before a CRD change was never checked against the new schema.
So everything the operator relies on is checked here too, with the same regexes and bounds.

Defaults, as crd.yaml gives them, plus two that a static schema default cannot express:
- `workerGroups[i].maxReplicas` unset is the larger of that group's replicas and minReplicas: a group
  without maxReplicas never grows beyond what was asked.
- `spec.replicas` is the scale subresource's target (Kubernetes refuses an array index such as
  `.spec.workerGroups[0].replicas` in specReplicasPath). When set, it is the replica count of the
  default group, workerGroups[0], and wins over workerGroups[0].replicas; when unset, with_defaults
  mirrors workerGroups[0].replicas into it. After with_defaults the two are always equal.

The field names (all camelCase, as in the CRD):
    spec.image, imagePullPolicy, imagePullSecrets[].name, objectStoreMemory, replicas, suspend
    spec.head: resources{requests,limits}, numCpus, serviceType, nodeSelector, tolerations, affinity,
               env, volumes, volumeMounts, labels, annotations, serviceAccountName
    spec.workerGroups[]: name, replicas, minReplicas, maxReplicas, resources, numCpus, numGpus,
               tasukiResources, and the same pod overrides as the head (not serviceType)
    spec.autoscaler: mode (Auto|DryRun|Off), idleTimeoutSeconds, pollIntervalSeconds, maxStepPerGroup,
               conserveGpus
    spec.metrics: port, scrapeAnnotations
"""
from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasuki_operator.quantity import parse_quantity

__all__ = ["CRD_PATH", "QUANTITY_PATTERN", "GROUP_NAME_PATTERN", "GROUP_NAME_MAX_LENGTH", "CLUSTER_NAME_PATTERN",
           "CLUSTER_NAME_MAX_LENGTH", "RESOURCE_NAME_PATTERN", "SpecError", "InvalidSpec", "load_crd",
           "cluster_schema", "to_json_schema", "with_defaults", "validate_spec", "checked_spec"]

CRD_PATH = Path(__file__).with_name("crd.yaml")
CRD_VERSION = "v1alpha1"

# Kubernetes' quantity regex without the sign (resources are never negative); crd.yaml uses the same one.
QUANTITY_PATTERN = (r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
# A worker group name is a DNS-1123 label: it names the pods and is the tasuki.dev/group label's value.
GROUP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GROUP_NAME_MAX_LENGTH = 40
RESERVED_GROUP_NAMES = ("head",)          # the head pod's tasuki.dev/group label
# The Cluster's name is a DNS-1035 label short enough for the head Service, <name>-head.
CLUSTER_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
CLUSTER_NAME_MAX_LENGTH = 50
# A custom tasuki resource name (tasukiResources); CPU and GPU come from resources/numCpus/numGpus.
RESOURCE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"
RESERVED_RESOURCE_NAMES = ("CPU", "GPU")

_QUANTITY = re.compile(QUANTITY_PATTERN)
_GROUP_NAME = re.compile(GROUP_NAME_PATTERN)
_CLUSTER_NAME = re.compile(CLUSTER_NAME_PATTERN)
_RESOURCE_NAME = re.compile(RESOURCE_NAME_PATTERN)
_QUANTITY_HELP = ('a Kubernetes quantity: a whole number, or a string such as "500m", "1.5", "2Gi" '
                  '(quote fractions: the CRD takes integers or strings)')


@dataclass(frozen=True)
class SpecError:
    """One problem in a spec: `path` is the field ("spec.workerGroups[1].replicas"), `message` a
    sentence for people that names the field, the values and what to do."""
    path: str
    message: str

    def __str__(self) -> str:
        return self.message


class InvalidSpec(ValueError):
    """A Cluster spec the operator refuses; `errors` lists every problem found (at least one)."""

    def __init__(self, errors: list[SpecError]):
        self.errors = list(errors)
        super().__init__("; ".join(e.message for e in self.errors))


@functools.cache
def load_crd() -> dict:
    """The CustomResourceDefinition from crd.yaml, parsed once (callers must not modify it)."""
    with open(CRD_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def cluster_schema() -> dict:
    """The openAPIV3Schema of the Cluster's served version (the whole object: spec and status)."""
    for version in load_crd()["spec"]["versions"]:
        if version["name"] == CRD_VERSION:
            return version["schema"]["openAPIV3Schema"]
    raise LookupError(f"{CRD_PATH} has no version {CRD_VERSION}")


def to_json_schema(node: Any) -> Any:
    """A Kubernetes structural schema as a JSON Schema (2020-12, draft 7 alike) that jsonschema and Helm can check:
    the tests validate Clusters with it, and charts/cluster_values_schema.py derives the tasuki-cluster chart's
    values schema from it.

    - x-kubernetes-int-or-string: an integer or a string (the anyOf Kubernetes asks to be spelled
      out is kept, or added).
    - x-kubernetes-preserve-unknown-fields: any extra fields are allowed. Without it, an object
      with properties refuses unknown fields (additionalProperties: false): the API server prunes
      them, and kubectl's default strict field validation reports them as errors.
    - nullable: null is allowed too.
    - Other x-kubernetes-* (list types, CEL rules) have no JSON Schema counterpart and are dropped;
      `default` and `format` are annotations that jsonschema ignores.
    """
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("properties", "nullable")}
    if "properties" in node:
        out["properties"] = {name: to_json_schema(sub) for name, sub in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


# --- defaults -------------------------------------------------------------------------------------

def _apply_defaults(value: Any, schema: dict) -> Any:
    """Fill the schema's defaults into `value` in place, as the API server does: a missing (or null)
    property with a default gets it, then defaults apply inside objects, map values and list items."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if value.get(key) is None and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in schema.get("properties", {}):
                    _apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _apply_defaults(item, schema["items"])
    return value


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def with_defaults(spec: dict) -> dict:
    """A copy of `spec` with every default of crd.yaml filled in, plus the two derived ones (see the
    module docstring): maxReplicas unset = max(replicas, minReplicas), and spec.replicas folded into
    workerGroups[0].replicas (or mirrored from it). Never modifies `spec`; tolerates invalid specs
    (validate_spec reports those), filling only what is missing. The result is for reading: never
    write it back to the Cluster."""
    out = _apply_defaults(copy.deepcopy(spec) if isinstance(spec, dict) else {},
                          cluster_schema()["properties"]["spec"])
    groups = out.get("workerGroups")
    if not isinstance(groups, list):
        return out
    if groups and isinstance(groups[0], dict):
        if _is_count(out.get("replicas")):
            groups[0]["replicas"] = out["replicas"]
        elif "replicas" not in out and _is_count(groups[0].get("replicas")):
            out["replicas"] = groups[0]["replicas"]
    for group in groups:
        if isinstance(group, dict) and group.get("maxReplicas") is None:
            counts = [group.get(k) for k in ("replicas", "minReplicas")]
            if all(_is_count(c) for c in counts):
                group["maxReplicas"] = max(counts)
    return out


# --- checks ---------------------------------------------------------------------------------------

class _Checker:
    """Collects SpecErrors while walking one spec; each check_* method looks at one kind of field."""

    def __init__(self) -> None:
        self.errors: list[SpecError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(SpecError(path, message))

    def mapping(self, value: Any, path: str) -> dict:
        """`value` if it is a mapping (or absent: {}), else an error and {}."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"{path} must be a mapping, got {value!r}")
            return {}
        return value

    def count(self, value: Any, path: str, minimum: int = 0, maximum: int | None = None) -> bool:
        """True when `value` is absent or a whole number in [minimum, maximum]."""
        if value is None:
            return True
        if not _is_count(value):
            self.fail(path, f"{path} must be a whole number, got {value!r}")
            return False
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            self.fail(path, f"{path} must be {bounds}, got {value}")
            return False
        return True

    def number(self, value: Any, path: str) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            self.fail(path, f"{path} must be a number of at least 0, got {value!r}")

    def choice(self, value: Any, path: str, choices: tuple) -> None:
        if value is None or (value in choices and not isinstance(value, bool)):
            return
        hint = ""
        if isinstance(value, bool):          # YAML 1.1 (kubectl's, PyYAML's) reads a bare Off/On/No as a boolean
            hint = '; a bare Off, On, Yes or No is a boolean in YAML: quote it, e.g. mode: "Off"'
        self.fail(path, f"{path} must be one of {', '.join(map(str, choices))}, got {value!r}{hint}")

    def boolean(self, value: Any, path: str) -> None:
        if value is not None and not isinstance(value, bool):
            self.fail(path, f"{path} must be true or false, got {value!r}")

    def quantity(self, value: Any, path: str):
        """The quantity's exact value (a Decimal), or None after recording why it is not one."""
        if _is_count(value):
            if value < 0:
                self.fail(path, f"{path} ({value}) is negative; resources are 0 or more")
                return None
            return parse_quantity(value)
        if not isinstance(value, str) or not _QUANTITY.match(value):
            self.fail(path, f"{path} ({value!r}) is not {_QUANTITY_HELP}")
            return None
        try:
            return parse_quantity(value, path)
        except ValueError as e:
            self.fail(path, str(e))
            return None

    def resources(self, value: Any, path: str) -> None:
        """requests and limits: maps of resource name to quantity, each request at most its limit."""
        resources = self.mapping(value, path)
        amounts = {}
        for kind in ("requests", "limits"):
            entries = self.mapping(resources.get(kind), f"{path}.{kind}")
            amounts[kind] = {name: self.quantity(q, f"{path}.{kind}.{name}") for name, q in entries.items()}
        for name, request in amounts["requests"].items():
            limit = amounts["limits"].get(name)
            if request is not None and limit is not None and request > limit:
                self.fail(f"{path}.requests.{name}",
                          f"{path}.requests.{name} ({resources['requests'][name]}) is above "
                          f"{path}.limits.{name} ({resources['limits'][name]}); Kubernetes refuses such a pod: "
                          f"lower the request or raise the limit")

    def pod_overrides(self, pod: dict, path: str) -> None:
        """The pod template overrides shared by the head and the worker groups (the shallow checks;
        the API server checks the Kubernetes types themselves when the operator creates the pod)."""
        for key in ("nodeSelector", "labels", "annotations"):
            for k, v in self.mapping(pod.get(key), f"{path}.{key}").items():
                if not isinstance(v, str):
                    self.fail(f"{path}.{key}.{k}", f"{path}.{key}.{k} must be a string, got {v!r} (quote it)")
        for key in ("tolerations", "env", "volumes", "volumeMounts"):
            items = pod.get(key)
            if items is not None and not isinstance(items, list):
                self.fail(f"{path}.{key}", f"{path}.{key} must be a list, got {items!r}")
        for key in ("env", "volumes", "volumeMounts"):
            items = pod.get(key) if isinstance(pod.get(key), list) else []
            for i, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                    self.fail(f"{path}.{key}[{i}].name", f"{path}.{key}[{i}] needs a name")
        self.mapping(pod.get("affinity"), f"{path}.affinity")
        account = pod.get("serviceAccountName")
        if account is not None and not isinstance(account, str):
            self.fail(f"{path}.serviceAccountName", f"{path}.serviceAccountName must be a string, got {account!r}")

    def group(self, group: Any, path: str) -> None:
        """One worker group: its name, its counts in order, resources and overrides."""
        group = self.mapping(group, path)
        name = group.get("name")
        if not isinstance(name, str) or not _GROUP_NAME.match(name) or len(name) > GROUP_NAME_MAX_LENGTH:
            self.fail(f"{path}.name", f"{path}.name ({name!r}) must be a DNS-1123 label of at most "
                      f"{GROUP_NAME_MAX_LENGTH} characters: lower case letters, digits and '-', starting and "
                      f"ending with a letter or digit")
        elif name in RESERVED_GROUP_NAMES:
            self.fail(f"{path}.name", f"{path}.name ({name!r}) is reserved for the head pod's "
                      f"tasuki.dev/group label; choose another group name")
        counts = {k: group.get(k) for k in ("minReplicas", "replicas", "maxReplicas")}
        ok = all([self.count(v, f"{path}.{k}") for k, v in counts.items()])
        low, want, high = counts["minReplicas"], counts["replicas"], counts["maxReplicas"]
        if ok and want is not None and low is not None and want < low:
            self.fail(f"{path}.replicas", f"{path}.replicas ({want}) is below {path}.minReplicas ({low}): "
                      f"raise replicas or lower minReplicas")
        if ok and want is not None and high is not None and want > high:
            self.fail(f"{path}.replicas", f"{path}.replicas ({want}) is above {path}.maxReplicas ({high}): "
                      f"lower replicas or raise maxReplicas")
        if ok and low is not None and high is not None and low > high:
            self.fail(f"{path}.minReplicas", f"{path}.minReplicas ({low}) is above {path}.maxReplicas ({high})")
        self.resources(group.get("resources"), f"{path}.resources")
        self.number(group.get("numCpus"), f"{path}.numCpus")
        self.count(group.get("numGpus"), f"{path}.numGpus")
        for res, amount in self.mapping(group.get("tasukiResources"), f"{path}.tasukiResources").items():
            where = f"{path}.tasukiResources.{res}"
            if res in RESERVED_RESOURCE_NAMES:
                self.fail(where, f"{where}: {res} cannot be a custom resource; set it through resources "
                          f"(limits), numCpus or numGpus")
            elif not _RESOURCE_NAME.match(res):
                self.fail(where, f"{where}: {res!r} is not a resource name (a letter, then letters, digits, "
                          f"'_', '.', '-'; at most 63)")
            self.number(amount, where)
        self.pod_overrides(group, path)


def _as_spec_replicas(error: SpecError) -> SpecError:
    """An error about workerGroups[0].replicas, told as one about spec.replicas (which set it)."""
    if error.path != "spec.workerGroups[0].replicas":
        return error
    return SpecError("spec.replicas", error.message.replace("spec.workerGroups[0].replicas", "spec.replicas", 1))


def validate_spec(spec: dict, name: str | None = None) -> list[SpecError]:
    """Every problem in a Cluster spec, as SpecErrors with field paths ([] when it is valid).

    Checks what the operator relies on, whether or not the API server evaluated the CRD's rules: the
    image; each group's name (DNS-1123 label, not 'head', unique) and minReplicas <= replicas <=
    maxReplicas; spec.replicas (the default group's scale target) within that group's bounds; every
    quantity, and requests at most limits; custom resource names; the autoscaler and metrics
    settings. `name`, when given, is the Cluster's metadata.name, checked to fit the head Service.
    Defaults are applied first, so an absent field is never an error unless it is required."""
    checker = _Checker()
    if name is not None and (not _CLUSTER_NAME.match(name) or len(name) > CLUSTER_NAME_MAX_LENGTH):
        checker.fail("metadata.name", f"metadata.name ({name!r}) must be a DNS-1035 label of at most "
                     f"{CLUSTER_NAME_MAX_LENGTH} characters (lower case letters, digits and '-', starting with a "
                     f"letter), so that the head Service <name>-head is a valid name")
    if not isinstance(spec, dict):
        checker.fail("spec", f"spec must be a mapping, got {spec!r}")
        return checker.errors
    raw_replicas = spec.get("replicas")
    spec = with_defaults(spec)
    image = spec.get("image")
    if not isinstance(image, str) or not image.strip():
        checker.fail("spec.image", f"spec.image must name the tasuki runtime image (e.g. tasuki/runtime:0.1.0), "
                     f"got {image!r}")
    checker.choice(spec.get("imagePullPolicy"), "spec.imagePullPolicy", ("Always", "IfNotPresent", "Never"))
    if spec.get("objectStoreMemory") is not None:
        checker.quantity(spec["objectStoreMemory"], "spec.objectStoreMemory")
    checker.boolean(spec.get("suspend"), "spec.suspend")

    head = checker.mapping(spec.get("head"), "spec.head")
    checker.resources(head.get("resources"), "spec.head.resources")
    checker.number(head.get("numCpus"), "spec.head.numCpus")
    checker.choice(head.get("serviceType"), "spec.head.serviceType", ("ClusterIP", "NodePort", "LoadBalancer"))
    checker.pod_overrides(head, "spec.head")

    groups = spec.get("workerGroups")
    if not isinstance(groups, list):
        checker.fail("spec.workerGroups", f"spec.workerGroups must be a list, got {groups!r}")
        groups = []
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):
        checker.group(group, f"spec.workerGroups[{i}]")
        gname = group.get("name") if isinstance(group, dict) else None
        if isinstance(gname, str):
            if gname in seen:
                checker.fail(f"spec.workerGroups[{i}].name", f"spec.workerGroups[{i}].name ({gname!r}) is "
                             f"already the name of spec.workerGroups[{seen[gname]}]; group names must be unique")
            seen.setdefault(gname, i)

    if raw_replicas is not None and checker.count(raw_replicas, "spec.replicas"):
        if not groups:
            checker.fail("spec.replicas", "spec.replicas scales the default worker group spec.workerGroups[0], "
                         "and there is none: add a worker group or remove spec.replicas")
        else:
            # with_defaults folded spec.replicas into workerGroups[0].replicas: name the field the user set.
            checker.errors = [_as_spec_replicas(e) for e in checker.errors]

    autoscaler = checker.mapping(spec.get("autoscaler"), "spec.autoscaler")
    checker.choice(autoscaler.get("mode"), "spec.autoscaler.mode", ("Auto", "DryRun", "Off"))
    checker.count(autoscaler.get("idleTimeoutSeconds"), "spec.autoscaler.idleTimeoutSeconds", 0)
    checker.count(autoscaler.get("pollIntervalSeconds"), "spec.autoscaler.pollIntervalSeconds", 1)
    checker.count(autoscaler.get("maxStepPerGroup"), "spec.autoscaler.maxStepPerGroup", 1)
    checker.boolean(autoscaler.get("conserveGpus"), "spec.autoscaler.conserveGpus")
    metrics = checker.mapping(spec.get("metrics"), "spec.metrics")
    checker.count(metrics.get("port"), "spec.metrics.port", 1, 65535)
    checker.boolean(metrics.get("scrapeAnnotations"), "spec.metrics.scrapeAnnotations")
    return checker.errors


def checked_spec(spec: dict, name: str | None = None) -> dict:
    """`with_defaults(spec)` when validate_spec finds nothing wrong; otherwise raises InvalidSpec with
    every error. What the handlers call before building anything."""
    errors = validate_spec(spec, name)
    if errors:
        raise InvalidSpec(errors)
    return with_defaults(spec)

"""A Kubernetes API emulation over real HTTP on 127.0.0.1, for the operator's tests.

No real API server can be installed on the machines these tests run on (see the project's notes on
testing the Kubernetes half), so the operator (kopf and the official client) and kubectl run against
this server instead. It is a small aiohttp server written for this project, not a layer over KMock's
request handler: KMock (PyPI `kmock`, the kopf project's emulator) lacks resourceVersion, 409/422,
uid/creationTimestamp/generation, selectors, the status/scale split, PUT, garbage collection and CRD
registration, and its reactions are matched by the identity of the request object, so a layer that
rewrites requests gets awkward fast. What KMock does give us is reused: its bundled discovery
catalogue of the built-in resources (kind, plural, singular, scope, verbs, short names, taken from a
real cluster), which is what discovery answers and what URL paths resolve against.

What it implements (the parts an operator test needs):
- discovery (/version, /api, /api/v1, /apis, /apis/G, /apis/G/V) for the built-ins and every CRD
  registered by POSTing a CustomResourceDefinition (its served versions, names, scope, subresources);
- create (201, uid, creationTimestamp, generation 1, namespace from the URL, generateName, 409
  AlreadyExists), get, list (with `kind`, `metadata.resourceVersion`), PUT, PATCH (JSON patch with
  422 on a failed `test` op, merge patch, a strategic merge patch that merges lists of named items,
  apply patches as merge patches), DELETE and deletecollection;
- one monotonic resourceVersion counter; 409 Conflict for a stale `metadata.resourceVersion` in a
  PUT or patch; generation bumped only when something outside metadata and status changes; a
  change that changes nothing bumps nothing and emits no watch event;
- label selectors (=, ==, !=, in, notin, exists, !exists) and field selectors (=, ==, != on dotted
  paths) on list, watch and deletecollection;
- watch (?watch=true): from a resourceVersion (replayed from the event history) or from now (the
  current objects as ADDED first), honouring timeoutSeconds; an object that stops (starts) matching
  the selectors is sent as DELETED (ADDED), as a real API server does;
- /status and /scale subresources split from the object: writes to the object keep its status,
  writes to /status change only the status, /scale reads and writes `specReplicasPath`;
- graceful pod deletion: DELETE of a Pod bound to a node (spec.nodeName) with a grace period (the
  request's gracePeriodSeconds, else spec.terminationGracePeriodSeconds, else 30) only sets
  deletionTimestamp (now + grace) and deletionGracePeriodSeconds, a MODIFIED event; the kubelet stops
  the container and sends DELETE with gracePeriodSeconds=0, which removes it. A later DELETE may only
  shorten the grace period. Unbound pods, and every other kind, go at once;
- finalizers (DELETE sets deletionTimestamp; the object goes when its last finalizer is removed) and
  owner-reference garbage collection (an object whose owners are all gone is deleted, recursively;
  `propagationPolicy: Orphan` strips the references instead).

- `Table` responses (Accept: ...;as=Table) for list, get and watch, with a CRD's
  additionalPrinterColumns (priority 1 columns are kubectl's `-o wide`), so `kubectl get` prints them.

What it does not do (yet): /openapi/v2|v3 (kubectl apply/create need `--validate=false`), admission (schema validation,
defaults, CEL rules of a CRD), a scheduler or kubelet (tests set pod status themselves, or run
e2e/kubelet.py), namespace existence checks,
bookmarks, pagination (`limit` is ignored: lists are complete), authentication.

Use from a test::

    with KubeEmulator() as kube:                  # a server on a free 127.0.0.1 port
        kube.url                                  # http://127.0.0.1:PORT
        kube.kubeconfig_path                      # a kubeconfig pointing at it
        kube.apply_crd("operator/tasuki_operator/crd.yaml")
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}})
        kube.get("configmaps", "c", namespace="ns")       # None when absent
        kube.list("pods", namespace="ns", label_selector="tasuki.dev/role=worker")
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import gzip
import importlib.resources
import itertools
import json
import os
import random
import re
import string
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import jsonpatch
import yaml
from aiohttp import web

Obj = dict[str, Any]
DEFAULT_GRACE_S = 30          # a pod's terminationGracePeriodSeconds when it has none, as in Kubernetes


# ---------------------------------------------------------------------------------------------
# Errors: a Kubernetes `Status` with an HTTP code.

class ApiError(Exception):
    """An API error answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


def not_found(res: "Resource", name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural})


def conflict(res: "Resource", name: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": res.group, "kind": res.plural})


# ---------------------------------------------------------------------------------------------
# Resources: what discovery says and what URLs resolve to.

@dataclasses.dataclass
class Resource:
    """One served resource (group, version, plural) and its discovery information."""
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = dataclasses.field(default_factory=list)
    categories: list[str] = dataclasses.field(default_factory=list)
    verbs: list[str] = dataclasses.field(default_factory=lambda: [
        "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"])
    status: bool = False                 # a /status subresource
    scale: Obj | None = None             # the CRD's scale subresource (specReplicasPath, ...), or None
    crd: str | None = None               # the CRD's name when registered from one

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def store_key(self) -> tuple[str, str]:
        """Objects are stored once per (group, plural), whatever version they are read through."""
        return (self.group, self.plural)


BUILTIN_STATUS = {"pods", "services", "namespaces", "nodes", "deployments", "replicasets", "statefulsets",
                  "daemonsets", "jobs", "persistentvolumeclaims", "persistentvolumes",
                  "customresourcedefinitions", "horizontalpodautoscalers", "poddisruptionbudgets"}


def builtin_resources() -> list[Resource]:
    """The built-in resources from KMock's bundled discovery catalogue (taken from a real cluster)."""
    from kmock._internal import loading        # the catalogue's own parser (a private module of kmock 0.8)
    data = importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    out = []
    for doc in json.loads(gzip.decompress(data)):
        for ref, info in loading.parse_group_version(doc).items():
            if not info.kind or info.namespaced is None:
                continue
            out.append(Resource(
                group=ref.group, version=ref.version, plural=ref.plural, kind=info.kind, namespaced=info.namespaced,
                singular=info.singular or info.kind.lower(), short_names=sorted(info.shortnames),
                categories=sorted(info.categories), verbs=sorted(info.verbs) or Resource.__dataclass_fields__[
                    "verbs"].default_factory(),
                status=ref.plural in BUILTIN_STATUS, scale=None))
    return out


# ---------------------------------------------------------------------------------------------
# Selectors.

_KEY = r"[A-Za-z0-9][A-Za-z0-9_./-]*"
_VALUE = r"[A-Za-z0-9_.-]*"
_REQ_SPLIT = re.compile(r",(?![^()]*\))")


def parse_label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate over a label map for `a=b,c!=d,e in (f,g),h notin (i),j,!k`; raises ApiError(400)."""
    if not text:
        return lambda labels: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for req in (r.strip() for r in _REQ_SPLIT.split(text) if r.strip()):
        m = re.fullmatch(rf"({_KEY})\s+(in|notin)\s+\(([^)]*)\)", req)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda l, k=key, vs=values: l.get(k) in vs)
            else:
                checks.append(lambda l, k=key, vs=values: l.get(k) not in vs)
            continue
        m = re.fullmatch(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})", req)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda l, k=key, v=value: l.get(k) != v)
            else:
                checks.append(lambda l, k=key, v=value: l.get(k) == v)
            continue
        m = re.fullmatch(rf"(!?)({_KEY})", req)
        if m:
            neg, key = m.groups()
            checks.append((lambda l, k=key: k not in l) if neg else (lambda l, k=key: k in l))
            continue
        raise ApiError(400, "BadRequest", f"unable to parse requirement {req!r} in labelSelector {text!r}")
    return lambda labels: all(c(labels) for c in checks)


def parse_field_selector(text: str | None) -> Callable[[Obj], bool]:
    """A predicate over an object for `metadata.name=x,status.phase!=Running`; raises ApiError(400)."""
    if not text:
        return lambda obj: True
    checks: list[Callable[[Obj], bool]] = []
    for req in (r.strip() for r in text.split(",") if r.strip()):
        m = re.fullmatch(r"([\w.\-/]+)\s*(==|=|!=)\s*(.*)", req)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector requirement {req!r} in {text!r}")
        path, op, value = m.groups()

        def field(obj: Obj, path: str = path) -> str:
            cur: Any = obj
            for part in path.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            return "" if cur is None else str(cur)
        if op == "!=":
            checks.append(lambda o, f=field, v=value: f(o) != v)
        else:
            checks.append(lambda o, f=field, v=value: f(o) == v)
    return lambda obj: all(c(obj) for c in checks)


# ---------------------------------------------------------------------------------------------
# Patches.

def merge_patch(target: Any, patch: Any, by_name: bool = False) -> Any:
    """RFC 7386 JSON merge patch; with `by_name`, lists of objects merge item by item by their `name`."""
    if by_name and isinstance(patch, list) and isinstance(target, list) and patch and all(
            isinstance(x, dict) and "name" in x for x in itertools.chain(target, patch)):
        result = [copy.deepcopy(x) for x in target]
        index = {x["name"]: i for i, x in enumerate(result)}
        for item in patch:
            if item["name"] in index:
                result[index[item["name"]]] = merge_patch(result[index[item["name"]]], item, by_name)
            else:
                result.append(copy.deepcopy(item))
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, by_name)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch that merges lists of objects by their `name` (containers, ports, env, ...).

    The subset of Kubernetes' strategic merge patch the operator and kubectl use; `$patch` directives
    are not supported."""
    return merge_patch(target, patch, by_name=True)


def _path_parts(path: str) -> list[str | int]:
    """`.spec.groups[0].replicas` -> ["spec", "groups", 0, "replicas"]."""
    parts: list[str | int] = []
    for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return parts


def get_path(obj: Any, path: str) -> Any:
    for part in _path_parts(path):
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def set_path(obj: Obj, path: str, value: Any) -> None:
    parts = _path_parts(path)
    cur: Any = obj
    for part in parts[:-1]:
        if isinstance(part, int):
            cur = cur[part]
        else:
            cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# The store.

@dataclasses.dataclass
class WatchEvent:
    rv: int
    key: tuple[str, str]             # the resource's store key
    type: str                        # ADDED, MODIFIED, DELETED
    old: Obj | None                  # the object before (None for ADDED)
    new: Obj                         # the object after (the last state for DELETED)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_grace_period(res: Resource, obj: Obj, options: Obj) -> int:
    """The grace period of a DELETE: 0 (remove now) unless `obj` is a Pod bound to a node, whose grace
    is the request's gracePeriodSeconds (a negative one means the default), else the pod's
    spec.terminationGracePeriodSeconds, else 30 s, as a real API server does."""
    if (res.group, res.plural) != ("", "pods") or not (obj.get("spec") or {}).get("nodeName"):
        return 0
    asked = options.get("gracePeriodSeconds")
    if asked is not None and int(asked) >= 0:
        return int(asked)
    default = (obj.get("spec") or {}).get("terminationGracePeriodSeconds")
    return int(default) if default is not None else DEFAULT_GRACE_S


def _spec_part(obj: Obj) -> Obj:
    """What generation counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """Objects, resources, the resourceVersion counter and the watch history. Used from one event loop."""

    HISTORY = 100_000

    def __init__(self) -> None:
        self.resources: dict[tuple[str, str, str], Resource] = {}
        for res in builtin_resources():
            self.resources[(res.group, res.version, res.plural)] = res
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}   # store key -> (ns, name) -> obj
        self.rv = 0
        self.history: list[WatchEvent] = []
        self.watchers: set[asyncio.Queue] = set()
        self.requests: list[tuple[str, str]] = []       # (method, path?query) of every HTTP request
        self.audit: list[Obj] = []                      # the RBAC view of every resource request (see Server)

    # --- resources --------------------------------------------------------------------------
    def resource(self, group: str, version: str, plural: str) -> Resource:
        res = self.resources.get((group, version, plural))
        if res is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({plural}.{group}/{version})" if group else
                           f"the server could not find the requested resource ({plural} {version})")
        return res

    def find(self, ref: str) -> Resource:
        """Resolve "pods", "v1/pods", "clusters.tasuki.dev", "tasuki.dev/v1alpha1/clusters", "tkc", "Cluster"."""
        group = version = None
        name = ref
        if "/" in ref:
            parts = ref.split("/")
            name = parts[-1]
            if len(parts) == 2:
                version, group = parts[0], ""
            else:
                group, version = parts[0], parts[1]
        elif "." in ref:
            name, group = ref.split(".", 1)
        matches = [r for r in self.resources.values()
                   if (group is None or r.group == group) and (version is None or r.version == version)
                   and name in (r.plural, r.singular, r.kind, *r.short_names)]
        if not matches:
            raise KeyError(f"no resource {ref!r}")
        matches.sort(key=lambda r: (r.group != "", r.group not in ("apps", "batch"), r.crd is None))  # core first
        return matches[0]

    def for_object(self, obj: Obj) -> Resource:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for res in self.resources.values():
            if res.group == group and res.version == version and res.kind == kind:
                return res
        raise KeyError(f"no resource for apiVersion={api_version!r} kind={kind!r}")

    def register_crd(self, crd: Obj) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for v in spec.get("versions", []):
            if not v.get("served", True):
                continue
            sub = v.get("subresources") or {}
            self.resources[(spec["group"], v["name"], names["plural"])] = Resource(
                group=spec["group"], version=v["name"], plural=names["plural"], kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(), short_names=list(names.get("shortNames", [])),
                categories=list(names.get("categories", [])), status="status" in sub, scale=sub.get("scale"),
                crd=crd["metadata"]["name"])

    def unregister_crd(self, crd: Obj) -> None:
        for key, res in list(self.resources.items()):
            if res.crd == crd["metadata"]["name"]:
                del self.resources[key]
                for obj in list(self.objects.get(res.store_key, {}).values()):
                    self._remove(res, obj)

    # --- events -----------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _emit(self, res: Resource, type_: str, old: Obj | None, new: Obj) -> None:
        ev = WatchEvent(int(new["metadata"]["resourceVersion"]), res.store_key, type_, old, new)
        self.history.append(ev)
        if len(self.history) > self.HISTORY:
            del self.history[: len(self.history) - self.HISTORY]
        for q in list(self.watchers):
            q.put_nowait(ev)

    # --- reads ------------------------------------------------------------------------------
    def bucket(self, res: Resource) -> dict[tuple[str, str], Obj]:
        return self.objects.setdefault(res.store_key, {})

    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.bucket(res).get((namespace or "", name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def list(self, res: Resource, namespace: str | None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Obj]:
        labels_ok, fields_ok = parse_label_selector(label_selector), parse_field_selector(field_selector)
        return [o for (ns, _), o in sorted(self.bucket(res).items())
                if (namespace is None or ns == namespace)
                and labels_ok(o["metadata"].get("labels") or {}) and fields_ok(o)]

    # --- writes -----------------------------------------------------------------------------
    def create(self, res: Resource, namespace: str | None, body: Obj) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of a create must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", f"{res.kind}: metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if res.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(400, "BadRequest", f"the namespace of the object ({meta['namespace']}) does not match "
                               f"the namespace on the request ({ns})")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
            ns = ""
        key = (ns, meta["name"])
        if key in self.bucket(res):
            raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists',
                           {"name": meta["name"], "group": res.group, "kind": res.plural})
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.status:
            obj.pop("status", None)
        if res.group == "" and res.plural == "pods":
            obj["status"] = {"phase": "Pending"}
        if res.group == "" and res.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_rv())
        if res.plural == "customresourcedefinitions" and res.group == "apiextensions.k8s.io":
            self.register_crd(obj)
            names = obj["spec"]["names"]
            obj["status"] = {"acceptedNames": copy.deepcopy(names), "storedVersions": [
                v["name"] for v in obj["spec"]["versions"] if v.get("storage")], "conditions": [
                {"type": t, "status": "True", "reason": r, "lastTransitionTime": _now(), "message": ""}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))]}
        self.bucket(res)[key] = obj
        self._emit(res, "ADDED", None, obj)
        return obj

    def update(self, res: Resource, namespace: str | None, name: str, new: Obj, subresource: str | None = None,
               expected_rv: str | None = None) -> Obj:
        """Replace an object (or only its status when subresource == "status"), keeping what the API keeps."""
        old = self.get(res, namespace, name)
        if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if not isinstance(new, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            result.setdefault("metadata", {})
            if res.status:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
        meta, old_meta = result["metadata"], old["metadata"]
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "resourceVersion"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        result["apiVersion"], result["kind"] = res.api_version, res.kind
        if result == old:
            return old                                  # a no-op write changes nothing, emits nothing
        if _spec_part(result) != _spec_part(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        self.bucket(res)[(old_meta.get("namespace", ""), name)] = result
        if res.plural == "customresourcedefinitions" and res.group == "apiextensions.k8s.io":
            self.register_crd(result)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not meta.get("deletionGracePeriodSeconds"):
            self._remove(res, result)
        else:
            self._emit(res, "MODIFIED", old, result)
        return result

    def patch(self, res: Resource, namespace: str | None, name: str, patch: Any, content_type: str,
              subresource: str | None = None) -> Obj:
        old = self.get(res, namespace, name)
        current = copy.deepcopy(old)
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                result = jsonpatch.apply_patch(current, patch)
            except jsonpatch.JsonPatchTestFailed as e:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {e}")
            expected = None                  # a `test` op is how a JSON patch asks for a resourceVersion
        else:
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            expected = (patch.get("metadata") or {}).get("resourceVersion")
            if content_type.startswith("application/strategic-merge-patch+json"):
                result = strategic_merge_patch(current, patch)
            else:                            # merge-patch+json, apply-patch+yaml (server-side apply as a merge)
                result = merge_patch(current, patch)
        if subresource == "scale":
            return self._write_scale(res, old, result, expected)
        return self.update(res, namespace, name, result, subresource, expected_rv=expected)

    def delete(self, res: Resource, namespace: str | None, name: str, options: Obj | None = None) -> Obj:
        options = options or {}
        obj = self.get(res, namespace, name)
        pre = (options.get("preconditions") or {})
        if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise conflict(res, name)
        orphan = options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True
        meta = obj["metadata"]
        grace = pod_grace_period(res, obj, options)
        if grace or (meta.get("finalizers") and meta.get("deletionGracePeriodSeconds")):
            if meta.get("deletionTimestamp") and grace >= meta.get("deletionGracePeriodSeconds", 0):
                return obj                      # already terminating, at least as soon
            new = copy.deepcopy(obj)
            deadline = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=grace)
            new["metadata"].update(deletionTimestamp=deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   deletionGracePeriodSeconds=grace, resourceVersion=self._next_rv())
            self.bucket(res)[(meta.get("namespace", ""), name)] = new
            self._emit(res, "MODIFIED", obj, new)
            return new
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0,
                                   resourceVersion=self._next_rv())
            self.bucket(res)[(meta.get("namespace", ""), name)] = new
            self._emit(res, "MODIFIED", obj, new)
            return new
        return self._remove(res, obj, orphan=orphan)

    def _remove(self, res: Resource, obj: Obj, orphan: bool = False) -> Obj:
        meta = obj["metadata"]
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        del self.bucket(res)[(meta.get("namespace", ""), meta["name"])]
        self._emit(res, "DELETED", obj, gone)
        if res.plural == "customresourcedefinitions" and res.group == "apiextensions.k8s.io":
            self.unregister_crd(obj)
        self._collect_garbage(meta["uid"], orphan)
        return gone

    def _live_uids(self) -> set[str]:
        return {o["metadata"]["uid"] for b in self.objects.values() for o in b.values()}

    def _collect_garbage(self, owner_uid: str, orphan: bool) -> None:
        """Delete (or, orphaning, un-own) the dependents of a removed owner whose owners are all gone."""
        live = self._live_uids()
        for res in {r.store_key: r for r in self.resources.values()}.values():
            for obj in list(self.bucket(res).values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                ns, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
                if (ns or "", name) not in self.bucket(res):
                    continue                    # removed meanwhile by a recursive collection
                if orphan:
                    new = copy.deepcopy(obj)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
                    self.update(res, ns, name, new)
                elif not any(r.get("uid") in live for r in refs):
                    self.delete(res, ns, name)

    # --- scale ------------------------------------------------------------------------------
    def scale_of(self, res: Resource, obj: Obj) -> Obj:
        if not res.scale:
            raise ApiError(404, "NotFound", f"{res.qualified} has no scale subresource")
        meta = obj["metadata"]
        selector = get_path(obj, res.scale["labelSelectorPath"]) if res.scale.get("labelSelectorPath") else None
        status: Obj = {"replicas": get_path(obj, res.scale.get("statusReplicasPath", "")) or 0}
        if selector:
            status["selector"] = selector
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in meta},
                "spec": {"replicas": get_path(obj, res.scale["specReplicasPath"]) or 0}, "status": status}

    def _write_scale(self, res: Resource, old: Obj, scale: Obj, expected_rv: str | None) -> Obj:
        if not res.scale:
            raise ApiError(404, "NotFound", f"{res.qualified} has no scale subresource")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f"Scale.spec.replicas: Invalid value: {replicas!r}: must be an integer >= 0")
        new = copy.deepcopy(old)
        set_path(new, res.scale["specReplicasPath"], replicas)
        meta = old["metadata"]
        updated = self.update(res, meta.get("namespace"), meta["name"], new, expected_rv=expected_rv)
        return self.scale_of(res, updated)

    def write_scale(self, res: Resource, namespace: str | None, name: str, scale: Obj) -> Obj:
        old = self.get(res, namespace, name)
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        return self._write_scale(res, old, scale, rv)


# ---------------------------------------------------------------------------------------------
# HTTP.

def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data), content_type="application/json")


def _out(res: Resource, obj: Obj) -> Obj:
    """An object as served through `res` (its version)."""
    o = copy.deepcopy(obj)
    o["apiVersion"], o["kind"] = res.api_version, res.kind
    return o


def _age(timestamp: str | None) -> str:
    """A kubectl-style age ("5s", "3m", "2h", "4d") of an RFC 3339 timestamp."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    seconds = max(0, int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table_columns(res: Resource, crd: Obj | None) -> list[Obj]:
    """The Table columns: Name plus a CRD's additionalPrinterColumns (or Age), Name/Status/Age for pods."""
    name = {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0,
            "jsonPath": ".metadata.name"}
    age = {"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0,
           "jsonPath": ".metadata.creationTimestamp"}
    if crd is not None:
        version = next((v for v in crd["spec"]["versions"] if v["name"] == res.version), {})
        extra = version.get("additionalPrinterColumns")
        if extra is not None:
            return [name] + [{"format": "", "description": "", "priority": 0, **c} for c in extra]
    if res.group == "" and res.plural == "pods":
        return [name, {"name": "Status", "type": "string", "format": "", "description": "Phase", "priority": 0,
                       "jsonPath": ".status.phase"}, age]
    return [name, age]


def table(res: Resource, columns: list[Obj], objects: list[Obj], rv: str) -> Obj:
    """A meta.k8s.io/v1 Table, as kubectl get asks for."""
    rows = []
    for obj in objects:
        cells = []
        for c in columns:
            value = get_path(obj, c["jsonPath"])
            cells.append(_age(value) if c["type"] == "date" else ("<none>" if value is None else value))
        meta = obj["metadata"]
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                "metadata": copy.deepcopy(meta)}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": [{k: v for k, v in c.items() if k != "jsonPath"} for c in columns], "rows": rows}


class Server:
    """The aiohttp application over a Store."""

    def __init__(self, store: Store, server_timeout: float = 300.0):
        self.store = store
        self.server_timeout = server_timeout
        self.closing = asyncio.Event()
        self.app = web.Application(middlewares=[self._errors], client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    @web.middleware
    async def _errors(self, request: web.Request, handler):  # type: ignore[no-untyped-def]
        self.store.requests.append((request.method, request.path_qs))
        try:
            return await handler(request)
        except ApiError as e:
            return _json(e.status(), e.code)

    def _table_columns(self, request: web.Request, res: Resource) -> list[Obj] | None:
        """The Table columns when the request asks for a Table (kubectl get), else None."""
        if "as=Table" not in request.headers.get("Accept", ""):
            return None
        crd = None
        if res.crd:
            crd = self.store.bucket(self.store.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                                    ).get(("", res.crd))
        return table_columns(res, crd)

    # --- discovery --------------------------------------------------------------------------
    def _resource_list(self, group: str, version: str) -> Obj:
        entries = []
        for res in self.store.resources.values():
            if res.group != group or res.version != version:
                continue
            entries.append({"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced,
                            "kind": res.kind, "verbs": res.verbs, "shortNames": res.short_names,
                            "categories": res.categories})
            if res.status:
                entries.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                                "kind": res.kind, "verbs": ["get", "patch", "update"]})
            if res.scale:
                entries.append({"name": f"{res.plural}/scale", "singularName": "", "namespaced": res.namespaced,
                                "group": "autoscaling", "version": "v1", "kind": "Scale",
                                "verbs": ["get", "patch", "update"]})
        if not entries:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({group}/{version})")
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": entries}

    def _groups(self) -> list[Obj]:
        versions: dict[str, list[str]] = {}
        for res in self.store.resources.values():
            if res.group and res.version not in versions.setdefault(res.group, []):
                versions[res.group].append(res.version)
        out = []
        for group, vs in sorted(versions.items()):
            items = [{"groupVersion": f"{group}/{v}", "version": v} for v in vs]
            out.append({"name": group, "versions": items, "preferredVersion": items[0]})
        return out

    # --- routing ----------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return _json({"major": "1", "minor": "37", "gitVersion": "v1.37.0-tasuki-emulator",
                          "platform": "linux/amd64"})
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"],
                          "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})
        if parts == ["apis"]:
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) == 2:
            for g in self._groups():
                if g["name"] == parts[1]:
                    return _json({"kind": "APIGroup", "apiVersion": "v1", **g})
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({parts[1]})")
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        if not rest:
            if request.method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}")
            return _json(self._resource_list(group, version))
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self.store.resources:
            namespace, rest = rest[1], rest[2:]
        res = self.store.resource(group, version, rest[0])
        if namespace is not None and not res.namespaced:
            raise ApiError(404, "NotFound", f"{res.qualified} is not namespaced")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        self.store.audit.append({"verb": self._verb(request, name), "apiGroup": group, "resource": res.plural,
                                 "subresource": sub, "namespace": namespace, "name": name,
                                 "agent": request.headers.get("User-Agent", "")})
        if len(rest) > 3 or (sub and sub not in ("status", "scale")) or (sub == "status" and not res.status) or (
                sub == "scale" and not res.scale):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        if name is None:
            return await self.collection(request, res, namespace)
        return await self.item(request, res, namespace, name, sub)

    @staticmethod
    def _verb(request: web.Request, name: str | None) -> str:
        """The RBAC verb of a request, as the API server's authorizer names it."""
        if request.method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return "watch"
            return "get" if name else "list"
        if request.method == "DELETE":
            return "delete" if name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(request.method, request.method.lower())

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            if "yaml" in request.content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"the request body is not valid JSON/YAML: {e}")

    async def collection(self, request: web.Request, res: Resource, namespace: str | None) -> web.StreamResponse:
        q = request.query
        if request.method == "GET":
            if q.get("watch") in ("true", "1"):
                return await self.watch(request, res, namespace)
            items = self.store.list(res, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            if (columns := self._table_columns(request, res)) is not None:
                return _json(table(res, columns, items, str(self.store.rv)))
            return _json({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                          "metadata": {"resourceVersion": str(self.store.rv)}, "items": [_out(res, o) for o in items]})
        if request.method == "POST":
            if res.namespaced and namespace is None:
                raise ApiError(405, "MethodNotAllowed", f"create {res.qualified} needs a namespace in the URL")
            obj = self.store.create(res, namespace, await self._body(request))
            return _json(_out(res, obj), 201)
        if request.method == "DELETE":
            items = self.store.list(res, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            options = dict(await self._body(request) or {})
            if "gracePeriodSeconds" in q:
                options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            for o in items:
                self.store.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], options)
            return _json({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                          "metadata": {"resourceVersion": str(self.store.rv)}, "items": [_out(res, o) for o in items]})
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection")

    async def item(self, request: web.Request, res: Resource, namespace: str | None, name: str,
                   sub: str | None) -> web.StreamResponse:
        if res.namespaced and namespace is None:
            raise ApiError(404, "NotFound", f"{res.qualified} is namespaced: use /namespaces/NS/{res.plural}/{name}")
        m = request.method
        if m == "GET":
            obj = self.store.get(res, namespace, name)
            if sub == "scale":
                return _json(self.store.scale_of(res, obj))
            if (columns := self._table_columns(request, res)) is not None:
                return _json(table(res, columns, [obj], obj["metadata"]["resourceVersion"]))
            return _json(_out(res, obj))
        if m == "PUT":
            body = await self._body(request)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body of a PUT must be a JSON object")
            if (body.get("metadata") or {}).get("name", name) != name:
                raise ApiError(400, "BadRequest", f"the name of the object ({body['metadata']['name']}) does not "
                               f"match the name on the URL ({name})")
            if sub == "scale":
                return _json(self.store.write_scale(res, namespace, name, body))
            rv = (body.get("metadata") or {}).get("resourceVersion")
            return _json(_out(res, self.store.update(res, namespace, name, body, sub, expected_rv=rv)))
        if m == "PATCH":
            body = await self._body(request)
            ct = request.content_type or "application/merge-patch+json"
            if ct.startswith("application/apply-patch"):
                try:
                    self.store.get(res, namespace, name)
                except ApiError:
                    return _json(_out(res, self.store.create(res, namespace, body)), 201)
            result = self.store.patch(res, namespace, name, body, ct, sub)
            return _json(result if sub == "scale" else _out(res, result))
        if m == "DELETE":
            options = dict(await self._body(request) or {})
            if "propagationPolicy" in request.query:
                options["propagationPolicy"] = request.query["propagationPolicy"]
            if "gracePeriodSeconds" in request.query:
                options["gracePeriodSeconds"] = int(request.query["gracePeriodSeconds"])
            return _json(_out(res, self.store.delete(res, namespace, name, options)))
        raise ApiError(405, "MethodNotAllowed", f"{m} is not allowed on {request.path}")

    # --- watch ------------------------------------------------------------------------------
    async def watch(self, request: web.Request, res: Resource, namespace: str | None) -> web.StreamResponse:
        q = request.query
        labels_ok = parse_label_selector(q.get("labelSelector"))
        fields_ok = parse_field_selector(q.get("fieldSelector"))

        def matches(obj: Obj | None) -> bool:
            return obj is not None and (namespace is None or obj["metadata"].get("namespace") == namespace) and \
                labels_ok(obj["metadata"].get("labels") or {}) and fields_ok(obj)

        def translate(ev: WatchEvent) -> tuple[str, Obj] | None:
            if ev.key != res.store_key:
                return None
            was, now = matches(ev.old), matches(ev.new)
            if ev.type == "DELETED":
                return ("DELETED", ev.new) if was else None
            if was and now:
                return ev.type, ev.new
            if now:
                return "ADDED", ev.new
            if was:
                return "DELETED", ev.new
            return None

        columns = self._table_columns(request, res)
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else self.server_timeout
        since = q.get("resourceVersion")
        backlog: list[tuple[str, Obj]] = []
        queue: asyncio.Queue = asyncio.Queue()
        if since and since != "0":
            try:
                since_rv = int(since)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")
            oldest = self.store.history[0].rv if self.store.history else self.store.rv + 1
            if since_rv < oldest - 1 and since_rv < self.store.rv:
                gone = ApiError(410, "Expired", f"too old resource version: {since_rv} ({oldest - 1})").status()
                backlog.append(("ERROR", gone))
            else:
                for ev in self.store.history:
                    if ev.rv > since_rv and (t := translate(ev)):
                        backlog.append(t)
        else:
            backlog = [("ADDED", o) for o in self.store.list(res, namespace) if matches(o)]
        self.store.watchers.add(queue)               # no await since the backlog was read: no gap, no repeat
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for type_, obj in backlog:
                await response.write(self._line(res, type_, obj, columns))
                if type_ == "ERROR":
                    return response
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            closing = asyncio.ensure_future(self.closing.wait())
            try:
                while (left := deadline - loop.time()) > 0 and not self.closing.is_set():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait({getter, closing}, timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        break
                    if t := translate(getter.result()):
                        await response.write(self._line(res, *t, columns))
            finally:
                closing.cancel()
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.discard(queue)
        return response

    @staticmethod
    def _line(res: Resource, type_: str, obj: Obj, columns: list[Obj] | None = None) -> bytes:
        if type_ != "ERROR":
            obj = table(res, columns, [obj], obj["metadata"]["resourceVersion"]) if columns else _out(res, obj)
        return (json.dumps({"type": type_, "object": obj}) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# The test-facing handle: a server in a background thread.

class KubeEmulator:
    """A Kubernetes API emulation on a free 127.0.0.1 port, served from a background thread.

    Use as a context manager (or call start()/stop()). `.url` is the server, `.kubeconfig_path` a
    kubeconfig pointing at it (context `emulator`, namespace `default`). The helpers below read and
    write the store directly (in the server's loop, so watchers see the changes) for arrange and
    assert steps; `.requests` lists every (method, path?query) the server answered and `.audit` every
    resource request as RBAC sees it (verb, apiGroup, resource, subresource, namespace, name), for a
    test that checks the operator's Role covers what it did."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, server_timeout: float = 300.0,
                 kubeconfig_dir: str | os.PathLike | None = None):
        self.host, self._port, self.server_timeout = host, port, server_timeout
        self._kubeconfig_dir = kubeconfig_dir
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.url = ""
        self.kubeconfig_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.store: Store | None = None
        self._server: Server | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> "KubeEmulator":
        started = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._astart())
            except BaseException as e:               # reported to start()
                errors.append(e)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._astop())
            loop.close()

        self._thread = threading.Thread(target=main, name="kube-emulator", daemon=True)
        self._thread.start()
        if not started.wait(30) or errors:
            raise RuntimeError(f"the Kubernetes emulator did not start: {errors[:1] or 'timed out after 30 s'}")
        self._write_kubeconfig()
        return self

    async def _astart(self) -> None:
        self.store = Store()
        self._server = Server(self.store, self.server_timeout)
        self._runner = web.AppRunner(self._server.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self.host}:{port}"

    async def _astop(self) -> None:
        assert self._server is not None and self._runner is not None
        self._server.closing.set()
        await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "KubeEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_kubeconfig(self) -> None:
        if self._kubeconfig_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kube-emulator-")
            directory = Path(self._tmp.name)
        else:
            directory = Path(self._kubeconfig_dir)
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                         "namespace": "default"}}]}))
        self.kubeconfig_path = str(path)

    # --- direct helpers (run in the server's loop) ------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn(*args, **kwargs) in the server's event loop and return its result (deep-copied)."""
        assert self._loop is not None, "the emulator is not started"

        async def run() -> Any:
            return copy.deepcopy(fn(*args, **kwargs))
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def resource(self, ref: str) -> Resource:
        """The resource for "pods", "v1/pods", "clusters.tasuki.dev", "tkc", "Cluster", ..."""
        return self.call(lambda: self.store.find(ref))

    def get(self, ref: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when there is none."""
        def get() -> Obj | None:
            res = self.store.find(ref)
            return self.store.bucket(res).get(((namespace or "") if res.namespaced else "", name))
        return self.call(get)

    def list(self, ref: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> list[Obj]:
        return self.call(lambda: self.store.list(self.store.find(ref), namespace, label_selector, field_selector))

    def create(self, obj: Obj, namespace: str | None = None) -> Obj:
        """Create an object (its apiVersion and kind say where); namespace defaults to metadata.namespace."""
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return self.call(lambda: self.store.create(self.store.for_object(obj), ns, obj))

    def patch(self, ref: str, name: str, patch: Any, namespace: str | None = None, subresource: str | None = None,
              content_type: str = "application/merge-patch+json") -> Obj:
        return self.call(lambda: self.store.patch(self.store.find(ref), namespace, name, patch, content_type,
                                                  subresource))

    def set_status(self, ref: str, name: str, status: Obj, namespace: str | None = None) -> Obj:
        """Merge `status` into the object's status (through the status subresource where there is one)."""
        return self.patch(ref, name, {"status": status}, namespace,
                          subresource="status" if self.resource(ref).status else None)

    def delete(self, ref: str, name: str, namespace: str | None = None, propagation_policy: str | None = None,
               grace_period_seconds: int | None = None) -> Obj:
        options: Obj = {"propagationPolicy": propagation_policy} if propagation_policy else {}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return self.call(lambda: self.store.delete(self.store.find(ref), namespace, name, options))

    def apply_crd(self, path_or_obj: str | os.PathLike | Obj) -> Obj:
        """Register a CustomResourceDefinition (from a YAML file or a dict), as `kubectl create -f` would."""
        crd = path_or_obj if isinstance(path_or_obj, dict) else yaml.safe_load(Path(path_or_obj).read_text())
        return self.create(crd)

    @property
    def requests(self) -> list[tuple[str, str]]:
        return self.call(lambda: list(self.store.requests))

    @property
    def audit(self) -> list[Obj]:
        """Every resource request as RBAC sees it: {verb, apiGroup, resource, subresource, namespace, name},
        and the client's User-Agent as `agent` (kubectl's starts with "kubectl")."""
        return self.call(lambda: list(self.store.audit))

    @property
    def resource_version(self) -> int:
        return self.call(lambda: self.store.rv)

"""The operator's calls to the Kubernetes API: the only module that talks to the API server.

`Kube` wraps the official client (CoreV1Api, CustomObjectsApi) with exactly the calls the
controller makes, and nothing else, so that rbac.yaml can be checked against this list (the
emulator test in tests/test_kube.py proves every request they send is allowed by it). kopf's own
requests (watching Clusters, finalizers) are kopf's; this module does not import kopf.

Objects go in and come out as plain dicts in Kubernetes JSON (camelCase), as manifests.py builds
them and status.py reads them: responses are read raw and parsed, never turned into client models.

Every call is bounded: one `_request_timeout` (connect, read) per request and no urllib3 retries
when `Kube` builds its own client (`from_kubeconfig`, `in_cluster`), so a hung API server costs a
handler at most `timeout` seconds per call. The errors are for people:
- 404: `get_*` return None, `delete_*` return False: the controller asks "is it there?".
- 409 on `create_*`: the object already exists (a retried handler, a restart); the existing
  object is read and returned, so creation is idempotent. Callers compare it if they care.
- 403: `KubeForbidden`, naming the verb, the resource and the namespace, and saying what to fix:
  either rbac.yaml has no rule for the request (add one) or it has and the Role installed in
  that namespace is missing, out of date or not bound to the operator's ServiceAccount.
- 409 on `create_lease` / `replace_lease`: `KubeConflict`. There the 409 is the answer leader
  election needs (another replica created the Lease first, or wrote it since we read it), so it is
  raised, not smoothed over; the elector reads the Lease again and decides anew.
- anything else: `KubeError` with the status code and the server's message; a connection that
  fails or times out: `KubeUnreachable`, with the server's URL and the timeout.

    KubeError               status, verb, resource, namespace, name of the request
    ├── KubeForbidden       403: the message names the missing rbac.yaml rule or the stale Role
    ├── KubeConflict        409 on a Lease write: another writer was first
    └── KubeUnreachable     no answer within the timeout

Signatures (ns = namespace):
    Kube(api_client, timeout=DEFAULT_TIMEOUT_S)
    Kube.from_kubeconfig(path=None, context=None, timeout=...)   # falls back to in-cluster config
    Kube.in_cluster(timeout=...)
    get_cluster(ns, name) -> dict | None
    patch_cluster_status(ns, name, patch) -> dict        # merge patch of .status (a dict of status fields)
    list_pods(ns, cluster_name) -> list[dict]            # label tasuki.dev/cluster=<cluster_name>
    create_pod(ns, pod) -> dict ; delete_pod(ns, name) -> bool
    get_service(ns, name) -> dict | None ; create_service(ns, svc) -> dict
    get_secret(ns, name) -> dict | None ; create_secret(ns, secret) -> dict ; delete_secret(ns, name) -> bool
    post_event(ns, involved_object, reason, message, type_="Normal") -> dict
    create_cluster(ns, cluster) -> dict ; delete_cluster(ns, name) -> bool ; patch_cluster(ns, name, patch) -> dict
    get_job(ns, name) -> dict | None ; patch_job_status(ns, name, patch) -> dict ; delete_job(ns, name) -> bool
    get_configmap(ns, name) -> dict | None               # a Job's spec.workingDir.configMap
    get_lease(ns, name) -> dict | None ; create_lease(ns, lease) -> dict      # leader.py's calls
    replace_lease(ns, name, lease) -> dict      # PUT, conditional on the lease's metadata.resourceVersion
"""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Callable

import urllib3
from kubernetes import client, config

from . import rbac
from .manifests import API_VERSION, LABEL_CLUSTER, MANAGED_BY

__all__ = ["Kube", "JOBS", "KubeError", "KubeForbidden", "KubeConflict", "KubeUnreachable", "forbidden_message",
           "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 10.0               # connect and read timeout of every request, seconds
CONNECT_TIMEOUT_S = 5.0                # the connect part, at most this (or `timeout` when smaller)
GROUP, VERSION = API_VERSION.split("/")
CLUSTERS = "clusters"
JOBS = "jobs"
EVENT_TYPES = ("Normal", "Warning")
EVENT_MESSAGE_LIMIT = 1024             # events.k8s.io refuses longer notes; core v1 keeps them, kubectl cuts them
EVENT_REASON_LIMIT = 128
COMPONENT = MANAGED_BY                 # source.component / reportingComponent of our Events
MERGE_PATCH = "application/merge-patch+json"
COORDINATION = "coordination.k8s.io"   # the API group of Leases (leader election)
LEASES = "leases"


class KubeError(Exception):
    """A request the API server refused or could not answer. `status` is the HTTP code (0: none),
    `verb`, `resource` (with its group, e.g. "clusters.tasuki.dev/status"), `namespace`, `name`
    what was asked."""

    def __init__(self, message: str, *, status: int = 0, verb: str = "", resource: str = "",
                 namespace: str | None = None, name: str | None = None):
        super().__init__(message)
        self.status, self.verb, self.resource, self.namespace, self.name = status, verb, resource, namespace, name


class KubeForbidden(KubeError):
    """403: the operator's ServiceAccount may not do this. The message says which rule is missing."""


class KubeConflict(KubeError):
    """409 on a Lease write: the Lease was created by someone else first, or changed since it was
    read (a stale metadata.resourceVersion). Read it again and decide anew."""


class KubeUnreachable(KubeError):
    """No answer: connection refused, DNS, TLS, or the timeout passed."""


def _qualified(api_group: str, resource: str, subresource: str | None) -> str:
    name = f"{resource}.{api_group}" if api_group else resource
    return f"{name}/{subresource}" if subresource else name


def forbidden_message(verb: str, api_group: str, resource: str, subresource: str | None, namespace: str | None,
                      name: str | None = None, server_message: str = "", rules: list[dict] | None = None) -> str:
    """What a 403 means for this operator: which request, and which rule of rbac.yaml is missing
    (or, when rbac.yaml has it, that the Role installed in the namespace does not)."""
    rules = rbac.load_rules() if rules is None else rules
    what = _qualified(api_group, resource, subresource)
    target = f'{what} "{name}"' if name else what
    where = f'in namespace "{namespace}"' if namespace else "cluster-wide"
    head = f"forbidden: the operator may not {verb} {target} {where}"
    rule_resource = f"{resource}/{subresource}" if subresource else resource
    if rbac.allows(rules, verb, api_group, resource, subresource, name):
        fix = (f"rbac.yaml allows it, so the Role (or ClusterRole) bound to the operator's ServiceAccount "
               f"{where} is missing, out of date or not bound: reinstall the chart's RBAC for this namespace "
               f"(tasuki_operator.rbac.role({namespace!r}, ...)).")
    else:
        fix = (f"rbac.yaml ({rbac.RBAC_PATH}) has no rule for it: add verb {verb!r} to a rule with "
               f"apiGroups: [{api_group!r}] and resources: [{rule_resource}] "
               f"(or stop making this call), then reinstall the RBAC.")
    server = f" The API server said: {server_message}" if server_message else ""
    return f"{head}. {fix}{server}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bounded_configuration(cfg: client.Configuration) -> client.Configuration:
    cfg.retries = False                # one attempt per call: a retry would multiply the timeout
    return cfg


class Kube:
    """The controller's Kubernetes calls over one `kubernetes.client.ApiClient`. Thread-safe as the
    client is (urllib3's pool); kopf runs sync handlers in threads."""

    def __init__(self, api_client: client.ApiClient, timeout: float = DEFAULT_TIMEOUT_S):
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout), timeout)

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike | None = None, context: str | None = None,
                        timeout: float = DEFAULT_TIMEOUT_S) -> "Kube":
        """From a kubeconfig: `path`, else $KUBECONFIG or ~/.kube/config; with none of those and
        inside a pod ($KUBERNETES_SERVICE_HOST), the in-cluster ServiceAccount config."""
        if path is None and not os.environ.get("KUBECONFIG") and not Path("~/.kube/config").expanduser().exists() \
                and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster(timeout)
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(path) if path is not None else None, context=context,
                                client_configuration=cfg)
        return cls(client.ApiClient(_bounded_configuration(cfg)), timeout)

    @classmethod
    def in_cluster(cls, timeout: float = DEFAULT_TIMEOUT_S) -> "Kube":
        """From the pod's ServiceAccount (token and CA under /var/run/secrets/kubernetes.io)."""
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return cls(client.ApiClient(_bounded_configuration(cfg)), timeout)

    # --- one request ----------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, verb: str, api_group: str, resource: str,
              namespace: str | None, name: str | None = None, subresource: str | None = None,
              **kwargs: Any) -> Any:
        """Send one request; the parsed JSON answer, or a KubeError for people. Raises ApiException
        for 404 and 409 so the callers can decide."""
        what = _qualified(api_group, resource, subresource)
        try:
            response = fn(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
        except client.ApiException as e:
            if e.status in (404, 409):
                raise
            message = _server_message(e)
            common = dict(status=e.status or 0, verb=verb, resource=what, namespace=namespace, name=name)
            if e.status == 403:
                raise KubeForbidden(forbidden_message(verb, api_group, resource, subresource, namespace, name,
                                                      message), **common) from None
            target = f'{what} "{name}"' if name else what
            raise KubeError(f"{verb} {target} in namespace {namespace!r} failed: HTTP {e.status} {e.reason}: "
                            f"{message}", **common) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeUnreachable(
                f"{verb} {what} in namespace {namespace!r}: no answer from the API server "
                f"{self.api_client.configuration.host} within {self.timeout[1]} s ({type(e).__name__}: {e}); "
                "check the kubeconfig or the in-cluster network", verb=verb, resource=what, namespace=namespace,
                name=name) from None
        except ValueError as e:          # newer clients check a dict body against their models before sending
            raise KubeError(f"{verb} {what} in namespace {namespace!r}: the Kubernetes client refused the request "
                            f"body before sending it ({type(e).__name__}: {str(e)[:500]}); this is a bug in the "
                            "operator's manifests, please report it", verb=verb, resource=what,
                            namespace=namespace, name=name) from None
        return json.loads(response.data or b"null")

    def _get(self, fn: Callable[..., Any], ns: str, name: str, *, api_group: str, resource: str) -> dict | None:
        try:
            return self._call(fn, name, ns, verb="get", api_group=api_group, resource=resource,
                              namespace=ns, name=name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise self._unexpected(e, "get", api_group, resource, ns, name) from None

    def _create(self, create: Callable[..., Any], read: Callable[..., Any], ns: str, body: dict, *,
                resource: str) -> dict:
        name = (body.get("metadata") or {}).get("name")
        try:
            return self._call(create, ns, body, verb="create", api_group="", resource=resource, namespace=ns,
                              name=None)
        except client.ApiException as e:
            if e.status == 409 and name:
                existing = self._get(read, ns, name, api_group="", resource=resource)
                if existing is not None:
                    return existing
            raise self._unexpected(e, "create", "", resource, ns, name) from None

    def _delete(self, fn: Callable[..., Any], ns: str, name: str, *, resource: str) -> bool:
        try:
            self._call(fn, name, ns, verb="delete", api_group="", resource=resource, namespace=ns, name=name)
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise self._unexpected(e, "delete", "", resource, ns, name) from None
        return True

    @staticmethod
    def _unexpected(e: client.ApiException, verb: str, api_group: str, resource: str, ns: str | None,
                    name: str | None, subresource: str | None = None) -> KubeError:
        what = _qualified(api_group, resource, subresource)
        return KubeError(f'{verb} {what} "{name}" in namespace {ns!r} failed: HTTP {e.status} {e.reason}: '
                         f"{_server_message(e)}", status=e.status or 0, verb=verb, resource=what, namespace=ns,
                         name=name)

    # --- the Cluster ----------------------------------------------------------------------------
    def get_cluster(self, ns: str, name: str) -> dict | None:
        """The Cluster `name` in `ns`, or None when there is none."""
        return self._get_custom(ns, CLUSTERS, name)

    def patch_cluster_status(self, ns: str, name: str, patch: dict) -> dict:
        """Merge `patch` into the Cluster's `.status` through the status subresource (RFC 7386: a key
        set to None removes it; lists such as conditions are replaced whole). `patch` is the status
        fields themselves, e.g. {"phase": "Running"}. Returns the Cluster as the server has it."""
        if not isinstance(patch, dict):
            raise TypeError(f"patch_cluster_status: patch must be a dict of status fields, got {type(patch).__name__}")
        return self._patch_custom_status(ns, CLUSTERS, name, patch)

    def create_cluster(self, ns: str, cluster: dict) -> dict:
        """Create a Cluster (a Job's inline cluster); when one of that name exists already, return it."""
        name = cluster["metadata"]["name"]
        try:
            return self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, ns, CLUSTERS, cluster,
                              verb="create", api_group=GROUP, resource=CLUSTERS, namespace=ns)
        except client.ApiException as e:
            if e.status == 409:
                existing = self.get_cluster(ns, name)
                if existing is not None:
                    return existing
            raise self._unexpected(e, "create", GROUP, CLUSTERS, ns, name) from None

    def delete_cluster(self, ns: str, name: str) -> bool:
        """Delete the Cluster (its pods, Service and Secret go with it); False when it was already gone."""
        return self._delete_custom(ns, CLUSTERS, name)

    def patch_cluster(self, ns: str, name: str, patch: dict) -> dict:
        """Merge `patch` into the Cluster (e.g. {"spec": {"workerGroups": [...]}}; lists are replaced whole)."""
        try:
            return self._call(self.custom.patch_namespaced_custom_object, GROUP, VERSION, ns, CLUSTERS, name, patch,
                              _content_type=MERGE_PATCH, verb="patch", api_group=GROUP, resource=CLUSTERS,
                              namespace=ns, name=name)
        except client.ApiException as e:
            raise self._unexpected(e, "patch", GROUP, CLUSTERS, ns, name) from None

    # --- the Job --------------------------------------------------------------------------------
    def get_job(self, ns: str, name: str) -> dict | None:
        """The tasuki Job `name` in `ns`, or None when there is none."""
        return self._get_custom(ns, JOBS, name)

    def patch_job_status(self, ns: str, name: str, patch: dict) -> dict:
        """Merge `patch` (status fields) into the Job's `.status` through the status subresource."""
        return self._patch_custom_status(ns, JOBS, name, patch)

    def delete_job(self, ns: str, name: str) -> bool:
        """Delete the Job (what it owns goes with it); False when it was already gone."""
        return self._delete_custom(ns, JOBS, name)

    def get_configmap(self, ns: str, name: str) -> dict | None:
        """The ConfigMap, or None when there is none."""
        return self._get(self.core.read_namespaced_config_map, ns, name, api_group="", resource="configmaps")

    def _get_custom(self, ns: str, plural: str, name: str) -> dict | None:
        try:
            return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, plural, name,
                              verb="get", api_group=GROUP, resource=plural, namespace=ns, name=name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise self._unexpected(e, "get", GROUP, plural, ns, name) from None

    def _patch_custom_status(self, ns: str, plural: str, name: str, patch: dict) -> dict:
        try:
            return self._call(self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, ns, plural,
                              name, {"status": patch}, _content_type=MERGE_PATCH, verb="patch", api_group=GROUP,
                              resource=plural, subresource="status", namespace=ns, name=name)
        except client.ApiException as e:
            raise self._unexpected(e, "patch", GROUP, plural, ns, name, "status") from None

    def _delete_custom(self, ns: str, plural: str, name: str) -> bool:
        try:
            self._call(self.custom.delete_namespaced_custom_object, GROUP, VERSION, ns, plural, name,
                       body={"propagationPolicy": "Background"}, verb="delete", api_group=GROUP, resource=plural,
                       namespace=ns, name=name)
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise self._unexpected(e, "delete", GROUP, plural, ns, name) from None
        return True

    # --- pods -----------------------------------------------------------------------------------
    def list_pods(self, ns: str, cluster_name: str) -> list[dict]:
        """The pods of one Cluster (label tasuki.dev/cluster=<cluster_name>), as the server lists them."""
        try:
            answer = self._call(self.core.list_namespaced_pod, ns, label_selector=f"{LABEL_CLUSTER}={cluster_name}",
                                verb="list", api_group="", resource="pods", namespace=ns)
        except client.ApiException as e:
            raise self._unexpected(e, "list", "", "pods", ns, None) from None
        return list(answer.get("items") or [])

    def create_pod(self, ns: str, pod: dict) -> dict:
        """Create `pod`; when one of that name exists already, return the existing one."""
        return self._create(self.core.create_namespaced_pod, self.core.read_namespaced_pod, ns, pod, resource="pods")

    def delete_pod(self, ns: str, name: str) -> bool:
        """Delete the pod; False when it was already gone."""
        return self._delete(self.core.delete_namespaced_pod, ns, name, resource="pods")

    # --- the head Service -----------------------------------------------------------------------
    def get_service(self, ns: str, name: str) -> dict | None:
        """The Service, or None when there is none."""
        return self._get(self.core.read_namespaced_service, ns, name, api_group="", resource="services")

    def create_service(self, ns: str, svc: dict) -> dict:
        """Create `svc`; when one of that name exists already, return the existing one."""
        return self._create(self.core.create_namespaced_service, self.core.read_namespaced_service, ns, svc,
                            resource="services")

    # --- the token Secret -----------------------------------------------------------------------
    def get_secret(self, ns: str, name: str) -> dict | None:
        """The Secret, or None when there is none."""
        return self._get(self.core.read_namespaced_secret, ns, name, api_group="", resource="secrets")

    def create_secret(self, ns: str, secret: dict) -> dict:
        """Create `secret`; when one of that name exists already, return the existing one (the token
        is generated once: a second create keeps the first token)."""
        return self._create(self.core.create_namespaced_secret, self.core.read_namespaced_secret, ns, secret,
                            resource="secrets")

    def delete_secret(self, ns: str, name: str) -> bool:
        """Delete the Secret; False when it was already gone."""
        return self._delete(self.core.delete_namespaced_secret, ns, name, resource="secrets")

    # --- Events ---------------------------------------------------------------------------------
    def post_event(self, ns: str, involved_object: dict, reason: str, message: str, type_: str = "Normal") -> dict:
        """A core v1 Event about `involved_object` (a dict with apiVersion, kind, metadata.name/uid, as
        the API returns objects). `reason` is a short CamelCase word (ScaleUp, PodCreated); the
        message is cut to EVENT_MESSAGE_LIMIT characters."""
        if type_ not in EVENT_TYPES:
            raise ValueError(f"post_event: type_ must be one of {EVENT_TYPES}, got {type_!r}")
        if not reason or len(reason) > EVENT_REASON_LIMIT:
            raise ValueError(f"post_event: reason must be 1..{EVENT_REASON_LIMIT} characters, got {reason!r}")
        meta = involved_object.get("metadata") or {}
        obj_name = meta.get("name")
        if not obj_name or not involved_object.get("kind"):
            raise ValueError("post_event: involved_object needs kind and metadata.name, got "
                             f"kind={involved_object.get('kind')!r} name={obj_name!r}")
        if len(message) > EVENT_MESSAGE_LIMIT:
            message = message[:EVENT_MESSAGE_LIMIT - 1] + "…"
        now = _now()
        ref = {"apiVersion": involved_object.get("apiVersion", ""), "kind": involved_object["kind"],
               "name": obj_name, "namespace": meta.get("namespace") or ns}
        for key in ("uid", "resourceVersion"):
            if meta.get(key):
                ref[key] = meta[key]
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": f"{obj_name}.", "namespace": ns},
                 "involvedObject": ref, "reason": reason, "message": message, "type": type_,
                 "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
                 "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        try:
            return self._call(self.core.create_namespaced_event, ns, event, verb="create", api_group="",
                              resource="events", namespace=ns)
        except client.ApiException as e:
            raise self._unexpected(e, "create", "", "events", ns, None) from None

    # --- the leader-election Lease (leader.py) --------------------------------------------------
    def get_lease(self, ns: str, name: str) -> dict | None:
        """The coordination.k8s.io/v1 Lease `name` in `ns`, or None when there is none."""
        return self._get(client.CoordinationV1Api(self.api_client).read_namespaced_lease, ns, name,
                         api_group=COORDINATION, resource=LEASES)

    def create_lease(self, ns: str, lease: dict) -> dict:
        """Create `lease`; KubeConflict when one of that name exists already (another replica was first)."""
        name = (lease.get("metadata") or {}).get("name")
        return self._write_lease(client.CoordinationV1Api(self.api_client).create_namespaced_lease, ns, lease,
                                 verb="create", name=name, url_name=None)

    def replace_lease(self, ns: str, name: str, lease: dict) -> dict:
        """Replace the Lease with `lease` (PUT), only if it is still at `lease`'s metadata.resourceVersion
        (the version that was read); KubeConflict when it changed since."""
        if not (lease.get("metadata") or {}).get("resourceVersion"):
            raise ValueError(f'replace_lease: the Lease "{name}" needs metadata.resourceVersion (the version it '
                             "was read at), or the write would overwrite whatever another replica wrote since")
        return self._write_lease(client.CoordinationV1Api(self.api_client).replace_namespaced_lease, ns, lease,
                                 verb="update", name=name, url_name=name)

    def _write_lease(self, fn: Callable[..., Any], ns: str, lease: dict, *, verb: str, name: str | None,
                     url_name: str | None) -> dict:
        args = (ns, lease) if url_name is None else (url_name, ns, lease)
        try:
            return self._call(fn, *args, verb=verb, api_group=COORDINATION, resource=LEASES, namespace=ns,
                              name=url_name)
        except client.ApiException as e:
            if e.status == 409:
                what = _qualified(COORDINATION, LEASES, None)
                raise KubeConflict(f'{verb} {what} "{name}" in namespace {ns!r}: another writer was first '
                                   f"(HTTP 409 {e.reason}: {_server_message(e)}); read the Lease again and "
                                   "decide anew", status=409, verb=verb, resource=what, namespace=ns,
                                   name=name) from None
            raise self._unexpected(e, verb, COORDINATION, LEASES, ns, name) from None


def _server_message(e: client.ApiException) -> str:
    """The `message` of the server's Status, else its body, shortened."""
    body = e.body or ""
    try:
        status = json.loads(body)
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    except ValueError:
        pass
    return body[:500] if body else (e.reason or "")

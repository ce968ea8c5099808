"""The reconcile of one tasuki Job: read, decide (job_plan.plan), act, report. Blocking I/O through
kube.py and head_api.py.

handlers.py runs one loop per Job (the same `Loops` as the Clusters', its own instance) that calls
`JobController.reconcile(namespace, name, memory)` as often as the plan asks, and at once when the
Job, or a pod of the Cluster named after it, changes. One reconcile:

  read    the Job; its Cluster (spec.clusterName, or the Job's own name for an inline spec.cluster);
          when the Cluster is there, its pods and token Secret (is the head Running and Ready?); when
          the Job has a head job id, the head's GET /api/v1/jobs/<id>.
  decide  job_plan.plan: pure.
  act     each action in order: create the Cluster; submit (upload the working directory's ConfigMap
          as a zip package first); stop; delete the Cluster (Event DeletedCluster) or scale its worker
          groups to minReplicas; delete the Job (ttlSecondsAfterFinished). An action that fails
          leaves the status as it was (a failed submission counts no attempt, a failed clean-up is
          not marked done) with the error as its message and a Warning Event (<Action>Failed), and the
          next reconcile decides again.
  report  the plan's Events, and the status as a merge patch (only what changed).

`JobMemory` is what one Job's loop keeps between reconciles: whether the last reconcile worked (for
/healthz). Everything else lives in the Job's status, so an operator restart loses nothing.
"""
from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from . import job_plan
from .controller import token_of
from .status import pod_ready
from .head_api import DEFAULT_HEAD_URL, HeadAPI, HeadAPIError, HeadError, head_url
from .job_plan import (CreateCluster, DeleteCluster, DeleteJob, JobObserved, ScaleClusterToMin, Stop, Submit)
from .kube import Kube, KubeError
from .manifests import API_VERSION, LABEL_ROLE, ManifestError, head_pod_name, metrics_port, secret_name, service_name
from .reconcile import defaulted

__all__ = ["JobController", "JobMemory", "package_of"]

log = logging.getLogger("tasuki_operator")

ERROR_RETRY_S = 5.0            # after an API error, the next try comes at most this late
ZIP_DATE = (1980, 1, 1, 0, 0, 0)   # every file's date in a package: the same files give the same sha256


@dataclass
class JobMemory:
    """One Job's loop state between reconciles (owned by that loop alone)."""
    healthy: bool = True


def package_of(config_map: dict) -> tuple[bytes, str]:
    """The ConfigMap's files (data and binaryData; each key a file name) as a zip and its sha256.
    Deterministic: sorted names, fixed dates and modes, so an unchanged ConfigMap is uploaded once."""
    files: dict[str, bytes] = {k: str(v).encode() for k, v in (config_map.get("data") or {}).items()}
    files.update({k: base64.b64decode(v) for k, v in (config_map.get("binaryData") or {}).items()})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name])
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


class JobController:
    """Reconciles tasuki Jobs. `head_url_template` is the --head-url template (head_api.head_url);
    `clock` is injected for tests."""

    def __init__(self, kube: Kube, head_url_template: str = DEFAULT_HEAD_URL, clock: Callable[[], float] = time.time,
                 head_timeout_s: float = 5.0) -> None:
        self.kube = kube
        self.head_url_template = head_url_template
        self.clock = clock
        self.head_timeout_s = head_timeout_s

    def reconcile(self, ns: str, name: str, memory: JobMemory) -> float | None:
        """Reconcile the Job `ns/name` once. Returns the seconds until the next reconcile, or None when
        the Job is gone or needs nothing more (its loop ends; a change to it starts a new one)."""
        try:
            delay = self._reconcile(ns, name)
        except (KubeError, HeadAPIError) as e:
            memory.healthy = False
            log.warning("[%s/%s] Job reconcile failed: %s; retrying in %g s", ns, name, e, ERROR_RETRY_S)
            return ERROR_RETRY_S
        memory.healthy = True
        return delay

    # --- one reconcile ------------------------------------------------------------------------------
    def _reconcile(self, ns: str, name: str) -> float | None:
        job = self.kube.get_job(ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return None
        cluster_name = job_plan.cluster_name(job)
        cluster = self.kube.get_cluster(ns, cluster_name) if cluster_name else None
        head, why = self._head(cluster) if cluster is not None else (None, "")
        job_id = (job.get("status") or {}).get("jobId")
        head_job, missing, error = None, False, None
        if job_id:
            if head is None:
                error = why or f"Cluster {cluster_name} is not there"
            else:
                try:
                    head_job = head.job(job_id)
                except HeadError as e:
                    missing, error = (True, None) if e.status == 404 else (False, str(e))
                except HeadAPIError as e:
                    error = str(e)
        observed = JobObserved(job, cluster, head is not None, why, head_job, missing, error)
        plan = job_plan.plan(observed, self.clock())
        status, events = plan.status, plan.events
        for action in plan.actions:
            failure = self._act(job, action, head)
            if failure:                   # nothing of this step is recorded: the next reconcile decides anew
                status = {**(job.get("status") or {}), "message": failure}
                events = [job_plan.Event(f"{type(action).__name__}Failed", failure, "Warning")]
                plan.requeue_s = ERROR_RETRY_S
                break
            if isinstance(action, DeleteJob):
                return None
        for event in events:
            self._event(job, event.reason, event.message, event.type)
        self._write_status(job, status)
        return plan.requeue_s

    def _head(self, cluster: dict) -> tuple[HeadAPI | None, str]:
        """A client for the Cluster's head when its pod is Running and Ready and its token exists, else
        None and why not."""
        ns, name = cluster["metadata"]["namespace"], cluster["metadata"]["name"]
        pods = [p for p in self.kube.list_pods(ns, name)
                if (p["metadata"].get("labels") or {}).get(LABEL_ROLE) == "head" and not p["metadata"].get(
                    "deletionTimestamp")]
        if not pods:
            return None, f"the head pod {head_pod_name(cluster)} does not exist yet"
        if not any(pod_ready(p) and (p.get("status") or {}).get("phase") == "Running" for p in pods):
            return None, f"the head pod {head_pod_name(cluster)} is not Running and Ready yet"
        token = token_of(self.kube.get_secret(ns, secret_name(cluster)))
        if not token:
            return None, f"the Secret {secret_name(cluster)} has no token yet"
        try:
            full = defaulted(cluster)
            url = head_url(self.head_url_template, name=name, namespace=ns, service=service_name(full),
                           port=metrics_port(full))
        except (ManifestError, ValueError, KeyError, TypeError) as e:
            return None, f"the head's URL cannot be made from Cluster {name}: {e}"
        return HeadAPI(url, token, self.head_timeout_s), ""

    # --- acting -------------------------------------------------------------------------------------
    def _act(self, job: dict, action, head: HeadAPI | None) -> str | None:
        """Do one action; None when done, else what went wrong (logged)."""
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            if isinstance(action, CreateCluster):
                self.kube.create_cluster(ns, action.body)
            elif isinstance(action, Submit):
                if head is None:
                    return "the head is not ready; submitting again shortly"
                self._submit(ns, action, head)
            elif isinstance(action, Stop):
                if head is not None:
                    head.stop_job(action.job_id)
            elif isinstance(action, DeleteCluster):
                if self.kube.delete_cluster(ns, action.name):
                    self._event(job, "DeletedCluster", f"Cluster {action.name} deleted: the job ended "
                                                       "(shutdownAfterFinish)")
            elif isinstance(action, ScaleClusterToMin):
                self._scale_to_min(job, ns, action.name)
            elif isinstance(action, DeleteJob):
                self.kube.delete_job(ns, action.name)
            log.info("[%s/%s] %s", ns, name, type(action).__name__)
            return None
        except (KubeError, HeadAPIError, ValueError) as e:
            log.warning("[%s/%s] %s failed: %s", ns, name, type(action).__name__, e)
            return f"{type(action).__name__} failed: {e}"

    def _submit(self, ns: str, action: Submit, head: HeadAPI) -> None:
        request = {"entrypoint": action.entrypoint, "job_id": action.job_id, "env": action.env, "pip": action.pip,
                   "metadata": action.metadata}
        if action.config_map:
            config_map = self.kube.get_configmap(ns, action.config_map)
            if config_map is None:
                raise ValueError(f"ConfigMap {action.config_map!r} (spec.workingDir.configMap.name) not found in "
                                 f"namespace {ns!r}: create it, or fix the name")
            data, sha = package_of(config_map)
            head.upload_package(sha, data)
            request["working_dir"] = sha
        head.submit_job(request)

    def _scale_to_min(self, job: dict, ns: str, name: str) -> None:
        cluster = self.kube.get_cluster(ns, name)
        if cluster is None:
            return
        spec = cluster.get("spec") or {}
        groups = [{**g, "replicas": int(g.get("minReplicas") or 0)} for g in spec.get("workerGroups") or []]
        patch: dict = {"workerGroups": groups}
        if "replicas" in spec and groups:
            patch["replicas"] = groups[0]["replicas"]
        self.kube.patch_cluster(ns, name, {"spec": patch})
        self._event(job, "ScaledClusterDown", f"Cluster {name}: worker groups scaled to their minReplicas "
                                              "(the job ended; shutdownAfterFinish)")

    # --- reporting ----------------------------------------------------------------------------------
    def _write_status(self, job: dict, status: dict) -> None:
        old = job.get("status") or {}
        patch = {k: v for k, v in status.items() if old.get(k) != v}
        patch.update({k: None for k in old if k not in status})
        if patch:
            self.kube.patch_job_status(job["metadata"]["namespace"], job["metadata"]["name"], patch)

    def _event(self, job: dict, reason: str, message: str, type_: str = "Normal") -> None:
        meta = job["metadata"]
        try:
            self.kube.post_event(meta["namespace"], {"apiVersion": API_VERSION, "kind": "Job", "metadata": meta},
                                 reason, message, type_)
        except KubeError as e:            # an Event lost is not worth failing the reconcile for
            log.warning("[%s/%s] could not post Event %s (%s): %s", meta["namespace"], meta["name"], reason,
                        message, e)

"""What to do next for one tasuki Job: a pure function of the Job, what was observed and `now`.

job_controller.py reads (the Job, its Cluster, whether the head is ready, the head's view of the
current job id), calls `plan(...)`, then does the plan's actions in order, posts its Events and
writes its status. No I/O and no clock here: `now` is passed in (unix seconds).

The life of a Job (status.jobStatus, and the step that moves it on):

    suspended ─────────────────────────────── nothing submitted (a running job is stopped first)
    PENDING   no Cluster (inline) ─► CreateCluster; clusterName missing ─► say so, look again
              head not ready ─► wait;  no job id for this attempt ─► Submit (attempts + 1)
    PENDING/RUNNING   mirror the head's status; past activeDeadlineSeconds ─► Stop, FAILED DeadlineExceeded
    FAILED/STOPPED on the head, failures <= backoffLimit ─► Retrying (the job id is cleared: resubmitted)
    SUCCEEDED / FAILED / STOPPED (final) ─► endTime, then clean-up once: DeleteCluster (inline Cluster,
              shutdownAfterFinish default true) or ScaleClusterToMin (clusterName, shutdownAfterFinish
              true), then DeleteJob ttlSecondsAfterFinished after endTime.

status.attempts counts submissions; status.failures counts the attempts that ended FAILED or STOPPED
on the head (a job stopped because the Job was suspended is not one), and backoffLimit bounds those.

Head job ids are `<job name>-<first 8 of the Job's uid>-<attempt>`: submitting the same attempt twice
(an operator restart between the POST and the status write) is answered 409 by the head, which the
controller takes as "already submitted", so a job never runs twice for one attempt.
"""
from __future__ import annotations

import calendar
import shlex
import time
from dataclasses import dataclass, field

from .manifests import API_VERSION
from .spec import validate_spec

__all__ = ["JobObserved", "JobPlan", "CreateCluster", "DeleteCluster", "ScaleClusterToMin", "Submit", "Stop",
           "DeleteJob", "Event", "plan", "spec_errors", "head_job_id", "cluster_body", "duration_text",
           "LABEL_JOB", "ACTIVE", "FINAL"]

LABEL_JOB = "tasuki.dev/job"          # on a Cluster made for a Job: the Job's name
ACTIVE = ("PENDING", "RUNNING")       # the head's job statuses of a job that has not ended
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL_S = 2.0                          # seconds between looks at a running job (the head is cheap to ask)
WAIT_S = 5.0                          # seconds between looks while waiting for a Cluster or its head
INVALID_RECHECK_S = 30.0              # an invalid Job is looked at again this often (an edit wakes it at once)
CONDITION_TYPES = ("Submitted", "Complete", "Failed", "Suspended")


# --- what was observed ------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobObserved:
    """What the controller read for one Job.

    `cluster`: the Cluster the Job runs on (None: not there); `head_ready`: the head pod is Running and
    Ready and the token Secret exists; `head_why`: why not, when it is not; `head_job`: the head's JSON
    for status.jobId (None: not asked, or no job id); `head_missing`: the head answered 404 for it;
    `head_error`: the head could not be asked (the job is then left as it was)."""
    job: dict
    cluster: dict | None = None
    head_ready: bool = False
    head_why: str = ""
    head_job: dict | None = None
    head_missing: bool = False
    head_error: str | None = None


# --- actions ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CreateCluster:
    body: dict


@dataclass(frozen=True)
class DeleteCluster:
    name: str


@dataclass(frozen=True)
class ScaleClusterToMin:
    name: str


@dataclass(frozen=True)
class Submit:
    """POST /api/v1/jobs. `config_map`: upload that ConfigMap's files as the working directory first."""
    job_id: str
    entrypoint: str
    env: dict
    pip: list
    config_map: str | None
    metadata: dict


@dataclass(frozen=True)
class Stop:
    job_id: str


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: str = "Normal"


@dataclass
class JobPlan:
    """The actions in order, the Events, the new status (whole) and when to look again (None: never,
    the Job is being deleted)."""
    actions: list = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    requeue_s: float | None = POLL_S


# --- small pure helpers -----------------------------------------------------------------------------
def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _unix(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def duration_text(seconds: float) -> str:
    """"45s", "3m12s", "2h5m": as kubectl shows durations."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    return f"{s // 3600}h{s % 3600 // 60}m"


def head_job_id(job: dict, attempt: int) -> str:
    """The head's job id of `attempt` (1-based) of this Job."""
    meta = job["metadata"]
    return f"{meta['name']}-{(meta.get('uid') or '')[:8]}-{attempt}".replace("--", "-")


def inline(job: dict) -> bool:
    return "cluster" in (job.get("spec") or {})


def cluster_name(job: dict) -> str:
    spec = job.get("spec") or {}
    return job["metadata"]["name"] if inline(job) else str(spec.get("clusterName") or "")


def shutdown_after_finish(job: dict) -> bool:
    value = (job.get("spec") or {}).get("shutdownAfterFinish")
    return inline(job) if value is None else bool(value)


def spec_errors(job: dict) -> list[str]:
    """The Job spec's problems, each naming its field ([] when it is valid): the CRD's rules, checked
    here too because not every API server evaluates them, and the inline Cluster spec by the Cluster's
    own rules."""
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return ["spec must be a mapping with at least spec.entrypoint"]
    errors = []
    entrypoint = spec.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        errors.append(f"spec.entrypoint must be a command line such as 'python script.py', got {entrypoint!r}")
    if ("clusterName" in spec) == ("cluster" in spec):
        errors.append("give exactly one of spec.clusterName (an existing Cluster) and spec.cluster (an inline "
                      "Cluster spec)" + (", not both" if "cluster" in spec else ", got neither"))
    elif "cluster" in spec:
        errors += [f"{e.path.replace('spec', 'spec.cluster', 1) if e.path.startswith('spec') else e.path}: "
                   f"{e.message}" for e in validate_spec(spec["cluster"], job["metadata"]["name"])]
    working = spec.get("workingDir")
    if working is not None:
        if not isinstance(working, dict) or ("configMap" in working) == ("path" in working):
            errors.append(f"spec.workingDir must have exactly one of configMap: {{name: ...}} and path: /dir, "
                          f"got {working!r}")
        elif "configMap" in working and not (working["configMap"] or {}).get("name"):
            errors.append("spec.workingDir.configMap.name must name a ConfigMap in the Job's namespace")
        elif "path" in working and not str(working["path"]).startswith("/"):
            errors.append(f"spec.workingDir.path must be an absolute path in the image, got {working['path']!r}")
    for i, e in enumerate(spec.get("env") or []):
        if not isinstance(e, dict) or not e.get("name"):
            errors.append(f"spec.env[{i}] must be {{name: NAME, value: VALUE}}, got {e!r}")
    for key, low in (("ttlSecondsAfterFinished", 0), ("activeDeadlineSeconds", 1), ("backoffLimit", 0)):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            errors.append(f"spec.{key} must be an integer >= {low}, got {value!r}")
    return errors


def cluster_body(job: dict) -> dict:
    """The Cluster made for an inline-cluster Job: named after it, labelled with it, owned by it (so it
    goes when the Job goes)."""
    meta = job["metadata"]
    return {"apiVersion": API_VERSION, "kind": "Cluster",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": {LABEL_JOB: meta["name"]},
                         "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True}]},
            "spec": dict(job["spec"]["cluster"])}


def _submit(job: dict, attempt: int) -> Submit:
    spec = job["spec"]
    working = spec.get("workingDir") or {}
    entrypoint = spec["entrypoint"]
    if working.get("path"):
        entrypoint = f"cd {shlex.quote(working['path'])} && {entrypoint}"
    meta = job["metadata"]
    return Submit(job_id=head_job_id(job, attempt), entrypoint=entrypoint,
                  env={e["name"]: str(e.get("value", "")) for e in spec.get("env") or []},
                  pip=list(spec.get("pip") or []), config_map=(working.get("configMap") or {}).get("name"),
                  metadata={"k8s_job": f"{meta['namespace']}/{meta['name']}", "attempt": str(attempt)})


def _conditions(old: list[dict], wanted: dict[str, tuple[bool, str, str]], now: float) -> list[dict]:
    """The conditions `wanted` ({type: (status, reason, message)}), keeping lastTransitionTime of those
    whose status did not change."""
    before = {c.get("type"): c for c in old or ()}
    out = []
    for type_ in CONDITION_TYPES:
        if type_ not in wanted:
            continue
        status, reason, message = wanted[type_]
        text = "True" if status else "False"
        prior = before.get(type_) or {}
        since = prior.get("lastTransitionTime") if prior.get("status") == text else None
        out.append({"type": type_, "status": text, "reason": reason, "message": message,
                    "lastTransitionTime": since or _iso(now)})
    return out


# --- the plan ---------------------------------------------------------------------------------------
def plan(observed: JobObserved, now: float) -> JobPlan:
    """The next step for the Job; see the module docstring."""
    job = observed.job
    meta = job["metadata"]
    spec = job.get("spec") or {}
    old = dict(job.get("status") or {})
    st = {k: v for k, v in old.items() if k != "conditions"}
    st.setdefault("jobStatus", "PENDING")
    st.setdefault("attempts", 0)
    st["observedGeneration"] = meta.get("generation", 0)
    out = JobPlan()
    cond: dict[str, tuple[bool, str, str]] = {c["type"]: (c.get("status") == "True", c.get("reason", ""),
                                                          c.get("message", "")) for c in old.get("conditions") or ()}

    def finish(job_status: str, reason: str, message: str, end: float, event_type: str = "Normal") -> None:
        st.update(jobStatus=job_status, reason=reason, message=message, endTime=_iso(end))
        if job_status == "SUCCEEDED":
            cond["Complete"] = (True, reason, message)
        else:
            cond["Failed"] = (True, reason, message)
        out.events.append(Event(reason, message, event_type))

    def done() -> JobPlan:
        start, end = _unix(st.get("startTime")), _unix(st.get("endTime"))
        if start is not None:
            elapsed = (end or now) - start
            if end is None and elapsed >= 60:     # whole minutes while it runs: one status write a minute
                elapsed -= elapsed % 60
            st["duration"] = duration_text(elapsed)
        out.status = {**st, "conditions": _conditions(old.get("conditions") or [], cond, now)}
        return out

    errors = spec_errors(job)
    if errors and not old.get("endTime"):
        message = "the spec is invalid, nothing is run: " + "; ".join(errors)
        if st.get("message") != message:
            out.events.append(Event("InvalidSpec", message, "Warning"))
        st["message"] = message
        out.requeue_s = INVALID_RECHECK_S
        return done()
    st["clusterName"] = cluster_name(job)

    # --- ended: clean up once, then the TTL ---------------------------------------------------------
    if st.get("endTime"):
        end = _unix(st["endTime"]) or now
        if not st.get("clusterCleanedUp"):
            if shutdown_after_finish(job) and observed.cluster is not None:
                out.actions.append(DeleteCluster(st["clusterName"]) if inline(job)
                                   else ScaleClusterToMin(st["clusterName"]))
            st["clusterCleanedUp"] = True
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is None:
            out.requeue_s = None if not out.actions else POLL_S
            return done()
        if now >= end + ttl:
            out.actions.append(DeleteJob(meta["name"]))
            out.events.append(Event("Deleted", f"ttlSecondsAfterFinished ({ttl} s) passed since the job ended"))
            out.requeue_s = None
            return done()
        out.requeue_s = max(0.5, end + ttl - now)
        return done()

    job_id = st.get("jobId")
    head = observed.head_job if job_id else None
    head_status = (head or {}).get("status")
    running_on_head = bool(job_id) and (head_status in ACTIVE or (head is None and not observed.head_missing))

    # --- suspended: stop what runs, submit nothing --------------------------------------------------
    if spec.get("suspend") and head_status not in FINAL:      # an ended job is mirrored first
        cond["Suspended"] = (True, "Suspended", "spec.suspend is true: nothing is submitted")
        if job_id and observed.head_error is not None:
            st["message"] = f"suspending: cannot stop job {job_id} yet: {observed.head_error}"
            out.requeue_s = WAIT_S
            return done()
        if job_id and running_on_head:
            out.actions.append(Stop(job_id))
            out.events.append(Event("Suspended", f"spec.suspend is true: job {job_id} is stopped"))
        elif st.get("message") != "suspended":
            out.events.append(Event("Suspended", "spec.suspend is true: nothing is submitted until it is false"))
        st.update(jobStatus="PENDING", message="suspended")
        st.pop("jobId", None)
        st.pop("startTime", None)             # the deadline counts from the (next) start, as for a batch Job
        st.pop("duration", None)
        cond["Submitted"] = (False, "Suspended", "spec.suspend is true")
        out.requeue_s = WAIT_S
        return done()
    if cond.get("Suspended", (False,))[0]:
        cond["Suspended"] = (False, "Resumed", "spec.suspend is false")
        out.events.append(Event("Resumed", "spec.suspend is false: the job starts"))

    if not st.get("startTime"):
        st["startTime"] = _iso(now)
    start = _unix(st["startTime"]) or now

    # --- the deadline ------------------------------------------------------------------------------
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and now >= start + deadline:
        if job_id and running_on_head:
            out.actions.append(Stop(job_id))
        finish("FAILED", "DeadlineExceeded", f"the job ran past activeDeadlineSeconds ({deadline} s) and was "
                                             f"stopped" + (f" (head job {job_id})" if job_id else ""), now, "Warning")
        return done()

    # --- the Cluster and its head -------------------------------------------------------------------
    name = st["clusterName"]
    if observed.cluster is None:
        if inline(job):
            out.actions.append(CreateCluster(cluster_body(job)))
            out.events.append(Event("CreatedCluster", f"Cluster {name} created for this job (spec.cluster)"))
            st["message"] = f"creating Cluster {name}"
        else:
            message = (f"Cluster {name!r} not found in namespace {meta['namespace']!r}: create it, or fix "
                       f"spec.clusterName; looking again every {WAIT_S:g} s")
            if st.get("message") != message:
                out.events.append(Event("ClusterNotFound", message, "Warning"))
            st["message"] = message
        out.requeue_s = WAIT_S
        return done()
    if not job_id:
        if not observed.head_ready:
            st["message"] = f"waiting for the head of Cluster {name}: {observed.head_why or 'not ready yet'}"
            out.requeue_s = WAIT_S
            return done()
        attempt = int(st["attempts"]) + 1
        submit = _submit(job, attempt)
        out.actions.append(submit)
        st.update(attempts=attempt, jobId=submit.job_id, jobStatus="PENDING",
                  message=f"submitted as {submit.job_id} (attempt {attempt})")
        cond["Submitted"] = (True, "Submitted", f"head job {submit.job_id}, attempt {attempt}")
        out.events.append(Event("Submitted", f"submitted to Cluster {name} as job {submit.job_id} "
                                             f"(attempt {attempt}, backoffLimit {int(spec.get('backoffLimit') or 0)})"))
        out.requeue_s = 0.5
        return done()

    # --- follow the head's job ---------------------------------------------------------------------
    if observed.head_error is not None:
        st["message"] = f"cannot read job {job_id} from the head of Cluster {name}: {observed.head_error}"
        out.requeue_s = WAIT_S
        return done()
    if observed.head_missing:
        head = {"status": "FAILED", "message": f"the head of Cluster {name} has no job {job_id} (was the head "
                                               "restarted?)", "exit_code": None}
        head_status = "FAILED"
    if head is None:
        out.requeue_s = POLL_S
        return done()
    exit_code = head.get("exit_code")
    if exit_code is not None:
        st["exitCode"] = int(exit_code)
    if head_status in ACTIVE:
        if head_status != st.get("jobStatus"):
            st["message"] = f"job {job_id} is {head_status}" + (f": {head['message']}" if head.get("message") else "")
        st["jobStatus"] = head_status
        out.requeue_s = POLL_S
        if deadline is not None:
            out.requeue_s = max(0.2, min(POLL_S, start + deadline - now))
        return done()
    said = head.get("message") or (f"exit code {exit_code}" if exit_code is not None else head_status.lower())
    if head_status == "SUCCEEDED":
        finish("SUCCEEDED", "Succeeded", f"job {job_id} succeeded" + (f": {said}" if said else ""),
               float(head.get("end_time") or now))
        return done()
    attempts, limit = int(st["attempts"]), int(spec.get("backoffLimit") or 0)
    failures = int(st.get("failures") or 0) + 1      # a job stopped by a suspension is no failure: not counted
    st["failures"] = failures
    if failures <= limit:
        st.update(jobStatus="PENDING", message=f"attempt {attempts} ended {head_status}: {said}; retrying "
                                               f"({failures} of {limit} retries used)")
        st.pop("jobId", None)
        st.pop("exitCode", None)
        cond["Submitted"] = (False, "Retrying", f"attempt {attempts} ended {head_status}")
        out.events.append(Event("Retrying", f"job {job_id} ended {head_status} ({said}); submitting attempt "
                                            f"{attempts + 1} (retry {failures} of {limit})", "Warning"))
        out.requeue_s = 0.5
        return done()
    reason = "Stopped" if head_status == "STOPPED" else ("BackoffLimitExceeded" if limit else "Failed")
    finish(head_status if head_status in FINAL else "FAILED", reason,
           f"job {job_id} ended {head_status}: {said}" + (f" (attempt {attempts}, {failures} failures, "
                                                          f"backoffLimit {limit})" if limit else ""),
           float(head.get("end_time") or now), "Warning")
    return done()

"""tasuki_operator.job_plan: the Job's decisions over plain data, table-driven (no I/O, no clock)."""
from __future__ import annotations

import copy

import pytest

from tasuki_operator import job_plan
from tasuki_operator.job_plan import CreateCluster, JobObserved, Submit, plan

NOW = 1_800_000_000.0
T0 = "2027-01-15T08:00:00Z"          # NOW as an RFC 3339 time
CLUSTER_SPEC = {"image": "tasuki/runtime:0.1.0", "workerGroups": [{"name": "cpu", "minReplicas": 0, "maxReplicas": 2}]}
CLUSTER = {"metadata": {"name": "weekly", "namespace": "ml"}, "spec": CLUSTER_SPEC}


def iso(t: float) -> str:
    return job_plan._iso(t)


def job(status: dict | None = None, **spec) -> dict:
    base = {"entrypoint": "python weekly_features.py", "cluster": CLUSTER_SPEC}
    base.update(spec)
    for k in [k for k, v in base.items() if v is None]:
        del base[k]
    return {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Job",
            "metadata": {"name": "weekly", "namespace": "ml", "uid": "0123456789ab", "generation": 1},
            "spec": base, "status": status or {}}


RUNNING = {"jobStatus": "RUNNING", "attempts": 1, "jobId": "weekly-01234567-1", "startTime": iso(NOW - 10)}


def head(status: str, **kw) -> dict:
    return {"job_id": "weekly-01234567-1", "status": status, "message": kw.pop("message", ""),
            "exit_code": kw.pop("exit_code", None), "end_time": kw.pop("end_time", None), **kw}


def kinds(p) -> list[str]:
    return [type(a).__name__ for a in p.actions]


def reasons(p) -> list[str]:
    return [e.reason for e in p.events]


def cond(p, type_: str) -> str | None:
    return next((c["status"] for c in p.status["conditions"] if c["type"] == type_), None)


# --- the table: (name, observed, expected actions, expected status fields, expected Event reasons) ---
CASES = [
    ("inline cluster missing: create it",
     JobObserved(job()), ["CreateCluster"], {"jobStatus": "PENDING", "clusterName": "weekly", "attempts": 0},
     ["CreatedCluster"]),
    ("head not ready: wait",
     JobObserved(job(), CLUSTER, head_ready=False, head_why="the head pod weekly-head is Pending"), [],
     {"jobStatus": "PENDING", "message": "waiting for the head of Cluster weekly: the head pod weekly-head is Pending"},
     []),
    ("head ready: submit attempt 1",
     JobObserved(job(), CLUSTER, head_ready=True), ["Submit"],
     {"jobStatus": "PENDING", "attempts": 1, "jobId": "weekly-01234567-1", "startTime": iso(NOW)}, ["Submitted"]),
    ("head says RUNNING: mirrored",
     JobObserved(job(RUNNING), CLUSTER, True, head_job=head("RUNNING")), [],
     {"jobStatus": "RUNNING", "attempts": 1, "duration": "10s"}, []),
    ("head says SUCCEEDED: final, cluster deleted",
     JobObserved(job(RUNNING), CLUSTER, True, head_job=head("SUCCEEDED", exit_code=0, end_time=NOW - 1)), [],
     {"jobStatus": "SUCCEEDED", "endTime": iso(NOW - 1), "exitCode": 0, "reason": "Succeeded"}, ["Succeeded"]),
    ("FAILED with retries left: retry (job id cleared)",
     JobObserved(job(RUNNING, backoffLimit=1), CLUSTER, True, head_job=head("FAILED", exit_code=3)), [],
     {"jobStatus": "PENDING", "attempts": 1, "jobId": None}, ["Retrying"]),
    ("FAILED, retry used: final FAILED",
     JobObserved(job({**RUNNING, "attempts": 2, "failures": 1, "jobId": "weekly-01234567-2"}, backoffLimit=1),
                 CLUSTER, True,
                 head_job=head("FAILED", exit_code=3)), [],
     {"jobStatus": "FAILED", "reason": "BackoffLimitExceeded", "exitCode": 3}, ["BackoffLimitExceeded"]),
    ("FAILED, no backoffLimit: final FAILED",
     JobObserved(job(RUNNING), CLUSTER, True, head_job=head("FAILED", exit_code=1, message="exit code 1")), [],
     {"jobStatus": "FAILED", "reason": "Failed"}, ["Failed"]),
    ("the head lost the job: counts as FAILED",
     JobObserved(job(RUNNING), CLUSTER, True, head_missing=True), [],
     {"jobStatus": "FAILED"}, ["Failed"]),
    ("the head cannot be asked: left as it is",
     JobObserved(job(RUNNING), CLUSTER, True, head_error="connection refused"), [],
     {"jobStatus": "RUNNING", "jobId": "weekly-01234567-1"}, []),
    ("past activeDeadlineSeconds: stop, FAILED DeadlineExceeded",
     JobObserved(job(RUNNING, activeDeadlineSeconds=5), CLUSTER, True, head_job=head("RUNNING")), ["Stop"],
     {"jobStatus": "FAILED", "reason": "DeadlineExceeded", "endTime": iso(NOW)}, ["DeadlineExceeded"]),
    ("deadline while the head is not ready: FAILED, nothing to stop",
     JobObserved(job({"startTime": iso(NOW - 100)}, activeDeadlineSeconds=5), CLUSTER, False), [],
     {"jobStatus": "FAILED", "reason": "DeadlineExceeded"}, ["DeadlineExceeded"]),
    ("attempt 3 after a suspension, 0 failures: retried",
     JobObserved(job({**RUNNING, "attempts": 3, "jobId": "weekly-01234567-3"}, backoffLimit=1), CLUSTER, True,
                 head_job=head("FAILED", exit_code=3)), [], {"jobStatus": "PENDING", "failures": 1}, ["Retrying"]),
    ("suspended just as the job succeeded: the result is kept",
     JobObserved(job(RUNNING, suspend=True), CLUSTER, True, head_job=head("SUCCEEDED", exit_code=0)), [],
     {"jobStatus": "SUCCEEDED"}, ["Succeeded"]),
    ("suspended before it started: nothing",
     JobObserved(job(suspend=True), None), [], {"jobStatus": "PENDING", "message": "suspended"}, ["Suspended"]),
    ("suspended while running: stopped, back to PENDING",
     JobObserved(job(RUNNING, suspend=True), CLUSTER, True, head_job=head("RUNNING")), ["Stop"],
     {"jobStatus": "PENDING", "jobId": None, "startTime": None, "attempts": 1}, ["Suspended"]),
    ("unsuspended: resumed and submitted",
     JobObserved(job({"jobStatus": "PENDING", "attempts": 1, "conditions": [
         {"type": "Suspended", "status": "True", "reason": "Suspended", "message": "", "lastTransitionTime": T0}]},
         suspend=False), CLUSTER, True), ["Submit"],
     {"attempts": 2, "jobId": "weekly-01234567-2"}, ["Resumed", "Submitted"]),
    ("clusterName missing: say so, look again",
     JobObserved(job(cluster=None, clusterName="burst"), None), [],
     {"jobStatus": "PENDING", "clusterName": "burst"}, ["ClusterNotFound"]),
    ("ended, inline: delete the cluster once",
     JobObserved(job({"jobStatus": "SUCCEEDED", "endTime": iso(NOW - 1)}), CLUSTER), ["DeleteCluster"],
     {"clusterCleanedUp": True}, []),
    ("ended, inline, shutdownAfterFinish false: cluster kept",
     JobObserved(job({"jobStatus": "SUCCEEDED", "endTime": iso(NOW - 1)}, shutdownAfterFinish=False), CLUSTER), [],
     {"clusterCleanedUp": True}, []),
    ("ended, clusterName, shutdownAfterFinish: workers to min",
     JobObserved(job({"jobStatus": "FAILED", "endTime": iso(NOW - 1)}, cluster=None, clusterName="burst",
                     shutdownAfterFinish=True), CLUSTER), ["ScaleClusterToMin"], {"clusterCleanedUp": True}, []),
    ("ended, clusterName by default: cluster left alone",
     JobObserved(job({"jobStatus": "FAILED", "endTime": iso(NOW - 1)}, cluster=None, clusterName="burst"), CLUSTER),
     [], {"clusterCleanedUp": True}, []),
    ("ended, TTL not yet", JobObserved(job({"jobStatus": "SUCCEEDED", "endTime": iso(NOW - 5),
                                             "clusterCleanedUp": True}, ttlSecondsAfterFinished=60)), [], {}, []),
    ("ended, TTL passed: delete the Job",
     JobObserved(job({"jobStatus": "SUCCEEDED", "endTime": iso(NOW - 61), "clusterCleanedUp": True},
                     ttlSecondsAfterFinished=60)), ["DeleteJob"], {}, ["Deleted"]),
    ("both clusterName and cluster: invalid, nothing done",
     JobObserved(job(clusterName="burst")), [], {"jobStatus": "PENDING"}, ["InvalidSpec"]),
]


@pytest.mark.parametrize("observed, actions, status, events", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(observed, actions, status, events):
    before = copy.deepcopy(observed.job)
    p = plan(observed, NOW)
    assert kinds(p) == actions
    for key, value in status.items():
        assert p.status.get(key) == value, (key, p.status)
    assert reasons(p) == events
    assert observed.job == before, "plan() changed its input"


def test_submit_carries_the_spec():
    j = job(env=[{"name": "A", "value": "1"}, {"name": "B"}], pip=["pyarrow==17"],
            workingDir={"configMap": {"name": "code"}})
    (submit,) = plan(JobObserved(j, CLUSTER, True), NOW).actions
    assert submit == Submit(job_id="weekly-01234567-1", entrypoint="python weekly_features.py", env={"A": "1", "B": ""},
                            pip=["pyarrow==17"], config_map="code",
                            metadata={"k8s_job": "ml/weekly", "attempt": "1"})
    j = job(workingDir={"path": "/app dir"})
    (submit,) = plan(JobObserved(j, CLUSTER, True), NOW).actions
    assert submit.entrypoint == "cd '/app dir' && python weekly_features.py" and submit.config_map is None


def test_inline_cluster_is_owned_by_the_job():
    (create,) = plan(JobObserved(job()), NOW).actions
    assert isinstance(create, CreateCluster)
    meta = create.body["metadata"]
    assert (meta["name"], meta["namespace"], meta["labels"]) == ("weekly", "ml", {"tasuki.dev/job": "weekly"})
    assert meta["ownerReferences"] == [{"apiVersion": "tasuki.dev/v1alpha1", "kind": "Job", "name": "weekly",
                                        "uid": "0123456789ab", "controller": True}]
    assert create.body["spec"] == CLUSTER_SPEC


def test_conditions_keep_their_transition_time_and_complete_is_set():
    p = plan(JobObserved(job(RUNNING), CLUSTER, True, head_job=head("SUCCEEDED", end_time=NOW)), NOW)
    assert cond(p, "Complete") == "True" and cond(p, "Failed") is None
    again = plan(JobObserved(job(p.status), CLUSTER), NOW + 100)
    assert {c["type"]: c["lastTransitionTime"] for c in again.status["conditions"]} == \
        {c["type"]: c["lastTransitionTime"] for c in p.status["conditions"]}


def test_after_the_clean_up_a_final_job_without_ttl_needs_no_more_looks():
    p = plan(JobObserved(job({"jobStatus": "SUCCEEDED", "endTime": iso(NOW), "clusterCleanedUp": True}), None), NOW)
    assert p.actions == [] and p.requeue_s is None


def test_a_retry_then_submits_the_next_attempt():
    p = plan(JobObserved(job(RUNNING, backoffLimit=1), CLUSTER, True, head_job=head("FAILED", exit_code=1)), NOW)
    nxt = plan(JobObserved(job(p.status, backoffLimit=1), CLUSTER, True), NOW + 1)
    assert [a.job_id for a in nxt.actions] == ["weekly-01234567-2"] and nxt.status["attempts"] == 2


@pytest.mark.parametrize("spec, says", [
    ({"clusterName": "x", "cluster": CLUSTER_SPEC}, "exactly one of spec.clusterName"),
    ({"cluster": None}, "got neither"),
    ({"entrypoint": ""}, "spec.entrypoint"),
    ({"cluster": {"workerGroups": []}}, "spec.cluster.image"),
    ({"workingDir": {"path": "rel"}}, "spec.workingDir.path must be an absolute path"),
    ({"workingDir": {"path": "/a", "configMap": {"name": "c"}}}, "exactly one of configMap"),
    ({"backoffLimit": -1}, "spec.backoffLimit must be an integer >= 0"),
])
def test_spec_errors_name_the_field(spec, says):
    errors = job_plan.spec_errors(job(**spec))
    assert any(says in e for e in errors), errors


def test_duration_is_whole_minutes_while_running_and_exact_at_the_end():
    running = {**RUNNING, "startTime": iso(NOW - 125)}
    p = plan(JobObserved(job(running), CLUSTER, True, head_job=head("RUNNING")), NOW)
    assert p.status["duration"] == "2m0s"
    p = plan(JobObserved(job(running), CLUSTER, True, head_job=head("SUCCEEDED", end_time=NOW)), NOW)
    assert p.status["duration"] == "2m5s"


def test_duration_text():
    assert [job_plan.duration_text(s) for s in (0, 59, 61, 3599, 3600 * 2 + 300)] == ["0s", "59s", "1m1s", "59m59s",
                                                                                      "2h5m"]


def test_no_io_imports():
    import tasuki_operator.job_plan as m
    source = open(m.__file__).read()
    for banned in ("import kopf", "import kubernetes", "import socket", "import http", "time.time()"):
        assert banned not in source, banned



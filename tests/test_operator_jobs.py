"""The real operator process and the tasuki Job resource (jobs.tasuki.dev), against the Kubernetes API
emulation and fake heads that serve the jobs API (tests/fake_head.py).

One operator process for the module (its own emulator on 127.43.0.1, fake heads on 127.43.0.2, reached
through `--head-url http://127.43.0.2:{port}` with each Cluster's spec.metrics.port set to its head's
port); each test works in a namespace of its own. The emulator has no kubelet: `head_ready` plays it
(the head pod Running and Ready) and hands the fake head the token the operator generated. The fake
head's jobs API is a FakeJobsServer (tests/fake_jobs_server.py): a submitted job is RUNNING (PENDING
with pip) until the test ends it (`head.jobs_api.finish`). Every wait is on a condition.
"""
from __future__ import annotations

import io
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kopf")
from fake_head import FakeHead                                           # noqa: E402
from kube_emulator import KubeEmulator                                   # noqa: E402
from kubectl import MISSING, kubectl_path                                # noqa: E402
from test_operator import Stack                                          # noqa: E402
from tasuki_operator import rbac                                         # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRDS = [ROOT / "operator" / "tasuki_operator" / "crd.yaml", ROOT / "operator" / "tasuki_operator" / "job_crd.yaml"]
API_HOST, HEAD_HOST = "127.43.0.1", "127.43.0.2"
WEEKLY = ROOT / "examples" / "weekly_features.py"


class JobStack(Stack):
    def job(self, ns: str, name: str) -> dict | None:
        return self.kube.get("jobs.tasuki.dev", name, ns)

    def status(self, ns: str, name: str) -> dict:
        return (self.job(ns, name) or {}).get("status") or {}

    def wait_status(self, ns: str, name: str, what: str, check, timeout: float = 30.0) -> dict:
        return self.wait(what, lambda: (s := self.status(ns, name)) and check(s) and s, timeout)

    def reasons(self, ns: str) -> list[str]:
        return [e["reason"] for e in self.events(ns)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with KubeEmulator(host=API_HOST) as kube:
        for crd in CRDS:
            kube.apply_crd(crd)
        with JobStack.running(kube, tmp_path_factory.mktemp("operator-jobs") / "operator.log",
                              f"http://{HEAD_HOST}:{{port}}") as s:
            yield s


def cluster_spec(head: FakeHead) -> dict:
    return {"image": "tasuki/runtime:0.1.0", "metrics": {"port": head.port},
            "head": {"numCpus": 0},
            "autoscaler": {"mode": "Auto", "pollIntervalSeconds": 1, "idleTimeoutSeconds": 5},
            "workerGroups": [{"name": "cpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 2,
                              "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                            "limits": {"cpu": "1", "memory": "1Gi"}}}]}


def tkj(ns: str, name: str, **spec) -> dict:
    return {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {"entrypoint": "python job.py", **spec}}


def existing_cluster(stack: JobStack, ns: str, head: FakeHead, name: str = "shared") -> None:
    stack.apply({"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": name, "namespace": ns},
                 "spec": cluster_spec(head)})
    stack.head_ready(ns, name, head)


def submitted(head: FakeHead) -> list[dict]:
    """The jobs the head was given, in the order they came."""
    with head.jobs_api.cond:
        return [dict(j) for j in head.jobs_api.jobs.values()]


def start(head: FakeHead, job_id: str) -> None:
    """The job's pip environment is ready and its driver runs (a job without pip starts RUNNING)."""
    with head.jobs_api.cond:
        head.jobs_api.jobs[job_id].update(status="RUNNING", start_time=time.time())


def condition(status: dict, type_: str) -> str | None:
    return next((c["status"] for c in status.get("conditions") or () if c["type"] == type_), None)


# --- the scenarios -----------------------------------------------------------------------------------
def test_inline_cluster_from_configmap_to_succeeded_then_cleaned_up(stack):
    ns = "jobs-inline"
    with FakeHead(host=HEAD_HOST) as head:
        stack.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "weekly-code", "namespace": ns},
                           "data": {"weekly_features.py": WEEKLY.read_text()}})
        job = stack.apply(tkj(ns, "weekly", entrypoint="python weekly_features.py --weeks 4",
                              workingDir={"configMap": {"name": "weekly-code"}}, env=[{"name": "WEEKS", "value": "4"}],
                              pip=["numpy"], cluster=cluster_spec(head), ttlSecondsAfterFinished=2))
        cluster = stack.wait("the inline Cluster", lambda: stack.cluster(ns, "weekly"))
        owner = cluster["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", "weekly", job["metadata"]["uid"])
        stack.wait_status(ns, "weekly", "PENDING, waiting for the head", lambda s: s.get("jobStatus") == "PENDING")
        stack.head_ready(ns, "weekly", head)

        stack.wait("the submission", lambda: submitted(head))
        (sent,) = submitted(head)
        assert sent["entrypoint"] == "python weekly_features.py --weeks 4"
        assert sent["env"] == {"WEEKS": "4"} and sent["pip"] == ["numpy"]
        with zipfile.ZipFile(io.BytesIO(head.jobs_api.packages[sent["working_dir"]])) as z:
            assert z.namelist() == ["weekly_features.py"]
            assert z.read("weekly_features.py").decode() == WEEKLY.read_text()
        job_id = sent["job_id"]
        st = stack.wait_status(ns, "weekly", "jobId and attempt 1", lambda s: s.get("jobId") == job_id)
        assert st["attempts"] == 1 and st["clusterName"] == "weekly" and condition(st, "Submitted") == "True"

        start(head, job_id)
        stack.wait_status(ns, "weekly", "RUNNING", lambda s: s["jobStatus"] == "RUNNING")
        head.jobs_api.finish(job_id, "SUCCEEDED", 0)
        st = stack.wait_status(ns, "weekly", "SUCCEEDED", lambda s: s["jobStatus"] == "SUCCEEDED")
        assert st["endTime"] and st["exitCode"] == 0 and condition(st, "Complete") == "True"
        stack.wait("the inline Cluster deleted", lambda: stack.cluster(ns, "weekly") is None)
        stack.wait("the Job deleted by its TTL", lambda: stack.job(ns, "weekly") is None)
        assert {"CreatedCluster", "Submitted", "Succeeded", "DeletedCluster"} <= set(stack.reasons(ns))


def test_failed_job_is_retried_once_with_backoff_limit_1(stack):
    ns = "jobs-retry"
    with FakeHead(host=HEAD_HOST) as head:
        existing_cluster(stack, ns, head)
        stack.apply(tkj(ns, "flaky", clusterName="shared", backoffLimit=1))
        stack.wait("attempt 1", lambda: len(submitted(head)) == 1)
        head.jobs_api.finish(submitted(head)[0]["job_id"], "FAILED", 3)
        stack.wait("attempt 2", lambda: len(submitted(head)) == 2)
        second = submitted(head)[1]["job_id"]
        assert second.endswith("-2") and second != submitted(head)[0]["job_id"]
        st = stack.wait_status(ns, "flaky", "attempts 2", lambda s: s.get("attempts") == 2 and s.get("jobId") == second)
        head.jobs_api.finish(second, "FAILED", 3)
        st = stack.wait_status(ns, "flaky", "FAILED", lambda s: s["jobStatus"] == "FAILED")
        assert st["attempts"] == 2 and st["reason"] == "BackoffLimitExceeded" and condition(st, "Failed") == "True"
        assert "Retrying" in stack.reasons(ns)
        assert stack.cluster(ns, "shared") is not None, "a clusterName Cluster is not deleted by default"


def test_active_deadline_stops_the_job(stack):
    ns = "jobs-deadline"
    with FakeHead(host=HEAD_HOST) as head:
        existing_cluster(stack, ns, head)
        stack.apply(tkj(ns, "slow", clusterName="shared", activeDeadlineSeconds=3))
        stack.wait("the submission", lambda: submitted(head))
        job_id = submitted(head)[0]["job_id"]
        start(head, job_id)
        st = stack.wait_status(ns, "slow", "FAILED by the deadline", lambda s: s["jobStatus"] == "FAILED")
        assert st["reason"] == "DeadlineExceeded"
        stack.wait("the head's job stopped", lambda: head.jobs_api.jobs[job_id]["status"] == "STOPPED")
        assert "DeadlineExceeded" in stack.reasons(ns)


def test_suspend_holds_then_starts_then_stops(stack):
    ns = "jobs-suspend"
    with FakeHead(host=HEAD_HOST) as head:
        existing_cluster(stack, ns, head)
        stack.apply(tkj(ns, "queued", clusterName="shared", suspend=True))
        st = stack.wait_status(ns, "queued", "Suspended", lambda s: condition(s, "Suspended") == "True")
        assert st["jobStatus"] == "PENDING" and submitted(head) == []
        stack.kube.patch("jobs.tasuki.dev", "queued", {"spec": {"suspend": False}}, ns)
        stack.wait("the submission after unsuspending", lambda: submitted(head))
        job_id = submitted(head)[0]["job_id"]
        start(head, job_id)
        stack.wait_status(ns, "queued", "RUNNING", lambda s: s["jobStatus"] == "RUNNING")
        stack.kube.patch("jobs.tasuki.dev", "queued", {"spec": {"suspend": True}}, ns)
        stack.wait("the running job stopped", lambda: head.jobs_api.jobs[job_id]["status"] == "STOPPED")
        st = stack.wait_status(ns, "queued", "suspended again", lambda s: condition(s, "Suspended") == "True"
                               and "jobId" not in s)
        assert st["jobStatus"] == "PENDING"
        assert {"Suspended", "Resumed", "Submitted"} <= set(stack.reasons(ns))


def test_missing_cluster_is_said_then_found(stack):
    ns = "jobs-missing"
    with FakeHead(host=HEAD_HOST) as head:
        stack.apply(tkj(ns, "orphan", clusterName="later"))
        st = stack.wait_status(ns, "orphan", "the message", lambda s: "not found" in s.get("message", ""))
        assert "Cluster 'later' not found in namespace 'jobs-missing'" in st["message"] and st["jobStatus"] == "PENDING"
        assert "ClusterNotFound" in stack.reasons(ns)
        existing_cluster(stack, ns, head, name="later")
        stack.wait("the submission once the Cluster exists", lambda: submitted(head))


def test_a_missing_configmap_counts_no_attempt_and_is_retried(stack):
    ns = "jobs-configmap"
    with FakeHead(host=HEAD_HOST) as head:
        existing_cluster(stack, ns, head)
        stack.apply(tkj(ns, "code", clusterName="shared", workingDir={"configMap": {"name": "later-code"}}))
        st = stack.wait_status(ns, "code", "the message", lambda s: "later-code" in s.get("message", ""))
        assert "ConfigMap 'later-code' (spec.workingDir.configMap.name) not found" in st["message"]
        assert st.get("attempts", 0) == 0 and "jobId" not in st and submitted(head) == []
        assert "SubmitFailed" in stack.reasons(ns)
        stack.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later-code", "namespace": ns},
                           "data": {"job.py": "print('hi')"}})
        stack.wait("the submission once the ConfigMap exists", lambda: submitted(head))
        assert submitted(head)[0]["job_id"].endswith("-1")


def test_shutdown_after_finish_on_an_existing_cluster_scales_its_workers_to_min(stack):
    ns = "jobs-scale-down"
    with FakeHead(host=HEAD_HOST) as head:
        existing_cluster(stack, ns, head)
        assert stack.cluster(ns, "shared")["spec"]["workerGroups"][0]["replicas"] == 1
        stack.apply(tkj(ns, "batch", clusterName="shared", shutdownAfterFinish=True))
        stack.wait("the submission", lambda: submitted(head))
        head.jobs_api.finish(submitted(head)[0]["job_id"], "SUCCEEDED", 0)
        stack.wait("workers at minReplicas", lambda: stack.cluster(ns, "shared")["spec"]["workerGroups"][0]["replicas"]
                   == 0)
        stack.wait("the ScaledClusterDown Event", lambda: "ScaledClusterDown" in stack.reasons(ns))
        assert stack.cluster(ns, "shared") is not None


def test_kubectl_get_tkj_columns(stack, tmp_path):
    binary = kubectl_path()
    assert binary, MISSING
    ns = "jobs-kubectl"
    with FakeHead(host=HEAD_HOST) as head:
        existing_cluster(stack, ns, head)
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(tkj(ns, "report", clusterName="shared")))
        run = lambda *a: subprocess.run([binary, "--kubeconfig", str(stack.kube.kubeconfig_path), *a],  # noqa: E731
                                        capture_output=True, text=True, timeout=60, check=True).stdout
        run("apply", "--validate=false", "-f", str(path))
        stack.wait("the submission", lambda: submitted(head))
        head.jobs_api.finish(submitted(head)[0]["job_id"], "SUCCEEDED", 0)
        stack.wait_status(ns, "report", "SUCCEEDED", lambda s: s["jobStatus"] == "SUCCEEDED")
        header, row = run("get", "tkj", "-n", ns).splitlines()
        assert header.split() == ["NAME", "STATUS", "CLUSTER", "ATTEMPTS", "DURATION", "AGE"], header
        assert row.split()[:4] == ["report", "SUCCEEDED", "shared", "1"], row
        assert row.split()[4].endswith("s"), row


def test_every_api_call_is_allowed_by_rbac(stack):
    """Runs last in this module: every request the operator made (Jobs included) is in rbac.yaml."""
    rules = rbac.load_rules()
    ops = [a for a in stack.kube.audit if not a["agent"].startswith("kubectl")]
    assert {("get", "configmaps"), ("create", "clusters"), ("delete", "clusters"), ("delete", "jobs")} <= \
        {(a["verb"], a["resource"]) for a in ops}
    denied = sorted({(a["verb"], a["apiGroup"], a["resource"], a.get("subresource") or "", a.get("name") or "")
                     for a in ops if a["resource"] != "customresourcedefinitions"
                     and not rbac.allows(rules, a["verb"], a["apiGroup"], a["resource"], a.get("subresource"),
                                         a.get("name"))})
    assert not denied, f"requests not covered by rbac.yaml: {denied}"


"""Issue 19's end-to-end proof: a tasuki `Job` with an inline cluster runs examples/weekly_features.py
from zero workers to SUCCEEDED, and the Cluster made for it is removed afterwards.

The script comes from a ConfigMap (the job's working directory, uploaded to the head as a package);
the Cluster's head has no CPU for tasks, so every task waits for a worker pod the autoscaler starts.
Prints `TIMING job <step> <seconds>` lines (e2e/README.md).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from e2e.observe import POD_START_S, PodWatch, describe_pods, live, resources
from e2e.platform import Platform, timing, wait_for

JOB = "weekly"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "weekly_features.py"
ROWS, WEEKS = 200_000, 52

pytestmark = pytest.mark.timeout(600)


def job_manifest(image: str) -> dict:
    return {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Job", "metadata": {"name": JOB},
            "spec": {"entrypoint": f"python weekly_features.py --rows {ROWS} --weeks {WEEKS}",
                     "workingDir": {"configMap": {"name": "weekly-features"}},
                     "backoffLimit": 0,
                     "cluster": {"image": image, "imagePullPolicy": "IfNotPresent", "objectStoreMemory": "200Mi",
                                 "head": {"numCpus": 0, "resources": resources("1", "1Gi")},
                                 "autoscaler": {"mode": "Auto", "pollIntervalSeconds": 2, "idleTimeoutSeconds": 30},
                                 "workerGroups": [{"name": "cpu", "replicas": 0, "minReplicas": 0, "maxReplicas": 2,
                                                   "resources": resources("1", "1Gi")}]}}}


def job_status(platform: Platform) -> dict:
    return (platform.get("tkj", JOB) or {}).get("status") or {}


def test_a_job_with_an_inline_cluster_runs_weekly_features_from_zero_workers(platform):
    platform.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "weekly-features"},
                    "data": {"weekly_features.py": EXAMPLE.read_text()}})
    started = time.monotonic()
    with PodWatch(platform, JOB) as watch:
        platform.apply(job_manifest(platform.runtime_image))
        running = wait_for(lambda: (s := job_status(platform)).get("jobStatus") in ("RUNNING", "SUCCEEDED") and s,
                           POD_START_S + 60, "the Job to be submitted to its cluster's head",
                           describe=lambda: json.dumps(job_status(platform)) + " " + describe_pods(platform, JOB))
        timing("job", "submitted", time.monotonic() - started)
        assert running["clusterName"] == JOB and running.get("jobId"), running
        done = wait_for(lambda: (s := job_status(platform)).get("jobStatus") in ("SUCCEEDED", "FAILED", "STOPPED")
                        and s, POD_START_S + 240, "the Job to end",
                        describe=lambda: json.dumps(job_status(platform)) + " " + describe_pods(platform, JOB))
        timing("job", "succeeded", time.monotonic() - started)
    assert done["jobStatus"] == "SUCCEEDED", done
    assert done["attempts"] == 1 and done.get("startTime") and done.get("endTime"), done
    workers = watch.of_group("cpu")
    assert workers, f"no worker pod ran the job's tasks: {watch.seen}"
    table = platform.kubectl("get", "tkj").splitlines()
    assert table[0].split()[:5] == ["NAME", "STATUS", "CLUSTER", "ATTEMPTS", "DURATION"], table
    assert table[1].split()[:4] == [JOB, "SUCCEEDED", JOB, "1"], table
    # shutdownAfterFinish (the default for an inline cluster): the Cluster and all it made go
    wait_for(lambda: not platform.get("tkc", JOB) and not live(platform.cluster_pods(JOB)), 180,
             "the Job's Cluster and its pods to be deleted", describe=lambda: describe_pods(platform, JOB))
    timing("job", "cluster-removed", time.monotonic() - started)
    wait_for(lambda: not platform.leftover_containers(), 120, "every pod's container to be removed",
             describe=lambda: str(platform.leftover_containers()))
    assert platform.get("tkj", JOB)["status"]["jobStatus"] == "SUCCEEDED"      # the Job stays (its TTL is unset)
    platform.delete("tkj", JOB)

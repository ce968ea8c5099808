"""The ten scenarios of issue 18, in order, in one Cluster: what a user of the operator sees.

1  apply a Cluster (head, a CPU group 0..3, a GPU group 0..2, autoscaling): head Ready, status, columns
2  a client outside the cluster runs 60 tasks of 1 CPU x 2 s: the CPU group grows to its max, no GPU pod
3  idle: the workers are drained and deleted down to min; tasks submitted during the drain finish
9  an unplaceable request is explained in the status and an Event, and starts no pod
4  a num_gpus=1 task starts a GPU pod and no CPU pod
5  a worker's container killed mid-job: its tasks are retried, its pod replaced, the job finishes
6  the head pod killed mid-job: recreated, the workers rejoin, the job finishes
7  a client that reaches only the head runs tasks and a 100 MB round trip
8  Prometheus scraped the operator and the head all along (the chart's scrape config): panels have data
10 delete the Cluster: every pod, service and secret it made is gone, and no container is left

Each scenario prints `TIMING <scenario> <step> <seconds>` lines (e2e/README.md's table is made from
them). The scenarios depend on each other (each starts from the state the previous one left), so a
failure makes the later ones fail too: read the first one.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from e2e.observe import GROUP, POD_START_S, PodWatch, describe_pods, is_ready, live, resources
from e2e.platform import OPERATOR_CHART, OPERATOR_NAMESPACE, RELEASE, Platform, terminal_line, timing, wait_for

CLUSTER = "demo"
CPU_MAX, GPU_MAX = 3, 2
IDLE_TIMEOUT_S, POLL_S = 10, 2
JOB_TASKS, TASK_S = 60, 2.0
CLIENT = Path(__file__).resolve().parent / "data" / "only_head_client.py"

pytestmark = pytest.mark.timeout(600)


def cluster_manifest(image: str) -> dict:
    """Small pods for a 2-core machine: workers of 1 CPU and 1 GiB, a 200 MiB object store each."""
    def group(name: str, maximum: int, gpus: int = 0) -> dict:
        return {"name": name, "replicas": 0, "minReplicas": 0, "maxReplicas": maximum,
                "resources": resources("1", "1Gi", gpus)}
    return {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": CLUSTER},
            "spec": {"image": image, "imagePullPolicy": "IfNotPresent", "objectStoreMemory": "200Mi",
                     "head": {"numCpus": 0, "resources": resources("1", "1Gi")},
                     "workerGroups": [group("cpu", CPU_MAX), group("gpu", GPU_MAX, gpus=1)],
                     "autoscaler": {"mode": "Auto", "idleTimeoutSeconds": IDLE_TIMEOUT_S,
                                    "pollIntervalSeconds": POLL_S, "conserveGpus": True}}}


# --- what runs in the pods ------------------------------------------------------------------------
def work(x: int, seconds: float) -> tuple[int, str, float]:
    """x squared, the pod it ran in, and when it started (this machine's clock: one host here)."""
    import os
    import time
    started = time.time()
    time.sleep(seconds)
    return x * x, os.environ.get("TASUKI_NODE_NAME", "?"), started


def gpu_work() -> tuple[str, str, str]:
    import os
    return (os.environ.get("TASUKI_NODE_NAME", "?"), os.environ.get("TASUKI_NODE_GROUP", "?"),
            os.environ.get("CUDA_VISIBLE_DEVICES", ""))


# --- helpers --------------------------------------------------------------------------------------
def group_pods(platform: Platform, group: str) -> list[dict]:
    return platform.list("pods", f"tasuki.dev/cluster={CLUSTER},{GROUP}={group}")


def cluster_status(platform: Platform) -> dict:
    return (platform.get("tkc", CLUSTER) or {}).get("status") or {}


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", ()) if c["type"] == kind), {})


def head_nodes(platform: Platform) -> list[dict]:
    with urllib.request.urlopen(platform.head_http(CLUSTER) + "/api/v1/nodes", timeout=10) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def tasuki_client(platform):
    """The tasuki module, connected to the Cluster's head from outside it (made by scenario 1)."""
    import tasuki
    tasuki.shutdown()
    state: dict = {}
    yield tasuki, state
    tasuki.shutdown()


@pytest.fixture(scope="module")
def prometheus(platform, tmp_path_factory):
    """Prometheus (Debian's package), started by scenario 1 once the head is up, scraping the operator
    and the head through the scrape configuration the chart's ServiceMonitor and PodMonitor describe;
    (the Prometheus, when it started) for scenario 8."""
    from prometheus_server import Prometheus, scrape_config_from_chart, tool
    command = tool("prometheus")
    box: dict = {}

    def start(cluster: str) -> None:
        heads, operator = platform.prometheus_targets(cluster)
        configs = scrape_config_from_chart(heads, operator, "--set", f"watchNamespaces={{{platform.namespace}}}",
                                           release=RELEASE, namespace=OPERATOR_NAMESPACE)
        box["prometheus"] = Prometheus(command, tmp_path_factory.mktemp("prometheus"), configs)
        box["started"] = time.monotonic()
        wait_for(box["prometheus"].ready, 60, "Prometheus to be ready", describe=box["prometheus"].logs)
    box["start"] = start
    yield box
    if "prometheus" in box:
        box["prometheus"].stop()


def connect(platform: Platform, tasuki_client) -> object:
    tasuki, state = tasuki_client
    if not state.get("connected"):
        tasuki.init(address=platform.head_address(CLUSTER), token=platform.token(CLUSTER))
        state["connected"] = True
    return tasuki


# --- 1 --------------------------------------------------------------------------------------------
def test_1_apply_a_cluster_head_ready_status_and_columns(platform, prometheus):
    import tasuki
    started = time.monotonic()
    assert "cluster.tasuki.dev/demo" in platform.apply(cluster_manifest(platform.runtime_image))
    head = f"{CLUSTER}-head"
    wait_for(lambda: platform.get("pod", head), 60, f"the operator to create the head pod {head}",
             describe=lambda: str(platform.events()[-5:]))
    timing("1", "head-pod-created", time.monotonic() - started)
    wait_for(lambda: is_ready(platform.get("pod", head) or {}), POD_START_S, f"the head pod {head} to be Ready",
             describe=lambda: json.dumps((platform.get("pod", head) or {}).get("status")))
    timing("1", "head-ready", time.monotonic() - started)
    prometheus["start"](CLUSTER)          # scraping from now on, for scenario 8
    status = wait_for(lambda: (s := cluster_status(platform)).get("phase") == "Running" and s.get("version") and s,
                      60, "the Cluster's status to say Running with the head's version",
                      describe=lambda: json.dumps(cluster_status(platform)))
    timing("1", "status-running", time.monotonic() - started)
    assert status["head"]["address"] == f"tasuki://{CLUSTER}-head.{platform.namespace}.svc:6380"
    assert status["head"]["podName"] == head
    assert status["version"] == tasuki.__version__, f"the head reports {status['version']}, the client is {tasuki.__version__}"
    assert status["workers"] == "0/0"
    assert condition(status, "HeadReady").get("status") == "True", status["conditions"]
    assert condition(status, "SpecValid").get("status") == "True", status["conditions"]

    table = platform.kubectl("get", "tkc", "-o", "wide").splitlines()
    assert table[0].split() == ["NAME", "PHASE", "READY", "PENDING", "GPUS", "VERSION", "AGE", "HEAD", "IDLE"], table
    row = table[1].split()
    assert row[:3] == [CLUSTER, "Running", "0/0"] and row[5] == tasuki.__version__, table
    assert row[7] == status["head"]["address"], table
    assert [p["metadata"]["name"] for p in platform.cluster_pods(CLUSTER)] == [head]     # min 0: no worker


# --- 2 --------------------------------------------------------------------------------------------
def test_2_a_job_larger_than_the_cluster_scales_the_cpu_group_to_its_max(platform, tasuki_client):
    tasuki = connect(platform, tasuki_client)
    task = tasuki.remote(work).options(num_cpus=1)
    with PodWatch(platform, CLUSTER) as watch:
        submitted = time.time()
        refs = [task.remote(i, TASK_S) for i in range(JOB_TASKS)]
        results = tasuki.get(refs, timeout=POD_START_S + 240)
        took = time.time() - submitted
    assert [r[0] for r in results] == [i * i for i in range(JOB_TASKS)]
    timing("2", "job", took)
    cpu = watch.of_group("cpu")
    assert watch.most.get("cpu") == CPU_MAX, f"the CPU group grew to {watch.most.get('cpu')} pods, not {CPU_MAX}: {cpu}"
    assert not watch.of_group("gpu"), f"CPU work started GPU pods: {watch.of_group('gpu')}"
    first_task = {}
    for _, pod, started in results:
        first_task[pod] = min(first_task.get(pod, started), started)
    assert set(first_task) <= set(cpu), f"tasks ran on pods {set(first_task)}, the CPU group's are {set(cpu)}"
    for i, (name, entry) in enumerate(sorted(cpu.items(), key=lambda kv: kv[1]["created"])):
        if entry["ready"] is not None:
            timing("2", f"pod{i + 1}-ready", entry["ready"] - submitted)
        if name in first_task:
            timing("2", f"pod{i + 1}-first-task", first_task[name] - submitted)
    assert len(first_task) == CPU_MAX, f"tasks ran on {sorted(first_task)} only"


# --- 3 --------------------------------------------------------------------------------------------
def test_3_idle_workers_are_drained_down_to_min_and_no_task_is_lost(platform, tasuki_client):
    tasuki = connect(platform, tasuki_client)
    task = tasuki.remote(work).options(num_cpus=1)
    started = time.monotonic()

    def leaving() -> str:
        """What shows a drain has begun: a worker node not alive at the head, or a worker pod going."""
        draining = [n["node_name"] for n in head_nodes(platform) if n.get("group") == "cpu" and n["state"] != "alive"]
        going = [p["metadata"]["name"] for p in group_pods(platform, "cpu") if p["metadata"].get("deletionTimestamp")]
        if draining or going:
            return f"draining nodes {draining}, pods being deleted {going}"
        return ""
    seen = wait_for(leaving, IDLE_TIMEOUT_S + 60, "the idle CPU workers to begin draining", interval=0.1,
                    describe=lambda: json.dumps(head_nodes(platform)))
    timing("3", "idle-to-drain", time.monotonic() - started)
    refs = [task.remote(100 + i, 1.0) for i in range(3)]             # submitted during the drain
    results = tasuki.get(refs, timeout=POD_START_S + 60)
    terminal_line(f"scenario 3: 3 tasks submitted while {seen} ran on {sorted({r[1] for r in results})}")
    assert [r[0] for r in results] == [(100 + i) ** 2 for i in range(3)]
    timing("3", "tasks-during-drain-done", time.monotonic() - started)
    wait_for(lambda: not group_pods(platform, "cpu"), IDLE_TIMEOUT_S * 3 + 120,
             "the CPU group to be drained and deleted down to its min (0)", describe=lambda: describe_pods(platform, CLUSTER))
    timing("3", "down-to-min", time.monotonic() - started)
    reasons = {e.get("reason") for e in platform.events()}
    assert reasons & {"Drain", "Draining", "ScaleDown", "Deleted", "PodDeleted"}, f"no drain Event among {reasons}"


# --- 9 --------------------------------------------------------------------------------------------
def test_9_an_unplaceable_request_is_explained_and_starts_no_pod(platform, tasuki_client):
    tasuki = connect(platform, tasuki_client)
    before = {p["metadata"]["name"] for p in platform.cluster_pods(CLUSTER)}
    started = time.monotonic()
    ref = tasuki.remote(work).options(num_cpus=64).remote(1, 0.0)
    try:
        status = wait_for(lambda: (s := cluster_status(platform)) and
                          condition(s, "AutoscalerHealthy").get("reason") == "UnplaceableDemand" and s,
                          60, "the Cluster's status to report the unplaceable demand",
                          describe=lambda: json.dumps(condition(cluster_status(platform), "AutoscalerHealthy")))
        timing("9", "status", time.monotonic() - started)
        assert "64" in condition(status, "AutoscalerHealthy")["message"], condition(status, "AutoscalerHealthy")
        event = wait_for(lambda: next((e for e in platform.events() if e.get("reason") == "Unplaceable"), None),
                         30, "an Unplaceable Event")
        timing("9", "event", time.monotonic() - started)
        assert event["type"] == "Warning" and "64" in event["message"], event
        time.sleep(3 * POLL_S)     # three of the autoscaler's polls: a pod it would start would exist by now
        after = {p["metadata"]["name"] for p in platform.cluster_pods(CLUSTER)}
        assert after == before, f"an unplaceable request started pods: {sorted(after - before)}"
    finally:
        tasuki.cancel(ref)


# --- 4 --------------------------------------------------------------------------------------------
def test_4_a_gpu_task_starts_a_gpu_pod_and_no_cpu_pod(platform, tasuki_client):
    tasuki = connect(platform, tasuki_client)
    assert not live(group_pods(platform, "gpu")), f"a GPU pod runs before any GPU work: {describe_pods(platform, CLUSTER)}"
    with PodWatch(platform, CLUSTER) as watch:
        started = time.monotonic()
        pod, group, visible = tasuki.get(tasuki.remote(gpu_work).options(num_gpus=1).remote(),
                                         timeout=POD_START_S + 60)
        timing("4", "gpu-task", time.monotonic() - started)
    assert group == "gpu" and pod in watch.of_group("gpu"), (pod, group, watch.seen)
    assert visible == "0", f"the GPU task saw CUDA_VISIBLE_DEVICES={visible!r}"
    assert not watch.of_group("cpu"), f"a GPU task started CPU pods: {watch.of_group('cpu')}"
    assert watch.most.get("gpu") == 1, watch.seen
    (gpu_pod,) = live(group_pods(platform, "gpu"))
    assert gpu_pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


# --- 5 --------------------------------------------------------------------------------------------
def test_5_a_killed_worker_is_replaced_and_its_tasks_retried(platform, tasuki_client):
    tasuki = connect(platform, tasuki_client)
    task = tasuki.remote(work).options(num_cpus=1, max_retries=3)
    with PodWatch(platform, CLUSTER) as watch:
        started = time.monotonic()
        refs = [task.remote(i, 5.0) for i in range(12)]

        def busy_worker() -> str | None:
            """A CPU worker pod whose node (at the head) runs a task now."""
            return next((n["node_name"] for n in head_nodes(platform)
                         if n.get("group") == "cpu" and n["state"] == "alive" and n.get("busy_workers")), None)
        victim = wait_for(busy_worker, POD_START_S, "a CPU worker to run a task", interval=0.2,
                          describe=lambda: describe_pods(platform, CLUSTER))
        platform.kill_container(victim)
        killed, killed_at = time.monotonic(), time.time()
        timing("5", "kill", killed - started)
        results = tasuki.get(refs, timeout=POD_START_S + 240)
        timing("5", "job-after-kill", time.monotonic() - killed)
        assert [r[0] for r in results] == [i * i for i in range(12)]
        assert victim in watch.seen, f"the killed pod {victim} was never seen by the watch: {watch.seen}"
        replacement = wait_for(lambda: [n for n, e in watch.of_group("cpu").items() if e["created"] > killed_at],
                               POD_START_S, "a CPU pod created after the kill", describe=lambda: str(watch.seen))
    assert not platform.get("pod", victim), f"the killed pod {victim} is still there"
    terminal_line(f"scenario 5: killed {victim}; pods created after it: {replacement}")


# --- 6 --------------------------------------------------------------------------------------------
def test_6_the_head_killed_mid_job_is_recreated_and_the_job_finishes(platform, tasuki_client):
    tasuki = connect(platform, tasuki_client)
    task = tasuki.remote(work).options(num_cpus=1)
    head = f"{CLUSTER}-head"
    old_uid = platform.get("pod", head)["metadata"]["uid"]
    started = time.monotonic()
    refs = [task.remote(i, 3.0) for i in range(12)]
    wait_for(lambda: any(n.get("busy_workers") for n in head_nodes(platform)), POD_START_S, "a worker to run a task",
             describe=lambda: describe_pods(platform, CLUSTER))
    platform.kubectl("delete", "pod", head, "--grace-period=0", "--force", "--wait=false")
    killed = time.monotonic()
    timing("6", "kill", killed - started)
    wait_for(lambda: (p := platform.get("pod", head)) and p["metadata"]["uid"] != old_uid and is_ready(p),
             POD_START_S, "the operator to recreate the head pod, Ready", describe=lambda: describe_pods(platform, CLUSTER))
    timing("6", "head-recreated-ready", time.monotonic() - killed)
    results = tasuki.get(refs, timeout=POD_START_S + 240)
    timing("6", "job-after-kill", time.monotonic() - killed)
    assert [r[0] for r in results] == [i * i for i in range(12)]
    workers = [n for n in head_nodes(platform) if not n.get("is_head_node") and n.get("group") == "cpu"]
    assert workers, f"no CPU worker rejoined the new head: {head_nodes(platform)}"


# --- 7 --------------------------------------------------------------------------------------------
def test_7_a_client_that_reaches_only_the_head_runs_tasks_and_a_100_mb_round_trip(platform):
    started = time.monotonic()
    with platform.only_head_client(CLUSTER) as (runner, address):
        env = {**os.environ, "TASUKI_E2E_ADDRESS": address, "TASUKI_E2E_TOKEN": platform.token(CLUSTER),
               "PYTHONPATH": os.pathsep.join(sys.path)}
        done = runner.run([sys.executable, str(CLIENT)], env, POD_START_S + 180)
    timing("7", "client", time.monotonic() - started)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"the only-head client exited with {done.returncode}:\n{out[-4000:]}"
    assert "OK tasks" in out and "OK round trip 100 MB" in out, out[-4000:]


# --- 8 --------------------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


def test_8_prometheus_scraped_the_operator_and_the_head_and_the_panels_have_data(platform, prometheus, tasuki_client):
    from prometheus_server import empty_panels, panel_results
    assert "prometheus" in prometheus, "Prometheus was not started (scenario 1 starts it once the head is Ready)"
    prom = prometheus["prometheus"]
    started = time.monotonic()
    # what the panels of "now" show besides what the run left: an actor alive and a task pending
    tasuki = connect(platform, tasuki_client)
    tally = tasuki.remote(Tally).options(num_cpus=0).remote()
    assert tasuki.get(tally.add.remote(), timeout=120) == 1
    pending = tasuki.remote(work).options(num_cpus=64).remote(0, 0.0)

    def down() -> list[str]:
        return [f"{t['labels'].get('job')} {t['scrapeUrl']}: {t['health']} {t.get('lastError', '')}"
                for t in prom.targets() if t["health"] != "up"]
    wait_for(lambda: prom.targets() and not down(), 60, "every Prometheus target to be up", describe=lambda: str(down()))
    jobs = {t["labels"]["job"] for t in prom.targets()}
    assert len(jobs) == 2, f"Prometheus scrapes {jobs}: the operator's Service and the head pods expected"
    assert prom.value(f'sum(up{{namespace="{platform.namespace}", pod="{CLUSTER}-head"}})') == 1
    values = {"namespace": platform.namespace, "cluster": CLUSTER, "__rate_interval": "1m", "__interval": "15s"}
    try:
        deadline = time.monotonic() + 60          # the series made just now need a scrape or two (1 s apart)
        while (empty := empty_panels(panel_results(prom, OPERATOR_CHART / "dashboards", values))) \
                and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        tasuki.cancel(pending)
        tasuki.kill(tally)
    timing("8", "panels", time.monotonic() - started)
    timing("8", "scraped-for", time.monotonic() - prometheus["started"])
    assert not empty, "dashboard panels without data:\n" + "\n".join(empty)


# --- 10 -------------------------------------------------------------------------------------------
def test_10_deleting_the_cluster_removes_everything_it_made(platform, tasuki_client):
    tasuki, _ = tasuki_client
    tasuki.shutdown()
    uid = platform.get("tkc", CLUSTER)["metadata"]["uid"]

    def ours(kind: str) -> list[str]:
        return [o["metadata"]["name"] for o in platform.list(kind)
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", ()))
                or o["metadata"].get("labels", {}).get("tasuki.dev/cluster") == CLUSTER]
    made = {kind: ours(kind) for kind in ("pods", "services", "secrets")}
    assert made["pods"] and made["services"] and made["secrets"], made
    started = time.monotonic()
    platform.kubectl("delete", "tkc", CLUSTER, "--wait=false")
    wait_for(lambda: not any(ours(kind) for kind in made), 180, "every pod, service and secret of the Cluster to go",
             describe=lambda: json.dumps({kind: ours(kind) for kind in made}))
    timing("10", "objects-gone", time.monotonic() - started)
    wait_for(lambda: not platform.leftover_containers(), 120, "every pod's container to be removed",
             describe=lambda: str(platform.leftover_containers()))
    timing("10", "containers-gone", time.monotonic() - started)
    assert not platform.get("tkc", CLUSTER)

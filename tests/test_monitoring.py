"""Monitoring that is proven, not assumed: the dashboards and alert rules in charts/tasuki-operator.

Dashboards (charts/tasuki-operator/dashboards/*.json): Grafana JSON with a ${datasource} variable and
namespace/cluster filters. Every panel query, its variables filled in, must return series from a real
Prometheus (Debian's prometheus 2.42) that scraped, at one-second intervals:
  - a tasuki cluster started with the CLI (the head {CPU: 1}; a "cpu" group node {CPU: 1, GPU: 1,
    extra: 1}; a third node killed while alive) and a driver that ran tasks that succeed and fail, a task
    still running, one waiting for a shape no node has (CPU=1,GPU=4), a GPU actor and a 4 MiB put;
  - the real tasuki-operator (test_operator's `stack`: the Kubernetes emulation and a fake head) taken
    through a scale-up for demand, the pod Ready, a drain of the idle pod, unplaceable demand and a head
    error.
The head's target carries the labels namespace and cluster, as the chart's PodMonitor gives them (a test
renders the chart and checks that it does); the operator is scraped with honor_labels, as its series carry
them. A query naming a metric that no target exports fails, naming the dashboard, the panel and the metric.

Alerts (charts/tasuki-operator/rules/tasuki-alerts.yaml): `promtool check rules`, `promtool test rules`
on tests/data/alerts_test.yaml (every alert has a firing and a not-firing case there), and the live
Prometheus loads them and evaluates each without error on the real series.

prometheus and promtool come from .ci/setup-prometheus.sh; without them these tests fail, unless
TASUKI_SKIP_PROMETHEUS=1 (then they skip).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import wait_for_file, wait_until
from fake_head import FakeHead
from prometheus_server import (CHART, DASHBOARDS_DIR, ROOT, RULES, WAIT_S, Prometheus, empty_panels, fill, load,
                               metric_names, panel_results, panels, queries, tool, unknown_metrics)
from test_charts import one, operator_case
from test_operator import demo, stack  # noqa: F401  (stack: this module's own operator process)

import tasuki
from tasuki_operator.metrics import OperatorMetrics

DASHBOARDS = sorted(DASHBOARDS_DIR.glob("*.json"))
ALERT_TESTS = ROOT / "tests" / "data" / "alerts_test.yaml"
NAMESPACE, CLUSTER = "monitoring", "demo"       # the operator's Cluster, and the head target's labels
# What Grafana fills in ($datasource is not part of a query). 1m: at least two 1 s scrapes in every window.
GRAFANA = {"namespace": NAMESPACE, "cluster": CLUSTER, "__rate_interval": "1m", "__interval": "15s"}
FAILING_TASKS, OK_TASKS = 3, 8


# --- the files themselves -----------------------------------------------------------------------------
def test_dashboards_are_grafana_json_filtered_by_namespace_and_cluster():
    assert [p.name for p in DASHBOARDS] == ["tasuki-autoscaler.json", "tasuki-cluster.json"]
    uids = set()
    for path in DASHBOARDS:
        board = load(path)
        assert board["uid"] not in uids and board["title"].startswith("tasuki / ") and board["id"] is None, path
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for name in ("namespace", "cluster"):
            v = variables[name]
            assert v["type"] == "query" and v["includeAll"] and v["allValue"] == ".*", (path.name, v)
            assert v["datasource"]["uid"] == "${datasource}" and v["query"].startswith("label_values("), v
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in panels(board):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (path.name, panel["title"], grid)
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}" and panel["description"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", (panel["title"], target)
                for selector in re.findall(r"\{([^}]*)\}", target["expr"]):
                    assert 'namespace=~"$namespace"' in selector and 'cluster=~"$cluster"' in selector, \
                        f"{path.name}: panel {panel['title']!r} selects {{{selector}}} without both the namespace " \
                        f"and cluster filters: it would mix clusters"


def test_dashboards_cover_what_the_issue_asks():
    """The issue's list, as the metrics each view must read."""
    wanted = {
        "tasuki-cluster.json": {  # nodes/workers per group, pending by shape, running/finished/failed, latency,
            # object store use and spilling per node, CPU/GPU use, actors by state
            "tasuki_node_info", "tasuki_workers", "tasuki_pending_tasks", "tasuki_running_tasks",
            "tasuki_tasks_finished_total", "tasuki_task_latency_seconds_bucket", "tasuki_object_store_used_bytes",
            "tasuki_object_store_spilled_bytes", "tasuki_resource_total", "tasuki_resource_available",
            "tasuki_actors"},
        "tasuki-autoscaler.json": {  # decisions by reason, desired vs ready, demand to ready, unplaceable, drains
            "tasuki_operator_scale_decisions_total", "tasuki_operator_group_pods",
            "tasuki_operator_pending_to_ready_seconds_bucket", "tasuki_operator_unplaceable_bundles",
            "tasuki_operator_drain_duration_seconds_count", "tasuki_pending_tasks"},
    }
    for path in DASHBOARDS:
        used = set().union(*(metric_names(expr) for _, _, expr in queries(load(path))))
        assert wanted[path.name] <= used, f"{path.name} lacks {sorted(wanted[path.name] - used)}"
    exprs = " ".join(expr for _, _, expr in queries(load(CHART / "dashboards" / "tasuki-cluster.json")))
    assert 'resource="CPU"' in exprs and 'resource="GPU"' in exprs


@pytest.mark.parametrize("expr, names", [
    ('sum by (group) (tasuki_workers{namespace=~"$namespace"})', {"tasuki_workers"}),
    ("histogram_quantile(0.9, sum by (le) (rate(tasuki_task_latency_seconds_bucket[1m])))",
     {"tasuki_task_latency_seconds_bucket"}),
    ("tasuki_object_store_used_bytes / (tasuki_object_store_capacity_bytes > 0) > 0.9",
     {"tasuki_object_store_used_bytes", "tasuki_object_store_capacity_bytes"}),
    ('up{job=~"(.*/)?tasuki-head"} == 0 or on (namespace, cluster) sum by (namespace, cluster) '
     '(tasuki_operator_pods{group="head", phase!="Running"}) > 0', {"up", "tasuki_operator_pods"}),
    ("a * on (node) group_left (node_name) b offset 5m + 1e3", {"a", "b"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


def test_a_query_naming_an_unexported_metric_fails_naming_panel_and_metric():
    known = {"tasuki_nodes", "tasuki_workers"}
    message = unknown_metrics("tasuki-cluster.json: panel 'Workers' (A)", "sum(tasuki_workerz) + sum(tasuki_nodes)",
                              known)
    assert message.startswith("tasuki-cluster.json: panel 'Workers' (A) names tasuki_workerz, which no scraped "
                              "target exports"), message
    assert "tasuki_nodes, tasuki_workers" in message
    assert unknown_metrics("x", "sum(tasuki_nodes)", known) is None
    with pytest.raises(KeyError, match=r"\$nope"):
        fill("rate(tasuki_nodes[$nope])", GRAFANA)
    assert fill('x{cluster=~"${cluster}"}[$__rate_interval]', GRAFANA) == f'x{{cluster=~"{CLUSTER}"}}[1m]'


def test_group_pods_gauge_desired_and_ready_per_group():
    m = OperatorMetrics()
    m.set_group_pods("ml", "demo", {"cpu": (3, 1), "gpu": (1, 0)})
    m.set_group_pods("ml", "demo", {"cpu": (2, 2)})                 # gpu left the plan: its series drop to 0
    text = m.render().decode()
    for group, state, value in (("cpu", "desired", 2), ("cpu", "ready", 2), ("gpu", "desired", 0), ("gpu", "ready", 0)):
        assert (f'tasuki_operator_group_pods{{cluster="demo",group="{group}",namespace="ml",state="{state}"}} '
                f'{value:.1f}') in text, text
    m.forget("ml", "demo")
    assert "tasuki_operator_group_pods{" not in m.render().decode()


def test_a_clusters_counters_start_at_zero_so_a_healthy_cluster_has_an_error_rate():
    """The e2e run found the "Reconciles and errors" panel empty on a healthy Cluster: no error had
    made the errors_total series yet."""
    m = OperatorMetrics()
    m.start_counting("ml", "demo")
    text = m.render().decode()
    for stage in ("kube", "head", "action"):
        assert f'tasuki_operator_errors_total{{cluster="demo",namespace="ml",stage="{stage}"}} 0.0' in text, text
    for result in ("ok", "error"):
        assert f'tasuki_operator_reconciles_total{{cluster="demo",namespace="ml",result="{result}"}} 0.0' in text


def test_alert_rules_pass_promtool_check_and_unit_tests():
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {"TasukiHeadDown", "TasukiPodsStuckPending", "TasukiAutoscalerFlapping",
                      "TasukiUnplaceableDemand", "TasukiObjectStoreNearlyFull", "TasukiNodeLost"}
    cases = [c for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in alerts:
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in cases), f"{alert} is never tested firing"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in cases), \
            f"{alert} is never tested not firing"


def test_the_chart_scrapes_with_the_labels_the_dashboards_and_alerts_use():
    """The chart's PodMonitor gives the heads' series the target labels the queries filter on: namespace
    (the Prometheus Operator sets it) and cluster (the pod label tasuki.dev/cluster, as on the operator's own
    series), and a job that TasukiHeadDown matches; its ServiceMonitor keeps the operator's own labels."""
    objects = operator_case("namespaced")
    monitor = one(objects, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    relabelings = endpoint.get("relabelings") or []
    by_target = {r.get("targetLabel"): r for r in relabelings}
    assert by_target.get("cluster", {}).get("sourceLabels") == ["__meta_kubernetes_pod_label_tasuki_dev_cluster"], \
        f"the chart's PodMonitor must copy the pod label tasuki.dev/cluster into the target label `cluster`: the " \
        f"dashboards' $cluster and the alerts filter on it, as on the operator's series. Its relabelings: {relabelings}"
    job = by_target["job"]["replacement"] if "job" in by_target else \
        f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}"     # the Prometheus Operator's default
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    head_down = next(r["expr"] for r in rules if r.get("alert") == "TasukiHeadDown")
    pattern = re.search(r'up\{job=~"([^"]+)"\}', head_down).group(1)
    assert re.fullmatch(pattern, job), f"TasukiHeadDown selects up{{job=~{pattern!r}}}, but the chart's heads " \
                                       f"are scraped as job {job!r}"
    (operator_endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert operator_endpoint["honorLabels"] is True


# --- a real Prometheus scraping a real cluster and operator -------------------------------------------
@tasuki.remote
def square(x):
    return x * x


@tasuki.remote
def fail(x):
    raise ValueError(f"task {x} fails on purpose")


@tasuki.remote
class Holder:
    def ping(self):
        return "pong"


def run_workload(cluster, release: str) -> dict:
    """Tasks that succeed and fail, one running, one waiting for a shape no node has, a GPU actor, a put.
    Returns what must stay alive while Prometheus scrapes."""
    tasuki.init(address=cluster.host_port)
    assert tasuki.get([square.remote(i) for i in range(OK_TASKS)], timeout=60) == [i * i for i in range(OK_TASKS)]
    for i in range(FAILING_TASKS):
        with pytest.raises(ValueError, match="on purpose"):
            tasuki.get(fail.remote(i), timeout=60)
    actor = Holder.options(num_gpus=1).remote()                # holds the cpu group's GPU
    assert tasuki.get(actor.ping.remote(), timeout=60) == "pong"
    put = tasuki.put(np.ones(4 << 20, dtype=np.uint8))
    running = tasuki.remote(wait_for_file).options(resources={"extra": 1}).remote(release, "released", 300)
    stuck = square.options(num_gpus=4).remote(0)               # no node has 4 GPUs: pending as CPU=1,GPU=4
    return {"actor": actor, "put": put, "running": running, "stuck": stuck}


def drive_operator(operator, head: FakeHead, prometheus: Prometheus) -> None:
    """Scale up for demand, the pod Ready, unplaceable demand, a drain of the idle pod, a head error."""
    operator.apply(demo(NAMESPACE, head, name=CLUSTER, idleTimeoutSeconds=1))
    operator.head_ready(NAMESPACE, CLUSTER, head)
    unplaceable = {"shape": {"CPU": 1, "GPU": 8}, "count": 2, "feasible": False}   # gpu pods have 1 GPU
    head.set_demand([{"shape": {"CPU": 1}, "count": 1}, unplaceable])
    pod = operator.wait("a cpu pod for the demand", lambda: (w := operator.workers(NAMESPACE, "cpu")) and w[0])
    operator.kubelet(NAMESPACE, pod)
    node = operator.register(head, pod, resources={"CPU": 1.0}, available={"CPU": 0.0}, busy_workers=1)
    head.set_demand([unplaceable])
    operator.wait("desired 1 and ready 1 in group cpu, as Prometheus scraped them", lambda: prometheus.value(
        'sum(tasuki_operator_group_pods{group="cpu", state="ready"}) '
        '+ sum(tasuki_operator_group_pods{group="cpu", state="desired"})') == 2)
    head.set_busy(node, 0)
    head.set_idle(node, 30.0)
    operator.wait("the idle pod drained and deleted",
                  lambda: not operator.kube.get("pods", pod["metadata"]["name"], NAMESPACE))
    head.fail(500)
    operator.wait("a head error counted", lambda: 'stage="head"' in operator.metrics())
    head.fail(None)


@pytest.fixture(scope="module")
def prometheus_command() -> str:
    return tool("prometheus")


@pytest.fixture(scope="module")
def observed(prometheus_command, cli_cluster, stack, tmp_path_factory):  # noqa: F811
    """Prometheus after it scraped the cluster's head and the operator through the workload and scenario."""
    cli_cluster.add_node("127.0.0.2", "--num-cpus", "1", "--num-gpus", "1", "--resources", '{"extra": 1}',
                         env={"TASUKI_NODE_NAME": "demo-worker-cpu-abcde", "TASUKI_NODE_GROUP": "cpu"})
    _, doomed_pid = cli_cluster.add_node("127.0.0.3", "--num-cpus", "1",
                                         env={"TASUKI_NODE_NAME": "demo-worker-cpu-fghij", "TASUKI_NODE_GROUP": "cpu"})
    directory = tmp_path_factory.mktemp("prometheus")
    release = str(directory / "release")
    head_target = urllib.parse.urlsplit(cli_cluster.info["metrics"]).netloc
    prometheus = Prometheus(prometheus_command, directory, [
        {"job_name": "tasuki-head", "static_configs": [{"targets": [head_target],
                                                        "labels": {"namespace": NAMESPACE, "cluster": CLUSTER}}]},
        {"job_name": "tasuki-operator", "honor_labels": True,
         "static_configs": [{"targets": [f"127.0.0.1:{stack.metrics_port}"]}]}])
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(prometheus.stop)
        wait_until(prometheus.ready, WAIT_S, "prometheus to answer /-/ready")
        head = cleanup.enter_context(FakeHead())
        # (its service discovery hands over the static targets only ~5 s after the start)
        wait_until(lambda: [t["health"] for t in prometheus.api("targets")["activeTargets"]] == ["up", "up"], WAIT_S,
                   "prometheus to scrape the head and the operator")
        cleanup.callback(tasuki.shutdown)
        cleanup.callback(Path(release).touch)                  # (first) the running task ends
        kept = run_workload(cli_cluster, release)              # noqa: F841  (alive while Prometheus scrapes)
        os.kill(doomed_pid, signal.SIGKILL)                    # a node lost while alive
        drive_operator(stack, head, prometheus)
        prometheus.wait_for({'tasuki_node_deaths_total{previous_state="alive"}': 1,
                             'tasuki_pending_tasks{shape="CPU=1,GPU=4"}': 1, "tasuki_running_tasks": 1,
                             "sum(tasuki_operator_unplaceable_bundles)": 2})
        yield prometheus


def test_every_dashboard_query_returns_series(observed):
    # rates need two scrapes of a series that appeared last (the head error): wait, then say what is empty
    deadline = time.monotonic() + WAIT_S
    while (found := empty_panels(panel_results(observed, DASHBOARDS_DIR, GRAFANA))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not found, "\n".join(found)


def test_dashboard_variables_list_the_cluster(observed):
    for path in DASHBOARDS:
        for variable in load(path)["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
            assert match, f"{path.name}: variable {variable['name']} is not label_values(selector, label)"
            selector, label = fill(match.group(1), GRAFANA), match.group(2)
            values = observed.api(f"label/{label}/values", **{"match[]": selector})
            assert GRAFANA[label] in values, f"{path.name}: ${variable['name']} lists {values} for {selector}"


def test_scraped_values_match_what_happened(observed):
    v = observed.value
    assert v('tasuki_tasks_finished_total{outcome="failed"}') == FAILING_TASKS
    assert v('tasuki_tasks_finished_total{outcome="succeeded"}') >= OK_TASKS
    assert v('tasuki_actors{state="alive"}') == 1
    assert v('count(tasuki_node_info{state="alive", group="cpu", node_name="demo-worker-cpu-abcde"})') == 1
    assert v('count(tasuki_node_info{state="dead", node_name="demo-worker-cpu-fghij"})') == 1
    assert v('sum(tasuki_workers{group="cpu"})') >= 1
    assert v('sum(tasuki_busy_workers{group="cpu"})') == 1
    assert v('sum by (group) (tasuki_resource_total{resource="GPU"} - tasuki_resource_available{resource="GPU"})') == 1
    assert v('sum(tasuki_object_store_used_bytes{group=""})') >= 4 << 20           # the put, on the head's node
    assert v('sum(tasuki_operator_scale_decisions_total{group="cpu", direction="up", reason="demand"})') == 1
    assert v('sum(tasuki_operator_scale_decisions_total{group="cpu", direction="down", reason="idle"})') == 1
    assert v("sum(tasuki_operator_pending_to_ready_seconds_count)") == 1
    assert v("sum(tasuki_operator_drain_duration_seconds_count)") == 1
    assert v('sum(tasuki_operator_group_pods{group="cpu", state="desired"})') == 0        # after the drain


def test_alert_rules_load_and_evaluate_on_the_real_series(observed):
    rules = [r for g in observed.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"TasukiHeadDown", "TasukiNodeLost", "TasukiUnplaceableDemand"}
    wait_until(lambda: all(r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown"
                           for r in observed.api("rules")["groups"][0]["rules"]), WAIT_S, "every rule evaluated")
    known = observed.names()
    for rule in observed.api("rules")["groups"][0]["rules"]:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
        problem = unknown_metrics(f"alert {rule['name']}", rule["query"], known)
        assert problem is None, problem
    # the lost node is seen at once (no `for`); the unplaceable bundles wait their 10 minutes; nothing else
    expected = {"TasukiNodeLost": "firing", "TasukiUnplaceableDemand": "pending"}
    deadline = time.monotonic() + WAIT_S
    while (alerts := {a["labels"]["alertname"]: a["state"] for a in observed.api("alerts")["alerts"]}) != expected:
        assert time.monotonic() < deadline, f"the alerts are {alerts}, not {expected}"
        time.sleep(0.2)


"""tests/prometheus_server.py: the chart's monitors turned into scrape configs (plain data, table-driven),
then a live check: a real Prometheus scrapes, through the scrape configuration rendered from the chart,
a head started by `tasuki start --head` (its pod as the operator builds it, its IP 127.32.3.1) and an
operator's metrics endpoint, and the dashboards' panels return data after a few tasks.

Needs Debian's prometheus (.ci/setup-prometheus.sh; TASUKI_SKIP_PROMETHEUS=1 skips) and helm.
"""
from __future__ import annotations

import contextlib
import http.server
import re
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import CliCluster, free_port, wait_until
from prometheus_server import (DASHBOARDS_DIR, RULES, WAIT_S, Prometheus, empty_panels, fill, load, meta_name,
                               panel_queries, panel_results, says_when_empty, scrape_config_from_chart,
                               scrape_configs, tool)

from tasuki_operator import manifests
from tasuki_operator.metrics import OperatorMetrics

HEAD_IP, OPERATOR_IP = "127.32.3.1", "127.32.3.2"
NAMESPACE, CLUSTER = "ml", "demo"
CHART_ARGS = ("--set", f"watchNamespaces={{{NAMESPACE}}}")
GRAFANA = {"namespace": NAMESPACE, "cluster": CLUSTER, "__rate_interval": "1m", "__interval": "15s"}
# Panels of the cluster dashboard that need an event this test does not cause.
NEEDS_A_LOST_NODE = {"tasuki-cluster.json: Nodes lost (1h)"}


def _pod(name="demo-head", namespace="ml", labels=None, ip="127.32.3.1", port=9100) -> dict:
    return {"metadata": {"name": name, "namespace": namespace,
                         "labels": {"tasuki.dev/role": "head", "tasuki.dev/cluster": "demo"} if labels is None else labels},
            "spec": {"containers": [{"name": "tasuki", "ports": [{"name": "metrics", "containerPort": port}]}]},
            "status": {"podIP": ip}}


POD_MONITOR = {"kind": "PodMonitor", "metadata": {"name": "t-heads", "namespace": "sys"},
               "spec": {"selector": {"matchLabels": {"tasuki.dev/role": "head"}},
                        "namespaceSelector": {"matchNames": ["ml", "research"]},
                        "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s",
                                                 "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_tasuki_dev_cluster"],
                                                                  "targetLabel": "cluster"}]}]}}
SERVICE_MONITOR = {"kind": "ServiceMonitor", "metadata": {"name": "t-op", "namespace": "sys"},
                   "spec": {"selector": {"matchLabels": {"app": "op"}}, "namespaceSelector": {"matchNames": ["sys"]},
                            "endpoints": [{"port": "metrics", "honorLabels": True, "interval": "30s"}]}}
SERVICE = {"kind": "Service", "metadata": {"name": "t-op-metrics", "namespace": "sys", "labels": {"app": "op"}},
           "spec": {"ports": [{"name": "metrics", "port": 8080}]}}


@pytest.mark.parametrize("key, name", [("tasuki.dev/role", "tasuki_dev_role"), ("app.kubernetes.io/name",
                                       "app_kubernetes_io_name"), ("plain", "plain"), ("a-b", "a_b")])
def test_meta_name(key, name):
    assert meta_name(key) == name


@pytest.mark.parametrize("objects, heads, operator, interval, expected", [
    # the PodMonitor: one job, the pod's address and meta labels, the selectors as keeps, the chart's relabelings
    ([POD_MONITOR], [_pod()], None, None,
     {"podMonitor/sys/t-heads/0": {"targets": ["127.32.3.1:9100"], "interval": "15s", "honor": False,
                                   "keeps": ["ml|research", "(head);true", "metrics"],
                                   "labels": {"__meta_kubernetes_pod_label_tasuki_dev_cluster": "demo",
                                              "__meta_kubernetes_namespace": "ml", "__meta_kubernetes_pod_name": "demo-head"},
                                   "sets": {"job": "sys/t-heads", "endpoint": "metrics"},
                                   "relabel": {"source_labels": ["__meta_kubernetes_pod_label_tasuki_dev_cluster"],
                                               "target_label": "cluster"}}}),
    # the ServiceMonitor: the chart's Service as the target's meta labels, honor_labels, an interval override
    ([SERVICE_MONITOR, SERVICE], [], "127.32.3.2:8080", "1s",
     {"serviceMonitor/sys/t-op/0": {"targets": ["127.32.3.2:8080"], "interval": "1s", "honor": True,
                                    "keeps": ["sys", "(op);true", "metrics"],
                                    "labels": {"__meta_kubernetes_service_label_app": "op",
                                               "__meta_kubernetes_endpoint_port_name": "metrics",
                                               "__meta_kubernetes_service_name": "t-op-metrics"},
                                    "sets": {"endpoint": "metrics"}, "relabel": None}}),
    # no operator address: its job is there, with no target; any namespace: no namespace keep
    ([SERVICE_MONITOR, SERVICE, {**POD_MONITOR, "spec": {**POD_MONITOR["spec"], "namespaceSelector": {"any": True}}}],
     [_pod(), _pod("other-head", ip="127.32.3.9")], None, None,
     {"podMonitor/sys/t-heads/0": {"targets": ["127.32.3.1:9100", "127.32.3.9:9100"], "interval": "15s",
                                   "honor": False, "keeps": ["(head);true", "metrics"], "labels": {},
                                   "sets": {}, "relabel": None},
      "serviceMonitor/sys/t-op/0": {"targets": [], "interval": "30s", "honor": True,
                                    "keeps": ["sys", "(op);true", "metrics"], "labels": {}, "sets": {}, "relabel": None}}),
])
def test_scrape_configs(objects, heads, operator, interval, expected):
    configs = {c["job_name"]: c for c in scrape_configs(objects, heads, operator, interval)}
    assert sorted(configs) == sorted(expected)
    for job, want in expected.items():
        config = configs[job]
        assert [t for s in config["static_configs"] for t in s["targets"]] == want["targets"]
        assert config["scrape_interval"] == want["interval"] and config["honor_labels"] is want["honor"]
        assert [r["regex"] for r in config["relabel_configs"] if r.get("action") == "keep"] == want["keeps"]
        for key, value in want["labels"].items():
            assert config["static_configs"][0]["labels"][key] == value, key
        sets = {r["target_label"]: r["replacement"] for r in config["relabel_configs"] if "replacement" in r}
        assert sets.items() >= want["sets"].items()
        if want["relabel"]:
            assert config["relabel_configs"][-1] == want["relabel"]      # the chart's own, after the operator's


@pytest.mark.parametrize("pod, message", [
    ({**_pod(), "status": {}}, "has no status.podIP"),
    ({**_pod(), "spec": {"containers": [{"name": "tasuki", "ports": [{"name": "http", "containerPort": 1}]}]}},
     "no container port named 'metrics'"),
])
def test_a_head_pod_without_an_address_is_explained(pod, message):
    with pytest.raises(ValueError, match=message):
        scrape_configs([POD_MONITOR], [pod], None)


@pytest.mark.parametrize("results, lines", [
    ({"a.json: X": {"A": [{"value": [0, "1"]}], "B": []}}, ["a.json: X (B) returned no series"]),
    ({"a.json: X": {"A": "the query names tasuki_nope"}}, ["a.json: X (A): the query names tasuki_nope"]),
    ({"a.json: X": {"A": [{"value": [0, "1"]}]}}, []),
])
def test_empty_panels(results, lines):
    assert empty_panels(results) == lines


def test_panel_queries_are_keyed_by_dashboard_and_title_with_the_id_when_a_title_repeats():
    board = {"panels": [{"id": 1, "title": "Running", "targets": [{"refId": "A", "expr": "a"}]},
                        {"id": 2, "title": "Row", "type": "row", "panels": [
                            {"id": 3, "title": "Running", "targets": [{"refId": "A", "expr": "b"}]},
                            {"id": 4, "title": "Latency", "targets": [{"refId": "A", "expr": "c"},
                                                                      {"refId": "B", "expr": "d"}]}]}]}
    assert panel_queries(board, "x.json") == [("x.json: Running (panel 1)", "A", "a"),
                                               ("x.json: Running (panel 3)", "A", "b"),
                                               ("x.json: Latency", "A", "c"), ("x.json: Latency", "B", "d")]


@pytest.mark.parametrize("expr, filled", [
    ('x{cluster=~"$cluster", namespace=~"${namespace}"}[$__rate_interval]', 'x{cluster=~"demo", namespace=~"ml"}[1m]'),
    ("sum(x)", "sum(x)"),
])
def test_fill(expr, filled):
    assert fill(expr, GRAFANA) == filled


# --- live -------------------------------------------------------------------------------------------------
class _MetricsServer(http.server.ThreadingHTTPServer):
    """The operator's /metrics (its OperatorMetrics rendered), served on `ip` (a free port)."""

    def __init__(self, ip: str, metrics: OperatorMetrics) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = metrics.render()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        super().__init__((ip, free_port(ip)), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


DRIVER = """
import sys, tasuki
tasuki.init(address=sys.argv[1])
@tasuki.remote
def square(x):
    return x * x
@tasuki.remote
class Holder:
    def ping(self):
        return "pong"
assert tasuki.get([square.remote(i) for i in range(20)], timeout=60) == [i * i for i in range(20)]
holder = Holder.options(num_gpus=1).remote()
assert tasuki.get(holder.ping.remote(), timeout=60) == "pong"
ref = tasuki.put(b"x" * (1 << 20))
stuck = square.options(num_gpus=4).remote(0)      # pending: no node has 4 GPUs
print("ok", flush=True)
sys.stdin.read()          # stay connected (the actor alive, the object held, the task pending) until the end
"""


def test_the_chart_scrape_config_scrapes_a_live_head_with_the_dashboards_labels(tmp_path):
    prometheus_command = tool("prometheus")
    port, metrics_port = free_port(HEAD_IP), free_port(HEAD_IP)
    cluster_spec = {"apiVersion": "tasuki.dev/v1alpha1", "kind": "Cluster",
                    "metadata": {"name": CLUSTER, "namespace": NAMESPACE, "uid": "c0ffee"},
                    "spec": {"image": "tasuki/runtime:0.1.0", "metrics": {"port": metrics_port}, "head": {"numCpus": 1},
                             "workerGroups": []}}
    head_pod = {**manifests.head_pod(cluster_spec), "status": {"podIP": HEAD_IP}}
    operator_metrics = OperatorMetrics()
    operator_metrics.set_group_pods(NAMESPACE, CLUSTER, {"cpu": (1, 1)})
    cluster = CliCluster(tmp_path / "tasuki")
    with contextlib.ExitStack() as cleanup:
        cluster.cli("start", "--head", "--port", str(port), "--node-ip-address", HEAD_IP, "--metrics-port",
                    str(metrics_port), "--metrics-host", HEAD_IP, "--num-cpus", "1", "--num-gpus", "1",
                    "--object-store-memory", "128M")
        cleanup.callback(cluster.stop)
        operator = _MetricsServer(OPERATOR_IP, operator_metrics)
        cleanup.callback(operator.server_close)
        cleanup.callback(operator.shutdown)
        configs = scrape_config_from_chart([head_pod], f"{OPERATOR_IP}:{operator.server_address[1]}", *CHART_ARGS)
        prometheus = Prometheus(prometheus_command, tmp_path, configs)
        cleanup.callback(prometheus.stop)
        wait_until(prometheus.ready, WAIT_S, "prometheus to answer /-/ready")
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, f"{HEAD_IP}:{port}"], env=cluster.env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        cleanup.callback(driver.wait, 30)
        cleanup.callback(driver.stdin.close)
        assert driver.stdout.readline().strip() == "ok", "the driver failed"

        wait_until(lambda: {t["labels"]["job"]: t["health"] for t in prometheus.targets()}
                   == {"tasuki-system/tasuki-tasuki-operator-heads": "up", "tasuki-tasuki-operator-metrics": "up"},
                   WAIT_S, "prometheus to scrape the head and the operator as the chart's monitors say")
        (head,) = [t for t in prometheus.targets() if t["labels"]["job"].endswith("-heads")]
        assert head["labels"] | {"instance": ""} == {
            "namespace": NAMESPACE, "cluster": CLUSTER, "pod": f"{CLUSTER}-head", "container": "tasuki",
            "endpoint": "metrics", "job": "tasuki-system/tasuki-tasuki-operator-heads", "instance": ""}, head["labels"]
        # TasukiHeadDown watches this very target
        head_down = next(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                         if r.get("alert") == "TasukiHeadDown")
        job_pattern = re.search(r'up\{job=~"([^"]+)"\}', head_down).group(1)
        assert prometheus.value(f'sum(up{{job=~"{job_pattern}", namespace="{NAMESPACE}", cluster="{CLUSTER}"}})') == 1
        # the operator's own labels kept (honor_labels)
        prometheus.wait_for({f'sum(tasuki_operator_group_pods{{namespace="{NAMESPACE}", cluster="{CLUSTER}", '
                             f'state="ready"}})': 1})

        def missing() -> list[str]:
            results = panel_results(prometheus, DASHBOARDS_DIR, GRAFANA)
            head_panels = {k: v for k, v in results.items() if k.startswith("tasuki-cluster.json: ")
                           and k not in NEEDS_A_LOST_NODE}
            return empty_panels(head_panels)
        # rates need two scrapes after the tasks: wait for them, then say which panels are empty
        try:
            wait_until(lambda: not missing(), WAIT_S, "every panel of the cluster dashboard to return data")
        except AssertionError:
            raise AssertionError("\n".join(missing())) from None

        # the cluster goes idle (the driver leaves: its actor, object and pending task go): a panel may
        # be empty then only if it says so in its own words, not with Grafana's bare "No data"
        driver.stdin.close()
        driver.wait(30)
        filters = f'namespace="{NAMESPACE}", cluster="{CLUSTER}"'
        wait_until(lambda: prometheus.value(f'sum(tasuki_actors{{state="alive", {filters}}})') == 0
                   and not prometheus.query(f"tasuki_pending_tasks{{{filters}}}"), WAIT_S,
                   "prometheus to scrape the idle cluster")
        quiet = set().union(*(says_when_empty(load(p), p.name) for p in DASHBOARDS_DIR.glob("*.json")))
        assert "tasuki-cluster.json: Pending tasks by shape" in quiet
        results = panel_results(prometheus, DASHBOARDS_DIR, GRAFANA)
        bare = {key: by_ref for key, by_ref in results.items() if key.startswith("tasuki-cluster.json: ")
                and key not in NEEDS_A_LOST_NODE and key not in quiet}
        assert not empty_panels(bare), "\n".join(empty_panels(bare))

"""The head's HTTP endpoint (metrics.py): Prometheus text, the JSON state API and drain.

A CLI-started cluster: the head node {CPU: 1} on 127.0.0.1 and one extra node
{CPU: 1, extra: 1} on 127.0.0.2. The drain tests come last: a drained node stays drained.
"""
from __future__ import annotations

import json
import socket
import re
import time
import urllib.error
import urllib.request

import pytest

from conftest import wait_until

import tasuki
from tasuki import metrics

EXPECTED = ["tasuki_pending_tasks", "tasuki_running_tasks", "tasuki_tasks_finished_total",
            "tasuki_task_latency_seconds_bucket", "tasuki_task_latency_seconds_sum",
            "tasuki_task_latency_seconds_count", "tasuki_nodes", "tasuki_workers",
            "tasuki_object_store_used_bytes", "tasuki_object_store_capacity_bytes",
            "tasuki_object_store_spilled_bytes", "tasuki_resource_total", "tasuki_resource_available"]


@pytest.fixture(scope="module")
def cluster(cli_cluster):
    cli_cluster.extra = cli_cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"extra": 1}',
                                             env={"TASUKI_NODE_NAME": "demo-worker-cpu-x7k2q",
                                                  "TASUKI_NODE_GROUP": "cpu"})[0]
    cli_cluster.url = cli_cluster.info["metrics"]
    return cli_cluster


def http(url: str, method: str = "GET", body: bytes | None = None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(cluster) -> str:
    code, text = http(cluster.url + "/metrics")
    assert code == 200, text
    return text


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match.group(3))
    return None


@tasuki.remote
def where(x, seconds=0.0):
    time.sleep(seconds)
    return x, tasuki.get_runtime_context().get_node_id()


# --- pure parts -----------------------------------------------------------------------------------
def test_histogram_buckets_become_cumulative():
    buckets = [("0.1", 2), ("1.0", 0), ("inf", 3)]
    assert metrics.cumulative_buckets(buckets) == [("0.1", 2), ("1.0", 2), ("+Inf", 5)]
    assert metrics.shape_label({"GPU": 4.0, "CPU": 1.0}) == "CPU=1,GPU=4"
    assert metrics.shape_label({}) == "none"


def test_per_node_series_carry_the_group_and_node_deaths_count_by_previous_state():
    from prometheus_client import CollectorRegistry, generate_latest

    node = {"ip": "10.0.0.5", "version": "0.1.0", "workers": 2, "busy_workers": 1, "seconds_idle": 0.0,
            "resources": {"CPU": 2.0, "GPU": 1.0}, "available": {"CPU": 1.0, "GPU": 0.0},
            "object_store": {"used": 5, "capacity": 10, "spilled": 3}}
    status = {"nodes": [{**node, "node_id": "n1", "node_name": "demo-worker-gpu-x7k2q", "group": "gpu",
                         "state": "alive"},
                        {**node, "node_id": "n2", "node_name": "demo-worker-gpu-abcde", "group": "gpu",
                         "state": "dead"}],
              "node_deaths": {"alive": 1, "draining": 2}}

    class Fixed:
        def collect(self):
            return metrics.families(status)

    registry = CollectorRegistry()
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    assert sample(text, "tasuki_node_deaths_total", previous_state="alive") == 1
    assert sample(text, "tasuki_node_deaths_total", previous_state="draining") == 2
    assert sample(text, "tasuki_node_info", node="n1", node_name="demo-worker-gpu-x7k2q", group="gpu",
                  state="alive") == 1
    assert sample(text, "tasuki_node_info", node="n2", group="gpu", state="dead") == 1
    for name, value in (("tasuki_workers", 2), ("tasuki_busy_workers", 1), ("tasuki_object_store_used_bytes", 5),
                        ("tasuki_object_store_capacity_bytes", 10), ("tasuki_object_store_spilled_bytes", 3)):
        assert sample(text, name, node="n1", group="gpu") == value, name
        assert sample(text, name, node="n2") is None, f"{name} of a dead node"
    assert sample(text, "tasuki_resource_total", node="n1", group="gpu", resource="GPU") == 1
    assert sample(text, "tasuki_resource_available", node="n1", group="gpu", resource="GPU") == 0


def test_an_idle_cluster_has_zero_series_for_every_actor_state():
    """The dashboards' "Actors by state" and "Actors alive" show 0 on a cluster without actors, not "No data"."""
    from prometheus_client import CollectorRegistry, generate_latest

    def text_of(status: dict) -> str:
        class Fixed:
            def collect(self):
                return metrics.families(status)
        registry = CollectorRegistry()
        registry.register(Fixed())
        return generate_latest(registry).decode()

    idle = text_of({})
    for state in ("pending", "alive", "restarting", "dead"):
        assert sample(idle, "tasuki_actors", state=state) == 0, state
    busy = text_of({"actors": [{"state": "ALIVE"}, {"state": "ALIVE"}, {"state": "RESTARTING"}]})
    assert [sample(busy, "tasuki_actors", state=s) for s in ("pending", "alive", "restarting", "dead")] == [0, 2, 1, 0]


# --- the endpoint -----------------------------------------------------------------------------------
def test_metrics_names_and_node_values(cluster):
    text = scrape(cluster)
    assert "# TYPE tasuki_pending_tasks gauge" in text        # no sample while nothing is pending
    for name in EXPECTED[1:]:
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    assert sample(text, "tasuki_nodes", state="alive") == 2
    assert sample(text, "tasuki_nodes", state="dead") == 0
    assert sample(text, "tasuki_resource_total", node=cluster.extra, resource="extra") == 1
    assert sample(text, "tasuki_object_store_capacity_bytes", node=cluster.extra) == 256 << 20
    assert sample(text, "tasuki_workers", node=cluster.extra, group="cpu") >= 1
    assert sample(text, "tasuki_node_info", node=cluster.extra, node_name="demo-worker-cpu-x7k2q", group="cpu") == 1
    assert sample(text, "tasuki_node_deaths_total", previous_state="alive") == 0
    code, body = http(cluster.url + "/healthz")
    assert (code, body) == (200, "ok\n")


def test_finished_count_and_latency_move(connected):
    before = scrape(connected)
    done = sample(before, "tasuki_tasks_finished_total", outcome="succeeded")
    count = sample(before, "tasuki_task_latency_seconds_count")
    assert len(tasuki.get([where.remote(i) for i in range(5)], timeout=60)) == 5
    after = scrape(connected)
    assert sample(after, "tasuki_tasks_finished_total", outcome="succeeded") == done + 5
    assert sample(after, "tasuki_task_latency_seconds_count") == count + 5
    assert sample(after, "tasuki_task_latency_seconds_bucket", le="+Inf") == count + 5


@tasuki.remote
class Pinger:
    def ping(self):
        return "pong"


def test_actors_by_state(connected):
    before = scrape(connected)
    alive = sample(before, "tasuki_actors", state="alive") or 0
    dead = sample(before, "tasuki_actors", state="dead") or 0
    actor = Pinger.remote()
    assert tasuki.get(actor.ping.remote(), timeout=60) == "pong"
    assert sample(scrape(connected), "tasuki_actors", state="alive") == alive + 1
    tasuki.kill(actor)
    wait_until(lambda: sample(scrape(connected), "tasuki_actors", state="dead") == dead + 1, 30,
               "the killed actor to be counted as dead")
    assert (sample(scrape(connected), "tasuki_actors", state="alive") or 0) == alive


def test_infeasible_demand_is_reported(connected):
    ref = where.options(num_gpus=4).remote(0)
    label = "CPU=1,GPU=4"
    wait_until(lambda: sample(scrape(connected), "tasuki_pending_tasks", shape=label) == 1, 30,
               "the GPU task to show as pending")
    code, body = http(connected.url + "/api/v1/demand")
    assert code == 200
    demand = json.loads(body)
    assert {"shape": {"CPU": 1.0, "GPU": 4.0}, "count": 1, "feasible": False} in demand["pending"]
    assert {n["node_id"] for n in demand["nodes"]} >= {connected.extra}
    assert all(isinstance(n["seconds_idle"], float) for n in demand["nodes"])
    cancelled = sample(scrape(connected), "tasuki_tasks_finished_total", outcome="cancelled")
    tasuki.cancel(ref)
    wait_until(lambda: sample(scrape(connected), "tasuki_pending_tasks", shape=label) is None, 30,
               "the cancelled task to leave the queue")
    assert sample(scrape(connected), "tasuki_tasks_finished_total", outcome="cancelled") == cancelled + 1


def test_json_api_and_not_found(cluster):
    code, body = http(cluster.url + "/api/v1/nodes")
    assert code == 200 and {n["ip"] for n in json.loads(body)} == {"127.0.0.1", "127.0.0.2"}
    # how the operator maps nodes to pods: the pod name and group each node agent was started with
    for path in ("/api/v1/nodes", "/api/v1/demand"):
        nodes = json.loads(http(cluster.url + path)[1])
        nodes = nodes["nodes"] if isinstance(nodes, dict) else nodes
        extra = next(n for n in nodes if n["node_id"] == cluster.extra)
        assert (extra["node_name"], extra["group"]) == ("demo-worker-cpu-x7k2q", "cpu"), extra
        head = next(n for n in nodes if n["node_id"] != cluster.extra)
        assert head["node_name"] == socket.gethostname() and head["group"] == "", head
    code, body = http(cluster.url + "/api/v1/status")
    assert code == 200 and set(json.loads(body)["finished"]) >= {"succeeded", "failed", "crashed", "cancelled"}
    assert http(cluster.url + "/nope")[0] == 404
    assert http(cluster.url + "/api/v1/nodes/abc", "POST", b"", token=cluster.info["token"])[0] == 404
    code, body = http(cluster.url + f"/api/v1/nodes/{cluster.extra}/drain", "POST", b"{}")   # no token
    assert code == 401 and "Authorization: Bearer" in json.loads(body)["error"]
    code, body = http(cluster.url + f"/api/v1/nodes/{cluster.extra}/drain", "POST", b"{}", token="wrong")
    assert code == 401
    code, body = http(cluster.url + "/api/v1/nodes/no-such-node/drain", "POST", b"{}",
                      token=cluster.info["token"])
    assert code == 404 and "no-such-node" in json.loads(body)["error"]
    code, body = http(cluster.url + f"/api/v1/nodes/{cluster.extra}/drain", "POST", b"{not json",
                      token=cluster.info["token"])
    assert code == 400 and "if_idle" in json.loads(body)["error"]


def test_drain_refused_while_busy_then_drained_when_idle(connected):
    drain = f"{connected.url}/api/v1/nodes/{connected.extra}/drain"

    def busy_workers() -> int:
        return next(n["busy_workers"] for n in json.loads(http(connected.url + "/api/v1/nodes")[1])
                    if n["node_id"] == connected.extra)

    ref = where.options(resources={"extra": 1}).remote(1, 3.0)
    wait_until(lambda: busy_workers() == 1, 30, "the task to run on the extra node")
    code, body = http(drain, "POST", json.dumps({"if_idle": True}).encode(), token=connected.info["token"])
    answer = json.loads(body)
    assert code == 409 and answer["refused"] and answer["running_tasks"] == 1, body
    assert tasuki.get(ref, timeout=60) == (1, connected.extra)
    wait_until(lambda: busy_workers() == 0, 30, "the extra node to be idle")

    code, body = http(drain, "POST", json.dumps({"if_idle": True}).encode(), token=connected.info["token"])
    assert code == 200, body
    answer = json.loads(body)
    assert answer["drained"] is True and answer["state"] == "draining"
    assert sample(scrape(connected), "tasuki_nodes", state="draining") == 1
    head_node = next(n["NodeID"] for n in tasuki.nodes() if n["IsHeadNode"])
    results = tasuki.get([where.remote(i) for i in range(6)], timeout=60)
    assert {node for _, node in results} == {head_node}
    stuck = where.options(resources={"extra": 1}).remote(2)        # only the drained node has "extra"
    wait_until(lambda: any(p["shape"].get("extra") and not p["feasible"]
                           for p in json.loads(http(connected.url + "/api/v1/demand")[1])["pending"]),
               30, "the task for the drained node's resource to wait as infeasible")
    tasuki.cancel(stuck)


def test_node_labels_are_prometheus_labels():
    from tasuki.metrics import node_labels
    nodes = [{"node_id": "a", "node_name": "pod-a", "group": "cpu",
              "labels": {"zone": "a", "topology.k8s.io/rack": "r1"}},
             {"node_id": "b", "node_name": "pod-b", "group": "gpu", "labels": {"zone": "b"}},
             {"node_id": "c", "node_name": "pod-c", "group": "", "labels": {}}]
    family = node_labels(nodes)
    assert family.name == "tasuki_node_labels"
    samples = {s.labels["node"]: s.labels for s in family.samples}
    assert set(samples) == {"a", "b"}                         # a node without labels has no series
    assert samples["a"] == {"node": "a", "node_name": "pod-a", "group": "cpu", "label_zone": "a",
                            "label_topology_k8s_io_rack": "r1"}
    assert samples["b"]["label_topology_k8s_io_rack"] == ""   # empty: absent for Prometheus

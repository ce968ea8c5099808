"""Node identity and resources from the pod, on real processes (issue 16): labels and
label_selector, fractional CPUs, the memory resource, request_resources.

One cluster for the module: the head's node (127.0.0.1) has 1.5 CPUs, 2 GiB of `memory` and the
label zone=a; a second node (127.0.0.2) has 1 CPU, 1 GiB and zone=b, disk=ssd. Tests wait on
conditions, never on sleeps.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from conftest import CliCluster, cluster_env, run_cli, wait_until

GIB = 1 << 30
GET_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = CliCluster(tmp_path_factory.mktemp("labels"))
    saved = {k: v for k, v in os.environ.items() if k.startswith("TASUKI_")}
    for key in saved:
        del os.environ[key]
    os.environ["TASUKI_TMPDIR"] = cluster.tmpdir
    try:
        cluster.start_head("--num-cpus", "1.5", "--memory", "2G", "--labels", '{"zone": "a"}')
        # the second node's settings from the environment, as the operator gives them
        node_b, _ = cluster.add_node("127.0.0.2", env={
            "TASUKI_NUM_CPUS": "1", "TASUKI_MEMORY": str(GIB), "TASUKI_LABELS": '{"zone": "b", "disk": "ssd"}',
            "TASUKI_NODE_NAME": "demo-worker-b", "TASUKI_NODE_GROUP": "cpu"})
        cluster.node_b = node_b
        import tasuki
        tasuki.init(address="auto")
        wait_until(lambda: len(tasuki.nodes()) == 2, 30, "two nodes")
        yield cluster
    finally:
        import tasuki
        tasuki.shutdown()
        cluster.stop()
        os.environ.pop("TASUKI_TMPDIR", None)
        os.environ.update(saved)


def http_json(cluster, path: str):
    with urllib.request.urlopen(cluster.info["metrics"] + path, timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if path.startswith("/api") else body


def node_of_zone(zone: str) -> str:
    import tasuki
    return next(n["NodeID"] for n in tasuki.nodes() if n["Labels"].get("zone") == zone)


def here():
    import tasuki
    return tasuki.get_runtime_context().get_node_id()


def meet(directory: str, i: int, n: int) -> str:
    """Wait until `n` tasks of this test run at once (each writes its file, then waits for all)."""
    import time
    import tasuki
    open(os.path.join(directory, str(i)), "w").close()
    deadline = time.monotonic() + 30
    while not all(os.path.exists(os.path.join(directory, str(j))) for j in range(n)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {sorted(os.listdir(directory))} of {n} tasks started together")
        time.sleep(0.01)
    return tasuki.get_runtime_context().get_node_id()


# --- identity ------------------------------------------------------------------------------------
def test_labels_name_and_group_everywhere(cluster):
    import tasuki
    nodes = {n["NodeID"]: n for n in tasuki.nodes()}
    b = nodes[cluster.node_b]
    assert (b["Labels"], b["NodeName"], b["Group"]) == ({"zone": "b", "disk": "ssd"}, "demo-worker-b", "cpu")
    head = next(n for n in nodes.values() if n["IsHeadNode"])
    assert head["Labels"] == {"zone": "a"}
    labels_there = tasuki.remote(lambda: tasuki.get_runtime_context().get_node_labels())
    assert tasuki.get(labels_there.options(label_selector={"zone": "b"}).remote(), timeout=GET_TIMEOUT_S) == \
        {"zone": "b", "disk": "ssd"}

    api_nodes = {n["node_id"]: n for n in http_json(cluster, "/api/v1/nodes")}
    assert api_nodes[cluster.node_b]["labels"] == {"zone": "b", "disk": "ssd"}

    status = cluster.cli("status").stdout
    assert "demo-worker-b" in status and "cpu" in status
    assert f"{cluster.node_b}: disk=ssd, zone=b" in status

    metrics = http_json(cluster, "/metrics")
    line = next(m for m in metrics.splitlines() if m.startswith("tasuki_node_labels{") and cluster.node_b in m)
    assert 'label_zone="b"' in line and 'label_disk="ssd"' in line and 'group="cpu"' in line


def test_bad_labels_are_refused_with_the_value(tmp_path):
    env = cluster_env(str(tmp_path))
    bad = run_cli(env, "start", "--head", "--labels", '{"zone": 1}', check=False)
    assert bad.returncode == 1 and "--labels=" in bad.stderr and "'zone' has the value 1" in bad.stderr
    bad = run_cli({**env, "TASUKI_LABELS": "zone=a"}, "start", "--head", check=False)
    assert bad.returncode == 1 and "TASUKI_LABELS='zone=a'" in bad.stderr and "JSON object" in bad.stderr
    bad = run_cli(env, "start", "--head", "--memory", "lots", check=False)
    assert bad.returncode == 1 and "--memory='lots' is not a size" in bad.stderr


# --- label_selector ------------------------------------------------------------------------------
def test_tasks_and_actors_run_only_where_the_labels_match(cluster):
    import tasuki
    a, b = node_of_zone("a"), cluster.node_b
    f = tasuki.remote(here)
    assert set(tasuki.get([f.options(label_selector={"zone": "b"}).remote() for _ in range(6)],
                          timeout=GET_TIMEOUT_S)) == {b}
    assert set(tasuki.get([f.options(label_selector={"zone": "!b"}).remote() for _ in range(6)],
                          timeout=GET_TIMEOUT_S)) == {a}
    assert set(tasuki.get([f.options(label_selector={"disk": "in(ssd,nvme)"}).remote() for _ in range(3)],
                          timeout=GET_TIMEOUT_S)) == {b}
    assert set(tasuki.get([f.options(label_selector={"disk": "!in(ssd)"}).remote() for _ in range(3)],
                          timeout=GET_TIMEOUT_S)) == {a}      # a node without the label matches a negation

    @tasuki.remote(num_cpus=0, label_selector={"zone": "b"})
    class Where:
        def node(self):
            return here()
    actor = Where.remote()
    assert tasuki.get(actor.node.remote(), timeout=GET_TIMEOUT_S) == b
    tasuki.kill(actor)


def test_a_selector_no_node_matches_waits_and_shows_in_demand(cluster, capfd):
    import tasuki
    f = tasuki.remote(here)
    ref = f.options(label_selector={"zone": "c"}, num_cpus=0.5).remote()
    demand = wait_until(lambda: (d := http_json(cluster, "/api/v1/demand"))["pending"] and d, 30, "the pending task")
    assert demand["pending"] == [{"shape": {"CPU": 0.5}, "count": 1, "feasible": False,
                                  "label_selector": {"zone": "c"}}]
    assert "{CPU: 0.5} on nodes labelled zone=c" in cluster.cli("status").stdout
    err = []
    wait_until(lambda: err.append(capfd.readouterr().err) or "warning" in "".join(err), 30, "the owner's warning")
    warning = "".join(err)
    assert "asks for {CPU: 0.5} on nodes labelled zone=c" in warning, warning
    assert "{CPU: 1, memory: 1 GiB} labelled disk=ssd, zone=b; {CPU: 1.5, memory: 2 GiB} labelled zone=a" in warning
    tasuki.cancel(ref)
    wait_until(lambda: not http_json(cluster, "/api/v1/demand")["pending"], 30, "the cancelled task to leave")


def test_a_bad_selector_fails_at_definition():
    import tasuki
    with pytest.raises(ValueError, match=r"label_selector\['zone'\] is 'in\(\)'"):
        tasuki.remote(label_selector={"zone": "in()"})(here)
    with pytest.raises(TypeError, match="label_selector must be a dict"):
        tasuki.remote(here).options(label_selector="zone=a")
    with pytest.raises(ValueError, match="label key '-z'"):
        tasuki.remote(label_selector={"-z": "a"})(type("C", (), {}))


# --- fractional CPUs and memory ------------------------------------------------------------------
def test_fractional_cpus_are_advertised_and_pack(cluster, tmp_path):
    import tasuki
    a = node_of_zone("a")
    head = next(n for n in tasuki.nodes() if n["NodeID"] == a)
    assert head["Resources"]["CPU"] == 1.5 and tasuki.cluster_resources()["CPU"] == 2.5
    assert "0/1.5" in cluster.cli("status").stdout
    meet_task = tasuki.remote(meet).options(num_cpus=0.5, label_selector={"zone": "a"})
    # three half-CPU tasks run at once on 1.5 CPUs (each waits until all three have started)
    assert tasuki.get([meet_task.remote(str(tmp_path), i, 3) for i in range(3)], timeout=GET_TIMEOUT_S) == [a] * 3


def test_memory_is_a_resource(cluster, tmp_path):
    import tasuki
    assert tasuki.cluster_resources()["memory"] == 3 * GIB
    a = node_of_zone("a")
    task = tasuki.remote(meet).options(memory=GIB, num_cpus=0, label_selector={"zone": "a"})
    # 1 GiB each: two run at once on the head's node (2 GiB)
    assert tasuki.get([task.remote(str(tmp_path), i, 2) for i in range(2)], timeout=GET_TIMEOUT_S) == [a, a]
    big = tasuki.remote(here).options(memory=3 * GIB, num_cpus=0).remote()
    demand = wait_until(lambda: (d := http_json(cluster, "/api/v1/demand"))["pending"] and d, 30, "the big task")
    assert demand["pending"][0]["shape"] == {"memory": 3.0 * GIB} and not demand["pending"][0]["feasible"]
    assert "{memory: 3 GiB}" in cluster.cli("status").stdout
    tasuki.cancel(big)
    wait_until(lambda: not http_json(cluster, "/api/v1/demand")["pending"], 30, "the cancelled task to leave")

    @tasuki.remote(memory=GIB, num_cpus=0)
    class Holder:
        def ok(self):
            return True
    holder = Holder.remote()
    assert tasuki.get(holder.ok.remote(), timeout=GET_TIMEOUT_S)
    wait_until(lambda: tasuki.available_resources().get("memory") == 2 * GIB, 30, "the actor to hold 1 GiB")
    tasuki.kill(holder)
    wait_until(lambda: tasuki.available_resources().get("memory") == 3 * GIB, 30, "the actor's memory back")
    with pytest.raises(ValueError, match="use memory="):
        tasuki.remote(resources={"memory": 1})(here)


def test_default_memory_is_what_is_available_less_the_store(tmp_path):
    code = ("import sys; sys.path.insert(0, 'runtime'); from tasuki import node, config; "
            "c = node.make_config('tcp://127.0.0.1:1', 't', object_store_memory=64 << 20, store_dir='/tmp'); "
            "print(c.resources['memory'], config.available_memory())")
    env = {**cluster_env(str(tmp_path)), "TASUKI_NUM_CPUS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.split()
    memory, available = float(out[0]), int(out[1])
    assert 0 < memory <= available and abs(available - (64 << 20) - memory) < available * 0.2


# --- request_resources ---------------------------------------------------------------------------
def test_request_resources_is_kept_until_replaced_or_cleared(cluster):
    import tasuki
    from tasuki.autoscaler import request_resources
    assert http_json(cluster, "/api/v1/demand")["requested"] == []
    request_resources(num_cpus=4, bundles=[{"CPU": 1}, {"GPU": 1, "CPU": 2}])
    assert http_json(cluster, "/api/v1/demand")["requested"] == [
        {"shape": {"CPU": 1.0}, "count": 5}, {"shape": {"CPU": 2.0, "GPU": 1.0}, "count": 1}]
    assert "Requested resources" in cluster.cli("status").stdout
    tasuki.autoscaler.sdk.request_resources(bundles=[{"memory": 2 * GIB}] * 2)        # replaces
    assert http_json(cluster, "/api/v1/demand")["requested"] == [{"shape": {"memory": 2.0 * GIB}, "count": 2}]
    request_resources(num_cpus=0, bundles=[])                                     # clears
    assert http_json(cluster, "/api/v1/demand")["requested"] == []
    with pytest.raises(TypeError, match="num_cpus=1.5"):
        request_resources(num_cpus=1.5)
    with pytest.raises(ValueError, match=r"bundles\[0\] asks 'CPU': -1"):
        request_resources(bundles=[{"CPU": -1}])


def test_the_operators_plan_reads_the_real_heads_demand(cluster):
    """The head's JSON (label_selector, requested, node labels, memory) is what autoscaler.plan packs by."""
    import tasuki
    from tasuki.autoscaler import request_resources
    from tasuki_operator.autoscaler import GroupSpec, Settings, plan
    groups = [GroupSpec("zone-c", 0, 4, 0, {"CPU": 1.0, "memory": 2.0 * GIB}, {"zone": "c"}),
              GroupSpec("plain", 0, 4, 0, {"CPU": 1.0, "memory": 2.0 * GIB})]
    ref = tasuki.remote(here).options(label_selector={"zone": "c"}, memory=GIB).remote()
    demand = wait_until(lambda: (d := http_json(cluster, "/api/v1/demand"))["pending"] and d, 30, "the pending task")
    assert plan(demand, groups, [], 0.0, Settings()).create == {"zone-c": 1, "plain": 0}
    tasuki.cancel(ref)
    wait_until(lambda: not http_json(cluster, "/api/v1/demand")["pending"], 30, "the cancelled task to leave")
    try:
        request_resources(num_cpus=2)                 # 2.5 CPUs in the cluster: fits, whatever runs there
        demand = http_json(cluster, "/api/v1/demand")
        assert plan(demand, groups, [], 0.0, Settings()).create == {"zone-c": 0, "plain": 0}
        request_resources(bundles=[{"CPU": 1, "memory": GIB}] * 4)    # two fit the nodes' totals: two pods
        demand = http_json(cluster, "/api/v1/demand")
        assert plan(demand, groups, [], 0.0, Settings()).create == {"zone-c": 0, "plain": 2}
    finally:
        request_resources()

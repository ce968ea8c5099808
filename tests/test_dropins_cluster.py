"""Pool and Executor on a cluster started from the CLI: two nodes, and the drop-ins use both."""
from __future__ import annotations

import os
import time

import tasuki


def where(_):
    """The node and process an item ran in (held a moment, so both processes get items)."""
    time.sleep(0.05)
    return tasuki.get_runtime_context().get_node_id(), os.getpid()


def test_pool_and_executor_span_every_node(cli_cluster, driver):
    cli_cluster.add_node("127.0.0.2", "--num-cpus", "1")
    nodes = {n["NodeID"] for n in tasuki.nodes()}
    assert len(nodes) == 2 and tasuki.cluster_resources()["CPU"] == 2

    with tasuki.Pool() as pool:                    # processes: the cluster's CPUs, one on each node
        placed = pool.map(where, range(20), chunksize=1)
    assert {node for node, _ in placed} == nodes
    assert len({pid for _, pid in placed}) == 2

    with tasuki.Executor() as executor:
        placed = list(executor.map(where, range(20)))
    assert {node for node, _ in placed} == nodes

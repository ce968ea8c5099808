"""Time the autoscaler's plan: 1,000 nodes, 10,000 pending bundles in 50 shapes, 4 worker groups.

    python benchmarks/autoscaler_plan.py            # median of 15 runs per case; target <= 50 ms

Two cases, both built from a fixed seed:
- "busy": a loaded cluster as the head reports it: 60% of nodes full, the rest with some free
  capacity in a few steps (so many nodes share one free capacity), 5% idle past the timeout,
  20 pods still starting.
- "distinct": the worst case for the bin classes: every node's free capacity is different
  (fractional CPUs drawn at random), so the plan cannot fold nodes together.
Each with maxStepPerGroup 100 and with no step limit (then groups grow to their max).
The figure is the time of plan() alone (the inputs are built once, outside the clock).
"""
from __future__ import annotations

import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "operator"))

from tasuki_operator.autoscaler import GroupSpec, PodInfo, Settings, plan  # noqa: E402

GI = 2 ** 30
NOW = 1_800_000_000.0
NODES, BUNDLES, SHAPES, RUNS = 1_000, 10_000, 50, 15
GROUPS = [
    GroupSpec("cpu-small", 0, 1_000, 0, {"CPU": 4.0, "memory": 8.0 * GI}),
    GroupSpec("cpu-big", 0, 1_000, 0, {"CPU": 16.0, "memory": 64.0 * GI}),
    GroupSpec("gpu-1", 0, 500, 0, {"CPU": 8.0, "memory": 32.0 * GI, "GPU": 1.0}),
    GroupSpec("gpu-4", 0, 500, 0, {"CPU": 32.0, "memory": 128.0 * GI, "GPU": 4.0}),
]


def build(case: str, seed: int = 13):
    """The head's demand JSON and the pod list for one case."""
    rng = random.Random(seed)
    nodes, pods = [], []
    for i in range(NODES):
        g = GROUPS[i % len(GROUPS)]
        name = f"demo-worker-{g.name}-{i:04d}"
        total = dict(g.shape)
        if case == "distinct":
            free = {k: round(v * rng.random(), 3) for k, v in total.items()}
        elif rng.random() < 0.6:
            free = {k: 0.0 for k in total}
        else:
            step = rng.choice((0.25, 0.5, 1.0))
            free = {k: v * step for k, v in total.items()}
        idle = rng.uniform(61, 600) if rng.random() < 0.05 else 0.0
        if idle:
            free = dict(total)
        nodes.append({"node_id": f"n{i:04d}", "node_name": name, "group": g.name, "ip": "10.0.0.1", "state": "alive",
                      "resources": total, "available": free, "workers": int(total["CPU"]),
                      "busy_workers": 0 if idle else 1, "seconds_idle": idle, "is_head_node": False,
                      "object_store": {"used": 0, "capacity": GI, "objects": 0, "spilled": 0}, "version": "0.1.0"})
        pods.append(PodInfo(name, g.name, "Running", NOW - 3_600, node_id=f"n{i:04d}"))
    for j in range(20):
        g = GROUPS[j % len(GROUPS)]
        pods.append(PodInfo(f"demo-worker-{g.name}-new{j}", g.name, "Pending", NOW - 10))
    shapes = set()
    while len(shapes) < SHAPES:
        s = {"CPU": rng.choice((0.5, 1.0, 2.0, 4.0, 8.0)), "memory": rng.choice((0.0, 1.0, 2.0, 4.0, 16.0)) * GI}
        if rng.random() < 0.25:
            s["GPU"] = rng.choice((1.0, 2.0))
        shapes.add(tuple(sorted((k, v) for k, v in s.items() if v)))
    counts = [BUNDLES // SHAPES] * SHAPES
    pending = [{"shape": dict(s), "count": c, "feasible": True} for s, c in zip(sorted(shapes), counts)]
    return {"pending": pending, "waiting_for_dependencies": 0, "nodes": nodes, "version": "0.1.0"}, pods


def time_plan(case: str, step: int | None) -> tuple[float, object]:
    demand, pods = build(case)
    settings = Settings(idle_timeout_s=60, max_step_per_group=step)
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = plan(demand, GROUPS, pods, NOW, settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, result


def main() -> None:
    print(f"plan(): {NODES:,} nodes, {BUNDLES:,} pending bundles in {SHAPES} shapes, {len(GROUPS)} groups, "
          f"median of {RUNS} runs (Python {sys.version.split()[0]})")
    for case, step in (("busy", 100), ("distinct", 100), ("busy", None), ("distinct", None)):
        ms, p = time_plan(case, step)
        placed = sum(e["count"] for e in p.placed)
        waiting = sum(e["count"] for e in p.waiting)
        assert placed + waiting + sum(e["count"] for e in p.unplaceable) == BUNDLES, "bundles lost by the plan"
        print(f"  {case:9s} step {str(step):4s} {ms:6.1f} ms   create {sum(p.create.values())} pods, drain {len(p.drain)}, "
              f"placed {placed:,} bundles, waiting {waiting:,}   {'OK' if ms <= 50 else 'OVER the 50 ms target'}")


if __name__ == "__main__":
    main()

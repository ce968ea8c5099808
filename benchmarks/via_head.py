"""Large objects for a driver with no node on its machine: direct, through the head, and Ray Client.

    python benchmarks/via_head.py                       # tasuki's three paths, and Ray Client if Ray is found
    python benchmarks/via_head.py --ray-python /tmp/rayvenv/bin/python --sizes 10,200 --repeats 3

A `put` of a uint8 array of each size, then a `get` of it back, timed apart, in MB/s (10^6 bytes
per second; the round trip is the size divided by put + get); then calls of a trivial actor method,
one `get(a.m.remote())` at a time and 3,000 submitted then gathered. Each path runs in a fresh driver
process against one cluster started here (`tasuki start --head`, 2 CPUs, a 1 GiB store):

  tasuki, shared memory   the driver maps the node's store (the usual case on a node's machine)
  tasuki, direct          a driver that shares no memory with a node (as on another machine:
                          this script hides the local node from it) moves objects in chunks
                          over TCP straight to and from the node's transfer port
  tasuki, via the head    the same driver with TASUKI_VIA_HEAD=1: every chunk is relayed by the head
  Ray Client              `ray start --head --ray-client-server-port 10001`, then
                          ray.init("ray://127.0.0.1:10001"): Ray's own head-only mode

Every figure is the median of --repeats runs. Only one Ray runs at a time; it is stopped after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RAY_PORT = 10001


def child_tasuki(mode: str, address: str, sizes: list, repeats: int) -> dict:
    import numpy as np
    import tasuki
    import tasuki.client
    if mode != "local":
        tasuki.client.pick_local_node = lambda nodes: None      # as on a machine without a node
    tasuki.init(address=address)
    return {**_measure(tasuki.put, tasuki.get, np, sizes, repeats), **_actor_calls(tasuki, repeats)}


def child_ray(sizes: list, repeats: int) -> dict:
    import numpy as np
    import ray
    ray.init(f"ray://127.0.0.1:{RAY_PORT}")
    return {**_measure(ray.put, ray.get, np, sizes, repeats), **_actor_calls(ray, repeats)}


def _actor_calls(runtime, repeats: int, sync_calls: int = 300, async_calls: int = 3000) -> dict:
    """Calls/s of a trivial actor method: `get(a.m.remote())` one at a time, and a batch then one get."""
    @runtime.remote
    class Echo:
        def m(self):
            return 1
    actor = Echo.remote()
    runtime.get(actor.m.remote())
    sync, batch = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(sync_calls):
            runtime.get(actor.m.remote())
        sync.append(sync_calls / (time.perf_counter() - started))
        started = time.perf_counter()
        runtime.get([actor.m.remote() for _ in range(async_calls)])
        batch.append(async_calls / (time.perf_counter() - started))
    return {"actor_sync": statistics.median(sync), "actor_batch": statistics.median(batch)}


def _measure(put, get, np, sizes: list, repeats: int) -> dict:
    results = {}
    for mb in sizes:
        array = np.random.default_rng(0).integers(0, 255, mb * 10**6, dtype=np.uint8)
        runs = []
        for _ in range(repeats + 1):              # the first is a warm-up (connections, the store's pages)
            started = time.perf_counter()
            ref = put(array)
            put_s = time.perf_counter() - started
            started = time.perf_counter()
            back = get(ref)
            get_s = time.perf_counter() - started
            assert back.nbytes == array.nbytes and back[-1] == array[-1]
            del back, ref
            runs.append((put_s, get_s))
        put_s = statistics.median(r[0] for r in runs[1:])
        get_s = statistics.median(r[1] for r in runs[1:])
        results[mb] = {"put": mb / put_s, "get": mb / get_s, "round_trip": mb / (put_s + get_s)}
    return results


def run_child(argv: list, env: dict) -> dict:
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,200", help="MB, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-python", default="/tmp/rayvenv/bin/python", help="a Python with Ray installed")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ADDRESS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        mode, address = args.child
        result = child_ray(sizes, args.repeats) if mode == "ray" else \
            child_tasuki(mode, address, sizes, args.repeats)
        print(json.dumps(result))
        return

    rows = {}
    with tempfile.TemporaryDirectory(prefix="tasuki-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASUKI_")}
        env["TASUKI_TMPDIR"] = tmp
        env["PYTHONPATH"] = os.path.join(REPO, "runtime")
        tasuki_cli = [sys.executable, "-m", "tasuki"]
        subprocess.run([*tasuki_cli, "start", "--head", "--port", "0", "--metrics-port", "0", "--num-cpus", "2",
                        "--node-ip-address", "127.0.0.1", "--object-store-memory", str(2**30)],
                       env=env, check=True, capture_output=True)
        try:
            with open(os.path.join(tmp, "cluster.json")) as f:
                cluster = json.load(f)
            env["TASUKI_TOKEN"] = cluster["token"]
            address = cluster["address"].split("://", 1)[1]
            for mode, label, extra in (("local", "tasuki, shared memory", {}),
                                       ("direct", "tasuki, direct (no local store)", {"TASUKI_VIA_HEAD": "0"}),
                                       ("via_head", "tasuki, via the head", {"TASUKI_VIA_HEAD": "1"})):
                rows[label] = run_child([sys.executable, __file__, "--child", mode, address, "--sizes", args.sizes,
                                         "--repeats", str(args.repeats)], {**env, **extra})
                print(f"{label}: {rows[label]}", file=sys.stderr, flush=True)
        finally:
            subprocess.run([*tasuki_cli, "stop"], env=env, capture_output=True)
    if os.path.exists(args.ray_python):
        try:
            rows["Ray Client (ray://)"] = run_ray(args)
        except RuntimeError as e:      # its per-client server sometimes fails to start on a loaded machine
            print(f"Ray Client failed, trying once more: {str(e)[-300:]}", file=sys.stderr, flush=True)
            rows["Ray Client (ray://)"] = run_ray(args)
    else:
        print(f"Ray Client: skipped, no Python at {args.ray_python} (--ray-python)", file=sys.stderr)
    print_table(rows, sizes)


def run_ray(args) -> dict:
    ray = os.path.join(os.path.dirname(args.ray_python), "ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASUKI_", "PYTHONPATH"))}
    # Ray 2.60 turns token authentication on by itself once ~/.ray/auth_token exists, and then its
    # client, not told, times out ("ray client connection timeout"): say it to both sides
    env.setdefault("RAY_AUTH_MODE", "token")
    started = subprocess.run([ray, "start", "--head", "--ray-client-server-port", str(RAY_PORT), "--num-cpus", "2",
                              "--object-store-memory", str(2**30), "--include-dashboard=false", "--disable-usage-stats"],
                             env=env, capture_output=True, text=True)
    if started.returncode != 0:
        raise RuntimeError(f"`ray start` failed:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}")
    try:
        result = run_child([args.ray_python, __file__, "--child", "ray", "-", "--sizes", args.sizes,
                            "--repeats", str(args.repeats)], env)
        print(f"Ray Client: {result}", file=sys.stderr, flush=True)
        return result
    finally:
        subprocess.run([ray, "stop"], env=env, capture_output=True)


def print_table(rows: dict, sizes: list) -> None:
    header = "| path | " + " | ".join(f"{mb} MB put | {mb} MB get | {mb} MB round trip" for mb in sizes) + " |"
    print(header)
    print("|---|" + "---:|" * (3 * len(sizes)))
    for label, result in rows.items():
        cells = []
        for mb in sizes:
            r = result[str(mb)] if str(mb) in result else result[mb]
            cells += [f"{r['put']:,.0f}", f"{r['get']:,.0f}", f"{r['round_trip']:,.0f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\nMB/s (10^6 bytes per second), median of the runs after a warm-up.\n")
    print("| path | actor calls, one at a time [/s] | actor calls, 3,000 then one get [/s] |")
    print("|---|---:|---:|")
    for label, result in rows.items():
        print(f"| {label} | {result['actor_sync']:,.0f} | {result['actor_batch']:,.0f} |")


if __name__ == "__main__":
    main()

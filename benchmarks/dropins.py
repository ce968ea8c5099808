"""The drop-ins side by side: tasuki.Pool and tasuki.Executor against multiprocessing.Pool,
ProcessPoolExecutor, loky, Dask distributed and Ray's multiprocessing Pool.

    python benchmarks/dropins.py                       # everything: about 4½ minutes on 2 cores
    python benchmarks/dropins.py --ray --markdown      # also Ray's Pool (+1 minute); print the table
    python benchmarks/dropins.py --quick               # smoke run: small sizes, 52 keys (~1 minute)
    python benchmarks/dropins.py --only tasuki-pool,mp --workloads map,shared --markdown

Each system is used through its own API, the way its users write code (`runner.DropIn`): a
pool's map / starmap / apply_async, an executor's map / submit and as_completed, Dask's
client.map / submit / as_completed. Every (system, workload) runs in a fresh child process
(bench.run_child, runner.py), with 2 workers; start-up (import, the pool, the first result) is
timed in each child apart from the workload, and reported as the median over the children.

Workloads (full size; --quick in brackets):
  map     map(square, list(range(100,000))) [10,000], default chunksize, median of 5 [1];
          executors (one call per item by default) run 5,000 items and Dask 1,000: the figure is
          per item; executors also with chunksize = the standard library's default for Pool.map
  sleep   map(nap, [0.01] * 1,000) [200]: wall time, and against the ideal n × 10 ms / 2
  shared  50 [10] calls item_at(arr, i) on one 200 MB [20 MB] array: one apply_async / submit per
          call (the array is an argument of each; ProcessPoolExecutor, loky, Dask and Ray's Pool
          make 10 and their wall time is scaled to 50, marked *), then starmap (pools), then
          Dask's scatter once and submit of the future
  keys    260 [52] keys × time.sleep(0.2): submit per key, results as completed (pools:
          apply_async per key, results in order); ideal n × 0.2 / 2. tasuki.Pool runs it only
          when named in --only (the issue's workload is the Executor's; it saves 27 s)

Targets (from the issue): tasuki.Pool's map of tiny items at least multiprocessing.Pool's rate;
the shared 200 MB argument at least 5× faster than the standard library; the 260 keys within 10%
of the ideal wall time. Results: benchmarks/results/dropins.json (and dropins.md with --markdown).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the harness: children, the machine, tables)

WORKERS = 2
SYSTEMS = ["tasuki-pool", "tasuki-executor", "mp", "ppe", "loky", "dask", "ray-pool"]
DEFAULT_SYSTEMS = SYSTEMS[:-1]        # Ray's Pool with --ray: ~5 s of ray.init per child, +1 minute
NAMES = {"tasuki-pool": "tasuki.Pool", "tasuki-executor": "tasuki.Executor", "mp": "multiprocessing.Pool",
         "ppe": "ProcessPoolExecutor", "loky": "loky", "dask": "Dask", "ray-pool": "Ray Pool"}
WORKLOADS = ["map", "sleep", "shared", "keys"]

SIZES = {
    "default": {"tiny": 100_000, "tiny_tuned": 100_000, "naps": 1000, "nap_s": 0.01, "large": 200 * 10**6,
                "shared_calls": 50, "shared_starmap": 50, "keys": 260, "key_s": 0.2},
    "quick": {"tiny": 10_000, "tiny_tuned": 10_000, "naps": 200, "nap_s": 0.01, "large": 20 * 10**6,
              "shared_calls": 10, "shared_starmap": 10, "keys": 52, "key_s": 0.2},
}
# Fewer items where each is a call of its own, or the array is pickled into every call: the run
# stays short and the figure is per item (rates) or scaled to the full count (marked *).
SIZE_OVERRIDES = {
    **{(s, "tiny"): 5_000 for s in ("tasuki-executor", "ppe", "loky")}, ("dask", "tiny"): 1_000,
    **{(s, "shared_calls"): 10 for s in ("ppe", "loky", "dask", "ray-pool")},
}
REPEATS = {"map": 5}           # the rest: 1 run (seconds each; use --repeats for more)
# Left out unless --only names the system, to keep the run near 5 minutes.
SKIP = {("tasuki-pool", "keys"): "the Executor workload: tasuki.Executor's column (or --only tasuki-pool)"}

# metric: (label, unit, higher is better, workload, the child's item count for this figure)
METRICS = {
    "startup": ("start-up: import, pool or executor, first result", "s", False, None, None),
    "map_default": ("map() of {tiny:,} tiny items, default chunksize", "items/s", True, "map", "map_default_items"),
    "map_tuned": ("map() of {tiny_tuned:,} tiny items, chunksize {tuned_chunk:,}", "items/s", True, "map", None),
    "sleep_wall": ("{naps:,} calls of {nap_ms:g} ms through map(): wall", "s", False, "sleep", None),
    "sleep_pct": ("{naps:,} calls of {nap_ms:g} ms: % of the ideal {sleep_ideal:g} s", "%", False, "sleep", None),
    "shared_submit": ("{shared_calls} calls sharing one {mb} MB array, apply_async / submit each: wall", "s",
                      False, "shared", "shared_submit_calls"),
    "shared_starmap": ("{shared_starmap} calls sharing one {mb} MB array, starmap: wall", "s", False, "shared", None),
    "shared_scatter": ("{shared_starmap} calls sharing one {mb} MB array, scattered once: wall", "s", False,
                       "shared", None),
    "keys_wall": ("{keys} keys × {key_s:g} s, submit + as_completed: wall", "s", False, "keys", None),
    "keys_pct": ("{keys} keys × {key_s:g} s: % of the ideal {keys_ideal:g} s", "%", False, "keys", None),
}
DERIVED = {"sleep_pct": ("sleep_wall", "sleep_ideal"), "keys_pct": ("keys_wall", "keys_ideal")}
FULL_COUNT = {"map_default_items": "tiny", "shared_submit_calls": "shared_calls"}
PAIRS = [("tasuki-pool", "mp"), ("tasuki-executor", "ppe")]     # the ratio columns


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help="systems, comma-separated: " + ",".join(SYSTEMS))
    p.add_argument("--ray", action="store_true", help="also ray.util.multiprocessing.Pool (Ray Pool)")
    p.add_argument("--workloads", help="comma-separated: " + ",".join(WORKLOADS))
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat: a smoke run")
    p.add_argument("--repeats", type=int, help="runs per figure (default: 3 for map, 1 for the rest)")
    p.add_argument("--timeout", type=float, default=150.0, help="seconds per child process (150)")
    p.add_argument("--nice", type=int, default=0, metavar="N", help="run at priority -N (root only)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table, write results/dropins.md")
    p.add_argument("--out", default=os.path.join(bench.RESULTS, "dropins.json"))
    args = p.parse_args(argv)
    args.systems = ([s.strip() for s in args.only.split(",")] if args.only
                    else DEFAULT_SYSTEMS + (["ray-pool"] if args.ray else []))
    args.workloads = [w.strip() for w in args.workloads.split(",")] if args.workloads else WORKLOADS
    for given, known in ((args.systems, SYSTEMS), (args.workloads, WORKLOADS)):
        if set(given) - set(known):
            p.error(f"unknown {sorted(set(given) - set(known))}; choose from {known}")
    return args


def sizes_of(quick: bool) -> dict:
    sizes = dict(SIZES["quick" if quick else "default"])
    sizes.update(mb=sizes["large"] // 10**6, nap_ms=sizes["nap_s"] * 1000,
                 tuned_chunk=-(-sizes["tiny_tuned"] // (4 * WORKERS)),
                 sleep_ideal=sizes["naps"] * sizes["nap_s"] / WORKERS,
                 keys_ideal=sizes["keys"] * sizes["key_s"] / WORKERS)
    return sizes


def sizes_for(system: str, sizes: dict) -> dict:
    out = dict(sizes)
    for (s, key), value in SIZE_OVERRIDES.items():
        if s == system:
            out[key] = min(value, out[key])
    return out


# --- figures ------------------------------------------------------------------------------------------
def figures(results: dict, sizes: dict) -> dict:
    """{metric: {system: (median, scaled)}}: scaled when the child ran fewer items than the label."""
    out: dict = {m: {} for m in METRICS}
    for system, per in results.items():
        startups = [v for r in per.values() if r["status"] == "ok" for v in r["metrics"].get("startup", [])]
        if startups:
            out["startup"][system] = (statistics.median(startups), False)
        for workload, r in per.items():
            if r["status"] != "ok":
                continue
            for m, (_, unit, _, w, count_key) in METRICS.items():
                values = r["metrics"].get(m)
                if w != workload or not values:
                    continue
                value, scaled = statistics.median(values), False
                if count_key:
                    ran, full = r["metrics"][count_key][0], sizes[FULL_COUNT[count_key]]
                    if ran != full:
                        scaled = True
                        if unit == "s":
                            value *= full / ran        # a wall time: per call × the full count
                out[m][system] = (value, scaled)
    for m, (source, ideal) in DERIVED.items():
        out[m] = {s: (v / sizes[ideal] * 100, sc) for s, (v, sc) in out[source].items()}
    return out


def status_cell(results: dict, system: str, metric: str) -> str:
    workload = METRICS[metric][3]
    r = results.get(system, {}).get(workload) if workload else None
    if r is None or r["status"] == "ok":
        return "–"
    return {"unsupported": "–", "na": "n/a", "fail": "FAIL", "timeout": "TIMEOUT"}[r["status"]]


def better(metric: str, a: float | None, b: float | None) -> str:
    """How many times better a is than b (rates: a / b; times: b / a)."""
    if a is None or b is None or not a or not b or METRICS[metric][1] == "%":
        return "–"
    r = a / b if METRICS[metric][2] else b / a
    return f"{r:.2f}×" if r < 100 else f"{r:,.0f}×"


def table(results: dict, figs: dict, systems: list, sizes: dict) -> tuple[list, list]:
    pairs = [(a, b) for a, b in PAIRS if a in systems and b in systems]
    header = ["workload"] + [NAMES[s] for s in systems] + [f"{NAMES[a]} vs {NAMES[b]}" for a, b in pairs]
    rows = []
    for m, (text, unit, *_rest) in METRICS.items():
        per = figs[m]
        if not per and all(status_cell(results, s, m) == "–" for s in systems):
            continue
        row = [text.format(**sizes) + (f" [{unit}]" if unit != "%" else "")]
        for s in systems:
            if s in per:
                value, scaled = per[s]
                row.append((f"{value:.0f}%" if unit == "%" else bench.fmt(value, unit)) + (" *" if scaled else ""))
            else:
                row.append(status_cell(results, s, m))
        row += [better(m, per.get(a, (None,))[0], per.get(b, (None,))[0]) for a, b in pairs]
        rows.append(row)
    return header, rows


def targets(figs: dict, sizes: dict) -> list[str]:
    """The issue's targets, each with its figures and whether it is met."""
    def get(metric, system):
        return figs[metric].get(system, (None,))[0]
    lines = []
    t, mp = get("map_default", "tasuki-pool"), get("map_default", "mp")
    if t and mp:
        lines.append(f"map of {sizes['tiny']:,} tiny items, default chunksize: tasuki.Pool {t:,.0f} items/s, "
                     f"multiprocessing.Pool {mp:,.0f} items/s: {t / mp:.2f}× (target ≥ 1×): "
                     + ("met" if t >= mp else "MISSED"))
    for metric, count, shape, ours, theirs in (
            ("shared_submit", "shared_calls", "apply_async each", "tasuki-pool", "mp"),
            ("shared_starmap", "shared_starmap", "starmap", "tasuki-pool", "mp"),
            ("shared_submit", "shared_calls", "submit each", "tasuki-executor", "ppe")):
        t, s = get(metric, ours), get(metric, theirs)
        if t and s:
            lines.append(f"{sizes['mb']} MB array shared by {sizes[count]} calls, {shape}: {NAMES[ours]} {t:.3f} s, "
                         f"{NAMES[theirs]} {bench.fmt(s, 's')} s: {s / t:,.0f}× faster (target ≥ 5×): "
                         + ("met" if s / t >= 5 else "MISSED"))
    t = get("keys_wall", "tasuki-executor")
    if t:
        ideal = sizes["keys_ideal"]
        lines.append(f"{sizes['keys']} keys × {sizes['key_s']:g} s: tasuki.Executor {t:.2f} s, ideal {ideal:g} s: "
                     f"{t / ideal * 100:.1f}% (target ≤ 110%): " + ("met" if t <= 1.1 * ideal else "MISSED"))
    return lines


# --- main ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, -args.nice)
    sizes = sizes_of(args.quick)
    info = bench.machine()
    load_before = os.getloadavg()
    print(f"tasuki drop-ins — {datetime.date.today()}, {info['cpu']}, {info['cores']} cores, {info['memory']}, "
          f"Python {info['versions']['python']}; load average {load_before[0]:.2f}; systems: {', '.join(args.systems)}")
    results: dict = {s: {} for s in args.systems}
    started = time.perf_counter()
    for workload in args.workloads:
        repeats = args.repeats or (1 if args.quick else REPEATS.get(workload, 1))
        for system in args.systems:
            if not args.only and (system, workload) in SKIP:
                results[system][workload] = {"status": "unsupported", "error": SKIP[system, workload], "seconds": 0.0}
                continue
            r = bench.run_child(system, f"dropin_{workload}", repeats, sizes_for(system, sizes), args.timeout)
            results[system][workload] = r
            note = "" if r["status"] == "ok" else f"  {r['status'].upper()}: {r.get('error', '').splitlines()[0][:120]}"
            print(f"  [{workload} / {system}] {r['seconds']:.1f} s{note}", flush=True)
    elapsed = time.perf_counter() - started
    figs = figures(results, sizes)
    header, rows = table(results, figs, args.systems, sizes)
    goals = targets(figs, sizes)
    print(f"\n== drop-ins ({elapsed:.0f} s)\n{bench.text_table(header, rows)}\n")
    fewer = [f"{NAMES[s]} {k.replace('tiny', 'map').replace('_', ' ')} {v:,}" for (s, k), v in SIZE_OVERRIDES.items()
             if s in args.systems and v < sizes[k]]
    if fewer:
        print("* run on fewer items (rates per item, wall times scaled to the full count): " + ", ".join(fewer) + "\n")
    print("== targets\n" + "\n".join(goals) + "\n")
    bench.print_failures([(s, w, r) for s, per in results.items() for w, r in per.items()])

    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info, "quick": args.quick,
              "sizes": sizes, "systems": args.systems, "elapsed_s": round(elapsed, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "figures": {m: {s: v for s, (v, _) in per.items()} for m, per in figs.items()},
              "targets": goals, "results": results}
    md = None
    if args.markdown:
        md = (f"Measured {datetime.date.today()} on {info['cpu']}, {info['cores']} cores, {info['memory']}, "
              f"Python {info['versions']['python']}; tasuki {info['tasuki_commit']}, Ray {info['versions']['ray']}, "
              f"Dask {info['versions']['distributed']}, loky {info['versions']['loky']}; load average "
              f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after.\n\n"
              + bench.markdown_table(header, rows) + "\n\n" + "\n".join(f"- {g}" for g in goals) + "\n")
    bench.write_report(report, args.out, md, "dropins.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

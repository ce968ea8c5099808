"""Side-by-side benchmarks: tasuki against Ray, multiprocessing, ProcessPoolExecutor, loky and Dask.

    python benchmarks/bench.py                          # everything (about 10 minutes on 2 cores)
    python benchmarks/bench.py --quick                  # smoke run: 1 repeat, small sizes
    python benchmarks/bench.py --only tasuki,ray --workloads noop,sequential --markdown

Every runtime runs with 2 workers. Each (runtime, workload) runs in its own fresh child process
(benchmarks/runner.py), so one runtime's memory and threads never disturb another's; a child that
runs past --timeout is dumped with py-spy (when installed) and killed with all its processes, and
the run goes on. Workloads whose first moments matter (init, the cold put) get a fresh process for
every repeat. Each figure is the median of --repeats runs (3; 1 with --quick).

It prints a table per workload (each runtime's figure, then tasuki/Ray and tasuki/multiprocessing),
a summary of failures with their tracebacks, and writes benchmarks/results/latest.json (and, with
--markdown, benchmarks/results/latest.md, which it also prints).

Cells: "–" the runtime has no such feature (multiprocessing has no put); "n/a" tasuki does not
implement it yet; FAIL / TIMEOUT, with the details in the failures section and the JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "runner.py")
RESULTS = os.path.join(HERE, "results")

RUNTIMES = ["tasuki", "ray", "mp", "ppe", "loky", "dask"]
RUNTIME_NAMES = {"tasuki": "tasuki", "ray": "Ray", "mp": "multiprocessing", "ppe": "ProcessPoolExecutor",
                 "loky": "loky", "dask": "Dask"}
ALIASES = {"multiprocessing": "mp", "pool": "mp", "processpoolexecutor": "ppe", "executor": "ppe",
           "distributed": "dask"}
POOLS = ("mp", "ppe", "loky")

SIZES = {
    "default": {"noop": 5000, "sequential": 500, "chain": 300, "small": 5000, "large": 200 * 10**6,
                "shared_tasks": 50, "wait": 1000, "burn_tasks": 8, "burn_s": 0.25, "actor_sync": 1000,
                "actor_async": 5000},
    "quick": {"noop": 1000, "sequential": 100, "chain": 50, "small": 500, "large": 20 * 10**6,
              "shared_tasks": 10, "wait": 200, "burn_tasks": 4, "burn_s": 0.1, "actor_sync": 100,
              "actor_async": 500},
}
# Per-runtime changes that keep the run short; rates stay comparable (the figure is per task).
SIZE_OVERRIDES = {
    ("mp", "shared_tasks"): 10, ("ppe", "shared_tasks"): 10, ("loky", "shared_tasks"): 10,  # ~1.6 tasks/s
    ("dask", "small"): 1000,                                                                # scatter ~ms each
}

# metric: (label, unit, higher is better, child workload, user-facing workload name)
METRICS = {
    "init": ("init() → first result (import included)", "s", False, "lifecycle", "init"),
    "noop": ("{noop:,} no-op tasks, submitted then gathered", "tasks/s", True, "noop", "noop"),
    "noop_map": ("{noop:,} no-op tasks through map()", "tasks/s", True, "noop_map", "noop_map"),
    "sequential": ("{sequential:,} sequential submit + get", "/s", True, "sequential", "sequential"),
    "chain": ("chain of {chain:,} dependent tasks", "tasks/s", True, "chain", "chain"),
    "small_put": ("{small:,} small puts", "/s", True, "small_objects", "small_put_get"),
    "small_get": ("{small:,} small gets", "/s", True, "small_objects", "small_put_get"),
    "put_large_cold": ("put of a {mb} MB array, first (cold)", "GiB/s", True, "put_large", "put_large"),
    "put_large_warm": ("put of a {mb} MB array, warm (put/get/del repeated)", "GiB/s", True, "put_large",
                       "put_large"),
    "get_large": ("get of a {mb} MB array", "GiB/s", True, "put_large", "put_large"),
    "return_large": ("task returning {mb} MB (get at the driver)", "GiB/s", True, "return_large",
                     "return_large"),
    "shared_arg": ("{shared_tasks} tasks sharing one {mb} MB argument", "tasks/s", True, "shared_arg",
                   "shared_arg"),
    "wait_ready": ("wait() over {wait:,} ready refs", "ms", False, "wait", "wait"),
    "wait_pending": ("wait() for {wait:,} just-submitted no-op tasks", "ms", False, "wait", "wait"),
    "cpu_scaling": ("CPU scaling, {burn_tasks} × {burn_s} s on 2 workers (ideal/actual)", "", True,
                    "cpu_scaling", "cpu_scaling"),
    "cpu_busy": ("CPU scaling, busy: time inside the tasks / (2 × wall)", "", True, "cpu_scaling", "cpu_scaling"),
    "shutdown": ("shutdown()", "s", False, "lifecycle", "shutdown"),
    "idle_memory": ("idle memory of the helper processes (RSS)", "MiB", False, "lifecycle", "idle_memory"),
    "idle_processes": ("helper processes", "", False, "lifecycle", "idle_memory"),
    "actor_sync": ("1:1 actor calls, sync ({actor_sync:,} × get(a.m.remote()))", "calls/s", True,
                   "actor_sync", "actor_sync"),
    "actor_async": ("1:1 actor calls, async ({actor_async:,} submitted, then gathered)", "calls/s", True,
                    "actor_async", "actor_async"),
    "asyncio_actor": ("1:1 async-actor (async def) calls, async", "calls/s", True, "asyncio_actor",
                      "asyncio_actor"),
    "actor_nn": ("n:n actor calls (2 caller tasks × 2 actors)", "calls/s", True, "actor_nn", "actor_nn"),
}
WORKLOAD_ORDER = ["lifecycle", "noop", "noop_map", "sequential", "chain", "small_objects", "put_large",
                  "return_large", "shared_arg", "wait", "cpu_scaling", "actor_sync", "actor_async",
                  "asyncio_actor", "actor_nn"]
FRESH_PER_REPEAT = {"lifecycle", "put_large"}     # the first moments are what is measured
UNSUPPORTED = {                                   # (runtime, workload): why, known without running
    **{(p, w): "no object store" for p in POOLS for w in ("small_objects", "put_large")},
    **{(p, "chain"): "futures cannot be task arguments" for p in POOLS},
    **{(p, w): "no actors" for p in POOLS for w in ("actor_sync", "actor_async", "asyncio_actor", "actor_nn")},
    ("mp", "wait"): "no wait()",
    ("tasuki", "noop_map"): "no map() (tasuki.Pool is planned)", ("ray", "noop_map"): "no map()",
    ("dask", "noop_map"): "client.map submits one task per item: the row above",
    ("dask", "asyncio_actor"): "not measured", ("dask", "actor_nn"): "not measured",
}
USER_WORKLOADS = sorted({m[4] for m in METRICS.values()} | {"lifecycle", "actors", "small_objects"})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="workloads: " + ", ".join(USER_WORKLOADS))
    p.add_argument("--only", help="runtimes, comma-separated: " + ",".join(RUNTIMES))
    p.add_argument("--workloads", help="workloads, comma-separated (default: all)")
    p.add_argument("--quick", action="store_true", help="1 repeat and small sizes: a smoke run")
    p.add_argument("--repeats", type=int, help="runs per figure (default 3, 1 with --quick)")
    p.add_argument("--timeout", type=float, help="seconds per child process (default 150, 60 with --quick)")
    p.add_argument("--nice", type=int, default=0, metavar="N",
                   help="run at priority -N (root only): on a shared machine, other CPU hogs then disturb less")
    p.add_argument("--markdown", action="store_true", help="print a markdown table and write results/latest.md")
    p.add_argument("--out", default=os.path.join(RESULTS, "latest.json"), help="where to write the JSON")
    p.add_argument("--merge", action="store_true",
                   help="keep the other workloads' results already in --out: re-run one workload into a full table")
    args = p.parse_args(argv)
    args.runtimes = RUNTIMES
    if args.only:
        args.runtimes = [ALIASES.get(r.strip().lower(), r.strip().lower()) for r in args.only.split(",") if r.strip()]
        bad = [r for r in args.runtimes if r not in RUNTIMES]
        if bad:
            p.error(f"unknown runtime(s) {bad}; choose from {RUNTIMES}")
    args.children = WORKLOAD_ORDER
    if args.workloads:
        wanted = {w.strip() for w in args.workloads.split(",") if w.strip()}
        bad = wanted - set(USER_WORKLOADS)
        if bad:
            p.error(f"unknown workload(s) {sorted(bad)}; choose from {USER_WORKLOADS}")
        if "actors" in wanted:
            wanted |= {"actor_sync", "actor_async", "asyncio_actor", "actor_nn"}
        children = {m[3] for m in METRICS.values() if m[4] in wanted} | (wanted & set(WORKLOAD_ORDER))
        args.children = [w for w in WORKLOAD_ORDER if w in children]
        args.metric_filter = {k for k, m in METRICS.items() if m[4] in wanted or m[3] in wanted}
    else:
        args.metric_filter = set(METRICS)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.timeout = args.timeout or (60.0 if args.quick else 150.0)
    return args


# --- running the children -------------------------------------------------------------------------
def calibrate_burn(seconds: float) -> int:
    """Loop count for `burn` that takes `seconds` here (pure Python, fixed work: not a timed spin)."""
    sys.path.insert(0, HERE)
    from runner import burn
    n = 1_000_000
    best = min(_time(burn, n) for _ in range(3))
    return int(n * seconds / best)


def _time(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def sizes_for(runtime: str, base: dict) -> dict:
    sizes = dict(base)
    for (rt, key), value in SIZE_OVERRIDES.items():
        if rt == runtime:
            sizes[key] = min(value, sizes[key])
    return sizes


def run_child(runtime: str, workload: str, repeats: int, sizes: dict, timeout: float) -> dict:
    """Run one child process; return its result dict, with "seconds" and, on trouble, "log"."""
    with tempfile.TemporaryDirectory(prefix="tasuki-bench-") as tmp:
        out = os.path.join(tmp, "result.json")
        log_path = os.path.join(tmp, "child.log")
        cmd = [sys.executable, RUNNER, runtime, workload, "--repeats", str(repeats),
               "--sizes", json.dumps(sizes), "--out", out]
        env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
        started = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=REPO, env=env, start_new_session=True)
            dumps = ""
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                dumps = spy_dump(proc.pid)
                kill_tree(proc)
        seconds = time.perf_counter() - started
        with open(log_path, errors="replace") as f:
            log_text = f.read()
        if dumps:
            return {"status": "timeout", "seconds": seconds,
                    "error": f"no result after {timeout:.0f} s: killed (py-spy dump of its processes below)",
                    "traceback": dumps, "log": log_text[-4000:]}
        try:
            with open(out) as f:
                result = json.load(f)
        except (OSError, ValueError):
            result = {"status": "fail", "error": f"the child exited with code {proc.returncode} and no result",
                      "traceback": ""}
        result["seconds"] = seconds
        if result["status"] == "fail" or proc.returncode:
            result["log"] = log_text[-4000:]
            result["exit_code"] = proc.returncode
        return result


def descendants(pid: int) -> list:
    try:
        import psutil
        return psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001  (psutil missing, or the process already gone)
        return []


def spy_dump(pid: int) -> str:
    """py-spy dump of a stuck child and its Python descendants: where each one waits."""
    import shutil
    if not shutil.which("py-spy"):
        return "(py-spy is not installed: no stack dump)"
    parts = []
    for p in [pid] + [c.pid for c in descendants(pid)][:12]:
        try:
            r = subprocess.run(["py-spy", "dump", "--pid", str(p)], capture_output=True, text=True, timeout=20)
            text = r.stdout.strip() or r.stderr.strip().splitlines()[0] if (r.stdout or r.stderr) else ""
        except (subprocess.TimeoutExpired, OSError, IndexError) as e:
            text = f"(py-spy dump failed: {e!r})"
        parts.append(f"--- pid {p} ---\n{text}")
    return "\n".join(parts)


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill the child, its process group and every process below it (the runtime's helpers)."""
    below = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in below:
        try:
            p.kill()
        except Exception:  # noqa: BLE001
            pass
    proc.wait()


def run_workload(runtime: str, workload: str, args, sizes: dict) -> dict:
    why = UNSUPPORTED.get((runtime, workload))
    if why:
        return {"status": "unsupported", "error": why, "seconds": 0.0}
    if workload not in FRESH_PER_REPEAT:
        return run_child(runtime, workload, args.repeats, sizes, args.timeout)
    merged: dict = {"status": "ok", "metrics": {}, "seconds": 0.0}
    for _ in range(args.repeats):
        r = run_child(runtime, workload, 1, sizes, args.timeout)
        merged["seconds"] += r["seconds"]
        if r["status"] != "ok":
            r["seconds"] = merged["seconds"]
            return r
        for k, values in r["metrics"].items():
            merged["metrics"].setdefault(k, []).extend(values)
    return merged


# --- tables ------------------------------------------------------------------------------------
def label(metric: str, sizes: dict) -> str:
    text, unit = METRICS[metric][0], METRICS[metric][1]
    text = text.format(mb=sizes["large"] // 10**6, **sizes)
    return f"{text} [{unit}]" if unit else text


def fmt(value: float, unit: str) -> str:
    if unit in ("tasks/s", "/s", "calls/s", "items/s"):
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.0f}"
    if unit == "GiB/s":
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:.2f}" if value != int(value) else f"{value:.0f}"


def cell(result: dict | None, metric: str) -> tuple[str, float | None]:
    if result is None:
        return "", None
    status = result["status"]
    if status == "ok":
        values = result["metrics"].get(metric)
        if not values:
            return "–", None
        median = statistics.median(values)
        return fmt(median, METRICS[metric][1]), median
    return {"unsupported": "–", "na": "n/a", "fail": "FAIL", "timeout": "TIMEOUT"}[status], None


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 100 else f"{r:,.0f}×"


def table_rows(results: dict, metrics: list, runtimes: list, sizes: dict) -> tuple[list, list]:
    header = ["workload"] + [RUNTIME_NAMES[r] for r in runtimes]
    with_ratios = "tasuki" in runtimes
    if with_ratios:
        header += ["tasuki/Ray", "tasuki/mp"]
    rows = []
    for metric in metrics:
        per = results.get(metric_child(metric), {})
        cells = [cell(per.get(r), metric) for r in runtimes]
        if all(c[0] in ("", "–") for c in cells):
            continue
        row = [label(metric, sizes)] + [c[0] for c in cells]
        if with_ratios:
            value = dict(zip(runtimes, (c[1] for c in cells)))
            row += [ratio(value.get("tasuki"), value.get("ray")), ratio(value.get("tasuki"), value.get("mp"))]
        rows.append(row)
    return header, rows


def metric_child(metric: str) -> str:
    return METRICS[metric][3]


def text_table(header: list, rows: list) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    def line(r):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def markdown_table(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def metrics_of(children: list, metric_filter: set) -> list:
    return [m for m in METRICS if METRICS[m][3] in children and m in metric_filter]


# --- the machine --------------------------------------------------------------------------------
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import psutil
        mem = f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB"
    except ImportError:
        mem = "?"
    versions = {"python": platform.python_version()}
    for mod in ("tasuki", "ray", "dask", "distributed", "loky", "numpy", "zmq", "cloudpickle"):
        versions[mod] = package_version(mod)
    commit = git(["rev-parse", "--short", "HEAD"])
    dirty = git(["status", "--porcelain", "--", "runtime"])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": platform.platform(),
            "versions": versions, "tasuki_commit": commit + (" (+ uncommitted changes in runtime/)" if dirty else "")}


def package_version(name: str) -> str:
    if name == "tasuki":
        try:
            with open(os.path.join(REPO, "runtime", "tasuki", "__init__.py")) as f:
                return next(l.split('"')[1] for l in f if l.startswith("__version__"))
        except (OSError, StopIteration, IndexError):
            return "?"
    from importlib import metadata
    try:
        return metadata.version({"zmq": "pyzmq"}.get(name, name))
    except metadata.PackageNotFoundError:
        return "not installed"


def git(args: list) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


# --- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, -args.nice)     # the children inherit it
    sizes = dict(SIZES["quick" if args.quick else "default"])
    sizes["burn_loops"] = calibrate_burn(sizes["burn_s"])
    info = machine()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run: other processes share these cores, "
              f"so the figures are noisier than usual")
    print(f"tasuki benchmarks — {datetime.date.today()}, {info['cpu']}, {info['cores']} cores, {info['memory']}, "
          f"Python {info['versions']['python']}; {args.repeats} repeat(s), median; runtimes: {', '.join(args.runtimes)}")
    results: dict = {}
    started = time.perf_counter()
    for workload in args.children:
        results[workload] = {}
        for runtime in args.runtimes:
            r = run_workload(runtime, workload, args, sizes_for(runtime, sizes))
            results[workload][runtime] = r
            if r["status"] != "unsupported":
                note = "" if r["status"] == "ok" else f"  {r['status'].upper()}: {r.get('error', '').splitlines()[0][:120]}"
                print(f"  [{workload} / {runtime}] {r['seconds']:.1f} s{note}", flush=True)
        header, rows = table_rows(results, metrics_of([workload], args.metric_filter), args.runtimes, sizes)
        if rows:
            print(f"\n== {workload}\n{text_table(header, rows)}\n", flush=True)
    elapsed = time.perf_counter() - started
    shown = metrics_of(args.children, args.metric_filter)
    merged_from = None
    if args.merge and os.path.exists(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        merged_from = previous.get("date")
        for workload, per in previous.get("results", {}).items():
            for runtime, r in per.items():
                results.setdefault(workload, {}).setdefault(runtime, r)
        args.children = [w for w in WORKLOAD_ORDER if w in results]
        args.metric_filter |= set(previous.get("metrics", {}))
        args.runtimes = [rt for rt in RUNTIMES if rt in args.runtimes or rt in previous.get("runtimes", [])]
        shown = metrics_of(args.children, args.metric_filter)

    header, rows = table_rows(results, shown, args.runtimes, sizes)
    print(f"== all results ({elapsed:.0f} s)\n{text_table(header, rows)}\n")
    print_failures([(rt, w, r) for w, per in results.items() for rt, r in per.items()])
    for w, rt, r in [(w, rt, r) for w, per in results.items() for rt, r in per.items() if r["status"] == "na"]:
        print(f"n/a: {rt} / {w}: {r['error'].splitlines()[0]}")

    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": info,
              "repeats": args.repeats, "quick": args.quick, "sizes": sizes, "runtimes": args.runtimes,
              "elapsed_s": round(elapsed, 1), "merged_into": merged_from, "nice": -args.nice, "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "metrics": {m: {"label": label(m, sizes), "unit": METRICS[m][1], "higher_is_better": METRICS[m][2]}
                          for m in shown},
              "results": results}
    md = None
    if args.markdown:
        md = (f"Measured {datetime.date.today()} on {info['cpu']}, {info['cores']} cores, {info['memory']}, "
              f"{info['os']}, Python {info['versions']['python']}; tasuki {info['tasuki_commit']}, "
              f"Ray {info['versions']['ray']}, Dask {info['versions']['distributed']}, loky {info['versions']['loky']}. "
              f"Each runtime with 2 workers, median of {args.repeats}; "
              f"ratios are tasuki's figure divided by the other's (for s, ms and MiB lower is better)."
              + (f" Rows {', '.join(args.workloads.split(','))} re-run into the results of {merged_from}."
                 if merged_from and args.workloads else "") + "\n\n"
              + markdown_table(header, rows) + "\n")
    write_report(report, args.out, md, "latest.md")
    return 0


def print_failures(results: list) -> None:
    """Each (runtime, workload, result) that failed or timed out, with its traceback and output tail."""
    failures = [(rt, w, r) for rt, w, r in results if r["status"] in ("fail", "timeout")]
    if failures:
        print("== failures")
    for rt, w, r in failures:
        print(f"--- {rt} / {w}: {r['status'].upper()}: {r.get('error', '')}")
        if r.get("traceback"):
            print(r["traceback"].rstrip())
        if r.get("log", "").strip():
            print("    child output (tail):\n" + "\n".join("    " + l for l in r["log"].rstrip().splitlines()[-15:]))
    if failures:
        print()


def write_report(report: dict, out: str, markdown: str | None, markdown_name: str) -> None:
    """The JSON report at `out`; the markdown table, when asked for, beside it as `markdown_name`."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {out}")
    if markdown is not None:
        md_path = os.path.join(os.path.dirname(os.path.abspath(out)), markdown_name)
        with open(md_path, "w") as f:
            f.write(markdown)
        print(f"\n{markdown}\nwrote {md_path}")


if __name__ == "__main__":
    sys.exit(main())

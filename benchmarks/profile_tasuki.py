"""Where tasuki's time goes, per process: py-spy on the driver, the head, the node agent and workers.

    python benchmarks/profile_tasuki.py noop            # 5,000 no-op tasks submitted then gathered, looped
    python benchmarks/profile_tasuki.py sequential      # submit + get, one at a time, looped
    python benchmarks/profile_tasuki.py actor           # get(a.m.remote()) on a trivial method, looped
    python benchmarks/profile_tasuki.py noop --seconds 20 --rate 200 --top 20

It starts a driver (this file, --drive) that runs the workload in a loop, finds the cluster's
processes below it (head, node agent, zygote, workers), and for --seconds runs `py-spy record
--nonblocking --threads --format raw` on each of them at once, while psutil counts each process's
CPU seconds (user + system: C code and syscalls included, which py-spy's Python stacks do not
show). It prints, per process: CPU seconds and share, the samples per thread, and the top
functions by self samples (the innermost Python frame: for a C call, the Python function making
it) and by inclusive samples. By default only the thread holding the GIL is sampled (`py-spy
--gil`): that is where each process spends its Python time. With --all-active every thread
that is running or runnable is sampled; on a busy 2-core machine a runnable thread may be waiting
for a core, so wake-up points (Condition.wait, queue.get, poll) then look busier than they are.

The raw stacks stay in benchmarks/results/profile-<workload>/ (fold them into a flame graph with
any collapsed-stack tool, for example `flamegraph.pl`, or re-record with `--format speedscope`).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
THREAD_NAMES: dict[int, str] = {}       # native thread id -> Python thread name, from py-spy's stacks
PLUMBING = {"<module>", "_run_code", "_run_module_as_main", "Thread.run", "Thread._bootstrap_inner",
            "Thread._bootstrap"}


# --- the driver ---------------------------------------------------------------------------------
def noop(*args):
    return None


class Echo:
    def m(self):
        return None


def drive(workload: str, seconds: float) -> None:
    sys.path.insert(0, os.path.join(REPO, "runtime"))
    import tasuki
    tasuki.init(num_cpus=2)
    f = tasuki.remote(noop)
    tasuki.get([f.remote(i) for i in range(500)])
    actor = tasuki.remote(Echo).remote()
    tasuki.get([actor.m.remote() for _ in range(200)])
    print("READY", flush=True)
    deadline, done, started = time.time() + seconds, 0, time.perf_counter()
    while time.time() < deadline:
        if workload == "noop":
            tasuki.get([f.remote(i) for i in range(5000)])
            done += 5000
        elif workload == "actor":
            for _ in range(100):
                tasuki.get(actor.m.remote())
            done += 100
        else:
            for i in range(100):
                tasuki.get(f.remote(i))
            done += 100
    elapsed = time.perf_counter() - started
    print(f"DONE {done} tasks in {elapsed:.1f} s: {done / elapsed:,.0f}/s (under py-spy)", flush=True)
    tasuki.shutdown()


# --- the profiler -------------------------------------------------------------------------------
def roles(driver_pid: int) -> dict[int, str]:
    """pid -> role for the driver and every process below it."""
    import psutil
    driver = psutil.Process(driver_pid)
    out = {driver_pid: "driver"}
    node_pid = zygote_pid = None
    procs = driver.children(recursive=True)
    for p in procs:
        cmd = " ".join(p.cmdline())
        if "tasuki.head" in cmd:
            out[p.pid] = "head"
        elif "tasuki.node" in cmd and p.ppid() == driver_pid:
            out[p.pid] = "node"
            node_pid = p.pid
    for p in procs:
        if node_pid and p.ppid() == node_pid:
            out[p.pid] = "zygote"
            zygote_pid = p.pid
    n = 0
    for p in procs:
        if p.pid not in out:
            n += 1
            out[p.pid] = f"worker{n}" if zygote_pid and p.ppid() == zygote_pid else f"other{n}"
    return out


def cpu_seconds(pids) -> dict[int, float]:
    import psutil
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = 0.0
    return out


def thread_cpu(pids) -> dict[int, dict[int, tuple[float, float]]]:
    """pid -> {thread id: (user s, system s)}: zmq's own IO threads included."""
    import psutil
    out = {}
    for pid in pids:
        try:
            out[pid] = {t.id: (t.user_time, t.system_time) for t in psutil.Process(pid).threads()}
        except psutil.Error:
            out[pid] = {}
    return out


def os_thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def parse_raw(path: str):
    """py-spy raw output: 'thread (0x..);frame;frame;... count' per line, outermost frame first."""
    self_counts, incl_counts, threads = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                count = int(count)
            except ValueError:
                continue
            frames = stack.split(";")
            thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
            frames = [fr for fr in frames if not fr.startswith(("thread (", "process "))]
            names = [short(fr) for fr in frames]
            total += count
            threads[thread_name(thread)] += count
            m = re.match(r"thread \((?:0x)?(\d+)\)", thread)
            if m:
                THREAD_NAMES[int(m.group(1))] = thread_name(thread)
            if names:
                self_counts[names[-1]] += count
                for name in set(names):
                    if name.split(" (")[0] not in PLUMBING:
                        incl_counts[name] += count
    return total, threads, self_counts, incl_counts


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3", "runtime/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            path = path.split("/", 1)[1] if marker == "lib/python3" and "/" in path else path
    return f"{m.group('fn')} ({path})"


def thread_name(frame: str) -> str:
    m = re.search(r'"([^"]+)"', frame)
    if m:
        return m.group(1)
    return frame.split(": ", 1)[1] if ": " in frame else frame


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workload", choices=["noop", "sequential", "actor"])
    p.add_argument("--seconds", type=float, default=15.0, help="how long py-spy records")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=12, help="functions shown per process")
    p.add_argument("--all-active", action="store_true",
                   help="sample every running or runnable thread, not only the one holding the GIL")
    p.add_argument("--nice", type=int, default=0, metavar="N", help="run at priority -N (root only)")
    p.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help="folder for the raw stacks (default benchmarks/results/profile-WORKLOAD)")
    args = p.parse_args(argv)
    if args.drive:
        drive(args.workload, args.seconds)
        return 0
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, -args.nice)
    if not shutil.which("py-spy"):
        sys.exit("py-spy is not installed: pip install py-spy")
    out_dir = args.out or os.path.join(HERE, "results", f"profile-{args.workload}")
    os.makedirs(out_dir, exist_ok=True)
    driver = subprocess.Popen([sys.executable, os.path.abspath(__file__), args.workload, "--drive",
                               "--seconds", str(args.seconds + 6)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert driver.stdout.readline().strip() == "READY", "the driver did not start"
    time.sleep(1.0)
    pids = roles(driver.pid)
    print(f"profiling {args.workload} for {args.seconds:.0f} s at {args.rate} Hz: "
          + ", ".join(f"{role}={pid}" for pid, role in pids.items()))
    spies = {}
    for pid, role in pids.items():
        raw = os.path.join(out_dir, f"{role}.txt")
        spies[pid] = (raw, subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate),
             "--format", "raw", "--threads", "--nonblocking", "--output", raw]
            + ([] if args.all_active else ["--gil"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    cpu0, threads0, t0 = cpu_seconds(pids), thread_cpu(pids), time.perf_counter()
    time.sleep(args.seconds)
    cpu1, threads1, wall = cpu_seconds(pids), thread_cpu(pids), time.perf_counter() - t0
    names = {pid: {tid: os_thread_name(pid, tid) for tid in threads1[pid]} for pid in pids}
    for pid, (raw, spy) in spies.items():
        _, err = spy.communicate(timeout=60)
        if spy.returncode:
            print(f"py-spy on {pids[pid]} ({pid}) failed: {err.strip()[-300:]}")
    print(driver.stdout.read().strip())
    driver.wait(30)

    total_cpu = sum(cpu1[pid] - cpu0[pid] for pid in pids)
    print(f"\nCPU seconds over {wall:.1f} s of wall time (2 cores = {2 * wall:.1f} CPU s available): "
          f"{total_cpu:.1f} used by tasuki's processes (py-spy's own sampling excluded)")
    for pid, role in pids.items():
        raw = spies[pid][0]
        cpu = cpu1[pid] - cpu0[pid]
        print(f"\n=== {role} (pid {pid}): {cpu:.2f} CPU s = {100 * cpu / wall:.0f}% of a core, "
              f"{100 * cpu / total_cpu if total_cpu else 0:.0f}% of the cluster's CPU")
        if not os.path.exists(raw) or os.path.getsize(raw) == 0:
            print("  (no active samples)")
            continue
        total, threads, self_counts, incl = parse_raw(raw)
        per_thread = []
        for tid, (u1, s1) in threads1[pid].items():
            u0, s0 = threads0[pid].get(tid, (0.0, 0.0))
            if u1 - u0 + s1 - s0 >= 0.01:
                per_thread.append((u1 - u0 + s1 - s0, s1 - s0, THREAD_NAMES.get(tid, names[pid][tid])))
        print("  CPU s by thread (of which system): " + ", ".join(
            f"{name} {cpu:.2f} ({sys_:.2f})" for cpu, sys_, name in sorted(per_thread, reverse=True)))
        print("  samples by thread: " + ", ".join(f"{t} {n} ({100 * n / total:.0f}%)"
                                                         for t, n in threads.most_common(4)))
        print(f"  top functions, self ({total} samples{'' if args.all_active else ' holding the GIL'}):")
        for name, n in self_counts.most_common(args.top):
            print(f"    {100 * n / total:5.1f}%  {name}")
        print("  top functions, inclusive:")
        for name, n in incl.most_common(args.top):
            print(f"    {100 * n / total:5.1f}%  {name}")
    print(f"\nraw stacks: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

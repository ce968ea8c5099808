"""A head killed with SIGKILL and restarted at the same address rebuilds its state from the
processes that rejoin it (recovery.py): the driver's job finishes with correct results, a stored
object put before the crash is still readable, a named actor is found again by name with its state.

Each test prints the time from the new head's start to the first task completing after it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from conftest import CliCluster, free_port, wait_until

RECONNECT_S = 60


def start_cluster(tmp_path) -> CliCluster:
    cluster = CliCluster(tmp_path / "session")
    cluster.env["TASUKI_HEAD_RECONNECT_S"] = str(RECONNECT_S)
    cluster.port = free_port()
    cluster.cli("start", "--head", "--port", str(cluster.port), "--node-ip-address", "127.0.0.1",
                "--metrics-port", "0", "--num-cpus", "2", "--object-store-memory", "512M")
    return cluster


def restart_head(cluster: CliCluster) -> tuple[subprocess.Popen, float]:
    """SIGKILL the head and start another at the same address with the same token (as a supervisor
    or Kubernetes would); returns it and when it started."""
    info = cluster.info
    os.kill(info["head_pid"], signal.SIGKILL)
    started = time.time()
    head = subprocess.Popen([sys.executable, "-m", "tasuki.head", "--address", info["address"]],
                            env={**cluster.env, "TASUKI_TOKEN": info["token"]}, stdin=subprocess.DEVNULL)
    return head, started


def driver(cluster: CliCluster, script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env={**cluster.env},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def proc_stdin_write(proc: subprocess.Popen) -> None:
    """Let the driver go on (it waits on a line of its stdin)."""
    proc.stdin.write("go\n")
    proc.stdin.flush()


def read_line(proc: subprocess.Popen, prefix: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise AssertionError(f"no line {prefix!r} from the driver; its stderr:\n{proc.stderr.read()[-4000:]}")


def test_a_driver_in_the_middle_of_tasks_finishes_after_the_head_restarts(tmp_path):
    cluster = start_cluster(tmp_path)
    head = None
    try:
        proc = driver(cluster, """
            import time, tasuki
            tasuki.init(address="auto")
            @tasuki.remote
            def square(i):
                time.sleep(0.01)
                return i * i
            refs = [square.remote(i) for i in range(1000)]
            done, pending = tasuki.wait(refs, num_returns=100)
            print("HALF", flush=True)
            while pending:
                ready, pending = tasuki.wait(pending, num_returns=1)
                print("AT", time.time(), flush=True)
            print("SUM", sum(tasuki.get(refs)), flush=True)
        """)
        read_line(proc, "HALF")
        head, started = restart_head(cluster)
        while True:
            at = float(read_line(proc, "AT"))
            if at > started:
                print(f"\nhead restart -> first task completing: {at - started:.2f} s")
                break
        assert int(read_line(proc, "SUM")) == sum(i * i for i in range(1000))
        assert proc.wait(60) == 0
    finally:
        if head is not None:
            head.kill()
            head.wait()
        cluster.stop()


def test_a_head_killed_twice_in_a_row(tmp_path):
    cluster = start_cluster(tmp_path)
    heads = []
    try:
        proc = driver(cluster, """
            import time, tasuki
            tasuki.init(address="auto")
            @tasuki.remote
            def square(i):
                time.sleep(0.01)
                return i * i
            refs = [square.remote(i) for i in range(600)]
            for count in (100, 200):
                done, pending = tasuki.wait(refs, num_returns=count)
                print("DONE", count, flush=True)
            print("SUM", sum(tasuki.get(refs)), flush=True)
        """)
        for count in ("100", "200"):
            assert read_line(proc, "DONE") == count
            head, _ = restart_head(cluster)
            heads.append(head)
            info = cluster.info
            info["head_pid"] = head.pid             # the next SIGKILL goes to this one
            with open(os.path.join(cluster.tmpdir, "cluster.json"), "w") as f:
                json.dump(info, f)
        assert int(read_line(proc, "SUM")) == sum(i * i for i in range(600))
        assert proc.wait(60) == 0
    finally:
        for head in heads:
            head.kill()
            head.wait()
        cluster.stop()


def test_a_stored_object_put_before_the_crash_is_still_readable(tmp_path):
    cluster = start_cluster(tmp_path)
    head = None
    try:
        proc = driver(cluster, """
            import sys, time, numpy as np, tasuki
            tasuki.init(address="auto")
            ref = tasuki.put(np.arange(25_000_000, dtype=np.int64))      # 200 MB
            @tasuki.remote
            def total(a):
                return int(a.sum())
            print("PUT", flush=True)
            sys.stdin.readline()                 # the head is restarted meanwhile
            total = tasuki.get(total.remote(ref))
            print("AT", time.time(), total, flush=True)
            print("LOCAL", int(tasuki.get(ref)[-1]), flush=True)
        """)
        read_line(proc, "PUT")
        head, started = restart_head(cluster)
        proc_stdin_write(proc)
        at, total = read_line(proc, "AT").split()
        print(f"\nhead restart -> first task completing (reading the 200 MB object): {float(at) - started:.2f} s")
        assert int(total) == sum(range(25_000_000))
        assert int(read_line(proc, "LOCAL")) == 25_000_000 - 1
        assert proc.wait(60) == 0
    finally:
        if head is not None:
            head.kill()
            head.wait()
        cluster.stop()


def test_a_named_actor_is_found_again_by_name_with_its_state(tmp_path):
    cluster = start_cluster(tmp_path)
    head = None
    try:
        proc = driver(cluster, """
            import sys, time, tasuki
            tasuki.init(address="auto", namespace="recovery")
            @tasuki.remote
            class Counter:
                def __init__(self):
                    self.n = 0
                def add(self, k):
                    self.n += k
                    return self.n
            counter = Counter.options(name="counter", lifetime="detached").remote()
            assert tasuki.get(counter.add.remote(5)) == 5
            print("READY", flush=True)
            sys.stdin.readline()
            print("DIRECT", tasuki.get(counter.add.remote(1)), flush=True)      # it knows the actor's address
            again = tasuki.get_actor("counter")
            n = tasuki.get(again.add.remote(10))
            print("AT", time.time(), n, flush=True)
        """)
        read_line(proc, "READY")
        head, started = restart_head(cluster)
        proc_stdin_write(proc)
        assert read_line(proc, "DIRECT") == "6"
        at, n = read_line(proc, "AT").split()
        print(f"\nhead restart -> first actor call through get_actor completing: {float(at) - started:.2f} s")
        assert n == "16"
        assert proc.wait(60) == 0
    finally:
        if head is not None:
            head.kill()
            head.wait()
        cluster.stop()


def test_an_object_whose_node_did_not_come_back_is_reported_lost(tmp_path):
    cluster = start_cluster(tmp_path)
    head = None
    try:
        node_id, node_pid = cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"far": 1}')
        proc = driver(cluster, """
            import sys, numpy as np, tasuki
            tasuki.init(address="auto")
            @tasuki.remote(resources={"far": 1})
            def make():
                return np.ones(2_000_000)            # 16 MB: stored on the far node
            ref = make.remote()
            tasuki.wait([ref])
            print("MADE", flush=True)
            sys.stdin.readline()
            try:
                tasuki.get(ref, timeout=60)
            except tasuki.exceptions.ObjectLostError as e:
                print("LOST", str(e).replace("\\n", " "), flush=True)
        """)
        read_line(proc, "MADE")
        os.kill(node_pid, signal.SIGKILL)
        head, _ = restart_head(cluster)
        proc_stdin_write(proc)
        lost = read_line(proc, "LOST")
        assert node_id in lost and "did not rejoin the restarted head" in lost, lost
        assert proc.wait(60) == 0
    finally:
        if head is not None:
            head.kill()
            head.wait()
        cluster.stop()

"""A head killed with SIGKILL at a random moment and restarted at the same address rebuilds its
state from the processes that rejoin it (recovery.py): the driver's job finishes with correct
results, a stored object put before the crash is still readable, named and detached actors are
found again by name with their state, and an object whose node died with the head is reported lost.

Each scenario runs once in the suite. The stress run repeats each one with a new random moment:

    HEAD_RECOVERY_STRESS_RUNS=20 .venv/bin/python -m pytest -s tests/test_head_recovery.py

Each run prints the moment of the SIGKILL (to reproduce a failure, note it) and a `FIGURE` line:
the time from the new head's start to the first task completing after it.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from conftest import CliCluster, free_port, wait_until

RECONNECT_S = 60
RUNS = int(os.environ.get("HEAD_RECOVERY_STRESS_RUNS", "1"))
repeated = pytest.mark.parametrize("run", range(RUNS))


@pytest.fixture
def cluster(tmp_path):
    """A cluster of a head and a node on 127.0.0.1 whose head the test kills and restarts
    (`restart_head`); stopped afterwards with every head started."""
    cluster = CliCluster(tmp_path / "session")
    cluster.env["TASUKI_HEAD_RECONNECT_S"] = str(RECONNECT_S)
    cluster.env["TASUKI_HEAD_EXPECT_RESTART"] = "1"        # as in a head pod: its SIGTERM leaves the cluster waiting
    cluster.port = free_port()
    cluster.heads = []
    cluster.cli("start", "--head", "--port", str(cluster.port), "--node-ip-address", "127.0.0.1",
                "--metrics-port", "0", "--num-cpus", "2", "--object-store-memory", "512M")
    yield cluster
    for head in cluster.heads:
        head.kill()
        head.wait()
    cluster.stop()


def kill_at_random(upto: float) -> None:
    """Let the job run for a random moment (the fault's timing, not a wait for a condition)."""
    delay = random.uniform(0, upto)
    print(f"\nSIGKILL of the head after {delay:.3f} s")
    time.sleep(delay)


def restart_head(cluster: CliCluster, sig: signal.Signals = signal.SIGKILL, **env: str) -> float:
    """SIGKILL the head (or send it `sig`, and wait for it to exit) and start another at the same
    address with the same token (as a supervisor or Kubernetes would; `env`: more of its environment);
    returns when it started. cluster.json names the new head (the next signal goes to it), and the
    `cluster` fixture stops it."""
    info = cluster.info
    os.kill(info["head_pid"], sig)
    wait_until(lambda: not psutil.pid_exists(info["head_pid"]) or
               psutil.Process(info["head_pid"]).status() == psutil.STATUS_ZOMBIE, 30, "the old head to exit")
    started = time.time()
    head = subprocess.Popen([sys.executable, "-m", "tasuki.head", "--address", info["address"]],
                            env={**cluster.env, "TASUKI_TOKEN": info["token"], **env}, stdin=subprocess.DEVNULL)
    info["head_pid"] = head.pid
    cluster.heads.append(head)
    with open(os.path.join(cluster.tmpdir, "cluster.json"), "w") as f:
        json.dump(info, f)
    return started


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


def finish(proc: subprocess.Popen, timeout: float = 180) -> dict[str, list[str]]:
    """Wait for the driver to exit 0; its output lines by their first word."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the driver did not finish in {timeout} s; its stderr:\n{err[-4000:]}") from None
    assert proc.returncode == 0, f"the driver exited {proc.returncode}; its stderr:\n{err[-4000:]}"
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        word, _, rest = line.partition(" ")
        lines.setdefault(word, []).append(rest)
    return lines


def report_first_completion(scenario: str, lines: dict, started: float) -> None:
    """Print the time from the new head's start to the first AT line after it (none: the job ended first)."""
    after = [float(at.split()[0]) - started for at in lines.get("AT", []) if float(at.split()[0]) > started]
    print(f"FIGURE {scenario} {min(after):.3f}" if after else f"FIGURE {scenario} none (the job ended before)")


TASKS_DRIVER = """
    import time, tasuki
    tasuki.init(address="auto")
    @tasuki.remote
    def square(i):
        time.sleep(0.01)
        return i * i
    refs = [square.remote(i) for i in range(1000)]
    print("SUBMITTED", flush=True)
    pending = refs
    while pending:
        ready, pending = tasuki.wait(pending, num_returns=1)
        print("AT", time.time(), flush=True)
    print("SUM", sum(tasuki.get(refs)), flush=True)
"""


@repeated
def test_a_driver_in_the_middle_of_tasks_finishes_after_the_head_restarts(cluster, run):
    proc = driver(cluster, TASKS_DRIVER)
    read_line(proc, "SUBMITTED")
    kill_at_random(4.0)           # 1,000 tasks of 10 ms on 2 CPUs: about 5 s
    started = restart_head(cluster)
    lines = finish(proc)
    assert lines["SUM"] == [str(sum(i * i for i in range(1000)))]
    report_first_completion("tasks", lines, started)


def test_a_head_pod_stopped_with_sigterm_leaves_its_cluster_waiting_for_the_next_head(cluster):
    """Kubernetes evicts or deletes a head pod with SIGTERM; with TASUKI_HEAD_EXPECT_RESTART (the
    operator's head pods set it) the head exits without stopping its nodes and drivers, which rejoin
    the next head: the job finishes (without it, SIGTERM stops the whole cluster: test_drain.py)."""
    proc = driver(cluster, TASKS_DRIVER)
    read_line(proc, "SUBMITTED")
    started = restart_head(cluster, signal.SIGTERM)
    lines = finish(proc)
    assert lines["SUM"] == [str(sum(i * i for i in range(1000)))]
    report_first_completion("sigterm", lines, started)


def test_a_node_leaving_after_its_head_went_away_for_a_restart_exits_at_once(cluster):
    """A Cluster deleted on Kubernetes: every pod gets SIGTERM. The head (TASUKI_HEAD_EXPECT_RESTART)
    tells its nodes it is going away (HEAD_RESTARTING); a node agent then told to leave has no one to
    drain for and exits at once, not after LEAVE_HEAD_SILENCE_S (10 s) of silence."""
    node_id, node_pid = cluster.add_node("127.0.0.2", "--num-cpus", "1")
    head_pid = cluster.info["head_pid"]
    os.kill(head_pid, signal.SIGTERM)
    wait_until(lambda: not psutil.pid_exists(head_pid) or psutil.Process(head_pid).status() == psutil.STATUS_ZOMBIE,
               30, "the head to exit")
    os.kill(node_pid, signal.SIGTERM)
    started = time.monotonic()
    wait_until(lambda: not psutil.pid_exists(node_pid) or psutil.Process(node_pid).status() == psutil.STATUS_ZOMBIE,
               30, f"node agent {node_id} to exit")
    assert time.monotonic() - started < 8, f"the node agent took {time.monotonic() - started:.1f} s to exit"


@repeated
def test_tasks_running_when_the_head_dies_run_on_and_are_not_run_again(cluster, tmp_path, run):
    """The busy workers rejoin with their tasks; once the driver re-sends the specs, the new head
    adopts each task on its worker (recovery.ADOPT_TASK) instead of killing it and running it again."""
    runs = tmp_path / "runs"
    runs.mkdir()
    proc = driver(cluster, f"""
        import os, time, tasuki
        tasuki.init(address="auto")
        @tasuki.remote
        def slow(i):
            open(os.path.join({str(runs)!r}, f"{{i}}-{{os.getpid()}}"), "w").close()
            time.sleep(3)
            return i
        refs = [slow.remote(i) for i in range(2)]           # 2 CPUs: both run at once
        for ref in refs:
            value = tasuki.get(ref)
            print("AT", time.time(), value, flush=True)        # (the time once the result is here)
    """)
    wait_until(lambda: len(list(runs.iterdir())) == 2, 60, "both tasks to start")
    kill_at_random(2.0)
    started = restart_head(cluster)
    lines = finish(proc)
    assert [at.split()[1] for at in lines["AT"]] == ["0", "1"]
    assert sorted(p.name.split("-")[0] for p in runs.iterdir()) == ["0", "1"]     # each ran once
    report_first_completion("running", lines, started)


@repeated
def test_a_head_killed_twice_in_a_row(cluster, run):
    proc = driver(cluster, TASKS_DRIVER)
    read_line(proc, "SUBMITTED")
    for _ in range(2):
        kill_at_random(2.0)
        started = restart_head(cluster)
    lines = finish(proc)
    assert lines["SUM"] == [str(sum(i * i for i in range(1000)))]
    report_first_completion("twice", lines, started)


@repeated
def test_a_stored_object_put_before_the_crash_is_still_readable(cluster, run):
    proc = driver(cluster, """
        import sys, threading, time, numpy as np, tasuki
        tasuki.init(address="auto")
        @tasuki.remote
        def total(a):
            return int(a.sum())
        print("STARTED", flush=True)
        ref = tasuki.put(np.arange(25_000_000, dtype=np.int64))      # 200 MB
        go_on = threading.Thread(target=sys.stdin.readline)          # until the head is restarted
        go_on.start()
        while go_on.is_alive():
            result = tasuki.get(total.remote(ref))
            print("AT", time.time(), result, flush=True)
        result = tasuki.get(total.remote(ref))
        print("AT", time.time(), result, flush=True)
        print("LOCAL", int(tasuki.get(ref)[-1]), flush=True)
    """)
    read_line(proc, "STARTED")
    kill_at_random(2.0)           # before, during or after the put, or while tasks read it
    started = restart_head(cluster)
    proc_stdin_write(proc)
    lines = finish(proc)
    assert {at.split()[1] for at in lines["AT"]} == {str(sum(range(25_000_000)))}
    assert lines["LOCAL"] == [str(25_000_000 - 1)]
    report_first_completion("put", lines, started)


@repeated
def test_named_and_detached_actors_are_found_again_by_name_with_their_state(cluster, run):
    proc = driver(cluster, """
        import sys, threading, time, tasuki
        tasuki.init(address="auto", namespace="recovery")
        @tasuki.remote(num_cpus=0.5)
        class Counter:
            def __init__(self):
                self.n = 0
            def add(self, k):
                self.n += k
                return self.n
        named = Counter.options(name="named").remote()
        detached = Counter.options(name="detached", lifetime="detached").remote()
        assert tasuki.get([named.add.remote(1), detached.add.remote(2)]) == [1, 2]
        print("STARTED", flush=True)
        go_on = threading.Thread(target=sys.stdin.readline)          # until the head is restarted
        go_on.start()
        i = 1
        while go_on.is_alive():                    # calls go to the actors directly
            i += 1
            assert tasuki.get([named.add.remote(1), detached.add.remote(2)]) == [i, 2 * i]
            print("AT", time.time(), flush=True)
        for name, k in (("named", 1), ("detached", 2)):
            n = tasuki.get(tasuki.get_actor(name).add.remote(k))
            print("AT", time.time(), flush=True)
            print("FOUND", name, n, i + 1, flush=True)
    """)
    read_line(proc, "STARTED")
    kill_at_random(1.5)
    started = restart_head(cluster)
    proc_stdin_write(proc)
    lines = finish(proc)
    (named, n, calls), (detached, m, _) = (found.split() for found in lines["FOUND"])
    assert (named, detached) == ("named", "detached") and (int(n), int(m)) == (int(calls), 2 * int(calls))
    report_first_completion("actors", lines, started)


def test_an_actor_found_again_restarts_from_the_spec_its_creator_re_sends(cluster):
    """The driver re-sends the creation specs of its actors: an actor found again through its worker
    may restart after the head's restart (max_restarts), from its constructor's arguments."""
    proc = driver(cluster, """
        import os, signal, sys, tasuki
        tasuki.init(address="auto", namespace="recovery")
        @tasuki.remote(max_restarts=1, num_cpus=0.5)
        class Counter:
            def __init__(self, start):
                self.n = start
            def add(self, k):
                self.n += k
                return self.n
            def pid(self):
                return os.getpid()
        counter = Counter.options(name="counter").remote(10)
        assert tasuki.get(counter.add.remote(1)) == 11
        pid = tasuki.get(counter.pid.remote())
        print("READY", flush=True)
        sys.stdin.readline()
        tasuki.get_actor("counter")         # the head knows the actor again (and the driver rejoined)
        print("FOUND", flush=True)
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                print("AFTER", tasuki.get(counter.add.remote(1)), flush=True)
                break
            except tasuki.exceptions.ActorDiedError:
                pass                        # restarting
    """)
    read_line(proc, "READY")
    restart_head(cluster)
    proc_stdin_write(proc)
    read_line(proc, "FOUND", 60)
    lines = finish(proc, 60)
    assert lines["AFTER"] == ["11"]          # restarted with start=10


@repeated
def test_an_object_whose_node_did_not_come_back_is_reported_lost(cluster, run):
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
    kill_at_random(1.0)           # before or after the head sees the node go
    restart_head(cluster)
    proc_stdin_write(proc)
    lost = read_line(proc, "LOST")
    assert node_id in lost and ("did not rejoin the restarted head" in lost or "declared dead" in lost), lost
    assert proc.wait(60) == 0


def test_a_standing_request_resources_is_re_sent_to_the_restarted_head(cluster):
    """request_resources() outlives the head: the driver that made it re-sends it when it rejoins,
    so the autoscaler keeps the capacity asked for (/api/v1/demand's "requested")."""
    proc = driver(cluster, """
        import json, sys, tasuki
        from tasuki.api import _get_client
        from tasuki.autoscaler import request_resources
        tasuki.init(address="auto")
        request_resources(bundles=[{"CPU": 4}] * 3)
        print("ASKED", flush=True)
        sys.stdin.readline()                  # the head is restarted meanwhile
        print("REQUESTED", json.dumps(_get_client().query("demand")["requested"]), flush=True)
    """)
    read_line(proc, "ASKED")
    restart_head(cluster)
    proc_stdin_write(proc)
    lines = finish(proc)
    assert json.loads(lines["REQUESTED"][0]) == [{"shape": {"CPU": 4.0}, "count": 3}]


@repeated
def test_actor_calls_with_stored_results_in_flight_when_the_head_dies(cluster, run):
    """An actor's large results are stored on its node and their location reaches the caller through
    the head: the calls in flight when the head dies are registered again by their caller (ACTOR_CALLS)
    and their results re-announced by the actor's worker, so every call's result arrives."""
    proc = driver(cluster, """
        import time, numpy as np, tasuki
        tasuki.init(address="auto")
        @tasuki.remote(num_cpus=0.5)
        class Maker:
            def make(self, i):
                time.sleep(0.05)
                return np.full(500_000, i)          # 4 MB: stored, not inline
        maker = Maker.remote()
        tasuki.get(maker.make.remote(0))
        print("STARTED", flush=True)
        refs = [maker.make.remote(i) for i in range(60)]      # about 3 s of calls
        for i, ref in enumerate(refs):
            value = tasuki.get(ref, timeout=120)
            assert value.shape == (500_000,) and (value == i).all(), (i, value[:3])
            print("AT", time.time(), flush=True)
        print("DONE", len(refs), flush=True)
    """)
    read_line(proc, "STARTED")
    kill_at_random(3.0)
    started = restart_head(cluster)
    lines = finish(proc)
    assert lines["DONE"] == ["60"]
    report_first_completion("actor-results", lines, started)


@repeated
def test_an_actor_being_constructed_when_the_head_dies_is_created(cluster, run):
    proc = driver(cluster, """
        import time, tasuki
        tasuki.init(address="auto")
        @tasuki.remote(num_cpus=0.5)
        class Slow:
            def __init__(self, start):
                time.sleep(2)
                self.n = start
            def add(self, k):
                self.n += k
                return self.n
        slow = Slow.remote(100)
        print("STARTED", flush=True)
        value = tasuki.get(slow.add.remote(1), timeout=120)
        print("AT", time.time(), value, flush=True)
    """)
    read_line(proc, "STARTED")
    kill_at_random(2.0)            # while it is placed or constructed
    started = restart_head(cluster)
    lines = finish(proc)
    assert [at.split()[1] for at in lines["AT"]] == ["101"]
    report_first_completion("constructing", lines, started)


def test_a_task_output_lost_after_the_restart_is_reported_with_why_it_cannot_be_recomputed(cluster):
    """Lineage lives in the head's memory: a new head learns only the tasks still without results,
    so an output whose node dies after the restart cannot be recomputed, and the error says so."""
    node_id, node_pid = cluster.add_node("127.0.0.2", "--num-cpus", "1", "--resources", '{"far": 1}')
    proc = driver(cluster, """
        import sys, time, numpy as np, tasuki
        tasuki.init(address="auto")
        @tasuki.remote(resources={"far": 1})
        def make():
            return np.ones(2_000_000)            # 16 MB: stored on the far node
        ref = make.remote()
        tasuki.wait([ref])
        print("MADE", flush=True)
        sys.stdin.readline()                     # the head restarted
        while not any(n["Alive"] and "far" in n["Resources"] for n in tasuki.nodes()):
            time.sleep(0.1)                      # until the far node rejoined it (a get now would copy the object here)
        print("REJOINED", flush=True)
        sys.stdin.readline()                     # the far node was killed
        try:
            tasuki.get(ref, timeout=60)
        except tasuki.exceptions.ObjectLostError as e:
            print("LOST", str(e).replace("\\n", " "), flush=True)
    """)
    read_line(proc, "MADE")
    restart_head(cluster)
    proc_stdin_write(proc)
    read_line(proc, "REJOINED")
    os.kill(node_pid, signal.SIGKILL)
    proc_stdin_write(proc)
    lost = read_line(proc, "LOST")
    assert node_id in lost and "finished before the head restarted" in lost, lost
    assert proc.wait(60) == 0


def test_an_actor_whose_worker_died_with_the_head_is_created_again(cluster):
    """The head and the actor's worker die together: the creator re-sends the creation spec, no
    worker brings the actor back, and the sweep creates it again (its state is lost: a new instance)."""
    proc = driver(cluster, """
        import os, sys, time, tasuki
        tasuki.init(address="auto")
        @tasuki.remote(num_cpus=0.5)
        class Counter:
            def __init__(self, start):
                self.n = start
            def add(self, k):
                self.n += k
                return self.n
            def pid(self):
                return os.getpid()
        counter = Counter.remote(10)
        assert tasuki.get(counter.add.remote(5)) == 15
        print("PID", tasuki.get(counter.pid.remote()), flush=True)
        sys.stdin.readline()                   # its worker and the head are killed, a new head started
        while True:
            try:
                value = tasuki.get(counter.add.remote(1), timeout=60)
                break
            except tasuki.exceptions.ActorDiedError:
                time.sleep(0.2)                # (a call that reached the dead instance)
        print("AT", time.time(), value, flush=True)
        print("PIDNOW", tasuki.get(counter.pid.remote()), flush=True)
    """)
    pid = int(read_line(proc, "PID"))
    os.kill(pid, signal.SIGKILL)
    started = restart_head(cluster)
    proc_stdin_write(proc)
    lines = finish(proc)
    assert [at.split()[1] for at in lines["AT"]] == ["11"]          # created again from start=10: state lost
    assert lines["PIDNOW"] != [str(pid)]
    report_first_completion("recreated", lines, started)


def store_used(cluster: CliCluster) -> int:
    """Bytes in use in the cluster's object stores, as the nodes last reported them to the head."""
    probe = subprocess.run([sys.executable, "-c", "import tasuki; tasuki.init(address='auto'); "
                            "print(sum(n['ObjectStore']['used'] for n in tasuki.nodes() if n['Alive']))"],
                           env={**cluster.env}, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr[-2000:]
    return int(probe.stdout.split()[-1])


def test_an_object_no_process_claims_after_the_restart_is_freed(cluster):
    """Its driver died with the head: the copy its node reports when it rejoins belongs to nobody. Once
    every process of the old head could have rejoined (TASUKI_HEAD_RECONNECT_S after the first rejoin,
    plus the grace), the node frees it instead of keeping it for good."""
    proc = driver(cluster, """
        import sys, numpy as np, tasuki
        tasuki.init(address="auto")
        ref = tasuki.put(np.ones(100 * 2**20, dtype=np.uint8))      # 100 MiB in the node's store
        print("PUT", flush=True)
        sys.stdin.readline()
    """)
    read_line(proc, "PUT")
    wait_until(lambda: store_used(cluster) >= 100 * 2**20, 30, "the node to report the object stored")
    proc.kill()                     # the driver goes with the head, before the head notices
    proc.wait()
    restart_head(cluster, TASUKI_HEAD_RECONNECT_S="2")      # the new head lets go 2 + 6 s after the first rejoin
    wait_until(lambda: store_used(cluster) >= 100 * 2**20, 60, "the node to rejoin with the object")
    wait_until(lambda: store_used(cluster) < 2**20, 60, "the node to free the object nobody claimed")



def test_a_task_whose_owner_died_with_the_head_is_stopped_after_the_restart(cluster, tmp_path):
    """Its worker rejoins saying it runs the task and waits for the owner to re-send it (to adopt it);
    the owner never comes back, so once every process could have rejoined the worker is killed
    instead of running on for nobody."""
    pid_file = tmp_path / "pid"
    proc = driver(cluster, f"""
        import os, sys, time, tasuki
        tasuki.init(address="auto")
        @tasuki.remote
        def forever():
            with open({str(pid_file)!r}, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(3600)
        ref = forever.remote()
        print("SUBMITTED", flush=True)
        sys.stdin.readline()
    """)
    read_line(proc, "SUBMITTED")
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, "the task to start")
    worker = psutil.Process(int(pid_file.read_text()))
    proc.kill()
    proc.wait()
    restart_head(cluster, TASUKI_HEAD_RECONNECT_S="2")
    wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 60,
               f"the worker (pid {worker.pid}) running the orphaned task to be killed")

"""The head frees a job's functions when its driver ends (keeping those a live actor needs): many
drivers that each ship a large closure leave the head no larger."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil

import tasuki
from tasuki.exceptions import ActorDiedError
from conftest import wait_until

MB = 1 << 20
DRIVERS = 20
GROWTH_LIMIT = 20 * MB

BIG_CLOSURE_DRIVER = textwrap.dedent("""
    import os
    import tasuki

    def closure_over(blob):
        return lambda: len(blob)

    tasuki.init(address="auto")
    blob = os.urandom(5 << 20)         # random bytes: every driver's function is a new 5 MB one
    assert tasuki.get(tasuki.remote(closure_over(blob)).remote(), timeout=120) == len(blob)
""")

DETACHED_DRIVER = textwrap.dedent("""
    import tasuki

    @tasuki.remote
    class Greeter:
        def __init__(self):
            self.calls = 0

        def greet(self, who):
            self.calls += 1
            return f"hello {who} ({self.calls})"

    tasuki.init(address="auto")
    greeter = Greeter.options(name="greeter", namespace="functions", lifetime="detached", max_restarts=1).remote()
    print(tasuki.get(greeter.greet.remote("first driver"), timeout=120))
""")


def run_drivers(cluster, tmp_path, source: str, count: int, parallel: int = 4) -> None:
    script = tmp_path / "driver.py"
    script.write_text(source)
    for start in range(0, count, parallel):
        procs = [subprocess.Popen([sys.executable, str(script)], env=cluster.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(min(parallel, count - start))]
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err


def head_rss(cluster) -> int:
    return psutil.Process(cluster.info["head_pid"]).memory_info().rss


def drivers_connected() -> int:
    return tasuki.api._get_client().query("status")["drivers"]


def test_the_head_frees_the_functions_of_drivers_that_ended(cli_cluster, tmp_path):
    tasuki.init(address="auto")
    try:
        run_drivers(cli_cluster, tmp_path, BIG_CLOSURE_DRIVER, 1)      # the head's one-off growth comes first
        wait_until(lambda: drivers_connected() == 1, 30, "the head to see the first driver go")
        baseline = head_rss(cli_cluster)
        run_drivers(cli_cluster, tmp_path, BIG_CLOSURE_DRIVER, DRIVERS)
        wait_until(lambda: drivers_connected() == 1, 30, "the head to see the other drivers go")
        wait_until(lambda: head_rss(cli_cluster) - baseline < GROWTH_LIMIT, 30,
                   f"the head's RSS to come back near its {baseline / MB:.0f} MB baseline "
                   f"(now {head_rss(cli_cluster) / MB:.0f} MB after {DRIVERS} drivers of a 5 MB closure each)")
    finally:
        tasuki.shutdown()


def test_a_detached_actor_keeps_its_class_after_its_driver_ends(cli_cluster, tmp_path):
    run_drivers(cli_cluster, tmp_path, DETACHED_DRIVER, 1)
    tasuki.init(address="auto")
    try:
        greeter = tasuki.get_actor("greeter", namespace="functions")
        assert tasuki.get(greeter.greet.remote("second driver"), timeout=60) == "hello second driver (2)"
        tasuki.kill(greeter, no_restart=False)      # the restart needs the class the first driver sent
        wait_until(lambda: _greet_after_restart(greeter), 60, "the detached actor to restart")
        assert tasuki.get(greeter.greet.remote("again"), timeout=60) == "hello again (2)"
        tasuki.kill(greeter)
    finally:
        tasuki.shutdown()


def _greet_after_restart(greeter) -> bool:
    try:
        return tasuki.get(greeter.greet.remote("restarted"), timeout=60) == "hello restarted (1)"
    except ActorDiedError:
        return False

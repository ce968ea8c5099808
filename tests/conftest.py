"""Shared fixtures: real clusters started with the `tasuki` command on loopback addresses.

`cli_cluster` (one per test module) runs `tasuki start --head` in a private TASUKI_TMPDIR, so its
cluster file, sockets and logs never clash with another cluster on this machine, and points this
process's TASUKI_TMPDIR there too, so `tasuki.init(address="auto")` in a test finds it. Its
finalizer runs `tasuki stop` and then kills anything still running with that TASUKI_TMPDIR in its
environment (workers included), so a failing test leaves no processes behind.

Wait on conditions with `wait_until` (a deadline), never on bare sleeps: these tests must pass on
a loaded two-core machine.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = str(ROOT / "runtime")
if RUNTIME not in sys.path:
    sys.path.insert(0, RUNTIME)

CLI_TIMEOUT_S = 120            # one `tasuki` command on a loaded machine
NODE_TIMEOUT_S = "3"           # the head declares a node dead after this many seconds without a heartbeat


def wait_until(predicate, timeout: float = 30.0, what: str = "a condition", interval: float = 0.02):
    """Call `predicate` until it returns something truthy (returned) or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def embedded_cluster(**init_options):
    """`tasuki.init(**init_options)` for a test module's fixture, shut down after it. Any earlier
    connection goes first: another module may have left this process connected elsewhere."""
    import tasuki
    tasuki.shutdown()
    tasuki.init(**init_options)
    try:
        yield tasuki
    finally:
        tasuki.shutdown()


# --- functions the tests run in workers (they travel by value, like any test module's) ---------
def wait_for_file(path: str, result=None, timeout: float = 60.0):
    """Block until `path` exists (the test's release), then return `result`."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)
    return result


@contextlib.contextmanager
def user_module(directory: Path, source: str):
    """A module of the user's own, written into `directory`, that only this process can import
    (as a script's neighbour is): workers get its functions by value or not at all."""
    name = f"user_helpers_{os.getpid()}_{directory.name}".replace("-", "_")
    (directory / f"{name}.py").write_text(source)
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop(name, None)


def array_sum_after_release(array, i: int, release: str) -> float:
    wait_for_file(release)
    return float(array.sum()) + i


def column_total(frame, column: str) -> float:
    return float(frame[column].sum())


def operator_healthy(proc: subprocess.Popen, port: int, logs) -> bool:
    """Whether an operator process started by a test answers 200 on /healthz; fails at once, with its
    log (`logs()`), if it exited."""
    assert proc.poll() is None, f"the operator exited with {proc.returncode}:\n{logs()}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def cluster_env(tmpdir: str) -> dict:
    """The environment of a `tasuki` command in its own session directory, free of the caller's cluster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASUKI_")}
    env["TASUKI_TMPDIR"] = tmpdir
    env["TASUKI_NODE_TIMEOUT"] = NODE_TIMEOUT_S
    env["PYTHONPATH"] = os.pathsep.join([RUNTIME, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_cli(env: dict, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tasuki", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"`tasuki {' '.join(args)}` exited with {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


class CliCluster:
    """A cluster started by `tasuki start` in its own TASUKI_TMPDIR."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = str(tmpdir)
        self.env = cluster_env(self.tmpdir)

    def cli(self, *args: str, check: bool = True, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
        return run_cli({**self.env, **(env or {})}, *args, check=check, **kwargs)

    def start_head(self, *flags: str) -> subprocess.CompletedProcess:
        return self.cli("start", "--head", "--port", str(free_port()), "--node-ip-address", "127.0.0.1",
                        "--metrics-port", "0", "--object-store-memory", "256M", *flags)

    def add_node(self, ip: str, *flags: str, env: dict | None = None) -> tuple[str, int]:
        """`tasuki start --address` a node agent on `ip`; returns its (node id, pid)."""
        out = self.cli("start", "--address", self.host_port, "--node-ip-address", ip,
                       "--object-store-memory", "256M", *flags, env=env).stdout
        match = re.search(r"Node (\w+) \(pid (\d+)", out)
        assert match, out
        return match.group(1), int(match.group(2))

    @property
    def info(self) -> dict:
        with open(os.path.join(self.tmpdir, "cluster.json")) as f:
            return json.load(f)

    @property
    def host_port(self) -> str:
        return self.info["address"].split("://", 1)[1]

    def processes(self) -> list:
        """Live processes started for this cluster (head, nodes, zygotes, workers), found by environment."""
        import psutil
        found = []
        for proc in psutil.process_iter(["pid", "status"]):
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            try:
                if proc.environ().get("TASUKI_TMPDIR") == self.tmpdir:
                    found.append(proc)
            except (psutil.Error, OSError):
                pass
        return found

    def stop(self) -> None:
        try:
            self.cli("stop", check=False)
        finally:
            for proc in self.processes():       # only if `tasuki stop` failed: leave nothing behind
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """A head started by `tasuki start --head --num-cpus 1` on 127.0.0.1, with this process pointed at it."""
    cluster = CliCluster(tmp_path_factory.mktemp("tasuki"))
    saved = {k: v for k, v in os.environ.items() if k.startswith("TASUKI_")}
    for key in saved:
        del os.environ[key]
    os.environ["TASUKI_TMPDIR"] = cluster.tmpdir
    try:
        cluster.start_head("--num-cpus", "1")
        yield cluster
    finally:
        import tasuki
        tasuki.shutdown()
        cluster.stop()
        os.environ.pop("TASUKI_TMPDIR", None)
        os.environ.update(saved)


@pytest.fixture
def driver(cli_cluster):
    """This process connected to `cli_cluster` as a driver (disconnected after the test)."""
    import tasuki
    tasuki.init(address=cli_cluster.host_port)
    try:
        yield tasuki
    finally:
        tasuki.shutdown()


@pytest.fixture
def connected(cluster):
    """A driver connected (address="auto") to the module's `cluster` fixture for one test."""
    import tasuki
    tasuki.init(address="auto")
    try:
        yield cluster
    finally:
        tasuki.shutdown()

"""The head survives what peers send it: user classes in task options (it never unpickles them),
malformed zmq frames from a peer holding the token, and hostile HTTP requests on its metrics port.

A CLI-started cluster on 127.0.0.1 (`--node-ip-address 127.0.0.1`); drivers that must define
their own classes in `__main__` run as scripts in subprocesses.
"""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import zmq

from conftest import RUNTIME, wait_until

import tasuki
from tasuki import protocol as P, transport


def run_script(cluster, source: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `source` as a driver script (`__main__`) connected to `cluster`; it must exit 0."""
    env = {**cluster.env, "PYTHONPATH": RUNTIME}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(source)], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"driver script failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


def head_log(cluster) -> str:
    with open(os.path.join(cluster.tmpdir, "logs", "head.log"), errors="replace") as f:
        return f.read()


def head_runs_a_task(cluster) -> None:
    """A fresh driver (a new job) still gets a task done: the head is alive and serving."""
    out = run_script(cluster, """
        import tasuki
        tasuki.init(address="auto")
        print("result", tasuki.get(tasuki.remote(lambda x: x + 1).remote(41), timeout=60))
    """, timeout=90)
    assert "result 42" in out.stdout


# --- item 10: user classes in options ----------------------------------------------------------------
def test_retry_exceptions_defined_in_the_driver_script(cli_cluster, tmp_path):
    out = run_script(cli_cluster, f"""
        import os, tasuki

        class CountError(Exception):
            pass

        class OtherError(Exception):
            pass

        def count(path):
            with open(path, "a") as f:
                f.write("x")
            return len(open(path).read())

        @tasuki.remote(max_retries=1, retry_exceptions=[CountError])
        def flaky(path, failures, error):
            runs = count(path)
            if runs <= failures:
                raise error(f"run {{runs}}")
            return runs

        tasuki.init(address="auto")
        d = {str(tmp_path)!r}
        print("once", tasuki.get(flaky.remote(d + "/once", 1, CountError), timeout=60))
        try:
            tasuki.get(flaky.remote(d + "/always", 5, CountError), timeout=60)
        except CountError as e:
            print("always", "CountError: run 2" in str(e), count(d + "/always") - 1)
        try:
            tasuki.get(flaky.remote(d + "/other", 5, OtherError), timeout=60)
        except OtherError as e:
            print("other", "OtherError: run 1" in str(e), count(d + "/other") - 1)
        again = flaky.options(max_retries=2)          # options() keeps the list
        print("again", tasuki.get(again.remote(d + "/again", 2, CountError), timeout=60))
    """)
    assert "once 2" in out.stdout                  # failed once, retried once, succeeded
    assert "always True 2" in out.stdout           # retried once, then the error
    assert "other True 1" in out.stdout            # not listed: not retried
    assert "again 3" in out.stdout
    head_runs_a_task(cli_cluster)


def test_options_of_user_types_reach_the_head_as_plain_values(cli_cluster):
    """Subclasses of str, int and float defined in the script pass the option checks: they must
    travel as plain values, or the head could not unpickle them."""
    out = run_script(cli_cluster, """
        import tasuki

        class MyStr(str): pass
        class MyInt(int): pass
        class MyFloat(float): pass

        tasuki.init(address="auto")
        task = tasuki.remote(lambda: "task ok").options(name=MyStr("named"), max_retries=MyInt(1),
                                                         num_cpus=MyFloat(0.5), resources={MyStr("none"): MyFloat(0)})
        print(tasuki.get(task.remote(), timeout=60))

        class Counter:
            @tasuki.method(num_returns=MyInt(1))
            def ping(self):
                return "actor ok"

        actor = tasuki.remote(Counter).options(name=MyStr("counter"), namespace=MyStr("ns"), max_restarts=MyInt(0),
                                               max_concurrency=MyInt(1)).remote()
        print(tasuki.get(actor.ping.remote(), timeout=60))
        print(tasuki.get(tasuki.get_actor(MyStr("counter"), namespace=MyStr("ns")).ping.remote(), timeout=60))
        tasuki.kill(actor, no_restart=MyInt(1))
        tasuki.cancel(task.remote(), force=MyInt(0))
    """)
    assert out.stdout.split() == ["task", "ok", "actor", "ok", "actor", "ok"]
    head_runs_a_task(cli_cluster)


@pytest.mark.parametrize("options, error, match", [
    ({"name": 3}, TypeError, "option name must be str"),
    ({"namespace": b"ns"}, TypeError, "option namespace must be str"),
    ({"max_restarts": "2"}, TypeError, "max_restarts must be int"),
    ({"max_task_retries": -2}, ValueError, "max_task_retries"),
    ({"max_concurrency": 0}, ValueError, "max_concurrency"),
    ({"get_if_exists": "yes"}, TypeError, "get_if_exists"),
])
def test_actor_options_are_checked(options, error, match):
    class Counter:
        pass

    with pytest.raises(error, match=match):
        tasuki.remote(**options)(Counter)


def test_task_name_is_checked():
    with pytest.raises(TypeError, match="option name must be str"):
        tasuki.remote(name=object())(len)


# --- item 9: malformed zmq frames ----------------------------------------------------------------------
class NotOnTheHead:
    """A class the head cannot import (this test module is not on its path)."""


def test_malformed_frames_are_dropped(cli_cluster):
    info = cli_cluster.info
    context = zmq.Context()
    identity = b"Dmalformed" + os.urandom(4)
    sock = transport.connect(context, info["address"], info["token"], identity)
    try:
        hello = (P.HELLO, "driver", {"version": tasuki.__version__,
                                     "python": "%d.%d" % sys.version_info[:2], "pid": os.getpid()})
        before = [b"garbage", b"", pickle.dumps(42), pickle.dumps([("no_such_kind",)]), pickle.dumps([(P.HELLO,)]),
                  pickle.dumps([NotOnTheHead()]), pickle.dumps([[]])]
        after = [pickle.dumps(x) for x in ([(P.SUBMIT,)], [(P.SUBMIT, "not a spec")], [(P.GET, 5)], [(P.HOLD,)],
                                           [(P.HEARTBEAT, 1, 2, 3)], [("no_such_kind", 1)], [([], 1)], ["x"], {})]
        for frame in before:
            sock.send(frame)
        sock.send(P.encode([hello]))
        welcomed = lambda: sock.poll(100) and any(m[0] == P.WELCOME for m in transport.recv_dealer(sock)[0])
        wait_until(welcomed, timeout=30, what="a WELCOME to a proper HELLO after malformed frames")
        for frame in after:
            sock.send(frame)
        sock.send_multipart([pickle.dumps([(P.HEARTBEAT,)]), b"an extra frame"])
        head_runs_a_task(cli_cluster)
    finally:
        sock.close(linger=0)
        context.term()
    log = head_log(cli_cluster)
    assert "Traceback" not in log, log[-3000:]
    assert identity.hex() in log, log[-3000:]         # the dropped messages name their peer
    dropped = [line for line in log.splitlines() if identity.hex() in line]
    assert len(dropped) <= 4, dropped                  # rate-limited, not one line per frame


# --- item 9: the HTTP endpoint -----------------------------------------------------------------------------
def metrics_address(cluster) -> tuple[str, int]:
    host, port = cluster.info["metrics"].split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def raw_request(address: tuple[str, int], request: bytes, shut_write: bool = False) -> bytes:
    """Send `request` on a fresh connection and return everything the server sends until it closes."""
    with socket.create_connection(address, timeout=30) as s:
        s.sendall(request)
        if shut_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize("length, body, shut_write, status", [
    (b"abc", b"", False, (b"400", b"400")),       # (without the token, with it)
    (b"-5", b"", False, (b"400", b"400")),
    (b"99999999999999999999999", b"", False, (b"413", b"413")),
    (b"100000", b"{}", False, (b"413", b"413")),
    (b"50", b"{}", True, (b"401", b"400")),       # the body ends before Content-Length says
])
@pytest.mark.parametrize("token", [False, True])
def test_bad_content_length(cli_cluster, length, body, shut_write, status, token):
    status = status[token]
    auth = f"Authorization: Bearer {cli_cluster.info['token']}\r\n".encode() if token else b""
    request = (b"POST /api/v1/nodes/nowhere/drain HTTP/1.1\r\nHost: x\r\n" + auth +
               b"Content-Length: " + length + b"\r\n\r\n" + body)
    answer = raw_request(metrics_address(cli_cluster), request, shut_write)
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert len(answer) < 1000 and b"Traceback" not in answer, answer
    assert "Traceback" not in head_log(cli_cluster)


def test_idle_and_slow_connections_are_closed(cli_cluster):
    address = metrics_address(cli_cluster)
    idle = socket.create_connection(address, timeout=60)
    slow = socket.create_connection(address, timeout=60)
    started = time.monotonic()
    try:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        closed = {}

        def both_closed():
            for name, s in (("idle", idle), ("slow", slow)):
                if name in closed:
                    continue
                s.settimeout(0.5)
                try:
                    if name == "slow":
                        s.sendall(b"X-Slow: 1\r\n")      # a header line every poll: never idle for long
                    if s.recv(4096) == b"":
                        closed[name] = time.monotonic() - started
                except socket.timeout:
                    pass
                except (BrokenPipeError, ConnectionResetError):    # closed while we wrote
                    closed[name] = time.monotonic() - started
            return len(closed) == 2

        wait_until(both_closed, timeout=40, what="the server closing an idle and a slow connection", interval=0.5)
        assert all(4 < elapsed < 25 for elapsed in closed.values()), closed
    finally:
        idle.close()
        slow.close()
    assert "Traceback" not in head_log(cli_cluster)


def test_connections_are_bounded(cli_cluster):
    from tasuki.metrics import MAX_CONNECTIONS
    address = metrics_address(cli_cluster)
    held = [socket.create_connection(address, timeout=30) for _ in range(MAX_CONNECTIONS)]
    try:
        def refused() -> bytes:
            return raw_request(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert wait_until(lambda: refused().startswith(b"HTTP/1.1 503"), timeout=30, what="a 503 when full")
    finally:
        for s in held:
            s.close()
    ok = wait_until(lambda: b" 200 " in raw_request(address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                                             b"Connection: close\r\n\r\n"),
                    timeout=30, what="/healthz once the held connections closed")
    assert ok


def test_metrics_listen_on_the_node_ip_address(cli_cluster):
    host, port = metrics_address(cli_cluster)
    assert host == "127.0.0.1"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=10).close()


def test_metrics_host_flag(tmp_path):
    from conftest import CliCluster
    cluster = CliCluster(tmp_path)
    try:
        cluster.start_head("--num-cpus", "1", "--metrics-host", "127.0.0.3")
        host, port = metrics_address(cluster)
        assert host == "127.0.0.3"
        assert b" 200 " in raw_request((host, port), b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
    finally:
        cluster.stop()

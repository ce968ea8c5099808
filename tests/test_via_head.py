"""Drivers that reach only the head (transfer.py on the driver's side, relay.py in the head).

The pure parts (the route decision, where a put goes, how an object is cut, the relay's
bookkeeping) are tested with plain data. Then real clusters: a head listening on 0.0.0.0 and two
node agents advertising 127.0.0.1 and 127.0.0.2, and a driver process running the README tour and
a 200 MB round trip (tests/data/via_head_tour.py):
  - forced with TASUKI_VIA_HEAD=1 on this machine (always runs), with the head's memory watched;
  - for real, in a network namespace whose only route is a veth pair to the head's address, the
    nodes' stores hidden from it (root and `ip netns` only: skipped, saying why, elsewhere).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import netns
from conftest import RUNTIME, CliCluster, cluster_env, wait_until

from tasuki import protocol as P, transfer
from tasuki.relay import Relay

TOUR = str(Path(__file__).resolve().parent / "data" / "via_head_tour.py")
BIG_MB = 200
HEAD_GROWTH_LIMIT = 100 * 2**20      # bytes the head may grow by during a 200 MB round trip (4 chunks in flight)


# --- pure parts -------------------------------------------------------------------------------
@pytest.mark.parametrize("forced, local, unreachable, via_head", [
    (None, False, [], False),                                   # the nodes answer: direct
    (None, False, [("n1", "tcp://10.0.0.5:1", "timed out")], True),
    (None, True, [("n1", "tcp://10.0.0.5:1", "timed out")], False),   # a node on this machine: its store
    ("1", True, [], True),                                      # forced, even beside a node
    ("0", False, [("n1", "tcp://10.0.0.5:1", "timed out")], False),   # never
])
def test_route(forced, local, unreachable, via_head):
    assert transfer.route(forced, local, unreachable) is via_head


@pytest.mark.parametrize("address", ["tasuki://head.ml.svc:6380", "head.ml.svc:6380", "tcp://head.ml.svc:6380"])
def test_init_takes_a_tasuki_url_as_well_as_host_port(address):
    from tasuki import api
    assert api._resolve_address(address, "t0ken") == ("tcp://head.ml.svc:6380", "t0ken")


def _node(node_id, used, capacity, head=False, state="alive"):
    return {"node_id": node_id, "state": state, "is_head_node": head,
            "object_store": {"used": used, "capacity": capacity}}


@pytest.mark.parametrize("nodes, size, chosen", [
    ([_node("a", 0, 100), _node("h", 50, 100, head=True)], 40, "h"),      # the head's node when it has room
    ([_node("a", 0, 100), _node("h", 90, 100, head=True)], 40, "a"),      # else the roomiest
    ([_node("a", 80, 100), _node("b", 50, 100)], 500, "b"),               # none has room: the emptiest (spills)
    ([_node("a", 0, 100, state="draining"), _node("b", 0, 100)], 10, "b"),  # only live ones
    ([_node("a", 0, 100, state="dead")], 10, None),
])
def test_pick_store_node(nodes, size, chosen):
    node = transfer.pick_store_node(nodes, size)
    assert (node and node["node_id"]) == chosen


def test_pieces_follow_the_layout_and_the_chunk_size():
    from tasuki.object_store import layout_parts
    header, buf = b"h" * 10, bytes(range(256)) * 5
    parts = layout_parts(len(header), [len(buf)])
    pieces = transfer.pieces(parts, [header, buf], 512)
    assert [(at, len(v)) for at, v in pieces] == [(0, 10), (parts[1][0], 512), (parts[1][0] + 512, 512),
                                                 (parts[1][0] + 1024, 256)]
    assert b"".join(bytes(v) for _, v in pieces[1:]) == buf


def test_notice_names_the_node_and_the_head():
    line = transfer.notice("tcp://1.2.3.4:6380", False, [("n1", "tcp://10.1.1.1:4000", "timed out"),
                                                         ("n2", "tcp://10.1.1.2:4000", "timed out")])
    assert "node n1 at tcp://10.1.1.1:4000 (timed out)" in line and "1 more node" in line
    assert "relayed by the head" in line and "tcp://1.2.3.4:6380" in line and "\n" not in line
    assert "TASUKI_VIA_HEAD=1" in transfer.notice("tcp://1.2.3.4:6380", True, [])


def test_unreachable_tells_a_closed_port_from_a_listening_one():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))               # bound, not listening: refused
    nodes = [{"node_id": "up", "address": f"tcp://127.0.0.1:{listener.getsockname()[1]}"},
             {"node_id": "down", "address": f"tcp://127.0.0.1:{closed.getsockname()[1]}"},
             {"node_id": "gone", "address": "ipc:///nonexistent/node.sock"},
             {"node_id": "dead", "address": "tcp://127.0.0.1:1", "state": "dead"}]
    started = time.monotonic()
    failed = transfer.unreachable(nodes, timeout_s=1.0)
    assert time.monotonic() - started < 1.5
    assert sorted(node_id for node_id, _, _ in failed) == ["down", "gone"]
    listener.close()
    closed.close()


class _FakeFrame:
    def __init__(self, data):
        self.buffer = memoryview(bytes(data))


class _FakeStore:
    """A transfer channel whose far end is an in-memory store: checks that no more than
    transfer.WINDOW requests are ever unanswered."""

    def __init__(self, alloc_answer=None, node_id="n1"):
        self.node_id, self.address = node_id, "fake://"
        self.counter = iter(range(1, 10**6))
        self.answers, self.block, self.parts, self.unanswered, self.most = [], None, None, 0, 0
        self.alloc_answer = alloc_answer

    def new_req(self):
        return next(self.counter)

    def read_message(self, req, oid, start, length):
        return (P.READ, req, oid, start, length)

    def send(self, message, data=()):
        kind = message[0]
        if kind == P.SEAL:
            self.parts = message[2]
            return
        self.unanswered += 1
        self.most = max(self.most, self.unanswered)
        if kind == P.ALLOC:
            self.block = bytearray(message[3])
            self.answers.append(((P.ALLOCATED, message[1], *(self.alloc_answer or (0, None))), []))
        elif kind == P.WRITE:
            chunk = bytes(data[0])
            self.block[message[2]:message[2] + len(chunk)] = chunk
            self.answers.append(((P.WRITTEN, message[3], message[1], message[2], None), []))
        elif kind == P.READ:
            _, req, oid, start, length = message
            self.answers.append(((P.CHUNK, req, oid, start, len(self.block), self.parts, None),
                                 [_FakeFrame(self.block[start:start + length])]))

    def wait(self, channel):
        self.unanswered -= 1
        return self.answers.pop(0)


@pytest.mark.parametrize("sizes", [[0], [10], [100], [3 * 64 + 5, 1000], [64 * 20]])
def test_write_then_read_round_trips_with_at_most_a_window_in_flight(monkeypatch, sizes):
    from tasuki import config
    from tasuki.object_store import block_size, layout_parts
    monkeypatch.setattr(config, "TRANSFER_CHUNK", 64)
    payloads = [bytes((i * 7 + j) % 256 for j in range(n)) for i, n in enumerate(sizes)]
    size, parts = block_size(sizes[0], sizes[1:]), layout_parts(sizes[0], sizes[1:])
    store = _FakeStore()
    assert transfer.write(store, b"oid", size, parts, payloads, store.wait) == "n1"
    assert store.parts == parts and store.most <= transfer.WINDOW
    for (at, n), payload in zip(parts, payloads):
        assert bytes(store.block[at:at + n]) == payload
    store.most = 0
    block, layout = transfer.read(store, b"oid", store.wait)
    assert bytes(block) == bytes(store.block) and layout == parts and store.most <= transfer.WINDOW


@pytest.mark.parametrize("answer, node_id, error", [
    ((None, "the store is full"), "n1", "ObjectStoreFullError"),       # the node's store said no
    ((None, "no live node", None), None, "ClusterError"),             # the head found no node
])
def test_write_that_cannot_allocate_says_why(answer, node_id, error):
    store = _FakeStore(alloc_answer=answer, node_id=node_id)
    with pytest.raises(Exception) as info:
        transfer.write(store, b"oid", 64, [(0, 10)], [b"x" * 10], store.wait)
    assert type(info.value).__name__ == error and answer[1] in str(info.value)


class _Sent(list):
    def __call__(self, to, message):
        self.append((to, message))


def _relay():
    sent = _Sent()
    return Relay(None, "token", None, sent), sent


def test_relay_maps_requests_to_nodes_and_answers_back():
    relay, sent = _relay()
    relay.read(b"D1", 7, b"oid", 0, 100, "n1", connected=True)
    (to, (kind, relay_req, oid, start, length)), = sent
    assert (to, kind, oid, start, length) == (b"Nn1", P.READ, b"oid", 0, 100)
    sent.clear()
    relay.answer((P.CHUNK, relay_req, b"oid", 0, 100, [(0, 100)], "not stored on this node"))
    assert sent == [(b"D1", (P.CHUNK, 7, b"oid", 0, 100, [(0, 100)], "not stored on this node"))]
    sent.clear()
    relay.answer((P.CHUNK, relay_req, b"oid", 0, 100, [(0, 100)], None))      # answered already: dropped
    assert sent == []


def test_relay_read_from_a_node_that_is_gone_fails_at_once():
    relay, sent = _relay()
    relay.read(b"D1", 3, b"oid", 0, 100, "n9", connected=False)
    assert sent[0][0] == b"D1" and sent[0][1][:2] == (P.CHUNK, 3) and "n9" in sent[0][1][-1]


def test_relay_alloc_picks_a_node_and_names_it_in_the_answer():
    relay, sent = _relay()
    relay.alloc(b"D1", 5, b"oid", 40, [_node("a", 0, 100), _node("h", 0, 100, head=True)])
    (to, (_, relay_req, _, size)), = sent
    assert to == b"Nh" and size == 40 and relay.open_puts == {b"D1": {b"oid": "h"}}
    sent.clear()
    relay.answer((P.ALLOCATED, relay_req, 4096, None))
    assert sent == [(b"D1", (P.ALLOCATED, 5, 4096, None, "h"))]
    sent.clear()
    relay.seal(b"D1", b"oid", [(0, 40)])
    assert sent == [(b"Nh", (P.SEAL, b"oid", [(0, 40)]))] and relay.open_puts == {b"D1": {}}


def test_relay_alloc_without_room_forgets_the_put():
    relay, sent = _relay()
    relay.alloc(b"D1", 5, b"oid", 40, [_node("a", 0, 100)])
    relay.answer((P.ALLOCATED, sent[0][1][1], None, "full"))
    assert sent[-1] == (b"D1", (P.ALLOCATED, 5, None, "full", "a")) and relay.open_puts == {b"D1": {}}


def test_relay_fails_the_requests_of_a_node_that_died():
    relay, sent = _relay()
    relay.read(b"D1", 1, b"x", 0, 10, "n1", connected=True)
    relay.alloc(b"D2", 2, b"y", 10, [_node("n1", 0, 100)])
    relay.read(b"D1", 3, b"z", 0, 10, "n2", connected=True)
    sent.clear()
    relay.node_gone("n1")
    assert sorted((to, m[0], m[1]) for to, m in sent) == [(b"D1", P.CHUNK, 1), (b"D2", P.ALLOCATED, 2)]
    assert all("n1" in P.parse(m).error for _, m in sent)
    assert len(relay.requests) == 1 and relay.open_puts == {b"D2": {}}


def test_relay_forgets_a_driver_and_frees_its_unsealed_blocks():
    relay, sent = _relay()
    relay.alloc(b"D1", 1, b"x", 10, [_node("n1", 0, 100)])
    relay.read(b"D1", 2, b"y", 0, 10, "n1", connected=True)
    sent.clear()
    relay.forget(b"D1")
    assert sent == [(b"Nn1", (P.FREE, [b"x"]))] and relay.requests == {} and b"D1" not in relay.open_puts


class _FakeSocket:
    closed = False

    def close(self, linger=None):
        self.closed = True


def test_relay_closes_the_links_to_an_actor_that_is_gone():
    relay, _ = _relay()
    mine, other = _FakeSocket(), _FakeSocket()
    relay.links = {(b"D1", b"A1"): ("tcp://x:1", mine), (b"D2", b"A1"): ("tcp://x:1", other),
                   (b"D1", b"A2"): ("tcp://y:1", _FakeSocket())}
    relay.socks = {mine: (b"D1", b"A1"), other: (b"D2", b"A1")}
    relay.actor_gone(b"A1")
    assert mine.closed and other.closed and list(relay.links) == [(b"D1", b"A2")] and relay.socks == {}


# --- real clusters ----------------------------------------------------------------------------
class HeadOnlyCluster(CliCluster):
    """A head on 0.0.0.0 and node agents on 127.0.0.1 and 127.0.0.2 whose stores live in `store_dir`
    (so that a driver can be kept from seeing them), started with `python -m`."""

    def __init__(self, tmpdir: Path) -> None:
        super().__init__(tmpdir / "session")
        os.makedirs(self.tmpdir, exist_ok=True)
        self.store_dir = str(tmpdir / "stores")
        os.makedirs(self.store_dir)
        self.token = os.urandom(16).hex()
        self.env["TASUKI_TOKEN"] = self.token
        self.procs: list = []

    def start(self) -> None:
        ready = os.path.join(self.tmpdir, "head-ready.json")
        self.spawn("tasuki.head", "--address", "tcp://0.0.0.0:0", "--metrics-port", "0",
                   "--metrics-host", "127.0.0.1", "--ready-file", ready)
        info = wait_until(lambda: self.check() and os.path.exists(ready) and json.load(open(ready)), 60,
                          "the head to start")
        self.port = int(info["address"].rsplit(":", 1)[1])
        self.metrics = info["metrics"]
        self.head_pid = info["pid"]
        for ip, flags in (("127.0.0.1", ["--head-node"]), ("127.0.0.2", [])):
            self.spawn("tasuki.node", "--head", f"tcp://127.0.0.1:{self.port}", "--node-ip-address", ip,
                       "--num-cpus", "1", "--object-store-memory", str(600 * 2**20), "--store-dir", self.store_dir, *flags)
        wait_until(lambda: self.check() and len([n for n in self.status()["nodes"] if n["state"] == "alive"]) == 2,
                   60, "both node agents to join")

    def check(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                logs = "".join(open(os.path.join(self.tmpdir, name)).read()[-2000:] for name in
                               ("tasuki.head.log", "tasuki.node.log"))
                raise AssertionError(f"{proc.args[2]} exited with {proc.returncode}:\n{logs}")
        return True

    def spawn(self, module: str, *args: str) -> None:
        log = open(os.path.join(self.tmpdir, module + ".log"), "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", module, *args], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://{self.metrics}/api/v1/status", timeout=10) as r:
            return json.load(r)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        super().stop()          # anything left with this TASUKI_TMPDIR (workers, zygotes)


@pytest.fixture
def head_only(tmp_path):
    cluster = HeadOnlyCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _driver_env(cluster: HeadOnlyCluster, tmp_path: Path, **extra) -> dict:
    env = cluster_env(str(tmp_path / "driver"))          # a session of its own: nothing of the cluster's
    env["TASUKI_TOKEN"] = cluster.token
    env.update(extra)
    return env


class _PeakMemory:
    """The largest resident size a process reaches after `start()`, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        import psutil
        self.proc = psutil.Process(pid)
        self.base = self.peak = self.proc.memory_info().rss
        self.running = False

    def start(self) -> None:
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak - self.base


def _run_tour(argv: list, env: dict, head_pid: int) -> tuple[dict, str, str, int]:
    """Run the tour; (its results, stdout, stderr, how much the head grew during the round trip)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    memory = _PeakMemory(head_pid)
    lines = []
    stderr = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    drain.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "BIG":
                memory.start()
        proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
    grew = memory.stop() if memory.running else -1
    drain.join(10)
    stdout, err = "".join(lines), "".join(stderr)
    assert proc.returncode == 0, f"the tour failed ({proc.returncode}):\n{stdout}\n{err}"
    return json.loads(lines[-1]), stdout, err, grew


def _check_tour(out: dict, stdout: str, via_head: bool = True) -> None:
    assert out["via_head"] is via_head
    assert out["squares"] == sum(i * i for i in range(100))
    assert out["totals"] == [1_000_000.0] * 3 and out["put_get"]
    assert out["counter"] == [1, 2, 3, 4, 5] and out["named"] == 6
    assert out["wait"] == 4
    assert "hello from a task, through the head" in stdout
    assert out["actor_error"] and out["actor_died"] and out["restarted"] and out["killed"]
    assert out["actor_large_result"] == 3_000_000
    assert out["retried_after_restart"] == "survived"
    assert out["big_seen_by_task"] and out["big_result"] and out["big_round_trip"]


def test_forced_through_the_head_tour_and_200mb_with_bounded_head_memory(head_only, tmp_path):
    env = _driver_env(head_only, tmp_path, TASUKI_VIA_HEAD="1")
    out, stdout, stderr, grew = _run_tour([sys.executable, TOUR, f"tasuki://127.0.0.1:{head_only.port}",
                                           str(BIG_MB)], env, head_only.head_pid)
    _check_tour(out, stdout)
    print(f"head grew by {grew / 2**20:.1f} MiB during the {BIG_MB} MB round trip ({out['big_seconds']} s)")
    notices = [line for line in stderr.splitlines() if "working through the head" in line]
    assert len(notices) == 1 and "TASUKI_VIA_HEAD=1" in notices[0], stderr
    assert 0 <= grew < HEAD_GROWTH_LIMIT, f"the head grew by {grew / 2**20:.0f} MiB during a {BIG_MB} MB round trip"


def test_a_driver_without_a_local_store_that_reaches_the_nodes_goes_direct(head_only, tmp_path):
    """The probe reaches the nodes: no notice, objects stream straight to and from the nodes."""
    env = _driver_env(head_only, tmp_path, TOUR_NO_LOCAL_STORE="1")
    out, stdout, stderr, grew = _run_tour([sys.executable, TOUR, f"127.0.0.1:{head_only.port}", "50"], env,
                                          head_only.head_pid)
    _check_tour(out, stdout, via_head=False)
    assert "working through the head" not in stderr
    assert 0 <= grew < 30 * 2**20             # the head carries none of the 50 MB


HEAD_PUBLIC_IP = "127.0.0.3"       # the head listens on 0.0.0.0; the namespaced driver knows it by this address only


@pytest.fixture
def namespace():
    """A network namespace whose only route is to HEAD_PUBLIC_IP (tests/netns.py); removed however
    the test ends."""
    why = netns.available()
    if why:
        pytest.skip(why)
    with netns.OnlyRouteTo(HEAD_PUBLIC_IP) as ns:
        yield ns


def test_a_driver_in_a_namespace_that_reaches_only_the_head(head_only, namespace, tmp_path):
    host_ip = HEAD_PUBLIC_IP
    routes = namespace.routes()
    assert len(routes) == 1 and routes[0].startswith(f"{host_ip} "), routes      # the head's address alone
    env = _driver_env(head_only, tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([RUNTIME, env.get("PYTHONPATH", "")])
    # the nodes' stores are on this machine's disk: hide them, as on a laptop
    script = (f"mount -t tmpfs tmpfs {head_only.store_dir} && exec {sys.executable} {TOUR} "
              f"tasuki://{host_ip}:{head_only.port} {BIG_MB}")
    out, stdout, stderr, _ = _run_tour(namespace.command(["unshare", "--mount", "sh", "-c", script]),
                                       env, head_only.head_pid)
    _check_tour(out, stdout)
    notices = [line for line in stderr.splitlines() if "working through the head" in line]
    print(notices[0] if notices else stderr)
    assert len(notices) == 1, stderr
    assert "cannot reach node" in notices[0] and f"tcp://{host_ip}:{head_only.port}" in notices[0]

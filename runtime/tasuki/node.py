"""The node agent: one per machine or pod. Owns the node's object store, its workers and transfers.

It registers the node's resources with the head, heartbeats, starts workers when the head asks
(through the zygote, see zygote.py), reports how each worker exited, and serves the object store:
processes on this machine allocate, seal and pin objects over its IPC socket and then read and
write the arena directly (object_store.py); other nodes and remote drivers pull objects over its
TCP socket in chunks (or, for a driver that reaches only the head, through the head over this
agent's own connection to it: READ, ALLOC, WRITE and SEAL relayed, see relay.py). It is not on the per-task path: workers talk to the head directly.

The head answers each heartbeat. A head restarted at the same address answers REJOIN: the agent
says HELLO again with what it has (its workers and stored objects; see recovery.py) and carries on.
When the head has said nothing for TASUKI_HEAD_RECONNECT_S seconds, or the head that knew this node
declared it dead (REJOIN with the same session), the agent exits 1, and with it the zygote and the
workers (each dies with its parent, see zygote.py).

SIGTERM (Kubernetes deleting the pod, `tasuki stop`) drains the node instead of stopping it: the
agent sends LEAVING(TASUKI_DRAIN_TIMEOUT_S) and keeps serving while the head moves the work away
(see drain.py): running tasks finish or are handed back at the deadline, actors restart elsewhere,
objects only this node holds are pulled by other nodes (the head sends them REPLICATE). The head
says DRAINED when nothing is left, and the agent exits 0; it exits 1 when the head goes silent or
the deadline plus config.DRAIN_MARGIN_S passes first. SIGINT and the lifeline still stop it at once.

Pull of an object another node holds (a PIN naming sources):
  PIN ──► node: allocate a block, READ chunk 0 from the source, then keep 4 chunk READs in flight
  each CHUNK is written into the block; when complete: SEAL, STORED to the head, PINNED to waiters
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import __version__, config, protocol as P, recovery as R, transport
from .exceptions import ObjectLostError, ObjectStoreFullError

PYTHON_VERSION = "%d.%d" % sys.version_info[:2]
PULL_WINDOW = 4          # chunk requests in flight per pull
LEAVE_HEAD_SILENCE_S = 10.0  # seconds of silence from the head (it answers heartbeats) after which a leaving node exits


@dataclass
class NodeConfig:
    head_address: str
    token: str
    node_id: str
    ip: str
    resources: dict
    gpu_ids: list
    store_bytes: int
    store_path: str
    ipc_address: str
    tcp_address: str
    spill_dir: str
    is_head_node: bool = False
    labels: dict = field(default_factory=dict)
    node_name: str = ""         # TASUKI_NODE_NAME: the pod's name on Kubernetes (else the host name)
    group: str = ""             # TASUKI_NODE_GROUP: its worker group ("head" for the head's pod)


def detect_gpus() -> int:
    """Number of NVIDIA GPUs visible here (0 when there is no driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() not in ("", "-1")])
    if not os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def store_size(requested: int | None, directory: str) -> int:
    """The object store's size; raises SystemExit with a fix when `directory` cannot hold it."""
    try:
        stat = os.statvfs(directory)
    except OSError as e:
        raise SystemExit(f"tasuki node: cannot put the object store in {directory}: {e.strerror}. Name an existing "
                         f"directory with room (memory-backed for speed) with TASUKI_STORE_DIR or --store-dir.") from None
    free = stat.f_bavail * stat.f_frsize
    if requested is None:
        return max(64 << 20, min(int(config.total_memory() * config.STORE_FRACTION), int(free * 0.9)))
    if requested > free:
        raise SystemExit(
            f"tasuki node: the object store needs {requested / 2**20:,.0f} MiB of shared memory but "
            f"{directory} has only {free / 2**20:,.0f} MiB free. In a container, mount a memory-backed "
            f"/dev/shm (Kubernetes: an emptyDir volume with medium: Memory at /dev/shm; Docker: "
            f"--shm-size={requested // 2**20 + 64}m), start the node with a smaller --object-store-memory, "
            f"or put the store in a directory with room with TASUKI_STORE_DIR or --store-dir.")
    return requested


class NodeAgent:
    def __init__(self, cfg: NodeConfig, zygote_sock, zygote_pid: int, lifeline_fd: int | None) -> None:
        import zmq
        from .object_store import Store
        self.zmq = zmq
        self.cfg = cfg
        self.store = Store(cfg.store_path, cfg.store_bytes, cfg.spill_dir, during_io=self.beat)
        self.context = zmq.Context()
        if cfg.tcp_address.startswith("tcp://"):
            transport.start_authenticator(self.context, cfg.token)
        self.local, _ = transport.bind(self.context, cfg.ipc_address, cfg.token)
        self.remote, cfg.tcp_address = transport.bind(self.context, cfg.tcp_address, cfg.token)
        self.head = transport.connect(self.context, cfg.head_address, cfg.token, b"N" + cfg.node_id.encode())
        self.zygote = zygote_sock
        self.zygote_pid = zygote_pid
        self.zygote_buffer = b""
        self.lifeline_fd = lifeline_fd
        self.pids: dict[bytes, int] = {}              # worker id -> pid
        self.workers_by_pid: dict[int, bytes] = {}
        self.pins: dict[bytes, dict] = {}             # client identity -> {object id: count}
        self.waiting_seal: dict[bytes, list] = {}     # object id -> [(ident, sock, req)] pinning before SEAL
        self.pulls: dict[bytes, dict] = {}
        self.dead_nodes: set[str] = set()            # nodes the head declared dead: never pull from them
        self.sources: dict[str, object] = {}          # address -> DEALER to another node
        self.poller = zmq.Poller()
        self.running = True
        self.head_timeout = config.env_float("HEAD_RECONNECT_S", config.HEAD_RECONNECT_S)
        self.session: float | None = None             # the head's, from WELCOME (see recovery.py)
        self.head_heard = time.time()                 # the head's last message (it answers heartbeats)
        self.head_messages: list = []
        self.next_beat = 0.0
        self.head_away = False                        # the head said it is restarting (HEAD_RESTARTING)
        self.pin_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(pin_socket_path(cfg)):
            os.unlink(pin_socket_path(cfg))
        self.pin_listener.bind(pin_socket_path(cfg))
        self.pin_listener.listen(64)
        self.pin_listener.setblocking(False)
        self.pin_conns: dict[int, list] = {}          # fd -> [socket, bytes received not yet handled]
        self.leave_asked = False                      # SIGTERM came: drain, then exit (see `leave`)
        self.leave_deadline: float | None = None      # when it exits even if the head never said DRAINED
        self.exit_code = 0
        self.drained = False         # the head said DRAINED: it forgets this node on purpose

    def info(self) -> dict:
        c = self.cfg
        return {"node_id": c.node_id, "address": c.tcp_address, "ip": c.ip, "resources": c.resources,
                "gpu_ids": c.gpu_ids, "ipc": c.ipc_address, "store_path": c.store_path,
                "pin_socket": pin_socket_path(c),
                "store_capacity": c.store_bytes, "boot_id": config.boot_id(), "version": __version__,
                "python": PYTHON_VERSION, "is_head_node": c.is_head_node, "labels": c.labels,
                "node_name": c.node_name, "group": c.group, "pid": os.getpid()}

    # --- loop --------------------------------------------------------------------------
    def serve(self) -> None:
        zmq = self.zmq
        transport.send(self.head, [P.hello("node", self.info())])
        for sock in (self.head, self.local, self.remote):
            self.poller.register(sock, zmq.POLLIN)
        self.poller.register(self.zygote.fileno(), zmq.POLLIN)
        self.poller.register(self.pin_listener.fileno(), zmq.POLLIN)
        if self.lifeline_fd is not None:
            self.poller.register(self.lifeline_fd, zmq.POLLIN)
        while self.running:
            events = dict(self.poller.poll(100))
            if self.pin_conns or self.pin_listener.fileno() in events:
                self.serve_pins(events)
            if self.head in events:
                self.head_heard = time.time()
                self.drain(self.head, self.on_head_message)
            for sock in (self.local, self.remote):
                if sock in events:
                    self.drain_router(sock)
            for address, sock in list(self.sources.items()):
                if sock in events:
                    self.drain(sock, self.on_chunk)
            if self.zygote.fileno() in events:
                self.on_zygote()
            if self.lifeline_fd is not None and self.lifeline_fd in events:
                break
            now = time.time()
            if now - self.head_heard > self.head_timeout:
                print(R.give_up_message(f"tasuki node {self.cfg.node_id}", self.cfg.head_address,
                                        now - self.head_heard, self.head_timeout) +
                      " Stopping this node agent and its workers.", file=sys.stderr, flush=True)
                self.exit_code = 1
                break
            if self.leave_asked:
                if self.leave_deadline is None:
                    self.leave(now)
                elif self.head_away or now - self.head_heard > LEAVE_HEAD_SILENCE_S:
                    silence = "went away" if self.head_away else f"has said nothing for {now - self.head_heard:.1f} s"
                    print(f"tasuki node {self.cfg.node_id}: leaving, and the head at {self.cfg.head_address} {silence}: "
                          f"no one is left to drain this node for; exiting.", file=sys.stderr, flush=True)
                    self.exit_code = 1
                    break
                elif now > self.leave_deadline:
                    print(f"tasuki node {self.cfg.node_id}: the head did not finish draining this node within "
                          f"TASUKI_DRAIN_TIMEOUT_S + {config.DRAIN_MARGIN_S:g} s; exiting anyway (what was still "
                          f"running here is retried elsewhere or lost).", file=sys.stderr, flush=True)
                    self.exit_code = 1
                    break
            self.beat()
            if self.head_messages:
                messages, self.head_messages = self.head_messages, []
                transport.send(self.head, messages)
        self.shutdown()

    def beat(self) -> None:
        """Heartbeat the head if one is due: from the loop, and from the store between the pieces of
        a long spill (a node silent for TASUKI_NODE_TIMEOUT s is declared dead)."""
        now = time.time()
        if now >= self.next_beat:
            transport.send(self.head, [P.heartbeat({
                "used": self.store.used(), "capacity": self.store.capacity,
                "objects": len(self.store.entries), "spilled": self.store.spilled_bytes})])
            self.next_beat = now + config.NODE_HEARTBEAT_S

    def leave(self, now: float) -> None:
        """SIGTERM (Kubernetes deletes the pod): ask the head to drain this node (LEAVING); it
        answers DRAINED once nothing is left here, and then this agent exits 0."""
        timeout = config.env_float("DRAIN_TIMEOUT_S", config.DRAIN_TIMEOUT_S)
        self.leave_deadline = now + timeout + config.DRAIN_MARGIN_S
        self.head_messages.append(P.leaving(timeout))
        print(f"tasuki node {self.cfg.node_id}: SIGTERM: draining (running tasks may finish for up to "
              f"TASUKI_DRAIN_TIMEOUT_S={timeout:g} s; objects only this node holds are copied away)",
              file=sys.stderr, flush=True)

    def serve_pins(self, events: dict) -> None:
        """The pin channel (see the end of protocol.py): accept; answer each ALLOC and PIN at once, take SEALs."""
        if self.pin_listener.fileno() in events:
            while True:
                try:
                    conn, _ = self.pin_listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                self.pin_conns[conn.fileno()] = [conn, b""]
                self.poller.register(conn.fileno(), self.zmq.POLLIN)
        for fd in [fd for fd in self.pin_conns if fd in events]:
            conn, pending = self.pin_conns[fd]
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:                  # the process closed it (its pins are counted by identity)
                self.close_pin_conn(fd)
                continue
            pending += data
            replies, pinned_now = [], []
            while len(pending) >= 2 and len(pending) >= 2 + int.from_bytes(pending[:2], "big"):
                end = 2 + int.from_bytes(pending[:2], "big")
                kind, oid, arg = P.decode_channel_request(pending[2:end])
                pending = pending[end:]
                if kind == P.SEAL_REQUEST:
                    self.seal(oid, arg)
                    continue
                if kind == P.ALLOC_REQUEST:
                    replies.append(P.encode_allocated(*self.allocate(oid, arg)))
                    continue
                pinned, _ = self.pin_for(arg, oid)      # None: not sealed here, freed, no room to restore
                if pinned and pinned.offset is None:    # in its spill file: the reply over zmq names it
                    self.unpin_for(arg, [oid])
                    pinned = None
                if pinned:
                    pinned_now.append((arg, oid))
                replies.append(P.encode_pinned(*((pinned.offset, pinned.parts) if pinned else (None, None))))
            self.pin_conns[fd][1] = pending
            if replies:
                reply = b"".join(replies)
                try:
                    try:
                        sent = conn.send(reply)       # a few bytes into an empty buffer: all at once
                    except BlockingIOError:
                        sent = 0
                    if sent < len(reply):
                        conn.setblocking(True)
                        conn.sendall(reply[sent:])
                        conn.setblocking(False)
                except OSError:           # the process gave up waiting (get's timeout) or died: the
                    for ident, oid in pinned_now:           # pins it never heard of are undone
                        self.unpin_for(ident, [oid])
                    self.close_pin_conn(fd)

    def close_pin_conn(self, fd: int) -> None:
        self.poller.unregister(fd)
        self.pin_conns.pop(fd)[0].close()

    def drain(self, sock, handle) -> None:
        while True:
            try:
                frames = sock.recv_multipart(self.zmq.NOBLOCK, copy=False)
            except self.zmq.Again:
                return
            for message in P.decode(frames[0].buffer):
                try:
                    handle(message, frames[1:])
                except P.ProtocolError as e:
                    self.drop_message(e)

    def drain_router(self, sock) -> None:
        while True:
            try:
                frames = sock.recv_multipart(self.zmq.NOBLOCK, copy=False)
            except self.zmq.Again:
                return
            ident = frames[0].bytes
            for message in P.decode(frames[1].buffer):
                try:
                    self.on_client_message(sock, ident, message, frames[2:])
                except P.ProtocolError as e:
                    self.drop_message(e)

    def drop_message(self, error: P.ProtocolError) -> None:
        """A message that does not match its kind's definition: say so and go on with the others."""
        print(f"tasuki node {self.cfg.node_id}: dropped a malformed message: {error}", file=sys.stderr, flush=True)

    def shutdown(self) -> None:
        try:
            self.zygote.close()               # the zygote kills every worker
            os.waitpid(self.zygote_pid, 0)
        except OSError:
            pass
        self.store.close()
        # Close our sockets here and let term() interrupt the ZAP thread, which closes its own:
        # destroy() would close that socket from this thread while the ZAP thread blocks on it,
        # and term() then hangs (seen as `tasuki stop` needing SIGKILL).
        for sock in (self.head, self.local, self.remote, *self.sources.values()):
            sock.close(linger=0)
        self.context.term()
        self.pin_listener.close()
        for conn, _ in self.pin_conns.values():
            conn.close()
        try:
            os.unlink(pin_socket_path(self.cfg))
        except OSError:
            pass
        for address in (self.cfg.ipc_address, self.cfg.tcp_address):
            if address.startswith("ipc://"):
                try:
                    os.unlink(address[len("ipc://"):])
                except OSError:
                    pass

    # --- the head ------------------------------------------------------------------------
    def on_head_message(self, message: tuple, data) -> None:
        m = P.parse(message)
        kind = m.kind
        if kind == P.SPAWN:
            for worker_id in m.worker_ids:
                self.zygote.sendall(json.dumps({"spawn": worker_id.hex()}).encode() + b"\n")
        elif kind == P.FREE:
            for oid in m.ids:
                self.store.free(oid)
        elif kind == P.KILL:
            pid = self.pids.get(m.worker_id)
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        elif kind == P.REFUSED:
            print(f"tasuki node: the head refused this node: {m.reason}", file=sys.stderr, flush=True)
            self.running = False
        elif kind == P.SHUTDOWN:
            self.running = False
        elif kind == P.WELCOME:
            self.session = m.info.get("session")
        elif kind == P.REJOIN:
            self.rejoin(m.session)
        elif kind == P.HEAD_RESTARTING:
            self.head_away = True
            print(f"tasuki node {self.cfg.node_id}: {m.reason}; waiting for it (up to TASUKI_HEAD_RECONNECT_S="
                  f"{self.head_timeout:g} s)", file=sys.stderr, flush=True)
        elif kind == P.NODE_DIED:
            self.source_died(m.node_id, m.address)
        elif kind == P.REPLICATE:
            self.replicate(m.oid, m.sources)
        elif kind == P.DRAINED:
            print(f"tasuki node {self.cfg.node_id}: drained: nothing is left here; exiting", file=sys.stderr, flush=True)
            self.drained, self.running = True, False
        elif kind in (P.READ, P.ALLOC, P.WRITE, P.SEAL):    # relayed by the head for a driver that
            self.on_client_message(self.head, None, message, data)     # reaches only it (relay.py)

    def rejoin(self, session: float) -> None:
        """A head answered REJOIN: a new head (say HELLO again with this node's workers and stored
        objects, recovery.py), or the head that declared this node dead (stop)."""
        if self.drained:             # the head answered a message sent after DRAINED: it left as asked
            return
        if not R.head_changed(self.session, session):
            print(f"tasuki node {self.cfg.node_id}: the head at {self.cfg.head_address} declared this node dead "
                  f"and forgot it; stopping this node agent and its workers.", file=sys.stderr, flush=True)
            self.exit_code, self.running = 1, False
            return
        self.session, self.head_away = session, False
        objects = [(oid, e.size) for oid, e in self.store.entries.items() if e.sealed and not e.freed]
        self.head_messages.insert(0, P.hello("node", {**self.info(), "rejoin": {
            "workers": list(self.pids.items()), "objects": objects}}))
        print(f"tasuki node {self.cfg.node_id}: a new head runs at {self.cfg.head_address}: rejoining it with "
              f"{len(self.pids)} worker(s) and {len(objects)} stored object(s)", file=sys.stderr, flush=True)

    def on_zygote(self) -> None:
        chunk = self.zygote.recv(65536)
        if not chunk:
            self.running = False
            return
        self.zygote_buffer += chunk
        while b"\n" in self.zygote_buffer:
            line, self.zygote_buffer = self.zygote_buffer.split(b"\n", 1)
            event = json.loads(line)
            if "started" in event:
                worker_id = bytes.fromhex(event["started"])
                self.pids[worker_id] = event["pid"]
                self.workers_by_pid[event["pid"]] = worker_id
            else:
                worker_id = self.workers_by_pid.pop(event["exited"], None)
                if worker_id is not None:
                    self.pids.pop(worker_id, None)
                    try:                  # an actor's socket file (see Worker.serve_actor)
                        os.unlink(actor_socket_path(self.cfg, worker_id))
                    except OSError:
                        pass
                    for oid, count in self.pins.pop(worker_id, {}).items():
                        for _ in range(count):
                            self.store.unpin(oid)
                    self.head_messages.append(P.worker_exited(worker_id, event["exited"], event["code"]))

    # --- object store clients --------------------------------------------------------------
    def on_client_message(self, sock, ident: bytes, message: tuple, data) -> None:
        m = P.parse(message)
        kind = m.kind
        if kind == P.ALLOC:
            transport.send(sock, [P.allocated(m.req, *self.allocate(m.oid, m.size))], to=ident)
        elif kind == P.SEAL:
            self.seal(m.oid, m.layout)
        elif kind == P.PIN:
            self.pin(sock, ident, m.req, m.oid, m.sources)
        elif kind == P.UNPIN:
            self.unpin_for(ident, m.ids)
        elif kind == P.READ:
            req, oid, start, length = m.req, m.oid, m.start, m.length
            entry = self.store.entries.get(oid)
            if entry is None or not entry.sealed or entry.freed:
                transport.send(sock, [P.chunk(req, oid, start, None, None, "not stored on this node")], to=ident)
                return
            if entry.offset is None:
                self.store.pin(oid)      # restores from spill when the arena has room
                self.store.unpin(oid)
            view = self.store.read_range(entry, start, length)
            transport.send(sock, [P.chunk(req, oid, start, entry.size, entry.parts, None)], to=ident, data=[view])
        elif kind == P.WRITE:
            oid, offset = m.oid, m.offset
            entry = self.store.entries.get(oid)
            chunk = data[0].buffer
            written = entry is not None and not entry.sealed and self.store.write_range(entry, offset, chunk)
            if m.req is not None:        # a windowed writer (transfer.write) waits for this
                error = None if written else f"object {oid.hex()} has no open block of that size on node {self.cfg.node_id}"
                transport.send(sock, [P.written(m.req, oid, offset, error)], to=ident)

    def pin(self, sock, ident, req, oid, sources) -> None:
        entry = self.store.entries.get(oid)
        if entry is not None and not entry.sealed:
            self.waiting_seal.setdefault(oid, []).append((sock, ident, req))
        elif entry is not None:
            self.reply_pin(sock, ident, req, oid)
        elif any(node_id == self.cfg.node_id for node_id, _ in sources):
            # the writer's SEAL has not arrived yet, or the object was freed: wait briefly for the seal
            self.waiting_seal.setdefault(oid, []).append((sock, ident, req))
        else:
            self.start_pull(sock, ident, req, oid, [s for s in sources if s[0] != self.cfg.node_id])

    def allocate(self, oid: bytes, size: int) -> tuple[int | None, str | None]:
        """(offset, None) of a new block for `oid` (spilling others to make room), (path, None) of the
        spill file it goes to when the arena cannot hold it, or (None, why not)."""
        try:
            return self.store.allocate(oid, size), None
        except ObjectStoreFullError as e:
            return None, str(e)

    def seal(self, oid: bytes, parts: list) -> None:
        self.store.seal(oid, parts)
        for waiter in self.waiting_seal.pop(oid, []):
            self.reply_pin(*waiter, oid)

    def reply_pin(self, sock, ident, req, oid) -> None:
        entry, error = self.pin_for(ident, oid)
        if entry is None:
            transport.send(sock, [P.pinned(req, oid, None, None, error)], to=ident)
        else:
            where = entry.offset if entry.offset is not None else entry.spill_path     # offset, or its spill file
            transport.send(sock, [P.pinned(req, oid, where, entry.parts, None)], to=ident)

    def pin_for(self, ident: bytes, oid: bytes):
        """Pin an object for the process `ident` (restoring it if spilled): (entry, None) or (None, why)."""
        try:
            entry = self.store.pin(oid)
        except ObjectStoreFullError as e:
            return None, str(e)
        if entry is None:
            return None, f"object {oid.hex()} is not in this node's store"
        counts = self.pins.setdefault(ident, {})
        counts[oid] = counts.get(oid, 0) + 1
        return entry, None

    def unpin_for(self, ident: bytes, oids) -> None:
        """Undo pins that the process `ident` holds (pin_for's counts)."""
        counts = self.pins.get(ident, {})
        for oid in oids:
            if counts.get(oid, 0) > 0:
                counts[oid] -= 1
                if not counts[oid]:
                    del counts[oid]
                self.store.unpin(oid)

    # --- pulls from other nodes ------------------------------------------------------------
    def start_pull(self, sock, ident, req, oid, sources) -> None:
        pull = self.pulls.get(oid)
        if pull is not None:
            pull["waiters"].append((sock, ident, req))
            return
        dead = [node_id for node_id, _ in sources if node_id in self.dead_nodes]
        sources = [s for s in sources if s[0] not in self.dead_nodes]
        if not sources:
            if sock is None:                  # a copy the head asked for: its next drain tick asks again
                return
            where = f": node {', '.join(dead)} held it and was declared dead" if dead else ""
            transport.send(sock, [P.pinned(req, oid, None, None, str(ObjectLostError(
                f"object {oid.hex()} has no live copy on any node{where}")))], to=ident)
            return
        self.pulls[oid] = {"waiters": [(sock, ident, req)] if sock is not None else [], "sources": list(sources),
                           "size": None,
                           "received": 0, "next": 0, "started": time.time()}
        self.request_chunk(oid, 0)

    def replicate(self, oid: bytes, sources: list) -> None:
        """The head asks for a copy of an object (a draining node holds the only one): pull it with
        no one waiting; on_chunk reports STORED when it is sealed."""
        entry = self.store.entries.get(oid)
        if entry is not None and entry.sealed and not entry.freed:
            self.head_messages.append(P.stored(oid, entry.size))
        elif entry is None and oid not in self.pulls:
            self.start_pull(None, None, None, oid, [s for s in sources if s[0] != self.cfg.node_id])

    def source(self, address: str):
        sock = self.sources.get(address)
        if sock is None:
            sock = transport.connect(self.context, address, self.cfg.token, b"P" + os.urandom(8))
            self.sources[address] = sock
            self.poller.register(sock, self.zmq.POLLIN)
        return sock

    def request_chunk(self, oid: bytes, start: int) -> None:
        pull = self.pulls[oid]
        address = pull["sources"][0][1]
        transport.send(self.source(address), [P.read(oid, oid, start, config.TRANSFER_CHUNK)])   # req: the oid
        pull["next"] = start + config.TRANSFER_CHUNK

    def on_chunk(self, message: tuple, data) -> None:
        _, _req, oid, start, size, parts, error = P.parse(message)
        pull = self.pulls.get(oid)
        if pull is None:
            return
        if error is not None:
            return self.next_source(oid, error)
        if pull["size"] is None:
            try:
                pull["offset"] = self.store.allocate(oid, size)
            except ObjectStoreFullError as e:
                return self.fail_pull(oid, str(e))
            pull["size"], pull["parts"] = size, parts
            while pull["next"] < size and pull["next"] < config.TRANSFER_CHUNK * PULL_WINDOW:
                self.request_chunk(oid, pull["next"])
        chunk = data[0].buffer
        self.store.write_range(self.store.entries[oid], start, chunk)
        pull["received"] += len(chunk)
        if pull["next"] < size:
            self.request_chunk(oid, pull["next"])
        if pull["received"] >= size:
            del self.pulls[oid]
            self.store.seal(oid, pull["parts"])
            self.head_messages.append(P.stored(oid, size))
            for sock, ident, req in pull["waiters"]:
                self.reply_pin(sock, ident, req, oid)

    def next_source(self, oid: bytes, error: str) -> None:
        """The pull's source failed: start again from the next one, or fail the pull if none is left."""
        pull = self.pulls[oid]
        node_id, _ = pull["sources"].pop(0)
        pull.setdefault("failures", []).append(f"node {node_id}: {error}")
        pull["sources"] = [s for s in pull["sources"] if s[0] not in self.dead_nodes]
        if pull["sources"]:
            pull["size"], pull["received"] = None, 0
            self.store.free(oid)
            return self.request_chunk(oid, 0)
        self.fail_pull(oid, f"object {oid.hex()} is gone from every node that held it ({'; '.join(pull['failures'])})")

    def source_died(self, node_id: str, address: str) -> None:
        """The head declared a node dead: pulls from it move to their next source or fail, at once."""
        self.dead_nodes.add(node_id)
        sock = self.sources.pop(address, None)
        if sock is not None:                  # requests queued for the dead node must not go anywhere
            self.poller.unregister(sock)
            sock.close(linger=0)
        for oid, pull in list(self.pulls.items()):
            if pull["sources"][0][0] == node_id:
                self.next_source(oid, "it stopped heartbeating and the head declared it dead")

    def fail_pull(self, oid: bytes, reason: str) -> None:
        pull = self.pulls.pop(oid)
        self.store.free(oid)
        for sock, ident, req in pull["waiters"]:
            transport.send(sock, [P.pinned(req, oid, None, None, reason)], to=ident)


def pin_socket_path(cfg: NodeConfig) -> str:
    """The node's pin channel: a unix socket beside its IPC socket, in the session's private directory."""
    return cfg.ipc_address[len("ipc://"):-len(".sock")] + "-pin.sock"


def actor_socket_path(cfg: NodeConfig, worker_id: bytes) -> str:
    """Where an actor on this node listens when the cluster is local only (IPC)."""
    return os.path.join(os.path.dirname(cfg.ipc_address[len("ipc://"):]), f"actor-{worker_id.hex()}.sock")


def default_memory(store_bytes: int) -> int:
    """The `memory` resource of a node started without --memory: what Ray advertises, roughly. The
    memory available now (MemAvailable, or the cgroup's limit less its usage in a container, the
    smaller), less the object store (which /dev/shm takes out of the same memory), at least 0."""
    available = config.available_memory()
    return max(0, available - store_bytes)


def make_config(head_address: str, token: str, *, num_cpus=None, num_gpus=None, resources=None,
                object_store_memory=None, ip=None, port: int = 0, is_head_node=False, local_only=False,
                store_dir: str | None = None, memory=None, labels=None) -> NodeConfig:
    """The node's settings: arguments first, then TASUKI_* variables, then what the machine has."""
    from .labels import parse_labels
    node_id = os.urandom(6).hex()
    cpus = float(num_cpus if num_cpus is not None else config.env("NUM_CPUS", os.cpu_count() or 1))
    gpus = int(num_gpus if num_gpus is not None else config.env("NUM_GPUS", detect_gpus()))
    total = {"CPU": cpus, **config.parse_resources(resources if resources is not None else config.env("RESOURCES"))}
    if gpus:
        total["GPU"] = float(gpus)
    store_memory = object_store_memory if object_store_memory is not None else config.env("OBJECT_STORE_MEMORY")
    store_dir = os.path.abspath(store_dir or config.store_dir())     # every process on the node opens this path
    size = store_size(int(store_memory) if store_memory else None, store_dir)
    memory = memory if memory is not None else config.env("MEMORY")
    total["memory"] = float(int(float(memory)) if memory not in (None, "") else default_memory(size))
    labels = parse_labels(labels if labels is not None else config.env("LABELS"))
    ip = ip or config.node_ip()
    session = config.session_dir()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu_ids = [g.strip() for g in visible.split(",")][:gpus] if visible else [str(i) for i in range(gpus)]
    return NodeConfig(
        head_address=head_address, token=token, node_id=node_id, ip=ip, resources=total, gpu_ids=gpu_ids,
        store_bytes=size, store_path=os.path.join(store_dir, f"tasuki-{os.getpid()}-{node_id}"),
        ipc_address=f"ipc://{session}/node-{node_id}.sock",
        tcp_address=f"ipc://{session}/node-{node_id}-tx.sock" if local_only else f"tcp://{ip}:{port}",
        spill_dir=os.path.join(session, "spill", node_id), is_head_node=is_head_node, labels=labels,
        node_name=config.env("NODE_NAME") or socket.gethostname(), group=config.env("NODE_GROUP", ""))


def sweep_stale_stores(directory: str) -> None:
    """Remove store files left in `directory` by node agents that were killed (their pid no longer runs)."""
    try:
        names = os.listdir(directory)
    except OSError:           # a missing directory: store_size says so
        return
    for name in names:
        if name.startswith("tasuki-"):
            try:
                pid = int(name.split("-")[1])
            except (IndexError, ValueError):
                continue
            path = os.path.join(directory, name)
            try:
                if not os.path.exists(f"/proc/{pid}") and os.lstat(path).st_uid == os.getuid():
                    os.unlink(path)     # only our own files: root must not sweep another user's store
            except OSError:
                pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasuki.node")
    parser.add_argument("--head", required=True)
    parser.add_argument("--num-cpus", type=float, default=None)
    parser.add_argument("--num-gpus", type=int, default=None)
    parser.add_argument("--resources", default=None)
    parser.add_argument("--object-store-memory", type=int, default=None)
    parser.add_argument("--memory", type=int, default=None, help="bytes of the memory resource")
    parser.add_argument("--labels", default=None, help="the node's labels, a JSON object of strings")
    parser.add_argument("--node-ip-address", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--head-node", action="store_true")
    parser.add_argument("--local-only", action="store_true")
    parser.add_argument("--store-dir", default=None, help="directory of the object store file (default: "
                                                           "TASUKI_STORE_DIR, else /dev/shm)")
    args = parser.parse_args(argv)
    lifeline = os.environ.pop("TASUKI_LIFELINE_FD", None)
    token = os.environ["TASUKI_TOKEN"]
    store_dir = os.path.abspath(args.store_dir or config.store_dir())
    sweep_stale_stores(store_dir)
    cfg = make_config(args.head, token, num_cpus=args.num_cpus, num_gpus=args.num_gpus, resources=args.resources,
                      object_store_memory=args.object_store_memory, ip=args.node_ip_address, port=args.port,
                      is_head_node=args.head_node, local_only=args.local_only, store_dir=store_dir,
                      memory=args.memory, labels=args.labels)
    if "TASUKI_THREAD_VARIABLES" not in os.environ:     # before NumPy loads its BLAS (see config)
        config.default_thread_variables(os.environ)
    # Import what workers need, then fork the zygote before any zmq context or thread exists.
    # (api pulls in client, NumPy and cloudpickle: a worker forked without them imports them itself.)
    from . import api, worker, zygote  # noqa: F401
    zygote_sock, zygote_pid = zygote.start(lambda worker_id: worker.main(cfg, worker_id))
    try:
        agent = NodeAgent(cfg, zygote_sock, zygote_pid, int(lifeline) if lifeline else None)
    except ObjectStoreFullError as e:         # its directory cannot hold even the store's first extent
        raise SystemExit(f"tasuki node: {e}") from None
    signal.signal(signal.SIGTERM, lambda *_: setattr(agent, "leave_asked", True))     # drain, then exit
    signal.signal(signal.SIGINT, lambda *_: setattr(agent, "running", False))
    agent.serve()
    sys.exit(agent.exit_code)


if __name__ == "__main__":
    main()

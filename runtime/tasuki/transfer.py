"""Objects moved in chunks between a process and a node store it cannot map (a remote driver).

A driver with no node on its machine reads a stored object with READs and writes a large `put`
with ALLOC, WRITE and SEAL, a window of WINDOW chunks of config.TRANSFER_CHUNK bytes in flight.
Two channels carry them, with the same loops on top:

  NodeChannel   a DEALER of the calling thread's own to the node's transfer address (direct)
  HeadChannel   the client's connection to the head, through its IO thread; the head's relay
                (relay.py) forwards each request to the node over the node's own connection and
                each answer back, so it holds only the chunks in flight, never the whole object

Which one a driver uses is decided once, at init (`route`, `unreachable`): through the head when
it cannot open a TCP connection to the nodes' transfer addresses (a laptop behind `kubectl
port-forward`, a LoadBalancer that reaches only the head's Service), or when TASUKI_VIA_HEAD=1.
Pure decisions (`route`, `pick_store_node`, `pieces`) are functions without I/O.
"""
from __future__ import annotations

import os
import queue
import socket
import threading
import time

from . import config, protocol as P, transport

WINDOW = 4               # chunks in flight per transfer, each way
PROBE_TIMEOUT_S = 1.0    # seconds a TCP connect to a node's transfer address may take at init
PROBE_NODES = 4          # nodes probed (in parallel)


# --- the route: direct, or through the head ------------------------------------------------
def route(forced: str | None, has_local_node: bool, unreachable_nodes: list) -> bool:
    """True when a driver must work through the head. `forced`: TASUKI_VIA_HEAD ("1" through the
    head, "0" never); `unreachable_nodes`: the probed nodes it could not connect to."""
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no") or has_local_node:
        return False
    return bool(unreachable_nodes)


def unreachable(nodes: list, timeout_s: float = PROBE_TIMEOUT_S, limit: int = PROBE_NODES) -> list:
    """[(node_id, address, why)] of the first `limit` live nodes whose transfer address a TCP
    connect cannot reach within `timeout_s` (all probed at once, so the whole check takes at most
    `timeout_s`). An ipc:// address is reachable when its socket file is visible here."""
    live = [n for n in nodes if n.get("state") != "dead" and n.get("address")][:limit]
    failed: list = []
    lock = threading.Lock()

    def probe(node: dict) -> None:
        address = node["address"]
        why = None
        if address.startswith("ipc://"):
            if not os.path.exists(address[len("ipc://"):]):
                why = "its socket file is not on this machine"
        else:
            host, port = address.split("://", 1)[-1].rsplit(":", 1)
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
            except OSError as e:
                why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        if why is not None:
            with lock:
                failed.append((node["node_id"], address, why))

    threads = [threading.Thread(target=probe, args=(n,), daemon=True) for n in live]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s + 0.2
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    with lock:
        done = {node_id for node_id, _, _ in failed}
        for t, n in zip(threads, live):        # still connecting: as good as unreachable
            if t.is_alive() and n["node_id"] not in done:
                failed.append((n["node_id"], n["address"], "timed out"))
        return list(failed)


def notice(head_address: str, forced: bool, failed: list) -> str:
    """The one line a driver prints at init when it works through the head."""
    if forced:
        why = "TASUKI_VIA_HEAD=1"
    else:
        node_id, address, reason = failed[0]
        more = f" (and {len(failed) - 1} more node(s))" if len(failed) > 1 else ""
        why = f"this driver cannot reach node {node_id} at {address} ({reason}){more}"
    return (f"tasuki: {why}: working through the head at {head_address}. Tasks run as usual; large objects "
            f"and actor calls are relayed by the head, slower than direct (set TASUKI_VIA_HEAD=0 to never "
            f"relay, =1 to skip this check)")


def pick_store_node(nodes: list, size: int) -> dict | None:
    """The live node to store a new object of `size` bytes on: the head's own node if its store has
    room, else the one with the most free room; any live node when none reports room (its store
    spills to disk)."""
    live = [n for n in nodes if n.get("state") == "alive"]
    if not live:
        return None

    def free(n: dict) -> int:
        store = n.get("object_store") or {}
        return store.get("capacity", 0) - store.get("used", 0)
    roomy = [n for n in live if free(n) >= size]
    if roomy:
        return max(roomy, key=lambda n: (bool(n.get("is_head_node")), free(n)))
    return max(live, key=free)


def pieces(parts: list, payloads: list, chunk: int) -> list:
    """[(offset in the block, memoryview)] of at most `chunk` bytes each: a serialized object's
    header and buffers cut to travel, placed as layout_parts placed them."""
    out = []
    for (at, n), payload in zip(parts, payloads):
        view = memoryview(payload).cast("B") if n else memoryview(b"")
        for start in range(0, n, chunk):
            out.append((at + start, view[start:start + chunk]))
    return out


# --- channels ------------------------------------------------------------------------------
class NodeChannel:
    """Requests to one node's transfer address on a DEALER owned by the calling thread."""

    def __init__(self, client, node_id: str, address: str) -> None:
        self.client, self.node_id, self.address = client, node_id, address
        self.sock = transport.connect(client.context, address, client.token, b"R" + os.urandom(8))

    def new_req(self) -> int:
        return next(self.client.counter)

    def read_message(self, req: int, oid: bytes, start: int, length: int) -> tuple:
        return P.read(req, oid, start, length)

    def send(self, message: tuple, data=()) -> None:
        transport.send(self.sock, [message], data=data)

    def recv(self, timeout_s: float):
        """(message, data frames), or None after `timeout_s` seconds."""
        if not self.sock.poll(max(1, int(timeout_s * 1000))):
            return None
        messages, frames = transport.recv_dealer(self.sock)
        return messages[0], frames

    def close(self) -> None:
        self.sock.close(linger=0)


class HeadChannel:
    """Requests relayed by the head, on the client's one connection to it (its IO thread sends
    them and hands the answers, by request id, to this channel's queue)."""

    def __init__(self, client, node_id: str | None = None, address: str | None = None) -> None:
        self.client, self.node_id, self.address = client, node_id, address
        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        self.reqs: list = []

    def new_req(self) -> int:
        req = next(self.client.counter)
        self.client.transfers[req] = self.answers
        self.reqs.append(req)
        return req

    def read_message(self, req: int, oid: bytes, start: int, length: int) -> tuple:
        return P.read(req, oid, start, length, self.node_id)

    def send(self, message: tuple, data=()) -> None:
        self.client.send_head_frames(message, data)

    def recv(self, timeout_s: float):
        try:
            return self.answers.get(timeout=max(0.001, timeout_s))
        except queue.Empty:
            return None

    def close(self) -> None:
        for req in self.reqs:
            self.client.transfers.pop(req, None)


# --- the two transfers ---------------------------------------------------------------------
class SourceFailed(Exception):
    """This source cannot serve the object (not stored there, or gone): try the next copy."""


def read(channel, oid: bytes, wait) -> tuple[bytearray, list]:
    """(the object's block, its layout), read with WINDOW chunk requests in flight. `wait(channel)`
    returns the next answer or raises (timeout, the object lost); SourceFailed when the node says
    it does not have it."""
    chunk = config.TRANSFER_CHUNK
    channel.send(channel.read_message(channel.new_req(), oid, 0, chunk))
    data, parts, size, next_at, inflight = None, None, 0, chunk, 1
    while inflight:
        message, frames = wait(channel)
        inflight -= 1
        chunk_answer = P.parse(message)
        if chunk_answer.error is not None:
            raise SourceFailed(chunk_answer.error)
        if data is None:
            data, parts, size = bytearray(chunk_answer.size), chunk_answer.layout, chunk_answer.size
        piece = frames[0].buffer
        data[chunk_answer.start:chunk_answer.start + len(piece)] = piece
        while inflight < WINDOW and next_at < size:
            channel.send(channel.read_message(channel.new_req(), oid, next_at, chunk))
            next_at += chunk
            inflight += 1
    return data, parts


def write(channel, oid: bytes, size: int, parts: list, payloads: list, wait) -> str:
    """Store a serialized object on the channel's node (or the one the head picks): ALLOC, the
    pieces as WRITEs with WINDOW unacknowledged at most, then SEAL. Returns the node id;
    ObjectStoreFullError when no store has room."""
    channel.send(P.alloc(channel.new_req(), oid, size))
    allocated = P.parse(wait(channel)[0])
    node_id = allocated.node_id or channel.node_id      # the head names the node it picked
    if allocated.offset is None:  # the node's store has no room, or (no node named) the head found no node
        from .exceptions import ClusterError, ObjectStoreFullError
        raise (ObjectStoreFullError if node_id is not None else ClusterError)(allocated.error)
    inflight = 0
    for at, view in pieces(parts, payloads, config.TRANSFER_CHUNK):
        while inflight >= WINDOW:
            inflight -= _acknowledged(wait(channel)[0], oid, node_id)
        channel.send(P.write(oid, at, channel.new_req()), data=[view])
        inflight += 1
    while inflight:
        inflight -= _acknowledged(wait(channel)[0], oid, node_id)
    channel.send(P.seal(oid, parts))
    return node_id


def _acknowledged(message: tuple, oid: bytes, node_id: str) -> int:
    written = P.parse(message)
    if written.kind == P.WRITTEN and written.error is not None:
        from .exceptions import ClusterError
        raise ClusterError(f"writing object {oid.hex()} to node {node_id} failed: {written.error}; put it again")
    return 1

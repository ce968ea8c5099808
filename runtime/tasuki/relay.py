"""The head's relay: object transfers and actor calls for drivers that reach only the head.

A driver behind `kubectl port-forward` or a LoadBalancer reaches the head's address and nothing
else (see transfer.py for how it finds out). The head then carries for it what a driver
otherwise does directly with nodes and actors; the Head's loop owns this state and calls in:

  get:  driver READ(req, id, start, n, node) ─► head READ(r, ...) ─► node, over the node's own
        connection to the head ─► CHUNK(r, ...) + data ─► head CHUNK(req, ...) + the same frame ─► driver
  put:  driver ALLOC(req, id, size) ─► head picks a node with room ─► ALLOCATED(req, ..., node id);
        WRITE(id, at, req) + data ─► that node ─► WRITTEN ─► driver; SEAL ─► that node; then the
        driver's PUT registers the object there, as a local put does
  actor calls: driver ACTOR_SEND(actor, address, calls) ─► a DEALER of the head's, one per driver and
        actor, with the driver's identity (the actor orders and answers calls by it) ─► the actor;
        its answers come back on that DEALER and go to the driver as ACTOR_REPLY + the raw frame

Why the nodes' connections to the head rather than new ones to their transfer addresses: they
exist and work wherever the cluster does (a node that joined reached the head), and cost no socket
per node in the head. Data frames are forwarded as zmq frames, never copied or unpickled; the
driver keeps a window of transfer.WINDOW chunks in flight, so the head holds at most that many
chunks per transfer, whatever the object's size. Actor answers are forwarded unread too.
"""
from __future__ import annotations

import itertools

import zmq

from . import protocol as P, transfer, transport


class Relay:
    def __init__(self, context: zmq.Context, token: str, sock: zmq.Socket, send) -> None:
        """`sock`: the head's ROUTER (frames with data go out on it at once); `send(ident, message)`:
        the head's batched send for the rest."""
        self.context, self.token, self.sock, self.send = context, token, sock, send
        self.counter = itertools.count(1)
        self.requests: dict[int, tuple] = {}          # relay req -> (driver ident, its req, node id, kind, object id)
        self.open_puts: dict[bytes, dict] = {}        # driver ident -> {object id: node id}: allocated, not sealed
        self.links: dict[tuple, tuple] = {}           # (driver ident, actor id) -> (address, DEALER)
        self.socks: dict = {}                         # DEALER -> (driver ident, actor id)
        self.poller: zmq.Poller | None = None         # the head's, set by its loop

    # --- objects -----------------------------------------------------------------------------
    def forward(self, ident: bytes, req: int, node_id: str, kind: str, oid: bytes, build, data=()) -> None:
        """Send a request to a node on the driver's behalf, `build(relay_req)` (the driver's request
        under a request id of the head's); its answer comes back to `answer`."""
        relay_req = next(self.counter)
        self.requests[relay_req] = (ident, req, node_id, kind, oid)
        node = b"N" + node_id.encode()
        message = build(relay_req)
        if data:
            transport.send(self.sock, [message], to=node, data=data)
        else:
            self.send(node, message)

    def read(self, ident: bytes, req: int, oid: bytes, start: int, length: int, node_id: str,
             connected: bool) -> None:
        if not connected:
            return self.send(ident, P.chunk(req, oid, start, None, None, f"node {node_id} is not connected "
                                                                        f"to the head (it left or died)"))
        self.forward(ident, req, node_id, P.READ, oid, lambda relay_req: P.read(relay_req, oid, start, length))

    def alloc(self, ident: bytes, req: int, oid: bytes, size: int, nodes: list) -> None:
        node = transfer.pick_store_node(nodes, size)
        if node is None:
            return self.send(ident, P.allocated(req, None, f"no live node to store object {oid.hex()} "
                                                            f"({size:,} bytes) on: start a node"))
        self.open_puts.setdefault(ident, {})[oid] = node["node_id"]
        self.forward(ident, req, node["node_id"], P.ALLOC, oid, lambda relay_req: P.alloc(relay_req, oid, size))

    def write(self, ident: bytes, message: tuple, data: list) -> None:
        _, oid, offset, req = message
        node_id = self.open_puts.get(ident, {}).get(oid)
        if node_id is None:
            return self.send(ident, P.written(req, oid, offset, f"object {oid.hex()} has no open block"))
        self.forward(ident, req, node_id, P.WRITE, oid, lambda relay_req: P.write(oid, offset, relay_req), data)

    def seal(self, ident: bytes, oid: bytes, parts: list) -> None:
        node_id = self.open_puts.get(ident, {}).pop(oid, None)
        if node_id is not None:
            self.send(b"N" + node_id.encode(), P.seal(oid, parts))

    def answer(self, message: tuple, data=()) -> None:
        """A node's CHUNK, ALLOCATED or WRITTEN for a relayed request: to its driver, with its data frame."""
        entry = self.requests.pop(message[1], None)
        if entry is None:
            return                                    # its driver left
        ident, req, node_id, _, oid = entry
        answer = P.parse(message)
        if answer.kind == P.ALLOCATED:
            if answer.offset is None:                 # no room there: nothing to seal
                self.open_puts.get(ident, {}).pop(oid, None)
            reply = P.allocated(req, answer.offset, answer.error, node_id)
        else:                                         # CHUNK or WRITTEN: as the node sent it, with the driver's req
            reply = (answer.kind, req, *message[2:])
        if data:
            transport.send(self.sock, [reply], to=ident, data=data)
        else:
            self.send(ident, reply)

    def node_gone(self, node_id: str) -> None:
        """A node died or left: the requests it will never answer fail now, so drivers move on."""
        why = f"node {node_id} died or left while the head relayed this transfer"
        for relay_req, (ident, req, node, kind, oid) in list(self.requests.items()):
            if node != node_id:
                continue
            del self.requests[relay_req]
            if kind == P.READ:
                self.send(ident, P.chunk(req, oid, 0, None, None, why))
            elif kind == P.ALLOC:
                self.send(ident, P.allocated(req, None, why))
            else:
                self.send(ident, P.written(req, oid, 0, why))
        for puts in self.open_puts.values():
            for oid in [oid for oid, node in puts.items() if node == node_id]:
                del puts[oid]

    # --- actor calls ---------------------------------------------------------------------------
    def actor_send(self, ident: bytes, actor_id: bytes, address: str, calls: list) -> None:
        key = (ident, actor_id)
        link = self.links.get(key)
        if link is None or link[0] != address:        # first call, or the actor restarted elsewhere
            if link is not None:
                self._close(link[1])
            sock = transport.connect(self.context, address, self.token, ident)
            self.links[key] = (address, sock)
            self.socks[sock] = key
            self.poller.register(sock, zmq.POLLIN)
            link = self.links[key]
        transport.send(link[1], calls)

    def actor_gone(self, actor_id: bytes) -> None:
        """The actor's process is gone (it restarts elsewhere, or is dead): close the links to it,
        which zmq would otherwise try to reconnect for ever."""
        for key in [k for k in self.links if k[1] == actor_id]:
            self._close(self.links.pop(key)[1])

    def drain_actors(self, events: dict) -> None:
        """Forward what actors answered on the head's DEALERs, unread, to their drivers."""
        for sock in [s for s in events if s in self.socks]:
            ident, actor_id = self.socks[sock]
            header = P.encode([P.actor_reply(actor_id)])
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self.sock.send_multipart([ident, header, frames[0]], copy=False)

    def _close(self, sock) -> None:
        self.socks.pop(sock, None)
        if self.poller is not None:
            self.poller.unregister(sock)
        sock.close(linger=0)

    # --- a driver leaves, the head stops -------------------------------------------------------
    def forget(self, ident: bytes) -> None:
        """The driver left: close its actor links, free its unsealed blocks, drop its requests."""
        for key in [k for k in self.links if k[0] == ident]:
            self._close(self.links.pop(key)[1])
        for oid, node_id in self.open_puts.pop(ident, {}).items():
            self.send(b"N" + node_id.encode(), P.free([oid]))
        if self.requests:
            for relay_req in [r for r, entry in self.requests.items() if entry[0] == ident]:
                del self.requests[relay_req]

    def close(self) -> None:
        for sock in list(self.socks):
            self._close(sock)
        self.links.clear()

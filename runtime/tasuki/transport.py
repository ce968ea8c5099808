"""Sockets: the only module that touches zmq.

Every listening socket is a ROUTER; every peer connects with a DEALER whose identity names it.
Over TCP, CurveZMQ encrypts and authenticates: the server's key pair and the one client key pair
are derived from the cluster token, and a ZAP handler admits only the token's client key. A peer
without the token cannot finish the handshake, so zmq hands us none of its bytes and nothing it
sends is ever unpickled. IPC sockets live in a 0700 directory and are reached by this user only;
`connect` checks that an ipc:// address lies in such a directory (config.private_dir) before it
reads a byte from it, because IPC has no handshake: whoever could plant the socket would be trusted.

Framing: DEALER → ROUTER arrives as [identity, payload, *data]; ROUTER → DEALER is sent as
[identity, payload, *data] and arrives as [payload, *data]. `payload` is protocol.encode(list).
"""
from __future__ import annotations

import hashlib
import os
import threading

import zmq
import zmq.backend
from zmq.utils import z85

from . import config, protocol

ZAP_ENDPOINT = "inproc://zeromq.zap.01"


def _key_pair(token: str, role: str) -> tuple[bytes, bytes]:
    secret = z85.encode(hashlib.sha256(f"tasuki/{role}/{token}".encode()).digest())
    return zmq.curve_public(secret), secret


def start_authenticator(context: zmq.Context, token: str) -> None:
    """Answer ZAP requests in a thread: admit CURVE clients holding the token's client key only."""
    allowed = _key_pair(token, "client")[0]
    zap = context.socket(zmq.REP)
    zap.linger = 0
    zap.bind(ZAP_ENDPOINT)

    def serve() -> None:
        while True:
            try:
                frames = zap.recv_multipart()
            except zmq.ZMQError:        # context terminated: close our socket so term() can finish
                zap.close(linger=0)
                return
            version, request_id, _domain, _address, _identity, mechanism = frames[:6]
            credentials = frames[6:]
            ok = mechanism == b"CURVE" and credentials and z85.encode(credentials[0]) == allowed
            zap.send_multipart([version, request_id, b"200" if ok else b"400",
                                b"OK" if ok else b"unknown key", b"", b""])

    threading.Thread(target=serve, name="tasuki-zap", daemon=True).start()


def _tune(sock: zmq.Socket) -> None:
    sock.linger = 0
    sock.sndhwm = 0
    sock.rcvhwm = 0


def bind(context: zmq.Context, address: str, token: str) -> tuple[zmq.Socket, str]:
    """A ROUTER listening on `address` (tcp://IP:PORT, tcp://IP:0 for any port, or ipc://PATH),
    and the address it listens on."""
    sock = context.socket(zmq.ROUTER)
    _tune(sock)
    if address.startswith("tcp://"):
        public, secret = _key_pair(token, "server")
        sock.curve_server = True
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.zap_domain = b"tasuki"
    if address.endswith(":0"):
        port = sock.bind_to_random_port(address[:-2])
        address = f"{address[:-2]}:{port}"
    else:
        sock.bind(address)
    return sock, address


def connect(context: zmq.Context, address: str, token: str, identity: bytes) -> zmq.Socket:
    """A DEALER connected to a ROUTER at `address`, authenticated with the cluster token."""
    sock = context.socket(zmq.DEALER)
    _tune(sock)
    sock.identity = identity
    if address.startswith("tcp://"):
        sock.curve_serverkey = _key_pair(token, "server")[0]
        sock.curve_publickey, sock.curve_secretkey = _key_pair(token, "client")
    elif address.startswith("ipc://"):
        config.private_dir(os.path.dirname(address[len("ipc://"):]), create=False)
    sock.connect(address)
    return sock


def send(sock: zmq.Socket, messages: list, to: bytes | None = None, data=()) -> None:
    frames = [protocol.encode(messages), *data]
    if to is not None:
        frames.insert(0, to)
    sock.send_multipart(frames, copy=len(data) == 0)


def recv_dealer(sock: zmq.Socket) -> tuple[list, list]:
    """(messages, data frames) from a DEALER."""
    frames = sock.recv_multipart(copy=False)
    return protocol.decode(frames[0].buffer), frames[1:]


class MalformedFrame(Exception):
    """A peer's frame that does not decode; `identity` names the peer, the cause says why."""

    def __init__(self, identity: bytes, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.identity = identity


_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
_get_option = zmq.backend.Socket.get       # the C Socket's: pyzmq's own turns EVENTS into an enum.Flag


def readable(sock: zmq.Socket) -> bool:
    """Whether a message waits on `sock`: ~1 µs, where an empty read's zmq.Again costs ~4 µs and
    pyzmq's `sock.get(zmq.EVENTS) & zmq.POLLIN`, through enum.Flag, ~2 µs."""
    return bool(_get_option(sock, _EVENTS) & _POLLIN)


def recv_router_nowait(sock: zmq.Socket) -> tuple[bytes, list, list]:
    """(identity, messages, data frames) from a ROUTER; zmq.Again when nothing is queued,
    MalformedFrame when the payload is not a pickled batch."""
    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
    try:
        return frames[0].bytes, protocol.decode(frames[1].buffer), frames[2:]
    except Exception as e:
        raise MalformedFrame(frames[0].bytes, e) from e

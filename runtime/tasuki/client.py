"""The connection every driver and worker holds to the cluster: submit, put, get, refcounts.

One IO thread owns the sockets (zmq sockets are not thread-safe): a DEALER to the head and one
to the local node agent. User threads never touch them; they append messages to a deque and
wake the IO thread through a pipe, once per batch, so 10,000 `.remote()` calls in a loop leave
as a few zmq messages. Objects that arrive (results pushed by the head for tasks this process
submitted, or answers to GET) go into `self.objects`; `get` waits on a condition for them.

Large objects never pass through the head: `put` allocates a block in the local node's arena
(one ALLOC round trip), writes it in place and tells the head where it is; `get` asks the node
to pin the block (pulling it from another node first if needed) and reads it without a copy.
A process on a machine without a node (a remote driver) moves them in chunks instead (transfer.py):
over TCP with the nodes, or, when it reaches only the head's address, relayed by the head, with
its actor calls too (`via_head`, decided once at init; see relay.py for the head's side).
"""
from __future__ import annotations

import gc
import itertools
import os
import queue
import select
import socket
import sys
import threading
import time
from collections import deque

import zmq

from . import __version__, config, object_ref, protocol as P, recovery as R, serialization, transfer, transport
from .exceptions import (ClusterError, GetTimeoutError, ObjectLostError, SerializationError, TaskError,
                         VersionMismatchError)
from .object_ref import ObjectRef
from .object_store import Arena, block_size, layout_parts

PYTHON_VERSION = "%d.%d" % sys.version_info[:2]
HEARTBEAT_S = 2.0
SILENT_HEARTBEAT_S = 0.2     # seconds between heartbeats once the head missed one: a restarted head hears this
                             # driver (and answers REJOIN) within this, not within HEARTBEAT_S (recovery.py)
_CALL_COUNTER_BIT = P.ACTOR_CALL_BIT << 48     # in an id's 15th byte: protocol.is_actor_call


class Client:
    def __init__(self, head_address: str, token: str, role: str, identity: bytes | None = None,
                 info: dict | None = None, node: dict | None = None, on_message=None) -> None:
        self.head_address = head_address
        self.token = token
        self.role = role
        self.identity = identity or (b"D" + os.urandom(8))
        self.id_prefix = os.urandom(8)
        self.counter = itertools.count(1)
        self.context = zmq.Context()
        self.head = transport.connect(self.context, head_address, token, self.identity)
        self.node = node                     # local node: {"node_id", "ipc", "store_path"} or None
        self.node_sock = None
        self.node_died: str | None = None    # the local node's id once the head declared it dead
        self.via_head: bool | None = None    # a driver that reaches only the head (None: not decided yet)
        self.transfers: dict = {}            # request id -> the queue of a transfer relayed by the head
        self.to_head_frames: deque = deque()  # (message, data frames): each leaves as a zmq message of its own
        self.arena: Arena | None = None
        self.pin_conns = threading.local()              # each thread's connection to the node's pin channel
        self.to_head: deque = deque()
        self.to_node: deque = deque()
        self.wake_r, self.wake_w = os.pipe()
        self.wake_pending = False
        self.cond = threading.Condition()
        self.awaited: dict[bytes, int] = {}  # object id -> gets sleeping until it arrives (under cond)
        self.broad_waiters = 0               # threads woken by any arrival (wait_any; under cond)
        self.objects: dict[bytes, tuple] = {}          # object id -> (kind, data)
        self.log_to_driver = True            # init(log_to_driver=False): the tasks' output is not printed
        self.errors_arrived = 0              # errors among them so far: a get of a list fails at the first
        self.requested: set = set()          # ids asked for with GET, or pushed to us as their owner
        self.refcounts: dict[bytes, int] = {}
        self.ref_lock = threading.Lock()
        self.functions_sent: dict[bytes, bytes] = {}    # function id -> its blob (re-sent to a restarted head)
        self.unanswered: dict[bytes, tuple] = {}       # task id -> SUBMIT spec, until a result arrives (recovery.py)
        self.unanswered_calls: dict[bytes, tuple] = {}  # call id -> (actor id, return ids, contained), as well
        self.created_actors: dict[bytes, tuple] = {}   # actor id -> its CREATE_ACTOR spec (re-sent to a restarted head)
        self.stored_puts: dict[bytes, tuple] = {}      # object id -> (node id, size): puts kept in node stores
        self.session: float | None = None              # the head's (WELCOME); another in REJOIN: a new head
        self.rejoined_at = float("-inf")               # when this process last said HELLO again to a new head
        self.requested_resources: list | None = None    # this driver's last request_resources(), for a new head
        self.rejoin_report = None                      # worker: () -> what it runs, for a new head (worker.py)
        self.to_actors: deque = deque()                # (actor id, info, CALL) from user threads
        self.actor_links: dict[bytes, _ActorLink] = {}  # IO thread only
        self.actor_socks: dict = {}                    # DEALER to an actor -> its link
        self.touched_links: set = set()                # links with calls queued by _flush_actors
        self.servers: deque = deque()                  # a ROUTER for this actor's callers, handed over
        self.server = None
        self.to_callers: deque = deque()               # (caller identity, messages) to send on it
        self.poller = zmq.Poller()
        self.replies: dict[int, list] = {}             # request id -> [event, reply]
        self.on_message = on_message                    # worker: RUN, INTERRUPT, EXIT
        self.on_block = None        # worker: its set_blocked, while a task waits for a recomputed object
        self.welcome: dict | None = None
        self.refused: str | None = None
        self.nodes_cache: list | None = None
        self.running = True
        self.last_heard = time.time()       # the head's last message (it answers driver heartbeats)
        self.head_stopped: str | None = None  # HEAD_STOPPING's reason: the head shut down (SIGTERM, `tasuki stop`)
        self.warned: set = set()
        self.watchers: dict[bytes, list] = {}         # object id -> callbacks waiting for it (when_ready)
        self.watch_lock = threading.Lock()
        self.callbacks: queue.SimpleQueue | None = None   # run by the callback thread, started on first use
        hello = self.hello = {"version": __version__, "python": PYTHON_VERSION, "pid": os.getpid(), **(info or {})}
        self.to_head.append(P.hello(role, hello))
        self._wake()                    # send HELLO now, not at the IO loop's first 500 ms poll timeout
        self.thread = threading.Thread(target=self._io_loop, name="tasuki-io", daemon=True)
        self.thread.start()

    # --- lifecycle -----------------------------------------------------------------------
    def wait_welcome(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        with self.cond:
            while self.welcome is None and self.refused is None:
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise ClusterError(
                        f"no answer from the tasuki head at {self.head_address} within {timeout:.0f} s. Check that "
                        f"the head is running (`tasuki status`), that the address and port are right, and that "
                        f"this driver has the cluster's token (init(token=...) or TASUKI_TOKEN): a wrong token "
                        f"looks exactly like an unreachable head.")
                self.cond.wait(remaining)
        if self.refused is not None:
            raise VersionMismatchError(self.refused) if "runs" in self.refused else ClusterError(self.refused)
        return self.welcome

    def activate(self) -> None:
        object_ref._client = self

    def close(self, linger_ms: int = 0) -> None:
        """Disconnect. `linger_ms`: how long messages already queued may still take to leave (an
        exiting actor's last replies); 0 drops them."""
        if not self.running:
            return
        if object_ref._client is self:
            object_ref._client = None
        self.send_head(P.bye())
        self.running = False
        self._fail_waiting()
        if self.callbacks is not None:
            self.callbacks.put(None)
        self._wake()
        self.thread.join(timeout=2)
        self.context.destroy(linger=linger_ms)
        os.close(self.wake_r)
        os.close(self.wake_w)

    @staticmethod
    def closed_error() -> ClusterError:
        """What a result still awaited when the connection closed fails with."""
        return ClusterError("the connection to the tasuki cluster was closed (tasuki.shutdown()) before this "
                            "result arrived: wait for results, or shut executors and pools down, before shutdown()")

    def _fail_waiting(self, error: ClusterError | None = None) -> None:
        """Closing (or the head shut down): the objects that callbacks (futures, the drop-ins) or
        other threads' gets still wait for will never come; they fail with a ClusterError instead
        of waiting for ever."""
        blob = serialization.dumps_inline(error or self.closed_error())
        with self.watch_lock:
            waited = list(self.watchers)
        with self.cond:
            for oid in waited:
                self.objects.setdefault(oid, (P.ERROR, blob))
            self.cond.notify_all()
        self._fire(waited)

    # --- sending ---------------------------------------------------------------------------
    def send_head(self, message: tuple) -> None:
        self.to_head.append(message)
        if not self.wake_pending:
            self._wake()

    def send_head_frames(self, message: tuple, data) -> None:
        """A message with raw data frames (a relayed WRITE) to the head, as a zmq message of its own."""
        self.to_head_frames.append((message, data))
        if not self.wake_pending:
            self._wake()

    def send_node(self, message: tuple) -> None:
        self.to_node.append(message)
        if not self.wake_pending:
            self._wake()

    def _wake(self) -> None:
        self.wake_pending = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def request_node(self, message_fn, timeout: float = 300.0, timeout_error: Exception | None = None):
        """Send a request to the local node agent and wait for its reply; raise `timeout_error` (by
        default a ClusterError) when none comes within `timeout` seconds."""
        req = next(self.counter)
        slot = self.replies[req] = [threading.Event(), None]
        if self.node_died is None:
            self.send_node(message_fn(req))
        try:
            if self.node_died is None and not slot[0].wait(timeout):
                raise timeout_error or ClusterError(f"the local node agent did not answer within {timeout:.0f} s")
        finally:
            del self.replies[req]
        if slot[1] is None:
            raise self.node_gone()
        return slot[1]

    def node_gone(self) -> ClusterError:
        """The error for a request to the local node agent once the head has declared it dead."""
        return ClusterError(f"the local node agent {self.node_died} is gone: the head declared it dead (no heartbeat "
                            f"for TASUKI_NODE_TIMEOUT s; its log says why). Start it again: for a cluster that "
                            f"init() started, tasuki.shutdown() and then tasuki.init().")

    def request_head(self, message_fn, timeout: float = 30.0):
        """Send a request to the head and wait for its ANSWER."""
        req = next(self.counter)
        slot = self.replies[req] = [threading.Event(), None]
        message = message_fn(req)
        slot.append(message)            # re-sent to a restarted head (_rejoin)
        self.send_head(message)
        if not slot[0].wait(timeout):
            raise ClusterError(f"the head did not answer a {message[0]!r} request within {timeout:.0f} s")
        del self.replies[req]
        return slot[1][2]

    def query(self, what: str, arg=None, timeout: float = 30.0):
        return self.request_head(lambda req: P.query(req, what, arg), timeout)

    # --- the IO thread ---------------------------------------------------------------------
    def _io_loop(self) -> None:
        """The IO thread's life: a bug in one message's handling is printed, not fatal (this
        thread carries the worker's own log lines, so a silent death would hide it)."""
        while self.running:
            try:
                self._io_loop_once()
            except Exception:
                if not self.running:
                    break
                import traceback
                print(f"tasuki: error in the IO thread of {self.role} pid {os.getpid()}:\n"
                      f"{traceback.format_exc()}", file=sys.__stderr__, flush=True)
        try:
            self._flush()
        except Exception:
            pass

    def _io_loop_once(self) -> None:
        poller = self.poller
        poller.register(self.head, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        next_beat = time.time() + HEARTBEAT_S
        while self.running:
            events = dict(poller.poll(500))
            if self.wake_r in events:
                os.read(self.wake_r, 65536)
            self.wake_pending = False
            if self.node is not None and self.node_sock is None and self.arena is not None:
                self.node_sock = transport.connect(self.context, self.node["ipc"], self.token, self.identity)
                poller.register(self.node_sock, zmq.POLLIN)
            while self.servers:
                self.server, self.on_call = self.servers.popleft()
                poller.register(self.server, zmq.POLLIN)
            self._flush()
            if self.head in events:
                self._drain(self.head)
            if self.node_sock is not None and self.node_sock in events:
                self._drain(self.node_sock)
            if self.server is not None and self.server in events:
                self._drain_server()
            for sock in [s for s in events if s in self.actor_socks]:
                self._drain(sock)
            now = time.time()
            if now >= next_beat and self.role == "driver":
                self.to_head.append(P.heartbeat())
                next_beat = now + (HEARTBEAT_S if now - self.last_heard < 1.5 * HEARTBEAT_S else SILENT_HEARTBEAT_S)
            self._flush()

    def _flush(self) -> None:
        # the head first: an object put just before an actor call must reach the head before the
        # actor, which asks the head for it, gets the call
        if self.to_actors:
            self._flush_actors()
        for messages, sock in ((self.to_head, self.head), (self.to_node, self.node_sock)):
            if messages and sock is not None:
                batch = []
                while messages:
                    batch.append(messages.popleft())
                transport.send(sock, batch)
        while self.to_head_frames:
            message, data = self.to_head_frames.popleft()
            transport.send(self.head, [message], data=data)
        for link in self.touched_links:
            self._send_to_actor(link)
        self.touched_links.clear()
        while self.to_callers:
            ident, messages = self.to_callers.popleft()
            transport.send(self.server, messages, to=ident)

    def _drain(self, sock) -> None:
        wake_all = False
        landed = []                     # the ids of the objects that arrived
        link = self.actor_socks.get(sock)
        while transport.readable(sock):
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            if sock is self.head:
                self.last_heard = time.time()
            wake_all |= self._on_messages(P.decode(frames[0].buffer), frames[1:], link, landed)
        if wake_all or landed:
            # wake the waiting threads only when one of them may go on: a get sleeps until the last
            # object it lacks arrives (waking per batch cost the driver a fifth of its time)
            with self.cond:
                if wake_all or self.broad_waiters or not self.awaited.keys().isdisjoint(landed):
                    self.cond.notify_all()
        if landed and self.watchers:
            self._fire(landed)

    def _on_messages(self, messages: list, data: list, link, landed: list) -> bool:
        """IO thread: handle a batch that came from the head, the node or an actor (`link`; the data
        frames of a relayed CHUNK or ACTOR_REPLY in `data`); the ids of the objects that arrived go in
        `landed`. True if every waiting thread must look: an error, a welcome or a refusal arrived."""
        wake_all = False
        for message in messages:
            kind = message[0]
            if kind == P.OBJECT:
                _, oid, object_kind, payload = message
                self.objects[oid] = (object_kind, payload)
                if self.unanswered:
                    self.unanswered.pop(oid[:-1], None)
                if self.unanswered_calls:
                    self.unanswered_calls.pop(oid[:-1], None)
                landed.append(oid)
                if object_kind == P.ERROR:
                    self.errors_arrived += 1
                    wake_all = True
                if link is not None:
                    link.inflight.pop(oid, None)
            elif kind == P.ACTOR_INFO:
                self._on_actor_info(*message[1:])
            elif kind == P.CANCEL_CALL:
                self._cancel_queued_call(message[1])
                if self.on_message is not None:     # an actor's worker: the call may be its own
                    self.on_message(message)
            elif kind in (P.CHUNK, P.WRITTEN, P.ALLOCATED) and message[1] in self.transfers:
                self.transfers[message[1]].put((message, data))      # a transfer relayed by the head
            elif kind == P.ACTOR_REPLY:           # what an actor answered, relayed by the head
                wake_all |= self._on_messages(P.decode(data[0].buffer), (), self.actor_links.get(message[1]),
                                              landed)
            elif kind in (P.ALLOCATED, P.PINNED, P.ANSWER):
                slot = self.replies.get(message[1])
                if slot is not None:
                    slot[1] = message
                    slot[0].set()
                elif kind == P.PINNED and message[3] is not None:
                    self.to_node.append(P.unpin([message[2]]))    # its get timed out: let it go
            elif kind == P.LOG:
                if self.log_to_driver:
                    self._print_logs(message[1])
            elif kind == P.WARN:
                if message[1] not in self.warned:
                    self.warned.add(message[1])
                    print(f"tasuki: warning: {message[1]}", file=sys.stderr, flush=True)
            elif kind == P.GC:
                # on its own thread: a finalizer the collection runs may block (a __del__ that gets)
                threading.Thread(target=gc.collect, name="tasuki-gc", daemon=True).start()
            elif kind == P.WELCOME:
                self.welcome = message[1]
                self.session = message[1].get("session")
                wake_all = True
            elif kind == P.REJOIN:
                self._rejoin(message[1])
            elif kind == P.NODE_DIED:
                if self.node is not None and message[1] == self.node["node_id"]:
                    self.node_died = message[1]
                    for slot in list(self.replies.values()):
                        if len(slot) == 2:      # a request to that node: it will not answer
                            slot[0].set()
            elif kind == P.REFUSED:
                self.refused = message[1]
                wake_all = True
            elif kind == P.HEAD_RESTARTING:
                if self.role == "driver":
                    print(f"tasuki: {message[1]}; waiting for it to come back (calls wait meanwhile, for up to "
                          f"TASUKI_HEAD_RECONNECT_S)", file=sys.stderr, flush=True)
            elif kind == P.HEAD_STOPPING:
                self.head_stopped = message[1]
                self._fail_waiting(ClusterError(message[1]))    # wakes the gets: check_head raises
            elif self.on_message is not None:
                self.on_message(message)
        return wake_all

    def _rejoin(self, session: float) -> None:
        """IO thread: the head answered REJOIN. A new head (recovery.py): say HELLO again, first in
        the next batch, with what this process has; its get and wait calls keep waiting meanwhile.
        The same head: it forgot this process (a driver silent past DRIVER_TIMEOUT_S, its refs and tasks
        gone): pending gets fail now, as when the head stops."""
        if not R.head_changed(self.session, session):
            if self.head_stopped is None:
                self.head_stopped = (f"the tasuki head at {self.head_address} forgot this {self.role}: it heard nothing "
                                     f"from it for {config.DRIVER_TIMEOUT_S:g} s (a suspended machine, a network "
                                     f"cut), and let its objects and tasks go. Reconnect with init().")
                self._fail_waiting(ClusterError(self.head_stopped))
            return
        self.session = session
        self.rejoined_at = time.time()
        with self.ref_lock:
            holds = list(self.refcounts)
        inline, stored = [], []
        for oid, (kind, data) in list(self.objects.items()):
            if oid not in self.refcounts or oid in self.stored_puts:
                continue
            if kind in (P.VALUE, P.ERROR):
                inline.append((oid, kind, data, len(data)))
            elif kind == P.STORED_KIND:
                stored.append((oid, [node_id for node_id, _ in data], 0))
        stored += [(oid, [node_id], size) for oid, (node_id, size) in list(self.stored_puts.items())]
        what = {"tasks": list(self.unanswered.values()), "actor_calls": list(self.unanswered_calls.values()),
                "holds": holds, "inline": inline, "stored": stored,
                "functions": list(self.functions_sent.items()), "actors": list(self.created_actors.items()),
                "gets": [oid for oid in list(self.requested) if oid not in self.objects]}
        if self.requested_resources is not None:
            what["request_resources"] = self.requested_resources
        if self.welcome is not None and "job_id" in self.welcome:
            what["job_id"] = self.welcome["job_id"]
        if self.rejoin_report is not None:
            what.update(self.rejoin_report())
        unanswered_requests = [slot[2] for slot in list(self.replies.values()) if len(slot) > 2 and slot[1] is None]
        located = [P.actor_locate(actor_id) for actor_id in list(self.actor_links)]   # told of restarts and deaths
        self.to_head.extendleft(reversed([P.hello(self.role, {**self.hello, "rejoin": what}), *located,
                                          *unanswered_requests]))
        self.last_heard = time.time()

    def _drain_server(self) -> None:
        """IO thread: calls from this actor's callers."""
        while transport.readable(self.server):
            ident, messages, _ = transport.recv_router_nowait(self.server)
            for message in messages:
                self.on_call(ident, message)

    def serve_calls(self, sock, on_call) -> None:
        """Hand a bound ROUTER to the IO thread; `on_call(identity, CALL)` runs there for each call."""
        self.servers.append((sock, on_call))
        self._wake()

    def reply(self, ident: bytes, messages: list) -> None:
        self.to_callers.append((ident, messages))
        if not self.wake_pending:
            self._wake()

    @staticmethod
    def _print_logs(lines: list) -> None:
        for stream, text in lines:
            out = sys.stderr if stream == "stderr" else sys.stdout
            out.write(text + "\n")
        sys.stdout.flush()
        sys.stderr.flush()

    # --- refcounts -------------------------------------------------------------------------
    def add_ref(self, oid: bytes, registered: bool) -> None:
        with self.ref_lock:
            count = self.refcounts.get(oid, 0)
            self.refcounts[oid] = count + 1
        if count == 0 and not registered:
            self.send_head(P.hold([oid]))

    def remove_ref(self, oid: bytes) -> None:
        with self.ref_lock:
            count = self.refcounts.get(oid, 0) - 1
            if count > 0:
                self.refcounts[oid] = count
                return
            self.refcounts.pop(oid, None)
        self.objects.pop(oid, None)
        self.requested.discard(oid)
        if self.stored_puts:
            self.stored_puts.pop(oid, None)
        if self.unanswered:         # no one waits for the task's results: not re-sent to a new head
            self.unanswered.pop(oid[:-1], None)
        if self.unanswered_calls:
            self.unanswered_calls.pop(oid[:-1], None)
        spec = self.created_actors.get(oid) if self.created_actors else None
        if spec is not None and not spec[6].get("detached"):      # its last handle here: the actor ends
            del self.created_actors[oid]
        if self.running:
            self.send_head(P.release([oid]))

    def new_id(self) -> bytes:
        return self.id_prefix + next(self.counter).to_bytes(7, "little")

    # --- tasks -------------------------------------------------------------------------------
    def register_function(self, fn_id: bytes, blob: bytes) -> None:
        if fn_id not in self.functions_sent:
            self.functions_sent[fn_id] = blob
            self.send_head(P.function(fn_id, blob))

    def serialize_arguments(self, name: str, args: tuple, kwargs: dict) -> tuple[object, list, list, object]:
        """(blob, deps, contained, holder) of a call: large arguments go to the object store once,
        and `holder` (their ref) must be kept until the message that pins them is queued."""
        deps = [a.id for a in args if type(a) is ObjectRef]
        deps += [v.id for v in kwargs.values() if type(v) is ObjectRef]
        s = serialization.dumps_arguments(name, args, kwargs)
        if s.buffers or len(s.header) > config.INLINE_OBJECT_LIMIT:
            args_ref = self.put_serialized(s)
            return (P.STORED_KIND, args_ref.id), deps + [args_ref.id], s.refs + [args_ref.id], args_ref
        return s.header, deps, s.refs, None

    def submit(self, fn_id: bytes, name: str, args: tuple, kwargs: dict, shape: tuple,
               num_returns: int, max_retries: int, retry_exceptions, max_calls: int = 0,
               selector: tuple = ()) -> list[ObjectRef]:
        blob, deps, contained, _holder = self.serialize_arguments(name, args, kwargs)
        task_id = self.new_id()
        return_ids = [task_id + bytes([i]) for i in range(num_returns)]
        refs = [ObjectRef(oid, True) for oid in return_ids]
        self.requested.update(return_ids)        # the head pushes results to their owner
        spec = self.unanswered[task_id] = P.task_spec(task_id, fn_id, name, blob, deps, contained, return_ids, shape,
                                                      max_retries, retry_exceptions, max_calls, selector)
        self.send_head(P.submit(spec))
        return refs

    # --- actors ------------------------------------------------------------------------------
    def create_actor(self, fn_id: bytes, class_name: str, args: tuple, kwargs: dict, placement: dict,
                     info: dict) -> tuple[bytes, bool]:
        """(actor id, whether it is the new actor's): get_if_exists may answer with an existing one.
        The head holds the new actor's id for this process (its handle's ref is registered)."""
        blob, deps, contained, _holder = self.serialize_arguments(f"{class_name}.__init__", args, kwargs)
        actor_id = self.new_id()
        spec = P.actor_spec(fn_id, class_name, blob, deps, contained, placement, info)
        self.created_actors[actor_id] = spec
        if info["name"] is None:
            self.send_head(P.create_actor(actor_id, spec, None))
            return actor_id, True
        answer = self.request_head(lambda req: P.create_actor(actor_id, spec, req))
        if answer != actor_id:
            del self.created_actors[actor_id]
        if isinstance(answer, str):          # the head's one refusal: the name is taken
            from .exceptions import ActorAlreadyExistsError
            raise ActorAlreadyExistsError(answer)
        return answer, answer == actor_id

    def call_actor(self, actor_id: bytes, info: dict, method: str, args: tuple, kwargs: dict,
                   num_returns: int, retry: tuple | None = None) -> list[ObjectRef]:
        if self.via_head is None and self.role == "driver":
            self.ensure_route()             # decided before the IO thread routes the call
        name = f"{info['class_name']}.{method}"
        blob, deps, contained, _holder = self.serialize_arguments(name, args, kwargs)
        first = self.id_prefix + (next(self.counter) | _CALL_COUNTER_BIT).to_bytes(7, "little")
        return_ids = [first + bytes([i]) for i in range(num_returns)]
        refs = [ObjectRef(oid, True) for oid in return_ids]
        self.requested.update(return_ids)        # the actor answers us directly
        self.unanswered_calls[first] = (actor_id, return_ids, contained)
        self.to_head.append(P.actor_calls(actor_id, [(return_ids, contained)]))
        self.to_actors.append((actor_id, info, P.call(return_ids, method, blob, deps, name, retry)))
        if not self.wake_pending:
            self._wake()
        return refs

    def _cancel_queued_call(self, first: bytes) -> None:
        """IO thread: the head forwards a cancel of an actor call this process made. One still
        queued here (its actor not located yet, or restarting) is dropped: it fails with
        TaskCancelledError here and at the head (for other readers). One already sent is the
        actor's to cancel (the head told it too)."""
        for actor_id, link in self.actor_links.items():
            for message in link.queue:
                if message[1][0] == first:
                    link.queue.remove(message)
                    from .exceptions import TaskCancelledError
                    error = TaskCancelledError(f"actor call {message[5]} (task {first[:-1].hex()}) was cancelled "
                                               f"before it was sent to the actor")
                    results = P.error_results(serialization.dumps_inline(error), message[1])
                    self._fail_locally(message[1], results[0][2])
                    self.to_head.append(P.actor_result(actor_id, first, results))
                    return

    def _fail_locally(self, return_ids: list, blob: bytes) -> None:
        """IO thread: results of calls this process made that will not come from their actor."""
        failed = [oid for oid in return_ids if oid in self.requested and oid not in self.objects]
        for oid in failed:
            self.objects[oid] = (P.ERROR, blob)
        self.errors_arrived += len(failed)
        self._fire(failed)
        with self.cond:
            self.cond.notify_all()

    def _flush_actors(self) -> None:
        """IO thread: route queued calls to actors whose address is known; locate the others."""
        while self.to_actors:
            actor_id, info, message = self.to_actors.popleft()
            link = self.actor_links.get(actor_id)
            if link is None:
                link = self.actor_links[actor_id] = _ActorLink(info, actor_id)
                self.to_head.append(P.actor_locate(actor_id))
            link.queue.append(message)
            self.touched_links.add(link)

    def _send_to_actor(self, link: "_ActorLink") -> None:
        if (link.sock is None and not self.via_head) or link.state != P.ALIVE_STATE or not link.queue:
            return
        # a queued call whose result is here already is not sent: the head failed it (ActorDiedError)
        # while it waited for a restarted actor, and the caller may have retried it
        batch = [message for message in link.queue if message[1][0] not in self.objects]
        link.queue.clear()
        if not batch:
            return
        for message in batch:
            link.inflight[message[1][0]] = message
        if self.via_head:           # the head sends them on (relay.py), after what is queued for it
            self.to_head.append(P.actor_send(link.actor_id, link.address, batch))
            transport.send(self.head, [self.to_head.popleft() for _ in range(len(self.to_head))])
        else:
            transport.send(link.sock, batch)

    def _on_actor_info(self, actor_id: bytes, state: str, address: str | None, cause: str) -> None:
        link = self.actor_links.get(actor_id)
        if link is None:
            return
        link.state = state
        if state == P.ALIVE_STATE and self.via_head:
            link.address = address          # no connection of ours: the head relays the calls
            self._send_to_actor(link)
        elif state == P.ALIVE_STATE:
            if address != link.address:
                if link.sock is not None:
                    self.poller.unregister(link.sock)
                    link.sock.close(linger=0)
                link.address = address
                link.sock = transport.connect(self.context, address, self.token, self.identity)
                self.poller.register(link.sock, zmq.POLLIN)
                self.actor_socks[link.sock] = link
            self._send_to_actor(link)
        elif state == P.RESTARTING and link.info.get("max_task_retries"):
            link.queue.extendleft(reversed(list(link.inflight.values())))    # resend after the restart
            link.inflight.clear()
        elif state in (P.RESTARTING, P.DEAD_STATE):
            # the head fails these calls' results too, but only those whose registration reached it
            # before the actor died: one that arrives later would wait forever, so fail them here
            from .actor import died_error
            if link.sock is not None:
                self._drain(link.sock)     # results the actor sent before it died come first
            blob = serialization.dumps_inline(died_error(link.info, actor_id, cause))
            self._fail_locally([oid for message in link.inflight.values() for oid in message[1]], blob)
            link.inflight.clear()
            if state == P.DEAD_STATE:
                link.queue.clear()

        # --- objects -------------------------------------------------------------------------------
    def put(self, value) -> ObjectRef:
        return self.put_serialized(serialization.dumps(value))

    def put_serialized(self, s: serialization.Serialized) -> ObjectRef:
        oid = self.new_id()
        ref = ObjectRef(oid, True)
        if not s.buffers and len(s.header) <= config.INLINE_OBJECT_LIMIT:
            self.objects[oid] = (P.VALUE, s.header)
            self.send_head(P.put(oid, P.VALUE, s.header, s.refs, len(s.header)))
        else:
            node_id = self.store_locally(oid, s)
            if node_id is None:      # no node shares memory with us: stream it to one, in chunks
                node_id = self.store_remotely(oid, s)
                self.stored_puts[oid] = (node_id, s.size)
                self.send_head(P.put(oid, P.STORED_KIND, node_id, s.refs, s.size))
            else:
                # known here at once: a get of it goes straight to the node, not first to the head
                self.objects[oid] = (P.STORED_KIND, [(node_id, self.node.get("address"))])
                self.stored_puts[oid] = (node_id, s.size)
                self.send_head(P.put(oid, P.STORED_KIND, node_id, s.refs, s.size))
        return ref

    def store_locally(self, oid: bytes, s: serialization.Serialized) -> str | None:
        """Write a serialized object into the local node's arena; returns the node id (None: no local node)."""
        if not self.local_store():
            return None
        size = block_size(len(s.header), [b.nbytes for b in s.buffers])
        reply = self.ask_node_directly(P.encode_alloc_request(oid, size))
        if reply is not None:
            offset, error = P.decode_allocated(reply)
        else:
            allocated = P.parse(self.request_node(lambda req: P.alloc(req, oid, size)))
            offset, error = allocated.offset, allocated.error
        if offset is None:
            from .exceptions import ObjectStoreFullError
            raise ObjectStoreFullError(error)
        if isinstance(offset, str):      # the arena cannot hold it: the node gave it a spill file
            spill = Arena(offset)
            parts = spill.write(0, s.header, s.buffers)
            spill.close()
        else:
            parts = self.arena.write(offset, s.header, s.buffers)
        if not self.on_pin_channel(P.encode_seal_request(oid, parts)):     # so this thread's get of it is quick
            self.send_node(P.seal(oid, parts))
        return self.node["node_id"]

    def store_remotely(self, oid: bytes, s: serialization.Serialized) -> str:
        """Write a serialized object into a node's store in chunks (transfer.write): relayed by the
        head for a driver that reaches only it, else straight to the node with the most room."""
        payloads = [s.header, *s.buffers]
        lens = [len(s.header), *[b.nbytes for b in s.buffers]]
        size, parts = block_size(lens[0], lens[1:]), layout_parts(lens[0], lens[1:])
        if self.ensure_route():
            channel = transfer.HeadChannel(self)
        else:
            node = transfer.pick_store_node(self.nodes(), size)
            while node is None and time.time() < self.rejoined_at + R.REJOIN_GRACE_S:
                time.sleep(0.2)      # a restarted head: its nodes are still rejoining (recovery.py)
                node = transfer.pick_store_node(self.nodes(), size)
            if node is None:
                raise ClusterError(f"no live node to store object {oid.hex()} ({size:,} bytes) on: start a node "
                                   f"(`tasuki start --address {self.head_address.split('://')[-1]}`)")
            channel = transfer.NodeChannel(self, node["node_id"], node["address"])
        try:
            return transfer.write(channel, oid, size, parts, payloads, self._transfer_waiter(oid, None, None))
        finally:
            channel.close()

    def ensure_route(self) -> bool:
        """Whether this process works through the head (decided on first need if init could not:
        no node had joined yet)."""
        if self.via_head is None:
            self.choose_route(self.nodes())
        return self.via_head

    def choose_route(self, nodes: list) -> None:
        """Decide once whether this driver works through the head (transfer.route), and say so."""
        forced = config.env("VIA_HEAD")
        if self.role != "driver" or self.node is not None or self.head_address.startswith("ipc://"):
            self.via_head = False          # a worker, or a driver of a cluster on this machine
            return
        local = forced not in ("1", "true", "yes") and pick_local_node(nodes) is not None
        live = [n for n in nodes if n.get("state") != "dead"]
        if not live and forced is None and not local:
            return                      # no node to probe yet: decide on first need
        failed = [] if local or forced is not None else transfer.unreachable(live)
        self.via_head = transfer.route(forced, local, failed)
        if self.via_head:
            print(transfer.notice(self.head_address, forced is not None, failed), file=sys.stderr, flush=True)

    def local_store(self) -> bool:
        if self.arena is not None:
            return True
        if self.via_head:
            return False
        if self.node is None and self.role == "driver":
            self.node = pick_local_node(self.nodes())
        if self.node is None:
            return False
        self.arena = Arena(self.node["store_path"])
        self._wake()                 # let the IO thread connect to the node
        return True

    def nodes(self) -> list:
        return self.query("nodes")

    def get_objects(self, ids: list, timeout: float | None, on_block=None) -> list[tuple]:
        """(kind, data) for each id, waiting for those not here yet."""
        missing = [oid for oid in ids if oid not in self.objects]
        if missing:
            ask = [oid for oid in missing if oid not in self.requested]
            if ask:
                self.requested.update(ask)
                self.send_head(P.get(ask))
            deadline = None if timeout is None else time.time() + timeout
            blocked = False
            pending = deque(missing)     # results arrive mostly in order: drop the ready prefix
            errors_seen = -1             # look at once too: a member that failed before this get fails it now
            trigger = None               # the object whose arrival wakes this get: the last one it lacks
            try:
                with self.cond:
                    while True:
                        while pending and pending[0] in self.objects:
                            pending.popleft()
                        while pending and pending[-1] in self.objects:
                            pending.pop()
                        if not pending:
                            break
                        if self.errors_arrived != errors_seen:      # one failed: raise it now (as Ray),
                            errors_seen = self.errors_arrived       # not after the others finish
                            for oid in ids:
                                entry = self.objects.get(oid)
                                if entry is not None and entry[0] == P.ERROR:
                                    self.value(oid, *entry)
                        if not blocked and on_block is not None:
                            on_block(True)
                            blocked = True
                        self.check_head()
                        remaining = None if deadline is None else deadline - time.time()
                        if remaining is not None and remaining <= 0:
                            left = [oid for oid in pending if oid not in self.objects]
                            raise GetTimeoutError(f"get timed out after {timeout} s: {len(left)} of "
                                                  f"{len(ids)} objects not ready (first: {left[0].hex()})")
                        if pending[-1] != trigger:
                            self._await(trigger, -1)
                            trigger = pending[-1]
                            self._await(trigger, +1)
                        self.cond.wait(remaining if remaining is not None else 1.0)
            finally:
                if trigger is not None:
                    with self.cond:
                        self._await(trigger, -1)
                if blocked:
                    on_block(False)
        objects = self.objects
        return [objects[oid] for oid in ids]

    def _await(self, oid: bytes | None, change: int) -> None:
        """Count a get sleeping until `oid` arrives (+1), or no longer (-1); under self.cond."""
        if oid is None:
            return
        count = self.awaited.get(oid, 0) + change
        if count:
            self.awaited[oid] = count
        else:
            del self.awaited[oid]

    def ready(self, ids: list) -> list[bool]:
        ask = [oid for oid in ids if oid not in self.objects and oid not in self.requested]
        if ask:
            self.requested.update(ask)
            self.send_head(P.get(ask))
        return [oid in self.objects for oid in ids]

    def when_ready(self, oid: bytes, callback) -> None:
        """Call `callback()` on this process's callback thread once object `oid` is here (its value
        or its error). Callbacks may block or call get: they never hold up the IO thread."""
        with self.watch_lock:
            self.watchers.setdefault(oid, []).append(callback)
        self.ready([oid])
        self._fire([oid])           # it may have arrived before the callback was registered

    def result(self, oid: bytes):
        """The value of an object that is here (what a when_ready callback reads), or its error raised."""
        return self.value(oid, *self.objects[oid])

    def _fire(self, oids: list) -> None:
        due = []
        with self.watch_lock:
            for oid in oids:
                if oid in self.objects:
                    due.extend(self.watchers.pop(oid, ()))
            if due and self.callbacks is None:
                self.callbacks = queue.SimpleQueue()
                threading.Thread(target=self._run_callbacks, args=(self.callbacks,), name="tasuki-callbacks",
                                 daemon=True).start()
        for callback in due:
            self.callbacks.put(callback)

    @staticmethod
    def _run_callbacks(callbacks: queue.SimpleQueue) -> None:
        while (callback := callbacks.get()) is not None:
            try:
                callback()
            except Exception:
                import traceback
                print(f"tasuki: error in a completion callback:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            callback = None         # not held while waiting for the next one (its closure may hold much)

    def wait_any(self, timeout: float | None) -> None:
        self.check_head()
        with self.cond:
            self.broad_waiters += 1
            try:
                self.cond.wait(timeout)
            finally:
                self.broad_waiters -= 1

    def check_head(self) -> None:
        """Raise instead of waiting forever when the head has gone silent (drivers only: a
        worker's node watches the head for it)."""
        if not self.running:
            raise self.closed_error()
        if self.head_stopped is not None:
            raise ClusterError(self.head_stopped)
        if self.role != "driver":
            return
        silent = time.time() - self.last_heard
        reconnect_s = config.env_float("HEAD_RECONNECT_S", config.HEAD_RECONNECT_S)
        if silent > reconnect_s:
            raise ClusterError(R.give_up_message("tasuki driver", self.head_address, silent, reconnect_s))

    def value(self, oid: bytes, kind: str, data, timeout: float | None = None):
        """The Python value of an object entry; raises its error. `timeout`: seconds a fetch from
        another node may take (GetTimeoutError after), None for no limit."""
        try:
            if kind == P.VALUE:
                return serialization.loads(data)
            if kind != P.ERROR:
                return self.read_stored_again(oid, data, timeout)
        except SerializationError as e:
            raise _unpickling_error(oid, kind, data, e) from e.__cause__
        raise serialization.loads(data)     # a TaskError rebuilds its cause here, or says why it cannot

    def read_stored_again(self, oid: bytes, sources: list, timeout: float | None = None):
        """read_stored, but a copy lost with its node is asked of the head again: the head may be
        recomputing it from its lineage (lineage.py), and answers with the new copy, or the error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stale_until = time.monotonic() + 3 * config.env_float("NODE_TIMEOUT", config.NODE_TIMEOUT_S)
        while True:
            try:
                return self.read_stored(oid, sources, timeout)
            except ObjectLostError:
                with self.cond:
                    if self.objects.get(oid, (None, None))[1] == sources:
                        del self.objects[oid]
                    self.requested.discard(oid)
                kind, data = self.get_objects([oid], timeout, self.on_block)[0]
                if kind != P.STORED_KIND:
                    return self.value(oid, kind, data, timeout)
                if data == sources:        # the head has not declared the node dead yet: ask again soon
                    if time.monotonic() > stale_until:
                        raise
                    time.sleep(0.2)
                sources = data
                if deadline is not None:
                    timeout = deadline - time.monotonic()

    def read_stored(self, oid: bytes, sources: list, timeout: float | None = None):
        if self.local_store():
            try:
                offset, parts = self.pin_locally(oid, sources, timeout)
            except ClusterError as e:
                if self.node_died is None:
                    raise
                raise ObjectLostError(f"object {oid.hex()} cannot be read here: {e}") from None   # (the head may know more)
            unpin = _Unpinner(self, oid)
            arena = self.arena if not isinstance(offset, str) else Arena(offset, readonly=True)   # a spill file
            header, buffers = arena.read(offset if arena is self.arena else 0, parts, unpin)
            return serialization.loads(header, buffers)
        return self.read_remote(oid, sources, timeout)

    def pin_locally(self, oid: bytes, sources: list, timeout: float | None = None) -> tuple:
        """Pin an object in the local node's store (the node pulls it from `sources` if needed):
        (offset or spill file, parts); ObjectLostError when the node cannot get it."""
        pinned = self.pin_directly(oid, timeout)
        if pinned is not None:
            return pinned
        ask = lambda req: P.pin(req, oid, sources)      # noqa: E731   (not sealed here yet, spilled, or elsewhere)
        if timeout is None:
            reply = self.request_node(ask)
        else:
            reply = self.request_node(ask, max(timeout, 0.0), fetch_timeout_error(oid, sources))
        _, _, _, offset, parts, error = reply
        if error is not None:
            raise ObjectLostError(error)
        return offset, parts

    def pin_directly(self, oid: bytes, timeout: float | None = None) -> tuple[int, list] | None:
        """Pin an object sealed in the local store over the node's pin channel, from this thread:
        (offset, parts), or None when the node cannot answer at once (or there is no channel).
        GetTimeoutError when the node says nothing for `timeout` seconds (it hangs)."""
        reply = self.ask_node_directly(P.encode_pin_request(oid, self.identity), timeout)
        return None if reply is None else P.decode_pinned(reply)

    def ask_node_directly(self, request: bytes, timeout: float | None = None) -> bytes | None:
        """A request on this thread's pin channel, and the node's reply; None without a channel."""
        conn = self.on_pin_channel(request)
        if conn is None:
            return None
        if timeout is not None:
            timeout = max(timeout, 0.01)      # 0 would make the socket non-blocking
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            # the reply, or (checked every NODE_GONE_CHECK_S) the head declaring the node dead
            while not select.select([conn], [], [], NODE_GONE_CHECK_S if deadline is None else
                                    max(0.0, min(NODE_GONE_CHECK_S, deadline - time.monotonic())))[0]:
                if self.node_died is not None:
                    raise self.node_gone()
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError
            if conn.gettimeout() != timeout:
                conn.settimeout(timeout)
            size = int.from_bytes(_recv_exactly(conn, 4), "big")
            return _recv_exactly(conn, size)
        except TimeoutError:                  # the reply may still come: this connection is out of step
            self._close_pin_channel()
            raise GetTimeoutError(f"get timed out after {timeout:g} s: the node agent on this machine "
                                  f"({self.node.get('node_id')}) did not answer a request for an object in its "
                                  f"store (is it stopped or overloaded? see `tasuki status`)") from None
        except ClusterError:
            self._close_pin_channel()
            raise
        except OSError:
            self._close_pin_channel()
            return None

    def on_pin_channel(self, request: bytes):
        """Send a request on this thread's connection to the node's pin channel; the connection, or
        None (no channel: the node is older, or gone; the caller then goes through zmq)."""
        path = self.node.get("pin_socket")
        if path is None:
            return None
        conn = getattr(self.pin_conns, "conn", None)
        if conn is None or self.pin_conns.pid != os.getpid():
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.connect(path)
            except OSError:
                conn.close()
                return None
            self.pin_conns.conn, self.pin_conns.pid = conn, os.getpid()
        try:
            conn.sendall(request)
        except OSError:
            self._close_pin_channel()
            return None
        return conn

    def _close_pin_channel(self) -> None:
        self.pin_conns.conn.close()
        self.pin_conns.conn = None

    def read_remote(self, oid: bytes, sources: list, timeout: float | None = None):
        """Fetch an object from a node in chunks (a process with no node on its machine): over TCP,
        or relayed by the head when this driver reaches only the head (transfer.read)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        via_head = self.ensure_route()
        failures = []
        for node_id, address in sources:
            channel = transfer.HeadChannel(self, node_id, address) if via_head else \
                transfer.NodeChannel(self, node_id, address)
            try:
                data, parts = transfer.read(channel, oid, self._transfer_waiter(oid, sources, deadline))
            except transfer.SourceFailed as e:
                failures.append(f"node {node_id}: {e}")
                continue
            finally:
                channel.close()
            view = memoryview(data)
            return serialization.loads(view[parts[0][0]:sum(parts[0])], [view[o:o + n] for o, n in parts[1:]])
        raise ObjectLostError(f"object {oid.hex()} could not be read from any node that held it "
                              f"({'; '.join(failures) or 'no live copy'})")

    def _transfer_waiter(self, oid: bytes, sources: list | None, deadline):
        """`wait(channel)` for transfer.read and write: the channel's next answer, but not past the
        get's deadline (GetTimeoutError), nor 60 s of silence, nor the head's word that the object
        is lost with its node (pushed to us as its holder)."""
        def wait(channel):
            silent_limit = time.monotonic() + 60
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise fetch_timeout_error(oid, sources)
                if now >= silent_limit:
                    where = "the head" if isinstance(channel, transfer.HeadChannel) else f"node {channel.node_id}"
                    raise ObjectLostError(f"{where} did not answer a transfer of object {oid.hex()} for 60 s "
                                          f"(node {channel.node_id} at {channel.address})")
                answer = channel.recv(0.25 if deadline is None else min(0.25, deadline - now))
                if answer is not None:
                    return answer
                if sources is not None:
                    kind, error = self.objects.get(oid, (None, None))
                    if kind == P.ERROR:
                        raise serialization.loads(error)
                    if kind == P.STORED_KIND and not error:      # the head is recomputing it (lineage.py)
                        raise ObjectLostError(f"object {oid.hex()} has no live copy now (node "
                                              f"{channel.node_id} died); the head is making it again")
                self.check_head()
        return wait


def _unpickling_error(oid: bytes, kind: str, data, e: SerializationError) -> TaskError:
    """The error `get` raises for a value pickled elsewhere (a task's result) that cannot be unpickled here."""
    nodes = ", ".join(node_id for node_id, _ in data) if kind == P.STORED_KIND else ""
    where = f", stored on node {nodes}" if nodes else ""
    message = (f"the value of object {oid.hex()} (a task's result, or a put in another process{where}) cannot "
               f"be unpickled in this process (pid {os.getpid()}): {e}. It was pickled where it was made; the "
               f"classes it holds must be importable here too, at the same version: install their module "
               f"where get() runs, or return plain types (dicts, lists, NumPy arrays).")
    return TaskError(message, SerializationError(message), node_id=nodes).as_instanceof_cause()


class _ActorLink:
    """What a caller's IO thread knows of one actor: where it is, calls queued and in flight."""
    __slots__ = ("info", "actor_id", "state", "address", "sock", "queue", "inflight")

    def __init__(self, info: dict, actor_id: bytes) -> None:
        self.info = info
        self.actor_id = actor_id
        self.state = None
        self.address = None
        self.sock = None
        self.queue: deque = deque()
        self.inflight: dict = {}       # first return id -> CALL


NODE_GONE_CHECK_S = 0.5     # how often a wait for the local node agent's reply checks that it is still alive


class _Unpinner:
    """Runs when the last view of a pinned block is gone: tells the node the block may be reused."""
    __slots__ = ("client", "oid")

    def __init__(self, client: Client, oid: bytes) -> None:
        self.client, self.oid = client, oid

    def __call__(self) -> None:
        if self.client.running:
            self.client.send_node(P.unpin([self.oid]))


def fetch_timeout_error(oid: bytes, sources: list) -> GetTimeoutError:
    nodes = ", ".join(node_id for node_id, _ in sources)
    return GetTimeoutError(f"get timed out while object {oid.hex()} was being fetched from node {nodes}: that node "
                           f"did not send it in time (hung, overloaded, or dying: the head declares a node dead "
                           f"after TASUKI_NODE_TIMEOUT s without a heartbeat)")


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the node closed its pin channel")
        data += chunk
    return data


def pick_local_node(nodes: list) -> dict | None:
    """The node whose store this machine can map: same boot id and its store file is visible."""
    me = config.boot_id()
    local = [n for n in nodes if n.get("boot_id") == me and n.get("state") != "dead"
             and n.get("store_path") and os.path.exists(n["store_path"])]
    local.sort(key=lambda n: not n.get("is_head_node"))
    return local[0] if local else None

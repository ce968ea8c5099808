"""Message kinds and their encoding. No sockets here (transport.py sends them).

Every zmq message carries one pickled list of messages, so a driver that submits 10,000 tasks
in a loop sends a handful of zmq messages, not 10,000. A message is a tuple whose first item is
its kind. Unpickling is safe because every socket is authenticated first (see transport.py):
nothing from a peer without the cluster token ever reaches `decode`.

Driver or worker → head
    HELLO(role, info)            first message; info has versions, job id, node id (workers)
    FUNCTION(fn_id, blob)        a function or class pickled once; tasks refer to it by id
    SUBMIT(spec)                 a task: (task_id, fn_id, name, args, deps, contained, return_ids, shape,
                                 max_retries, retry_exceptions, max_calls, label selector or ())
    HOLD(ids) / RELEASE(ids)     this process starts / stops holding refs (refcounting)
    PUT(id, kind, data, refs)    a new object: VALUE (inline bytes) or STORED (node id)
    GET(ids)                     send me these objects when they are ready
    CANCEL(id, force, recursive)  recursive: the tasks the task submitted, and theirs, too
    DONE(task_id, results)       worker: results = [(id, kind, data, refs)]
    BLOCKED(ids) / UNBLOCKED     worker: the running task waits in get (its CPU is lent out);
                                 ids: the tasks queued behind it, handed back
    RETURNED(ids)                worker: queued tasks given back after STEAL
    LOG(lines)                   worker output lines, already prefixed
    HEARTBEAT, BYE
    QUERY(req_id, what, arg)     state for the CLI and the HTTP API
    REQUEST_RESOURCES(req_id, bundles)  request_resources(): [(shape, count)] replaces the cluster's standing
                                 request for the autoscaler ([] clears it); answered ANSWER(req_id, None)
Head → driver or worker
    WELCOME(info) / REFUSED(reason)
    OBJECT(id, kind, data)       VALUE: pickled bytes; STORED: [(node_id, address)]; ERROR: pickled exception
                                 (pushed again to its holders when a node holding a copy dies; STORED with []:
                                 its only copy died and it is being recomputed (lineage.py): GET it again)
    RUN(task)                    worker: run this task: (task_id, fn_id, fn_blob or None, name, args, deps,
                                 return_ids, retry_exceptions, can_retry, gpu_ids, job_id, shape, actor)
    INTERRUPT(task_id)           worker: cancel the task (running, or queued there: skip it)
    STEAL(task_id)               worker: give this queued task back if it has not started
    EXIT                         worker: exit when idle
    GC                           worker or driver: collect cyclic garbage now (a node's object store is
                                 over config.GC_STORE_FRACTION full: cycles may hold refs that pin objects)
    LOG(lines), WARN(text), ANSWER(req_id, data)
Actors (see actor.py)
    CREATE_ACTOR(actor_id, spec)         caller → head: place a creation task
    ACTOR_READY(actor_id, address)       actor worker → head: constructed, listening
    ACTOR_LOCATE(actor_id)               caller → head; answered (now or later) by
    ACTOR_INFO(actor_id, state, address, cause)   head → callers, again on restart and death
    ACTOR_CALLS(actor_id, [(return_ids, contained)])  caller → head: register calls (refcounting)
    CALL(return_ids, method, args, deps, name[, (max_task_retries, retry_exceptions)])
                                         caller → actor worker, directly (the last item only from options())
    ACTOR_RESULT(results)                actor worker → head, after answering the caller
    KILL_ACTOR(actor_id, no_restart)     caller → head
    ACTOR_EXIT(actor_id, cause)          actor worker → head: it ends on purpose (exit_actor(), sys.exit(),
                                         out of scope): no restart; then the process exits
    CANCEL_CALL(first_return_id)         head → the call's caller (drops it if still queued there) and
                                         → the actor's worker (skips it, or marks the running call)
Node agent → head
    HELLO("node", info), HEARTBEAT(stats), WORKER_EXITED(worker_id, pid, code), STORED(id, size)
Head → node agent
    SPAWN(worker_id, count), KILL(worker_id), FREE(ids), SHUTDOWN
    NODE_DIED(node_id, address)  a node was declared dead: its pulls go to another copy, or fail
Draining (see drain.py)
    LEAVING(timeout_s)           node agent → head: it got SIGTERM; drain it within timeout_s seconds
    DRAINED                      head → node agent: nothing is left there (no task, actor or sole copy): exit 0
    REPLICATE(id, sources)       head → node agent: pull a copy of this object from [(node_id, address)] (no
                                 one waits for it); STORED(id, size) to the head once it is sealed
    HEAD_STOPPING(reason)        head → drivers and workers: the head is shutting down (SIGTERM, `tasuki stop`):
                                 pending gets and waits raise ClusterError(reason) at once
Anyone → node agent (object store and transfers)
    ALLOC(req, id, size) → ALLOCATED(req, offset | spill file path | error)
    SEAL(id, layout)
    PIN(req, id, sources) → PINNED(req, id, offset | spill file path, layout | error)
    UNPIN(ids)
    READ(req, id, start, length) → CHUNK(req, start) + a raw data frame
    WRITE(id, offset[, req]) + a raw data frame   (a driver with no shared memory on this machine);
                                 with `req`, the node answers WRITTEN(req, id, offset, error | None)
Through the head (a driver that reaches only the head's address; see relay.py)
    READ(req, id, start, length, node_id) → the head asks that node over its own connection and relays
                                 CHUNK(req, ...) + the data frame back; ALLOC(req, id, size) → the head picks
                                 a node with room and answers ALLOCATED(req, offset | path | None, error,
                                 node_id); WRITE(id, offset, req) + data → WRITTEN; SEAL(id, layout): relayed
                                 to that node. The head keeps only the chunks in flight (the driver's window).
    ACTOR_SEND(actor_id, address, [CALL, ...])   driver → head: the head sends the calls to the actor at
                                 `address` on a connection of its own for this driver (the driver's identity)
    ACTOR_REPLY(actor_id) + a raw frame          head → driver: what the actor answered on it, as it came
A process → its node's pin channel (a plain unix socket; fixed binary frames, see the end of this file)
    ALLOC(id, size) → ALLOCATED(offset | spill file path | error), SEAL(id, layout), PIN(id, identity) → PINNED(layout) | ELSEWHERE
"""
from __future__ import annotations

import pickle
import struct

HELLO, WELCOME, REFUSED = "hello", "welcome", "refused"
FUNCTION, SUBMIT, HOLD, RELEASE, PUT, GET, CANCEL = "fn", "submit", "hold", "release", "put", "get", "cancel"
DONE, BLOCKED, UNBLOCKED, LOG, HEARTBEAT, BYE, QUERY = "done", "blocked", "unblocked", "log", "hb", "bye", "query"
OBJECT, RUN, INTERRUPT, EXIT, WARN, ANSWER = "object", "run", "interrupt", "exit", "warn", "answer"
STEAL, RETURNED, GC = "steal", "returned", "gc"
WORKER_EXITED, STORED, SPAWN, KILL, FREE, SHUTDOWN = "worker_exited", "stored", "spawn", "kill", "free", "shutdown"
NODE_DIED = "node_died"
ALLOC, ALLOCATED, SEAL, PIN, PINNED, UNPIN, READ, CHUNK, WRITE = (
    "alloc", "allocated", "seal", "pin", "pinned", "unpin", "read", "chunk", "write")

CREATE_ACTOR, ACTOR_READY, ACTOR_LOCATE, ACTOR_INFO, ACTOR_CALLS, ACTOR_RESULT, KILL_ACTOR, CALL = (
    "create_actor", "actor_ready", "actor_locate", "actor_info", "actor_calls", "actor_result", "kill_actor", "call")
ACTOR_EXIT, CANCEL_CALL = "actor_exit", "cancel_call"
LEAVING, DRAINED, REPLICATE, HEAD_STOPPING = "leaving", "drained", "replicate", "head_stopping"
REQUEST_RESOURCES = "request_resources"
WRITTEN, ACTOR_SEND, ACTOR_REPLY = "written", "actor_send", "actor_reply"

# actor states in ACTOR_INFO
PENDING, ALIVE_STATE, RESTARTING, DEAD_STATE = "PENDING", "ALIVE", "RESTARTING", "DEAD"

# object kinds in PUT, DONE and OBJECT
VALUE, STORED_KIND, ERROR = "v", "s", "e"


# An actor call's return ids carry this bit in their 15th byte (the top of the 7-byte counter, which
# never reaches it): any process can tell an actor call's ref from a task's without asking the head.
ACTOR_CALL_BIT = 0x80


def is_actor_call(oid: bytes) -> bool:
    return len(oid) == 16 and bool(oid[14] & ACTOR_CALL_BIT)


def error_results(blob: bytes, return_ids: list) -> list:
    """The results of a call that failed: every return id gets the pickled error, in DONE's form."""
    return [(oid, ERROR, blob, [], len(blob)) for oid in return_ids]


def encode(messages: list) -> bytes:
    return pickle.dumps(messages, protocol=5)


def decode(frame) -> list:
    return pickle.loads(frame)


# --- the pin channel: a plain unix socket from a process to its node's store -------------------
# A zero-copy get needs the node to pin the object and say where it lies. Over zmq that round trip
# wakes eight threads in a row (ours, zmq's, the node's, and back: ~0.7 ms from idle); over a unix
# socket the caller's thread wakes the node's and back (~0.1 ms). Fixed binary frames, never pickle.
PIN_OK, PIN_ELSEWHERE, PIN_FILE = 0, 1, 2   # ELSEWHERE: not sealed here yet, spilled out of reach... use zmq
                                            # FILE: ALLOCATED in a spill file (the arena cannot hold it)
PIN_REQUEST, SEAL_REQUEST, ALLOC_REQUEST = 0, 1, 2   # a thread's SEAL comes before its own PINs


def encode_pin_request(oid: bytes, ident: bytes) -> bytes:
    body = struct.pack("!BBB", PIN_REQUEST, len(oid), len(ident)) + oid + ident
    return struct.pack("!H", len(body)) + body


def encode_seal_request(oid: bytes, parts: list) -> bytes:
    body = (struct.pack("!BB", SEAL_REQUEST, len(oid)) + oid + struct.pack("!H", len(parts))
            + b"".join(struct.pack("!QQ", at, n) for at, n in parts))
    return struct.pack("!H", len(body)) + body


def encode_alloc_request(oid: bytes, size: int) -> bytes:
    body = struct.pack("!BB", ALLOC_REQUEST, len(oid)) + oid + struct.pack("!Q", size)
    return struct.pack("!H", len(body)) + body


def decode_channel_request(body: bytes) -> tuple:
    """(PIN_REQUEST, oid, ident), (SEAL_REQUEST, oid, parts) or (ALLOC_REQUEST, oid, size)."""
    kind, n_oid = body[0], body[1]
    if kind == PIN_REQUEST:
        start = 3 + n_oid
        return kind, body[3:start], body[start:start + body[2]]
    if kind == ALLOC_REQUEST:
        return kind, body[2:2 + n_oid], struct.unpack_from("!Q", body, 2 + n_oid)[0]
    oid = body[2:2 + n_oid]
    (count,) = struct.unpack_from("!H", body, 2 + n_oid)
    return kind, oid, [struct.unpack_from("!QQ", body, 4 + n_oid + 16 * i) for i in range(count)]


def encode_pinned(offset: int | None, parts: list | None) -> bytes:
    if offset is None:
        return struct.pack("!IB", 1, PIN_ELSEWHERE)
    body = struct.pack("!BQH", PIN_OK, offset, len(parts)) + b"".join(struct.pack("!QQ", at, n) for at, n in parts)
    return struct.pack("!I", len(body)) + body


def decode_pinned(body: bytes) -> tuple[int, list] | None:
    if body[0] != PIN_OK:
        return None
    _, offset, count = struct.unpack_from("!BQH", body)
    return offset, [struct.unpack_from("!QQ", body, 11 + 16 * i) for i in range(count)]


def encode_allocated(offset: int | str | None, error: str | None) -> bytes:
    if isinstance(offset, str):
        body = bytes([PIN_FILE]) + offset.encode()
    else:
        body = struct.pack("!BQ", PIN_OK, offset) if offset is not None else bytes([PIN_ELSEWHERE]) + error.encode()
    return struct.pack("!I", len(body)) + body


def decode_allocated(body: bytes) -> tuple[int | str | None, str | None]:
    """(offset, None), (the spill file's path, None), or (None, why the store could not make room)."""
    if body[0] == PIN_OK:
        return struct.unpack_from("!Q", body, 1)[0], None
    if body[0] == PIN_FILE:
        return body[1:].decode(), None
    return None, body[1:].decode()

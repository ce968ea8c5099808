"""Message kinds, their fields, and their encoding. No sockets here (transport.py sends them).

Every zmq message carries one pickled list of messages, so a driver that submits 10,000 tasks
in a loop sends a handful of zmq messages, not 10,000. A message is a plain tuple whose first item
is its kind: `(SUBMIT, spec)`. Unpickling is safe because every socket is authenticated first (see
transport.py): nothing from a peer without the cluster token ever reaches `decode`.

The protocol is defined once, in MESSAGES (and RECORDS for the tuples nested in SUBMIT and RUN):
each kind's fields in order, which trailing fields are optional, who sends it to whom. From it
come one constructor per kind, named for it in lower case (`submit(spec)` returns `(SUBMIT, spec)`;
an optional trailing field that is None is left off the wire), and `parse(message)`, a view with
named fields (`parse(m).spec`; a missing optional field reads None) that raises ProtocolError
naming the kind, the fields it expects and what came. Senders use the constructors (a call adds
~20 ns to a message; benchmarks/protocol_micro.py). Cold receivers parse; hot ones (the head's
dispatch, a worker's RUN, a client's OBJECT, an actor's CALL) unpack or index the tuple, as parse
costs ~0.3 µs a message, and `check(message)` explains one they could not handle. This module is
long because the list below is: it is generated from MESSAGES (`python -m
tasuki.protocol --write` rewrites it; tests/test_protocol.py fails when it differs):

    HELLO(role, info)  driver, worker or node → head
        first message; role: driver, worker or node; info has versions, job id, node id (workers),
        resources (nodes)
    FUNCTION(fn_id, blob)  driver or worker → head
        a function or class pickled once; tasks refer to it by id
    SUBMIT(spec)  driver or worker → head
        a task: spec is a TASK_SPEC (below)
    HOLD(ids)  driver or worker → head
        this process starts holding refs to these objects (refcounting)
    RELEASE(ids)  driver or worker → head
        this process stops holding them
    PUT(oid, object_kind, data, refs, size)  driver or worker → head
        a new object: object_kind VALUE (data: inline bytes) or STORED_KIND (data: the node id); refs:
        the object ids it contains; size in bytes
    GET(ids)  driver or worker → head
        send me these objects (OBJECT) when they are ready
    CANCEL(oid, force, recursive)  driver or worker → head
        cancel the task making oid; recursive: the tasks it submitted, and theirs, too
    DONE(task_id, results, retryable)  worker → head
        a task finished: results = [RESULT]; retryable: it raised an exception its retry_exceptions
        allow
    BLOCKED(task_ids)  worker → head
        the running task waits in get (its CPU is lent out); task_ids: the tasks queued behind it,
        handed back
    UNBLOCKED()  worker → head
        the running task stopped waiting
    RETURNED(task_ids)  worker → head
        queued tasks given back after STEAL
    LOG(lines)  worker → head → driver
        output lines [(stream, text)], already prefixed
    HEARTBEAT([stats])  any → head, head → any
        liveness; a node's carries its stats (store use, load), the head's none
    BYE()  driver or worker → head
        this process leaves
    QUERY(req, what, arg)  driver → head
        state for the CLI and the HTTP API; answered ANSWER(req, data)
    REQUEST_RESOURCES(req, bundles)  driver → head
        request_resources(): [(shape, count)] replaces the cluster's standing request for the autoscaler
        ([] clears it); answered ANSWER(req, None)
    WELCOME(info)  head → driver, worker or node
        hello accepted: job id, the node directory
    REFUSED(reason)  head → driver, worker or node
        hello refused (versions differ)
    OBJECT(oid, object_kind, data)  head or actor worker → driver or worker
        VALUE: pickled bytes; STORED_KIND: [(node_id, address)]; ERROR: a pickled exception (pushed
        again to its holders when a node holding a copy dies; STORED_KIND with []: its only copy died
        and it is being recomputed (lineage.py): GET it again)
    RUN(task)  head → worker
        run this task: a RUN_TASK (below)
    INTERRUPT(task_id)  head → worker
        cancel the task (running, or queued there: skip it)
    STEAL(task_id)  head → worker
        give this queued task back (RETURNED) if it has not started
    EXIT()  head → worker
        exit when idle
    GC()  head → worker or driver
        collect cyclic garbage now (a node's object store is over config.GC_STORE_FRACTION full: cycles
        may hold refs that pin objects)
    WARN(text)  head → driver or worker
        print this warning once
    ANSWER(req, data)  head → driver
        the answer to QUERY, REQUEST_RESOURCES or CREATE_ACTOR
    HEAD_STOPPING(reason)  head → drivers and workers
        the head is shutting down (SIGTERM, `tasuki stop`): pending gets and waits raise
        ClusterError(reason) at once
    HEAD_RESTARTING(reason)  head → driver, worker or node
        the head is going away and a supervisor starts the next one (TASUKI_HEAD_EXPECT_RESTART): keep
        waiting for it and rejoin it; a node agent that is leaving exits, no one is left to drain it for
    REJOIN(session)  head → driver, worker or node
        a new head runs (recovery.py): sent to a process it does not know that sent something other than
        HELLO (the message is dropped), again every 0.5 s; the process says HELLO again with
        info["rejoin"] (what it has); WELCOME's info carries "session" (the head's start time)
    CREATE_ACTOR(actor_id, spec, req)  caller → head
        place a creation task for an ACTOR_SPEC (below); req None: no answer wanted, else ANSWER(req,
        actor id or why not)
    ACTOR_READY(actor_id, address, error)  actor worker → head
        constructed and listening at address, or its constructor failed (error: the pickled exception)
    ACTOR_LOCATE(actor_id)  caller → head
        where is it? answered (now or later) by ACTOR_INFO
    ACTOR_INFO(actor_id, state, address, cause)  head → callers
        state: PENDING, ALIVE, RESTARTING or DEAD; sent again on restart and death
    ACTOR_CALLS(actor_id, calls)  caller → head
        register calls [(return_ids, contained)] (refcounting)
    CALL(return_ids, method, args, deps, name[, retry])  caller → actor worker, directly
        call a method; retry: (max_task_retries, retry_exceptions), only from options()
    ACTOR_RESULT(actor_id, first, results)  actor worker → head
        after answering the caller: results = [RESULT] of the call whose first return id is first
    KILL_ACTOR(actor_id, no_restart)  caller → head
        kill the actor
    ACTOR_EXIT(actor_id, cause)  actor worker → head
        it ends on purpose (exit_actor(), sys.exit(), out of scope): no restart; then the process exits
    CANCEL_CALL(first)  head → the call's caller and the actor's worker
        cancel the call whose first return id is first: the caller drops it if still queued there, the
        worker skips it or marks the running call
    ACTOR_SEND(actor_id, address, calls)  driver → head (relay.py)
        the head sends the CALLs to the actor at address on a connection of its own for this driver
    ACTOR_REPLY(actor_id)  head → driver (relay.py)
        + a raw frame: what the actor answered on that connection, as it came
    WORKER_EXITED(worker_id, pid, code)  node agent → head
        a worker process exited
    STORED(oid, size)  node agent → head
        a copy of the object is sealed in this node's store
    SPAWN(worker_ids)  head → node agent
        start a worker process for each id
    KILL(worker_id)  head → node agent
        SIGKILL this worker
    FREE(ids)  head → node agent
        delete these objects from the store
    SHUTDOWN()  head → node agent
        stop
    NODE_DIED(node_id, address)  head → node agent, driver
        a node was declared dead: its pulls go to another copy, or fail; a driver of it stops waiting on
        it
    LEAVING(timeout_s)  node agent → head
        it got SIGTERM; drain it within timeout_s seconds
    DRAINED()  head → node agent
        nothing is left there (no task, actor or sole copy): exit 0
    REPLICATE(oid, sources)  head → node agent
        pull a copy of this object from [(node_id, address)] (no one waits for it); STORED when sealed
    ALLOC(req, oid, size)  anyone → node agent or head
        open a block of size bytes for the object
    ALLOCATED(req, offset, error[, node_id])  node agent or head → requester
        offset, a spill file's path, or None and why; node_id: the node the head picked (relayed only)
    SEAL(oid, layout)  anyone → node agent or head
        the block is written: layout [(at, size)]
    PIN(req, oid, sources)  anyone → node agent
        map the object for a zero-copy get, pulling it from sources [(node_id, address)] if need be
    PINNED(req, oid, where, layout, error)  node agent → requester
        where: the offset or a spill file's path; or None and error
    UNPIN(ids)  anyone → node agent
        done with these mappings
    READ(req, oid, start, length[, node_id])  anyone → node agent or head
        send length bytes from start; node_id: the node to read from (through the head only)
    CHUNK(req, oid, start, size, layout, error)  node agent or head → reader
        + a raw data frame: the bytes from start; size and layout of the whole object; or error
    WRITE(oid, offset[, req])  anyone → node agent or head
        + a raw data frame to write at offset (a driver with no shared memory on this machine); with
        req, answered WRITTEN
    WRITTEN(req, oid, offset, error)  node agent or head → writer
        the WRITE landed, or why not
Nested tuples
    TASK_SPEC(task_id, fn_id, name, args, deps, contained, return_ids, shape, max_retries,
        retry_exceptions, max_calls, selector)
        SUBMIT's spec; selector: a label selector or ()
    RUN_TASK(task_id, fn_id, fn_blob, name, args, deps, return_ids, retry_exceptions, can_retry,
        gpu_ids, job_id, shape, actor)
        RUN's task; fn_blob None when the worker has it; deps {oid: (kind, data)}; actor: the actor's
        info for a creation task, else None
    RESULT(oid, object_kind, data, refs, size)
        one result in DONE and ACTOR_RESULT
    ACTOR_SPEC(fn_id, class_name, args, deps, contained, placement, info)
        CREATE_ACTOR's spec: the class, its constructor's arguments, where to place it, its options
A process → its node's pin channel (a plain unix socket; fixed binary frames, see the end of this file)
    ALLOC(id, size) → ALLOCATED(offset | spill file path | error), SEAL(id, layout), PIN(id, identity) → PINNED(layout) | ELSEWHERE
"""
from __future__ import annotations

import pickle
import struct
import textwrap
from collections import namedtuple

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
REJOIN = "rejoin"
HEAD_RESTARTING = "head_restarting"

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


# --- the definition: every message kind, once ------------------------------------------------
class ProtocolError(ValueError):
    """A message that does not match its kind's definition (a peer on another tasuki version, or a bug)."""


class Message:
    """One message kind: its wire tag, its fields in order (a trailing `name?` is optional: absent
    on the wire when None), who sends it to whom, and what it means."""

    __slots__ = ("kind", "name", "fields", "required", "route", "doc", "view")

    def __init__(self, kind: str, fields: str, route: str, doc: str) -> None:
        names = fields.split()
        optional = [n for n in names if n.endswith("?")]
        if names[len(names) - len(optional):] != optional:
            raise ValueError(f"{kind}: optional fields come last, got {fields!r}")
        self.kind, self.route, self.doc = kind, route, doc
        self.name = _CONSTANT_NAMES[kind]          # SUBMIT; its constructor is submit()
        self.fields = tuple(n.rstrip("?") for n in names)
        self.required = len(names) - len(optional)
        self.view = _view_class(self.name, self.fields)

    def signature(self) -> str:
        """`CALL(return_ids, method, args, deps, name[, retry])`."""
        head = ", ".join(self.fields[:self.required])
        tail = "".join(f"[, {n}]" if i or head else f"[{n}]" for i, n in enumerate(self.fields[self.required:]))
        return f"{self.name}({head}{tail})"

    def expected(self) -> str:
        """What the kind expects, for error messages: `STORED(oid, size) takes 2 fields`."""
        count = str(len(self.fields)) if self.required == len(self.fields) else \
            f"{self.required} to {len(self.fields)}"
        return f"{self.signature()} takes {count} field{'' if count == '1' else 's'}"


class Record:
    """A tuple nested in a message (SUBMIT's spec, RUN's task): its fields in order."""

    __slots__ = ("name", "fields", "doc")

    def __init__(self, name: str, fields: str, doc: str) -> None:
        self.name, self.fields, self.doc = name, tuple(fields.split()), doc


def _view_class(name: str, fields: tuple) -> type:
    """A parsed message: a tuple with named fields, for reading only. It refuses to be pickled, so
    a view sent by mistake fails at once instead of growing every message by its class name."""
    def refuse(self):
        raise TypeError(f"a parsed {name} message is not a wire message: send the tuple its constructor "
                        f"returns")
    cls = namedtuple(name, ("kind",) + fields)
    cls.__reduce__ = refuse
    return cls


# the kind constants above by value ("submit" → "SUBMIT"): the names of the constructors and views
_CONSTANT_NAMES = {value: name for name, value in list(globals().items()) if name.isupper() and isinstance(value, str)}
_TO_HEAD = "driver or worker → head"
MESSAGES: tuple[Message, ...] = (
    # driver or worker → head
    Message(HELLO, "role info", "driver, worker or node → head",
            "first message; role: driver, worker or node; info has versions, job id, node id (workers), "
            "resources (nodes)"),
    Message(FUNCTION, "fn_id blob", _TO_HEAD, "a function or class pickled once; tasks refer to it by id"),
    Message(SUBMIT, "spec", _TO_HEAD, "a task: spec is a TASK_SPEC (below)"),
    Message(HOLD, "ids", _TO_HEAD, "this process starts holding refs to these objects (refcounting)"),
    Message(RELEASE, "ids", _TO_HEAD, "this process stops holding them"),
    Message(PUT, "oid object_kind data refs size", _TO_HEAD,
            "a new object: object_kind VALUE (data: inline bytes) or STORED_KIND (data: the node id); refs: the "
            "object ids it contains; size in bytes"),
    Message(GET, "ids", _TO_HEAD, "send me these objects (OBJECT) when they are ready"),
    Message(CANCEL, "oid force recursive", _TO_HEAD,
            "cancel the task making oid; recursive: the tasks it submitted, and theirs, too"),
    Message(DONE, "task_id results retryable", "worker → head",
            "a task finished: results = [RESULT]; retryable: it raised an exception its retry_exceptions allow"),
    Message(BLOCKED, "task_ids", "worker → head",
            "the running task waits in get (its CPU is lent out); task_ids: the tasks queued behind it, handed back"),
    Message(UNBLOCKED, "", "worker → head", "the running task stopped waiting"),
    Message(RETURNED, "task_ids", "worker → head", "queued tasks given back after STEAL"),
    Message(LOG, "lines", "worker → head → driver", "output lines [(stream, text)], already prefixed"),
    Message(HEARTBEAT, "stats?", "any → head, head → any",
            "liveness; a node's carries its stats (store use, load), the head's none"),
    Message(BYE, "", _TO_HEAD, "this process leaves"),
    Message(QUERY, "req what arg", "driver → head", "state for the CLI and the HTTP API; answered ANSWER(req, data)"),
    Message(REQUEST_RESOURCES, "req bundles", "driver → head",
            "request_resources(): [(shape, count)] replaces the cluster's standing request for the autoscaler "
            "([] clears it); answered ANSWER(req, None)"),
    # head → driver or worker
    Message(WELCOME, "info", "head → driver, worker or node", "hello accepted: job id, the node directory"),
    Message(REFUSED, "reason", "head → driver, worker or node", "hello refused (versions differ)"),
    Message(OBJECT, "oid object_kind data", "head or actor worker → driver or worker",
            "VALUE: pickled bytes; STORED_KIND: [(node_id, address)]; ERROR: a pickled exception (pushed again "
            "to its holders when a node holding a copy dies; STORED_KIND with []: its only copy died and it is "
            "being recomputed (lineage.py): GET it again)"),
    Message(RUN, "task", "head → worker", "run this task: a RUN_TASK (below)"),
    Message(INTERRUPT, "task_id", "head → worker", "cancel the task (running, or queued there: skip it)"),
    Message(STEAL, "task_id", "head → worker", "give this queued task back (RETURNED) if it has not started"),
    Message(EXIT, "", "head → worker", "exit when idle"),
    Message(GC, "", "head → worker or driver",
            "collect cyclic garbage now (a node's object store is over config.GC_STORE_FRACTION full: cycles "
            "may hold refs that pin objects)"),
    Message(WARN, "text", "head → driver or worker", "print this warning once"),
    Message(ANSWER, "req data", "head → driver", "the answer to QUERY, REQUEST_RESOURCES or CREATE_ACTOR"),
    Message(HEAD_STOPPING, "reason", "head → drivers and workers",
            "the head is shutting down (SIGTERM, `tasuki stop`): pending gets and waits raise "
            "ClusterError(reason) at once"),
    Message(HEAD_RESTARTING, "reason", "head → driver, worker or node",
            "the head is going away and a supervisor starts the next one (TASUKI_HEAD_EXPECT_RESTART): keep "
            "waiting for it and rejoin it; a node agent that is leaving exits, no one is left to drain it for"),
    Message(REJOIN, "session", "head → driver, worker or node",
            "a new head runs (recovery.py): sent to a process it does not know that sent something other "
            "than HELLO (the message is dropped), again every 0.5 s; the process says HELLO again with "
            "info[\"rejoin\"] (what it has); WELCOME's info carries \"session\" (the head's start time)"),
    # actors (see actor.py)
    Message(CREATE_ACTOR, "actor_id spec req", "caller → head",
            "place a creation task for an ACTOR_SPEC (below); req None: no answer wanted, else ANSWER(req, actor id or why not)"),
    Message(ACTOR_READY, "actor_id address error", "actor worker → head",
            "constructed and listening at address, or its constructor failed (error: the pickled exception)"),
    Message(ACTOR_LOCATE, "actor_id", "caller → head", "where is it? answered (now or later) by ACTOR_INFO"),
    Message(ACTOR_INFO, "actor_id state address cause", "head → callers",
            "state: PENDING, ALIVE, RESTARTING or DEAD; sent again on restart and death"),
    Message(ACTOR_CALLS, "actor_id calls", "caller → head", "register calls [(return_ids, contained)] (refcounting)"),
    Message(CALL, "return_ids method args deps name retry?", "caller → actor worker, directly",
            "call a method; retry: (max_task_retries, retry_exceptions), only from options()"),
    Message(ACTOR_RESULT, "actor_id first results", "actor worker → head",
            "after answering the caller: results = [RESULT] of the call whose first return id is first"),
    Message(KILL_ACTOR, "actor_id no_restart", "caller → head", "kill the actor"),
    Message(ACTOR_EXIT, "actor_id cause", "actor worker → head",
            "it ends on purpose (exit_actor(), sys.exit(), out of scope): no restart; then the process exits"),
    Message(CANCEL_CALL, "first", "head → the call's caller and the actor's worker",
            "cancel the call whose first return id is first: the caller drops it if still queued there, the "
            "worker skips it or marks the running call"),
    Message(ACTOR_SEND, "actor_id address calls", "driver → head (relay.py)",
            "the head sends the CALLs to the actor at address on a connection of its own for this driver"),
    Message(ACTOR_REPLY, "actor_id", "head → driver (relay.py)",
            "+ a raw frame: what the actor answered on that connection, as it came"),
    # node agent ↔ head
    Message(WORKER_EXITED, "worker_id pid code", "node agent → head", "a worker process exited"),
    Message(STORED, "oid size", "node agent → head", "a copy of the object is sealed in this node's store"),
    Message(SPAWN, "worker_ids", "head → node agent", "start a worker process for each id"),
    Message(KILL, "worker_id", "head → node agent", "SIGKILL this worker"),
    Message(FREE, "ids", "head → node agent", "delete these objects from the store"),
    Message(SHUTDOWN, "", "head → node agent", "stop"),
    Message(NODE_DIED, "node_id address", "head → node agent, driver",
            "a node was declared dead: its pulls go to another copy, or fail; a driver of it stops waiting on it"),
    # draining (see drain.py)
    Message(LEAVING, "timeout_s", "node agent → head", "it got SIGTERM; drain it within timeout_s seconds"),
    Message(DRAINED, "", "head → node agent", "nothing is left there (no task, actor or sole copy): exit 0"),
    Message(REPLICATE, "oid sources", "head → node agent",
            "pull a copy of this object from [(node_id, address)] (no one waits for it); STORED when sealed"),
    # the object store and transfers: anyone → node agent, or through the head (relay.py)
    Message(ALLOC, "req oid size", "anyone → node agent or head", "open a block of size bytes for the object"),
    Message(ALLOCATED, "req offset error node_id?", "node agent or head → requester",
            "offset, a spill file's path, or None and why; node_id: the node the head picked (relayed only)"),
    Message(SEAL, "oid layout", "anyone → node agent or head", "the block is written: layout [(at, size)]"),
    Message(PIN, "req oid sources", "anyone → node agent",
            "map the object for a zero-copy get, pulling it from sources [(node_id, address)] if need be"),
    Message(PINNED, "req oid where layout error", "node agent → requester",
            "where: the offset or a spill file's path; or None and error"),
    Message(UNPIN, "ids", "anyone → node agent", "done with these mappings"),
    Message(READ, "req oid start length node_id?", "anyone → node agent or head",
            "send length bytes from start; node_id: the node to read from (through the head only)"),
    Message(CHUNK, "req oid start size layout error", "node agent or head → reader",
            "+ a raw data frame: the bytes from start; size and layout of the whole object; or error"),
    Message(WRITE, "oid offset req?", "anyone → node agent or head",
            "+ a raw data frame to write at offset (a driver with no shared memory on this machine); with req, "
            "answered WRITTEN"),
    Message(WRITTEN, "req oid offset error", "node agent or head → writer", "the WRITE landed, or why not"),
    # head recovery (issue 17) and later kinds: add their constant above and one Message line here
)

RECORDS: tuple[Record, ...] = (
    Record("TASK_SPEC", "task_id fn_id name args deps contained return_ids shape max_retries retry_exceptions "
                        "max_calls selector", "SUBMIT's spec; selector: a label selector or ()"),
    Record("RUN_TASK", "task_id fn_id fn_blob name args deps return_ids retry_exceptions can_retry gpu_ids job_id "
                       "shape actor", "RUN's task; fn_blob None when the worker has it; deps {oid: (kind, data)}; "
                                      "actor: the actor's info for a creation task, else None"),
    Record("RESULT", "oid object_kind data refs size", "one result in DONE and ACTOR_RESULT"),
    Record("ACTOR_SPEC", "fn_id class_name args deps contained placement info",
           "CREATE_ACTOR's spec: the class, its constructor's arguments, where to place it, its options"),
)

KINDS: dict[str, Message] = {m.kind: m for m in MESSAGES}


def check(message) -> Message:
    """The definition `message` matches, or ProtocolError saying what is wrong with it."""
    try:
        kind = message[0]
        definition = KINDS[kind]
    except (TypeError, IndexError, KeyError):
        head = message[0] if isinstance(message, tuple) and message else message
        raise ProtocolError(f"unknown message kind {str(head)[:80]!r} in {_show(message)}: not one of the "
                            f"{len(KINDS)} kinds in protocol.MESSAGES; is the peer on another tasuki version?") from None
    got = len(message) - 1
    if not definition.required <= got <= len(definition.fields):
        raise ProtocolError(f"{definition.expected()} after its kind, got {got}: "
                            f"{_show(message)}; is the peer on another tasuki version?")
    return definition


def parse(message: tuple):
    """A view of `message` with named fields (`parse(m).oid`); a missing optional field reads None.
    ProtocolError when the kind is unknown or the field count is wrong."""
    definition = check(message)
    missing = len(definition.fields) + 1 - len(message)
    return tuple.__new__(definition.view, message + (None,) * missing if missing else message)


def _show(message) -> str:
    text = repr(message)
    return text if len(text) <= 200 else text[:200] + "…"


def describe() -> str:
    """The message list in the module docstring, generated from MESSAGES and RECORDS."""
    lines = []
    for m in MESSAGES:
        lines.append(f"    {m.signature()}  {m.route}")
        lines.extend(textwrap.wrap(m.doc, 104, initial_indent=" " * 8, subsequent_indent=" " * 8))
    lines.append("Nested tuples")
    for r in RECORDS:
        lines.extend(textwrap.wrap(f"{r.name}({', '.join(r.fields)})", 104, initial_indent="    ",
                                   subsequent_indent=" " * 8))
        lines.extend(textwrap.wrap(r.doc, 104, initial_indent=" " * 8, subsequent_indent=" " * 8))
    lines.append("A process → its node's pin channel (a plain unix socket; fixed binary frames, see the end of "
                 "this file)")
    lines.append("    ALLOC(id, size) → ALLOCATED(offset | spill file path | error), SEAL(id, layout), "
                 "PIN(id, identity) → PINNED(layout) | ELSEWHERE")
    return "\n".join(lines)


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


# --- constructors, generated from MESSAGES and RECORDS ---------------------------------------
def _constructor(name: str, kind: str | None, fields: tuple, required: int, doc: str):
    """`def submit(spec): return (SUBMIT, spec)`, compiled once (as namedtuple does): a call costs
    what building the tuple by hand costs, plus the call. An optional trailing field that is None
    is left off, so the wire stays what it was."""
    lead = ["_KIND"] if kind is not None else []
    optional = fields[required:]
    params = ", ".join(list(fields[:required]) + [f"{n}=None" for n in optional])
    body = []
    for i in range(len(optional), 0, -1):
        body.append(f"    if {optional[i - 1]} is not None:\n"
                    f"        return ({', '.join(lead + list(fields[:required + i]))},)\n")
    body.append(f"    return ({', '.join(lead + list(fields[:required]))},)\n")
    namespace: dict = {}
    exec(f"def {name}({params}):\n" + "".join(body), {"_KIND": kind}, namespace)   # noqa: S102 (our own text)
    function = namespace[name]
    function.__doc__ = doc
    function.__module__ = __name__
    return function


for _m in MESSAGES:
    globals()[_m.name.lower()] = _constructor(_m.name.lower(), _m.kind, _m.fields, _m.required,
                                              f"{_m.signature()}: {_m.doc} ({_m.route})")
for _r in RECORDS:
    globals()[_r.name.lower()] = _constructor(_r.name.lower(), None, _r.fields, len(_r.fields),
                                              f"{_r.name}: {_r.doc}")
del _m, _r


def write_docstring(path: str = __file__) -> None:
    """Rewrite the message list in this module's docstring from MESSAGES (after adding a kind, or a merge)."""
    with open(path) as f:
        source = f.read()
    start = source.index(_LIST_STARTS) + len(_LIST_STARTS)
    end = source.index('\n"""\n', start)
    with open(path, "w") as f:
        f.write(source[:start] + describe() + source[end:])


_LIST_STARTS = "tests/test_protocol.py fails when it differs):\n\n"

if __name__ == "__main__":
    import sys
    write_docstring() if sys.argv[1:] == ["--write"] else print(describe())

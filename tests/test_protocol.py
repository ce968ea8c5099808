"""protocol.py: every message kind's constructor and parser round trip, the definition covers every
kind constant, the docstring matches the definition, malformed messages are explained, and the pin
channel's binary frames round trip. Pure: no sockets."""
from __future__ import annotations

import pickle
import struct

import pytest

from tasuki import protocol as P

OID, OID2 = b"o" * 16, b"p" * 16
TASK_ID = b"t" * 15
SPEC = P.task_spec(TASK_ID, b"f" * 16, "square", b"args", [OID], [OID2], [TASK_ID + b"\0"], (("CPU", 1.0),), 3,
                   False, 0, ())
RUN_TASK = P.run_task(TASK_ID, b"f" * 16, None, "square", b"args", {OID: (P.VALUE, b"x")}, [TASK_ID + b"\0"],
                      False, True, [], b"job1", (("CPU", 1.0),), None)
RESULT = P.result(OID, P.VALUE, b"header", [], 6)
CALL = P.call([OID], "inc", b"args", [], "Counter.inc")

# one sample per kind: the values of its fields in order (optional ones included)
SAMPLES: dict[str, tuple] = {
    P.HELLO: ("driver", {"version": "0.1", "python": "3.12", "job_id": b"job1"}),
    P.FUNCTION: (b"f" * 16, b"pickled function"),
    P.SUBMIT: (SPEC,),
    P.HOLD: ([OID, OID2],),
    P.RELEASE: ([OID],),
    P.PUT: (OID, P.STORED_KIND, "node-1", [OID2], 1 << 20),
    P.GET: ([OID],),
    P.CANCEL: (OID, True, False),
    P.DONE: (TASK_ID, [RESULT], False),
    P.BLOCKED: ([TASK_ID],),
    P.UNBLOCKED: (),
    P.RETURNED: ([TASK_ID],),
    P.LOG: ([("stdout", "(square pid=1) hello")],),
    P.HEARTBEAT: ({"store_used": 0, "load": 0.5},),
    P.BYE: (),
    P.QUERY: (7, "nodes", None),
    P.REQUEST_RESOURCES: (8, [((("CPU", 4.0),), 2)]),
    P.WELCOME: ({"job_id": b"job1", "nodes": {}},),
    P.REFUSED: ("this driver runs tasuki 0.0",),
    P.OBJECT: (OID, P.ERROR, b"pickled error"),
    P.RUN: (RUN_TASK,),
    P.INTERRUPT: (TASK_ID,),
    P.STEAL: (TASK_ID,),
    P.EXIT: (),
    P.GC: (),
    P.WARN: ("a warning",),
    P.ANSWER: (7, {"nodes": []}),
    P.HEAD_STOPPING: ("the head stopped",),
    P.HEAD_RESTARTING: ("the head is going away (SIGTERM)",),
    P.REJOIN: (1796300000.25,),
    P.CREATE_ACTOR: (b"a" * 16, ("spec",), 9),
    P.ACTOR_READY: (b"a" * 16, "tcp://10.0.0.1:7001", None),
    P.ACTOR_LOCATE: (b"a" * 16,),
    P.ACTOR_INFO: (b"a" * 16, P.ALIVE_STATE, "tcp://10.0.0.1:7001", None),
    P.ACTOR_CALLS: (b"a" * 16, [([OID], [])]),
    P.CALL: ([OID], "inc", b"args", [], "Counter.inc", (2, True)),
    P.ACTOR_RESULT: (b"a" * 16, OID, [RESULT]),
    P.KILL_ACTOR: (b"a" * 16, True),
    P.ACTOR_EXIT: (b"a" * 16, "exit_actor() was called"),
    P.CANCEL_CALL: (OID,),
    P.ACTOR_SEND: (b"a" * 16, "tcp://10.0.0.1:7001", [CALL]),
    P.ACTOR_REPLY: (b"a" * 16,),
    P.WORKER_EXITED: (b"w" * 8, 1234, -9),
    P.STORED: (OID, 1 << 20),
    P.SPAWN: ([b"w" * 8],),
    P.KILL: (b"w" * 8,),
    P.FREE: ([OID],),
    P.SHUTDOWN: (),
    P.NODE_DIED: ("node-2", "tcp://10.0.0.2:7000"),
    P.LEAVING: (30.0,),
    P.DRAINED: (),
    P.REPLICATE: (OID, [("node-2", "tcp://10.0.0.2:7000")]),
    P.ALLOC: (3, OID, 1 << 20),
    P.ALLOCATED: (3, 4096, None, "node-1"),
    P.SEAL: (OID, [(0, 100), (128, 50)]),
    P.PIN: (4, OID, [("node-2", "tcp://10.0.0.2:7000")]),
    P.PINNED: (4, OID, 4096, [(0, 100)], None),
    P.UNPIN: ([OID],),
    P.READ: (5, OID, 0, 1 << 20, "node-1"),
    P.CHUNK: (5, OID, 0, 150, [(0, 100), (128, 50)], None),
    P.WRITE: (OID, 0, 6),
    P.WRITTEN: (6, OID, 0, None),
}


@pytest.mark.parametrize("definition", P.MESSAGES, ids=lambda m: m.name)
def test_round_trip(definition):
    values = SAMPLES[definition.kind]
    constructor = getattr(P, definition.name.lower())
    message = constructor(*values)
    assert type(message) is tuple and message == (definition.kind, *values)
    wire = P.decode(P.encode([message]))
    assert wire == [message]
    view = P.parse(wire[0])
    assert view.kind == definition.kind
    assert tuple(getattr(view, field) for field in definition.fields) == values


@pytest.mark.parametrize("definition", [m for m in P.MESSAGES if m.required < len(m.fields)], ids=lambda m: m.name)
def test_optional_fields_left_off_when_none(definition):
    """An optional trailing field that is None is not sent (the wire stays as short as it was), and
    reads None when parsed."""
    values = SAMPLES[definition.kind][:definition.required]
    message = getattr(P, definition.name.lower())(*values)
    assert message == (definition.kind, *values)
    assert getattr(P, definition.name.lower())(*values, *[None] * (len(definition.fields) - definition.required)) \
        == message
    view = P.parse(P.decode(P.encode([message]))[0])
    assert all(getattr(view, field) is None for field in definition.fields[definition.required:])


def test_definition_covers_every_kind_constant():
    not_kinds = {"PENDING", "ALIVE_STATE", "RESTARTING", "DEAD_STATE", "VALUE", "STORED_KIND", "ERROR"}
    constants = {name: value for name, value in vars(P).items()
                 if name.isupper() and not name.startswith("_") and isinstance(value, str) and name not in not_kinds}
    assert sorted(m.name for m in P.MESSAGES) == sorted(constants)
    assert len(P.KINDS) == len(P.MESSAGES), "two kinds share a wire tag"
    assert set(SAMPLES) == set(P.KINDS), "add a sample for the new kind to SAMPLES"


def test_docstring_lists_the_definition():
    assert P.describe() in P.__doc__, "run `python -m tasuki.protocol --write` to rewrite the docstring"


def test_records_round_trip():
    actor_spec = P.actor_spec(b"f" * 16, "Counter", b"args", [], [], {}, {"name": None})
    for record, value in (("TASK_SPEC", SPEC), ("RUN_TASK", RUN_TASK), ("RESULT", RESULT), ("ACTOR_SPEC", actor_spec)):
        fields = next(r.fields for r in P.RECORDS if r.name == record)
        assert type(value) is tuple and len(value) == len(fields)
        assert P.decode(P.encode([value])) == [value]
    assert [r.name for r in P.RECORDS] == ["TASK_SPEC", "RUN_TASK", "RESULT", "ACTOR_SPEC"]
    assert SPEC[0] == TASK_ID and SPEC[-1] == () and RUN_TASK[-1] is None


def test_constructor_costs_no_bytes():
    """Messages stay plain tuples: pickled, a constructed message is the hand-built tuple's size."""
    assert P.encode([P.submit(SPEC)]) == P.encode([(P.SUBMIT, SPEC)])
    assert P.encode([P.call([OID], "inc", b"", [], "x")]) == P.encode([(P.CALL, [OID], "inc", b"", [], "x")])


def test_a_parsed_view_refuses_to_be_sent():
    with pytest.raises(TypeError, match="not a wire message"):
        P.encode([P.parse(P.exit())])


@pytest.mark.parametrize("message, expected", [
    (("nope", 1), "unknown message kind 'nope'"),
    ((), "unknown message kind"),
    ("submit", "unknown message kind"),
    ((P.SUBMIT,), r"SUBMIT\(spec\) takes 1 field after its kind, got 0: \('submit',\)"),
    ((P.OBJECT, OID, P.VALUE), r"OBJECT\(oid, object_kind, data\) takes 3 fields after its kind, got 2"),
    ((P.CALL, [OID], "m", b"", [], "n", None, "extra"),
     r"CALL\(return_ids, method, args, deps, name\[, retry\]\) takes 5 to 6 fields after its kind, got 7"),
    ((P.EXIT, 1), r"EXIT\(\) takes 0 fields after its kind, got 1"),
])
def test_malformed_messages_are_explained(message, expected):
    with pytest.raises(P.ProtocolError, match=expected) as info:
        P.parse(message)
    assert "another tasuki version" in str(info.value)


def test_check_returns_the_definition():
    assert P.check(P.heartbeat()) is P.KINDS[P.HEARTBEAT]


# --- the pin channel's binary frames ---------------------------------------------------------
def _body(frame: bytes, prefix: str) -> bytes:
    (length,) = struct.unpack_from(prefix, frame)
    body = frame[struct.calcsize(prefix):]
    assert len(body) == length
    return body


@pytest.mark.parametrize("frame, expected", [
    (P.encode_pin_request(OID, b"ident-1"), (P.PIN_REQUEST, OID, b"ident-1")),
    (P.encode_seal_request(OID, [(0, 100), (128, 50)]), (P.SEAL_REQUEST, OID, [(0, 100), (128, 50)])),
    (P.encode_seal_request(OID, []), (P.SEAL_REQUEST, OID, [])),
    (P.encode_alloc_request(OID, 1 << 40), (P.ALLOC_REQUEST, OID, 1 << 40)),
])
def test_pin_channel_requests_round_trip(frame, expected):
    assert P.decode_channel_request(_body(frame, "!H")) == expected


@pytest.mark.parametrize("offset, parts, expected", [
    (4096, [(0, 100), (128, 50)], (4096, [(0, 100), (128, 50)])),
    (0, [], (0, [])),
    (None, None, None),                 # ELSEWHERE: ask over zmq
])
def test_pin_channel_pinned_round_trips(offset, parts, expected):
    assert P.decode_pinned(_body(P.encode_pinned(offset, parts), "!I")) == expected


@pytest.mark.parametrize("offset, error", [
    (4096, None), (0, None), ("/tmp/spill/abc", None), (None, "the store is full: 10 MiB free, asked 1 GiB"),
])
def test_pin_channel_allocated_round_trips(offset, error):
    assert P.decode_allocated(_body(P.encode_allocated(offset, error), "!I")) == (offset, error)


def test_views_never_reach_the_wire_by_pickle():
    with pytest.raises(TypeError):
        pickle.dumps(P.parse(P.submit(SPEC)))


def test_head_handlers_take_the_defined_fields():
    """The head dispatches `handler(self, ident, peer, now, *message[1:])` without parsing (its hot
    path): each handler must take exactly its kind's fields, so a field added to a definition and
    not to the handler (or the reverse) fails here, not on a cluster."""
    import inspect

    from tasuki.head import Head
    for kind, handler in Head.handlers.items():
        parameters = list(inspect.signature(handler).parameters.values())
        if any(p.kind is p.VAR_POSITIONAL for p in parameters):
            continue                      # the relay's answers: passed on whole
        fields = [p.name for p in parameters[4:]]
        definition = P.KINDS[kind]
        assert len(fields) == len(definition.fields), f"Head.{handler.__name__}{tuple(fields)} for {definition.signature()}"
        assert sum(p.default is p.empty for p in parameters[4:]) <= definition.required or kind == P.READ, \
            f"Head.{handler.__name__} needs a field {definition.signature()} makes optional"


# head.py is converted after the head's split (issue 17); then this set is empty
NOT_CONVERTED_YET: set = set()


def test_messages_are_built_by_their_constructors():
    """No module builds a message tuple by hand (`(P.SUBMIT, spec)`): a field change stays one edit."""
    import pathlib
    import re

    kinds = "|".join(m.name for m in P.MESSAGES)
    by_hand = re.compile(rf"(?<!in )\(P\.({kinds}),")
    package = pathlib.Path(P.__file__).parent
    found = [f"{path.relative_to(package)}:{number}: {line.strip()}"
             for path in sorted(package.rglob("*.py")) if path.name not in NOT_CONVERTED_YET
             for number, line in enumerate(path.read_text().splitlines(), 1) if by_hand.search(line)]
    assert not found, "build these with the protocol's constructors:\n" + "\n".join(found)

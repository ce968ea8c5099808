"""Micro-benchmark of protocol.py on the per-task messages: building a message by hand against its
constructor, each then encoded in a batch of 100 as the client and the head send them; and reading one
by index or unpacking against P.parse. Nanoseconds per message, best of --repeats.

    python benchmarks/protocol_micro.py
"""
from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime"))

from tasuki import protocol as P  # noqa: E402

OID, TASK_ID = b"o" * 16, b"t" * 15
ARGS = b"\x80\x05" + b"a" * 40
SPEC = (TASK_ID, b"f" * 16, "noop", ARGS, [], [], [TASK_ID + b"\0"], (("CPU", 1.0),), 3, False, 0, ())
RUN = (TASK_ID, b"f" * 16, None, "noop", ARGS, {}, [TASK_ID + b"\0"], False, True, [], b"job1", (("CPU", 1.0),), None)
RESULTS = [(TASK_ID + b"\0", P.VALUE, b"\x80\x05N.", [], 4)]
BATCH = 100

# (message, hand-built, with the constructor): the statements timeit runs, one message each
CASES = [
    ("SUBMIT", "(P.SUBMIT, SPEC)", "P.submit(SPEC)"),
    ("RUN", "(P.RUN, RUN)", "P.run(RUN)"),
    ("DONE", "(P.DONE, TASK_ID, RESULTS, False)", "P.done(TASK_ID, RESULTS, False)"),
    ("OBJECT", "(P.OBJECT, OID, P.VALUE, b'x')", "P.object(OID, P.VALUE, b'x')"),
    ("CALL", "(P.CALL, [OID], 'm', ARGS, [], 'A.m')", "P.call([OID], 'm', ARGS, [], 'A.m', None)"),
    ("HEARTBEAT", "(P.HEARTBEAT,)", "P.heartbeat()"),
]
READS = [
    ("RUN", "(P.RUN, RUN)", "task = m[1]; task[0]; task[-1]", "v = P.parse(m); v.task[0]; v.task[-1]"),
    ("OBJECT", "(P.OBJECT, OID, P.VALUE, b'x')", "_, oid, kind, data = m", "v = P.parse(m); v.oid; v.object_kind; v.data"),
    ("CALL", "(P.CALL, [OID], 'm', ARGS, [], 'A.m')", "m[1]; m[2]; m[3]; m[4]; m[5]; len(m) > 6",
     "v = P.parse(m); v.return_ids; v.method; v.args; v.deps; v.name; v.retry"),
]


def best_ns(statement: str, setup: str, number: int, repeats: int) -> float:
    names = {"P": P, "SPEC": SPEC, "RUN": RUN, "RESULTS": RESULTS, "OID": OID, "TASK_ID": TASK_ID, "ARGS": ARGS}
    return min(timeit.repeat(statement, setup, number=number, repeat=repeats, globals=names)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    options = parser.parse_args()
    print(f"build + encode, ns per message (batches of {BATCH})")
    print(f"{'message':<10} {'by hand':>9} {'constructor':>12} {'difference':>11} {'bytes':>6}")
    for name, by_hand, constructed in CASES:
        hand = best_ns(f"P.encode([{by_hand} for _ in range({BATCH})])", "", options.number // 10,
                       options.repeats) / BATCH
        made = best_ns(f"P.encode([{constructed} for _ in range({BATCH})])", "", options.number // 10,
                       options.repeats) / BATCH
        same = P.encode([eval(by_hand, None, {"P": P, "SPEC": SPEC, "RUN": RUN, "RESULTS": RESULTS, "OID": OID,
                                               "TASK_ID": TASK_ID, "ARGS": ARGS})])
        print(f"{name:<10} {hand:9.0f} {made:12.0f} {made - hand:+11.0f} {len(same):6}")
    print("\nread one message, ns")
    print(f"{'message':<10} {'by index':>9} {'P.parse':>9} {'difference':>11}")
    for name, message, by_index, parsed in READS:
        plain = best_ns(by_index, f"m = {message}", options.number * 10, options.repeats)
        viewed = best_ns(parsed, f"m = {message}", options.number * 10, options.repeats)
        print(f"{name:<10} {plain:9.0f} {viewed:9.0f} {viewed - plain:+11.0f}")


if __name__ == "__main__":
    main()

"""Scenario 7's driver, run where only the head can be reached (e2e/test_scenarios.py starts it in a
network namespace routed to the head pod alone, or through a port-forward on a real cluster).

    TASUKI_E2E_ADDRESS=HOST:PORT TASUKI_E2E_TOKEN=... python only_head_client.py

Runs tasks on the cluster's workers, then a 100 MB round trip (put, a task reading it, a task's
100 MB result, get), checking the bytes. Prints "OK tasks ..." and "OK round trip 100 MB ..." lines.
"""
import hashlib
import os
import time

import numpy as np

import tasuki

MB = 100
tasuki.init(address=os.environ["TASUKI_E2E_ADDRESS"], token=os.environ["TASUKI_E2E_TOKEN"])
print(f"connected; via the head: {tasuki.api._client.via_head}", flush=True)


@tasuki.remote(num_cpus=1)
def square(x):
    return x * x, os.environ.get("TASUKI_NODE_NAME")


started = time.monotonic()
results = tasuki.get([square.remote(i) for i in range(20)], timeout=300)
assert [r[0] for r in results] == [i * i for i in range(20)], results
print(f"OK tasks on {sorted({r[1] for r in results})} in {time.monotonic() - started:.1f} s", flush=True)


@tasuki.remote(num_cpus=1)
def digest(array):
    return array.nbytes, hashlib.sha256(array.tobytes()).hexdigest(), os.environ.get("TASUKI_NODE_NAME")


@tasuki.remote(num_cpus=1)
def make(nbytes):
    return np.arange(nbytes // 8, dtype=np.float64)


array = np.arange((MB << 20) // 8, dtype=np.float64)
expected = hashlib.sha256(array.tobytes()).hexdigest()
started = time.monotonic()
size, seen, pod = tasuki.get(digest.remote(tasuki.put(array)), timeout=300)     # up: client -> head -> worker
assert (size, seen) == (MB << 20, expected), (size, seen)
back = tasuki.get(make.remote(MB << 20), timeout=300)                           # down: worker -> head -> client
assert back.nbytes == MB << 20 and np.array_equal(back, array)
print(f"OK round trip {MB} MB (up to {pod}, and back) in {time.monotonic() - started:.1f} s", flush=True)
tasuki.shutdown()

"""A driver's tour for tests/test_via_head.py, run as `python via_head_tour.py ADDRESS MB`.

The README tour with smaller arrays, then what a driver that reaches only the head must still do:
wait, worker output, actor errors, a restart and a kill, and a round trip of MB megabytes (put, a
task reading it, a task's result of that size, get). Prints "BIG" before the round trip (the test
watches the head's memory from there) and one JSON line of results at the end.
"""
import json
import os
import sys
import time

import numpy as np

import tasuki

address, mb = sys.argv[1], int(sys.argv[2])
if os.environ.get("TOUR_NO_LOCAL_STORE"):      # as on a machine without a node, without hiding the stores
    import tasuki.client
    tasuki.client.pick_local_node = lambda nodes: None
tasuki.init(address=address)
out = {"via_head": tasuki.api._client.via_head}


@tasuki.remote
def square(x):
    return x * x


out["squares"] = sum(tasuki.get([square.remote(i) for i in range(100)]))

data = tasuki.put(np.zeros(1_000_000))          # 8 MB: stored on a node, not in the head


@tasuki.remote
def total(arr):
    return float(arr.sum()) + arr.size


out["totals"] = tasuki.get([total.remote(data) for _ in range(3)])
back = tasuki.get(data)
out["put_get"] = back.shape == (1_000_000,) and not back.any()


@tasuki.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


c = Counter.options(name="counter").remote()
out["counter"] = tasuki.get([c.incr.remote() for _ in range(5)])
out["named"] = tasuki.get(tasuki.get_actor("counter").incr.remote())

refs = [square.remote(i) for i in range(4)]
ready, _ = tasuki.wait(refs, num_returns=4, timeout=60)
out["wait"] = len(ready)


@tasuki.remote
def shout():
    print("hello from a task, through the head")
    return 1


tasuki.get(shout.remote())


@tasuki.remote(max_restarts=1)
class Fragile:
    def pid(self):
        return os.getpid()

    def fail(self):
        raise ValueError("bad value 42")

    def die(self):
        os._exit(3)

    def ones(self, n):
        return np.ones(n, dtype=np.uint8)


f = Fragile.remote()
first_pid = tasuki.get(f.pid.remote())
try:
    tasuki.get(f.fail.remote())
except ValueError as e:
    out["actor_error"] = "bad value 42" in str(e)
try:
    tasuki.get(f.die.remote())
except tasuki.exceptions.ActorDiedError:
    out["actor_died"] = True
out["restarted"] = tasuki.get(f.pid.remote(), timeout=60) != first_pid
out["actor_large_result"] = int(tasuki.get(f.ones.remote(3_000_000)).sum())
tasuki.kill(f)
deadline = time.time() + 60           # kill is asynchronous: a call that overtakes it may still run
while time.time() < deadline and "killed" not in out:
    try:
        tasuki.get(f.pid.remote(), timeout=60)
    except tasuki.exceptions.ActorDiedError:
        out["killed"] = True



@tasuki.remote(max_restarts=1, max_task_retries=1)
class Phoenix:
    def die_once(self, marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return "survived"


marker = os.path.join(os.environ.get("TASUKI_TMPDIR", "/tmp"), f"phoenix-{os.getpid()}")
out["retried_after_restart"] = tasuki.get(Phoenix.remote().die_once.remote(marker), timeout=60)

big = np.arange(mb * 2**20 // 8, dtype=np.float64)
print("BIG", flush=True)
started = time.perf_counter()
ref = tasuki.put(big)


@tasuki.remote
def checksum(arr):
    return float(arr[::4096].sum()), arr.nbytes


@tasuki.remote
def make(n):
    return np.full(n, 7, dtype=np.uint8)


out["big_seen_by_task"] = list(tasuki.get(checksum.remote(ref))) == [float(big[::4096].sum()), big.nbytes]
result = tasuki.get(make.remote(mb * 2**20))
out["big_result"] = result.nbytes == mb * 2**20 and int(result[0]) == int(result[-1]) == 7
del result
again = tasuki.get(ref)
out["big_round_trip"] = bool(np.array_equal(again, big))
out["big_seconds"] = round(time.perf_counter() - started, 2)
print(json.dumps(out), flush=True)
tasuki.shutdown()

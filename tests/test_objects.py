"""Objects on a real embedded cluster: zero-copy gets from the shared-memory store, large results and
arguments, reference counting (nested refs keep objects alive, dropped refs free them) and a store
that does not grow over a long put/get/del loop."""
from __future__ import annotations

import gc
import time

import numpy as np
import pytest

import tasuki
from conftest import wait_until as wait_for
from tasuki import protocol as P
from tasuki.exceptions import ObjectLostError

MB = 1 << 20
STORE_BYTES = 512 * MB




@pytest.fixture(scope="module", autouse=True)
def cluster():
    if tasuki.is_initialized():
        tasuki.shutdown()
    tasuki.init(num_cpus=2, num_gpus=0, object_store_memory=STORE_BYTES)
    yield
    tasuki.shutdown()


def store() -> dict:
    """The node's store figures, from its last heartbeat (at most ~0.5 s old)."""
    return tasuki.nodes()[0]["ObjectStore"]


def head_objects() -> int:
    """Objects the head knows. The query queues behind this process's earlier RELEASEs, so after a
    gc.collect() the count includes no object this process has already dropped."""
    gc.collect()
    return tasuki.api._client.query("status")["objects"]


def in_shared_memory(array: np.ndarray) -> bool:
    """Is `array` a view of this process's mapping of the node's arena (not a private copy)?"""
    arena = tasuki.api._client.arena
    return arena is not None and np.shares_memory(array, arena.view)


@tasuki.remote
def make_array(n_bytes: int, fill: int):
    return np.full(n_bytes, fill, dtype=np.uint8)


@tasuki.remote
def inspect(a, step: int = 4096):
    """What a task sees of a large argument: zero-copy from its node's arena, read-only."""
    from tasuki import api
    return {"writeable": bool(a.flags.writeable), "shared": bool(np.shares_memory(a, api._client.arena.view)),
            "checksum": float(a[::step].sum()), "nbytes": int(a.nbytes)}


# --- zero copy ----------------------------------------------------------------------------------
def test_a_50_mb_array_put_and_get_is_zero_copy():
    array = np.arange(50 * MB // 8, dtype=np.float64)
    ref = tasuki.put(array)
    first, second = tasuki.get(ref), tasuki.get(ref)
    assert np.array_equal(first, array)
    assert first.dtype == array.dtype and first.shape == array.shape
    assert not first.flags.writeable
    with pytest.raises(ValueError):
        first[0] = -1.0
    assert in_shared_memory(first)                       # a view of the arena, not a copy
    assert np.shares_memory(first, second)               # two gets map the same block
    assert not np.shares_memory(first, array)


def test_a_task_returning_50_mb():
    ref = make_array.remote(50 * MB, 3)
    value = tasuki.get(ref, timeout=120)
    assert value.nbytes == 50 * MB and value[0] == 3 and value[-1] == 3 and int(value[::MB].sum()) == 3 * 50
    assert not value.flags.writeable and in_shared_memory(value)


def test_fifty_tasks_share_one_large_argument():
    array = np.arange(20 * MB // 8, dtype=np.float64)
    ref = tasuki.put(array)
    results = tasuki.get([inspect.remote(ref, 1000) for _ in range(50)], timeout=180)
    expected = float(array[::1000].sum())
    assert all(r == {"writeable": False, "shared": True, "checksum": expected, "nbytes": array.nbytes}
               for r in results)


def test_a_large_array_passed_by_value_reaches_tasks_through_the_store():
    array = np.ones(2 * MB, dtype=np.uint8)
    results = tasuki.get([inspect.remote(array) for _ in range(5)], timeout=120)
    assert [r["checksum"] for r in results] == [float(array[::4096].sum())] * 5
    assert all(r["shared"] for r in results)


def test_views_keep_the_block_alive_after_the_ref_is_gone():
    ref = make_array.remote(8 * MB, 9)
    value = tasuki.get(ref, timeout=60)
    piece = value[100:200]
    del ref, value
    gc.collect()
    filler = [tasuki.put(np.full(8 * MB, 1, dtype=np.uint8)) for _ in range(4)]   # reuse freed space
    tasuki.get(filler)
    assert (piece == 9).all()                            # the block was not reused under us
    del piece, filler


def test_the_pin_channel_frames_round_trip():
    oid, ident, parts = b"o" * 15, b"D12345678", [(0, 121), (128, 209_715_200)]
    for request, expected in ((P.encode_pin_request(oid, ident), (P.PIN_REQUEST, oid, ident)),
                              (P.encode_seal_request(oid, parts), (P.SEAL_REQUEST, oid, parts))):
        assert int.from_bytes(request[:2], "big") == len(request) - 2
        assert P.decode_channel_request(request[2:]) == expected
    request = P.encode_alloc_request(oid, 5 << 30)
    assert P.decode_channel_request(request[2:]) == (P.ALLOC_REQUEST, oid, 5 << 30)
    assert P.decode_allocated(P.encode_allocated(8192, None)[4:]) == (8192, None)
    assert P.decode_allocated(P.encode_allocated(None, "store full: 3 GB pinned")[4:]) == (None, "store full: 3 GB pinned")
    reply = P.encode_pinned(4096, parts)
    assert int.from_bytes(reply[:4], "big") == len(reply) - 4 and P.decode_pinned(reply[4:]) == (4096, parts)
    assert P.decode_pinned(P.encode_pinned(None, None)[4:]) is None


def test_a_get_pins_over_the_channel_and_falls_back_to_zmq_without_it():
    client = tasuki.api._client
    ref = tasuki.put(np.arange(MB, dtype=np.int64))          # sealed over this thread's channel
    offset, parts = client.pin_directly(ref.id)                # the node answers at once
    client.send_node((P.UNPIN, [ref.id]))
    assert parts[-1][1] == 8 * MB and offset is not None
    assert client.pin_directly(b"x" * 15) is None             # not here: the caller asks over zmq
    saved = client.node.pop("pin_socket")
    try:
        client.pin_conns.conn = None
        value = tasuki.get(ref)                                # the zmq path still works
        assert value[-1] == MB - 1 and in_shared_memory(value)
    finally:
        client.node["pin_socket"] = saved
    del value
    assert tasuki.get(ref)[12345] == 12345


# --- reference counting ------------------------------------------------------------------------
def test_dropping_the_last_ref_frees_the_object():
    base = head_objects()
    refs = [tasuki.put(i) for i in range(20)] + [tasuki.put(np.ones(MB))]
    results = [make_array.remote(10, i) for i in range(5)]
    tasuki.get(results)
    assert head_objects() >= base + 26
    oid = refs[-1].id
    del refs, results
    gc.collect()
    wait_for(lambda: head_objects() <= base, what="the head to forget the objects")
    with pytest.raises(ObjectLostError, match="freed"):
        tasuki.get(tasuki.ObjectRef(oid), timeout=30)


def test_a_freed_large_object_leaves_the_store():
    wait_for(lambda: store()["objects"] == 0, what="an empty store")
    ref = tasuki.put(np.ones(30 * MB, dtype=np.uint8))
    wait_for(lambda: store()["used"] >= 30 * MB, what="the object in the store")
    del ref
    gc.collect()
    wait_for(lambda: store()["used"] == 0 and store()["objects"] == 0, what="the store to be empty again")


def test_refs_nested_in_a_put_object_keep_their_objects_alive():
    base = head_objects()
    inner = tasuki.put(np.arange(MB // 8, dtype=np.float64))
    small = tasuki.put("small inner")
    outer = tasuki.put({"inner": inner, "small": [small]})
    del inner, small
    gc.collect()
    tasuki.get(tasuki.put(0))                            # a round trip: our RELEASEs have reached the head
    got = tasuki.get(outer)
    assert isinstance(got["inner"], tasuki.ObjectRef)
    assert np.array_equal(tasuki.get(got["inner"]), np.arange(MB // 8, dtype=np.float64))
    assert tasuki.get(got["small"][0]) == "small inner"
    del outer, got
    gc.collect()
    wait_for(lambda: head_objects() <= base, what="the outer object and what it held to be freed")


def test_a_ref_created_in_a_task_and_returned_outlives_the_task():
    @tasuki.remote
    def produce():
        return [tasuki.put(np.full(MB, 5, dtype=np.uint8)), tasuki.put("inline")]

    refs = tasuki.get(produce.remote(), timeout=60)
    assert (tasuki.get(refs[0], timeout=60) == 5).all()
    assert tasuki.get(refs[1], timeout=60) == "inline"


def test_refs_passed_inside_task_arguments_stay_alive_until_the_task_runs(tmp_path):
    gate = str(tmp_path / "gate")

    @tasuki.remote
    def later(path, box):
        import os
        while not os.path.exists(path):
            time.sleep(0.01)
        return tasuki.get(box[0]).sum()

    inner = tasuki.put(np.ones(MB // 8))
    ref = later.remote(gate, [inner])
    del inner
    gc.collect()
    open(gate, "w").close()
    assert tasuki.get(ref, timeout=60) == MB // 8


# --- the store does not grow --------------------------------------------------------------------
def test_the_store_does_not_grow_over_1000_put_get_del():
    wait_for(lambda: store()["used"] == 0, what="an empty store")
    base_objects = head_objects()
    chunk = np.random.default_rng(0).integers(0, 255, 10 * MB, dtype=np.uint8)
    peak = 0
    for i in range(1000):
        chunk[0] = i % 256
        ref = tasuki.put(chunk)
        value = tasuki.get(ref)
        assert value[0] == i % 256
        del ref, value
        if i % 100 == 99:
            figures = store()
            peak = max(peak, figures["used"])
            assert figures["spilled"] == 0
    assert peak <= 200 * MB, f"the store held {peak / MB:.0f} MiB at some point"
    wait_for(lambda: store()["used"] == 0, what="every block to be freed")
    wait_for(lambda: head_objects() <= base_objects, what="the head to forget every object")


@tasuki.remote
def _fails():
    raise ValueError("an argument that failed")


@tasuki.remote(max_retries=0)
def _takes_two(a, b):
    return "ran"


def test_a_task_failed_by_one_argument_does_not_run_when_another_comes(tmp_path):
    """f(pending, failed) fails at once; when the pending argument is made later, f is not queued
    again (it used to run and hold a CPU for good: the head had forgotten it)."""
    failed = _fails.remote()
    with pytest.raises(Exception):
        tasuki.get(failed)
    gate = tmp_path / "go"
    pending = _wait_for_file.remote(str(gate))
    with pytest.raises(Exception, match="an argument that failed"):
        tasuki.get(_takes_two.remote(pending, failed), timeout=30)
    gate.write_text("")
    assert tasuki.get(pending, timeout=30) == 1
    wait_for(lambda: tasuki.available_resources().get("CPU") == 2.0, what="both CPUs free")


@tasuki.remote
def _wait_for_file(path: str) -> int:
    import os
    while not os.path.exists(path):
        time.sleep(0.01)
    return 1

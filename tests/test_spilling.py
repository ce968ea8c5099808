"""A small store on a real cluster: puts beyond its capacity spill to disk and read back intact;
an object larger than the whole store goes to disk directly and reads back too."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import tasuki
from conftest import embedded_cluster, wait_until

MB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with embedded_cluster(num_cpus=1, object_store_memory=64 * MB) as tasuki_:
        yield tasuki_


def test_puts_beyond_the_capacity_spill_and_read_back_intact():
    refs = [tasuki.put(np.full(10 * MB, i, dtype=np.uint8)) for i in range(12)]     # 120 MB into 64 MB
    wait_until(lambda: tasuki.nodes()[0]["ObjectStore"]["spilled"] > 0, what="objects spilled to disk")
    for i, ref in enumerate(refs):                  # each get pins it back into memory, spilling others
        value = tasuki.get(ref)
        assert value.nbytes == 10 * MB and value[0] == i and value[-1] == i and (value == i).all()
        del value
    del refs
    gc.collect()


def test_an_object_larger_than_the_store_goes_to_disk_and_reads_back():
    big = np.arange(100 * MB, dtype=np.uint8)              # 100 MB into a 64 MB store: spilled, as in Ray
    ref = tasuki.put(big)
    wait_until(lambda: tasuki.nodes()[0]["ObjectStore"]["spilled"] >= 100 * MB, what="the object on disk")
    value = tasuki.get(ref)
    assert value.nbytes == 100 * MB and (value == big).all() and not value.flags.writeable
    del value, ref
    gc.collect()
    wait_until(lambda: tasuki.nodes()[0]["ObjectStore"]["spilled"] < 100 * MB, what="its spill file removed")
    assert tasuki.get(tasuki.put(np.ones(MB))).sum() == MB       # the store still works

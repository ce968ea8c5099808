"""object_store.py: the allocator, spilling and pins of the Store, reserving its memory, and zero-copy
reads from the Arena."""
from __future__ import annotations

import errno
import gc
import os

import numpy as np
import pytest

from conftest import wait_until
from tasuki import serialization
from tasuki.exceptions import ObjectStoreFullError
from tasuki.object_store import ALIGN, RESERVE_AT_START, SPILL_CHUNK, Allocator, Arena, Store, align, block_size, layout_parts

MIB = 1 << 20


# --- layout ----------------------------------------------------------------------------------------
def test_align():
    assert [align(n) for n in (0, 1, 63, 64, 65, 128)] == [0, 64, 64, 64, 128, 128]


def test_layout_parts_aligns_every_buffer():
    parts = layout_parts(10, [100, 5, 0, 64])
    assert parts == [(0, 10), (64, 100), (192, 5), (256, 0), (256, 64)]
    assert all(offset % ALIGN == 0 for offset, _ in parts)


def test_block_size_covers_the_layout():
    assert block_size(10, []) == 64
    assert block_size(0, []) == 64                      # never an empty block
    assert block_size(10, [100]) == 192
    offset, length = layout_parts(1000, [3000, 7])[-1]
    assert block_size(1000, [3000, 7]) >= offset + length
    assert block_size(1000, [3000, 7]) % ALIGN == 0


# --- allocator -----------------------------------------------------------------------------------
def test_allocator_first_fit_and_aligned():
    a = Allocator(1024)
    assert a.allocate(10) == 0
    assert a.allocate(64) == 64
    assert a.allocate(65) == 128                         # rounded up to 128
    assert a.used == 64 + 64 + 128
    assert a.allocate(1) == 256


def test_allocator_reuses_a_freed_block_first_fit():
    a = Allocator(1024)
    first, second, third = a.allocate(128), a.allocate(128), a.allocate(128)
    a.free(second, 128)
    assert a.allocate(64) == second                      # the first hole that fits, not the tail
    assert a.allocate(64) == second + 64
    assert a.allocate(64) == third + 128                 # the hole is full now
    assert first == 0


def test_allocator_skips_holes_too_small():
    a = Allocator(1024)
    blocks = [a.allocate(64) for _ in range(4)]
    a.free(blocks[1], 64)
    assert a.allocate(128) == 256                        # the 64-byte hole does not fit 128


def test_allocator_coalesces_freed_neighbours():
    a = Allocator(512)
    blocks = [a.allocate(128) for _ in range(4)]
    assert a.allocate(1) is None                         # full
    a.free(blocks[0], 128)
    a.free(blocks[2], 128)
    assert a.allocate(256) is None                       # two separate 128-byte holes
    a.free(blocks[1], 128)                               # joins both neighbours: 0..384 free
    assert a.free_offsets == [0] and a.free_sizes == {0: 384}
    assert a.allocate(384) == 0
    a.free(0, 384)
    a.free(blocks[3], 128)
    assert a.free_offsets == [0] and a.free_sizes == {0: 512}
    assert a.used == 0


def test_allocator_full_store_returns_none():
    a = Allocator(256)
    assert a.allocate(512) is None
    assert a.allocate(256) == 0
    assert a.allocate(1) is None
    assert a.used == 256


def test_allocator_extends_into_a_free_tail():
    a = Allocator(0)
    assert a.allocate(64) is None and a.tail_free() == 0
    a.extend(256)
    assert a.allocate(192) == 0 and a.tail_free() == 64
    a.extend(512)                                        # the new space joins the free tail
    assert a.free_offsets == [192] and a.free_sizes == {192: 320} and a.used == 192
    assert a.allocate(320) == 192 and a.tail_free() == 0
    a.extend(576)
    assert a.free_offsets == [512] and a.allocate(64) == 512 and a.used == 576


def test_allocator_survives_random_churn():
    rng = np.random.default_rng(7)
    a = Allocator(64 * 1024)
    live: dict[int, int] = {}
    for _ in range(3000):
        if live and rng.random() < 0.5:
            offset = list(live)[rng.integers(len(live))]
            a.free(offset, live.pop(offset))
        else:
            size = int(rng.integers(1, 4096))
            offset = a.allocate(size)
            if offset is not None:
                assert offset % ALIGN == 0 and offset + align(size) <= a.capacity
                for other, other_size in live.items():        # never overlaps a live block
                    assert offset + align(size) <= other or other + align(other_size) <= offset
                live[offset] = size
    assert a.used == sum(align(s) for s in live.values())
    for offset, size in list(live.items()):
        a.free(offset, size)
    assert a.free_offsets == [0] and a.free_sizes == {0: a.capacity} and a.used == 0


# --- store: pins, frees, spilling ------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "arena"), 4096, str(tmp_path / "spill"))
    yield s
    s.close()


def payload(byte: int, n: int = 1000) -> bytes:
    return bytes([byte]) * n


def read_back(store: Store, oid: bytes) -> bytes:
    entry = store.entries[oid]
    (at, n), = entry.parts
    return bytes(store.arena.view[entry.offset + at: entry.offset + at + n])


def test_store_add_and_free(store):
    entry = store.add(b"a", payload(1), [])
    assert entry.sealed and store.used() == 1024
    assert read_back(store, b"a") == payload(1)
    store.free(b"a")
    assert b"a" not in store.entries and store.used() == 0


def test_store_spills_the_oldest_unpinned_object_and_restores_it_on_pin(store, tmp_path):
    for i, oid in enumerate([b"a", b"b", b"c", b"d"]):
        store.add(oid, payload(i + 1), [])
    assert store.used() == 4096
    store.add(b"e", payload(5), [])                      # does not fit: "a", the oldest, spills
    a = store.entries[b"a"]
    assert a.offset is None and os.path.exists(a.spill_path)
    assert store.spilled_bytes == 1024 and store.spilled_total == 1024
    assert all(store.entries[o].offset is not None for o in (b"b", b"c", b"d", b"e"))

    entry = store.pin(b"a")                              # comes back, spilling the next oldest
    assert entry.offset is not None and entry.pins == 1
    assert read_back(store, b"a") == payload(1)
    assert not os.path.exists(tmp_path / "spill" / b"a".hex())
    assert store.entries[b"b"].offset is None
    assert store.pin(b"b") is not None                   # and that one comes back intact too
    assert read_back(store, b"b") == payload(2)


def test_pinned_objects_are_never_spilled(store):
    for oid in (b"a", b"b", b"c", b"d"):
        store.add(oid, payload(1), [])
        store.pin(oid)
    path = store.allocate(b"e", 1000)                    # no room in memory: a spill file of its own
    assert isinstance(path, str) and os.path.getsize(path) == 1000 and store.spilled_bytes == 1000
    assert all(store.entries[o].offset is not None for o in (b"a", b"b", b"c", b"d"))

    store.unpin(b"c")                                    # now c is the only candidate
    store.allocate(b"f", 1000)
    assert store.entries[b"c"].offset is None
    assert [store.entries[o].offset is not None for o in (b"a", b"b", b"d")] == [True] * 3


def test_unsealed_objects_are_not_spilled(store):
    for oid in (b"a", b"b", b"c", b"d"):
        store.allocate(oid, 1000)                        # being written, not sealed
    assert isinstance(store.allocate(b"e", 1000), str)   # so the new one goes to disk
    assert all(isinstance(store.entries[o].offset, int) for o in (b"a", b"b", b"c", b"d"))


def test_an_object_larger_than_the_store_goes_to_a_spill_file_and_stays_there(store):
    store.add(b"a", payload(1), [])
    entry = store.add(b"big", payload(7, 10_000), [])
    assert entry.offset is None and store.spilled_bytes == 10_048 and store.entries[b"a"].offset is not None
    assert store.pin(b"big") is entry and entry.offset is None      # readers map the file
    assert store.entries[b"a"].offset is not None                  # nothing was spilled to try
    assert bytes(store.read_range(entry, 9_990, 10)) == payload(7, 10)
    store.unpin(b"big")
    store.free(b"big")
    assert not os.path.exists(entry.spill_path) and store.spilled_bytes == 0


def test_a_spilled_object_read_from_its_file_stays_there_while_pinned(store):
    for oid in (b"a", b"b", b"c", b"d"):
        store.add(oid, payload(1), [])
        store.pin(oid)
    entry = store.add(b"e", payload(5), [])              # no room: a spill file
    path = entry.spill_path
    assert store.pin(b"e").offset is None                # read from the file
    store.unpin(b"a")                                    # room now, but a reader may be opening the file
    assert store.pin(b"e").offset is None and os.path.exists(path)
    store.unpin(b"e")
    store.unpin(b"e")
    assert store.pin(b"e").offset is not None and not os.path.exists(path)     # back in memory


def test_an_object_neither_memory_nor_disk_can_hold_fails_clearly(store, monkeypatch):
    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(ObjectStoreFullError) as error:
        store.allocate(b"big", 10_000)
    message = str(error.value)
    assert "object of 10,000 bytes does not fit" in message and "--object-store-memory" in message
    assert f"could not be spilled to disk either: {store.spill_dir} has" in message
    assert not os.listdir(store.spill_dir) and b"big" not in store.entries


def test_freed_while_pinned_is_freed_on_the_last_unpin(store):
    store.add(b"a", payload(1), [])
    store.pin(b"a")
    store.pin(b"a")
    store.free(b"a")
    assert store.entries[b"a"].freed and store.used() == 1024       # still being read
    assert store.pin(b"a") is None                       # but nobody new may pin it
    store.unpin(b"a")
    assert b"a" in store.entries
    store.unpin(b"a")
    assert b"a" not in store.entries and store.used() == 0


def test_freeing_a_spilled_object_removes_its_file(store):
    for oid in (b"a", b"b", b"c", b"d", b"e"):
        store.add(oid, payload(1), [])
    path = store.entries[b"a"].spill_path
    assert os.path.exists(path)
    store.free(b"a")
    assert not os.path.exists(path) and store.spilled_bytes == 0


def test_freed_objects_are_not_spilled(store):
    store.add(b"a", payload(1), [])
    store.pin(b"a")
    store.free(b"a")                                     # freed, waiting for its reader
    for oid in (b"b", b"c", b"d"):
        store.add(oid, payload(1), [])
    store.add(b"e", payload(1), [])
    assert store.entries[b"a"].offset is not None        # "b" went instead
    assert store.entries[b"b"].offset is None


def test_pin_of_unknown_or_unsealed_objects(store):
    assert store.pin(b"nothing") is None
    store.allocate(b"a", 100)
    assert store.pin(b"a") is None
    store.seal(b"a", [(0, 100)])
    assert store.pin(b"a") is not None


def test_close_removes_the_arena_and_spill_files(tmp_path):
    s = Store(str(tmp_path / "arena"), 4096, str(tmp_path / "spill"))
    for oid in (b"a", b"b", b"c", b"d", b"e"):
        s.add(oid, payload(1), [])
    spilled = s.entries[b"a"].spill_path
    s.close()
    assert not os.path.exists(tmp_path / "arena") and not os.path.exists(spilled)


# --- reserving the store's memory ----------------------------------------------------------------
def reserved_on_disk(store: Store) -> int:
    return os.stat(store.path).st_blocks * 512


@pytest.fixture
def directory_with_room_for(monkeypatch):
    """Make the store's directory hold only `limit` bytes (posix_fallocate of the arena past it fails
    with ENOSPC), and the spill directory only `spill` bytes per file (no limit: None)."""
    real = os.posix_fallocate

    def limit_to(limit: int, spill: int | None = None) -> None:
        def fallocate(fd: int, offset: int, length: int) -> None:
            room = limit if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "arena" else spill
            if room is not None and offset + length > room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, offset, length)
        monkeypatch.setattr(os, "posix_fallocate", fallocate)
    return limit_to


def test_the_store_hands_out_reserved_space_only(tmp_path):
    s = Store(str(tmp_path / "arena"), 64 * MIB, str(tmp_path / "spill"), reserve_ahead=0)
    try:
        assert s.reserved == RESERVE_AT_START <= reserved_on_disk(s) and os.path.getsize(s.path) == 64 * MIB
        blocks = [(s.allocate(oid, 3 * MIB + 100), 3 * MIB + 100) for oid in (b"a", b"b", b"c")]
        assert all(offset + size <= s.reserved for offset, size in blocks)
        assert s.reserved == 10 * MIB <= reserved_on_disk(s)      # grown as far as needed, in whole MiB
    finally:
        s.close()


def test_a_full_directory_spills_then_says_what_to_do(tmp_path, directory_with_room_for):
    directory_with_room_for(6 * MIB + 12345, spill=0)
    s = Store(str(tmp_path / "arena"), 16 * MIB, str(tmp_path / "spill"), reserve_ahead=0)
    try:
        for oid in (b"a", b"b", b"c"):
            s.allocate(oid, 2 * MIB)
            s.seal(oid, [(0, 2 * MIB)])
        assert s.reserved == 6 * MIB and s.reserve_failed is False
        s.allocate(b"d", 2 * MIB)                        # the directory is full: "a" spills instead
        assert s.entries[b"a"].offset is None and s.reserve_failed and s.reserved == 6 * MIB
        with pytest.raises(ObjectStoreFullError) as error:
            s.allocate(b"big", 8 * MIB)
    finally:
        s.close()
    message = str(error.value)
    assert f"object of 8,388,608 bytes cannot be stored: {tmp_path} is full (" in message and "MiB free of" in message
    assert "the store holds only 6 MiB of its 16 MiB" in message
    assert "--shm-size=" in message and "--object-store-memory" in message and "TASUKI_STORE_DIR" in message


def test_an_object_larger_than_the_arena_can_grow_goes_to_a_file_without_spilling_the_others(
        tmp_path, directory_with_room_for):
    directory_with_room_for(6 * MIB)
    s = Store(str(tmp_path / "arena"), 16 * MIB, str(tmp_path / "spill"), reserve_ahead=0)
    try:
        for oid in (b"a", b"b"):
            s.allocate(oid, 2 * MIB)
            s.seal(oid, [(0, 2 * MIB)])
        path = s.allocate(b"big", 8 * MIB)              # 8 MiB > the 6 MiB the arena can hold: a file of its own
        assert isinstance(path, str) and os.path.getsize(path) == 8 * MIB
        assert s.entries[b"a"].offset is not None and s.entries[b"b"].offset is not None     # not spilled for nothing
        assert s.spilled_total == 8 * MIB
    finally:
        s.close()


def test_spilling_and_restoring_a_large_object_calls_during_io_between_its_pieces(tmp_path):
    calls = []
    s = Store(str(tmp_path / "arena"), 128 * MIB, str(tmp_path / "spill"), reserve_ahead=0,
              during_io=lambda: calls.append(1))
    try:
        data = np.arange(100 * MIB // 8, dtype=np.int64)
        s.add(b"a", b"", [memoryview(data).cast("B")])
        s.allocate(b"b", 100 * MIB)                      # "a" spills to make room, in SPILL_CHUNK pieces
        assert s.entries[b"a"].offset is None and len(calls) == -(-s.entries[b"a"].size // SPILL_CHUNK)
        s.free(b"b")
        calls.clear()
        entry = s.pin(b"a")                              # restored, in pieces too
        assert entry.offset is not None and len(calls) == -(-entry.size // SPILL_CHUNK)
        at, n = entry.parts[-1]
        assert (np.frombuffer(s.arena.view[entry.offset + at: entry.offset + at + n], np.int64) == data).all()
        s.unpin(b"a")
    finally:
        s.close()


def test_a_directory_without_room_for_the_first_extent_is_refused(tmp_path, directory_with_room_for):
    directory_with_room_for(RESERVE_AT_START - 1)
    with pytest.raises(ObjectStoreFullError, match=f"the object store's first 4 MiB cannot be stored: {tmp_path} is full"):
        Store(str(tmp_path / "arena"), 64 * MIB, str(tmp_path / "spill"))
    assert not os.path.exists(tmp_path / "arena")


def test_a_thread_keeps_memory_reserved_ahead_of_the_highest_block(tmp_path):
    s = Store(str(tmp_path / "arena"), 64 * MIB, str(tmp_path / "spill"), reserve_ahead=8 * MIB)
    try:
        wait_until(lambda: s.reserved == 8 * MIB, what="8 MiB reserved in the background")
        offset = s.allocate(b"a", 10 * MIB)
        assert offset == 0 and s.reserved >= 10 * MIB      # the allocation waited only for what it needed
        wait_until(lambda: s.reserved == 18 * MIB, what="8 MiB reserved past the new block")
        assert reserved_on_disk(s) >= 18 * MIB
    finally:
        s.close()
    assert not s._reserver.is_alive()


# --- arena reads -----------------------------------------------------------------------------------
@pytest.fixture
def big_store(tmp_path):
    s = Store(str(tmp_path / "arena"), 8 << 20, str(tmp_path / "spill"))
    yield s
    s.close()


def test_arena_read_gives_read_only_numpy_views(big_store):
    array = np.arange(200_000, dtype=np.float64)
    s = serialization.dumps({"x": array, "label": "data"})
    assert len(s.buffers) == 1
    entry = big_store.add(b"obj", s.header, s.buffers)
    assert entry.parts[1][0] % ALIGN == 0

    reader = Arena(big_store.path)                       # another process would map it the same way
    unpinned = []
    header, buffers = reader.read(entry.offset, entry.parts, lambda: unpinned.append(True))
    value = serialization.loads(header, buffers)
    assert value["label"] == "data"
    assert np.array_equal(value["x"], array)
    assert not value["x"].flags.writeable
    with pytest.raises(ValueError):
        value["x"][0] = 1.0
    start = reader.mm.find(array[:4].tobytes())        # the value lies in the mapping, not in a copy
    assert np.shares_memory(value["x"], reader.view)
    assert start == entry.offset + entry.parts[1][0]
    del header, buffers, value
    gc.collect()
    assert unpinned == [True]


def test_unpin_fires_only_after_the_last_view_is_dropped(big_store):
    array = np.arange(100_000, dtype=np.int64)
    s = serialization.dumps(array)
    entry = big_store.add(b"obj", s.header, s.buffers)
    reader = Arena(big_store.path)
    calls = []
    header, buffers = reader.read(entry.offset, entry.parts, lambda: calls.append(1))
    value = serialization.loads(header, buffers)
    del header, buffers
    gc.collect()
    assert calls == []                                   # the array is alive
    piece = value[10:20]                                 # a view of a view
    derived = piece.reshape(2, 5).T
    del value, piece
    gc.collect()
    assert calls == []                                   # still reachable through `derived`
    assert list(derived.T.ravel()) == list(range(10, 20))
    del derived
    gc.collect()
    assert calls == [1]                                  # once, after the last view


def test_arena_write_then_read_back_in_another_mapping(big_store):
    writer = Arena(big_store.path)
    buffers = [memoryview(np.full(70_000, 7, dtype=np.uint8)), memoryview(b"x" * 100)]
    offset = big_store.allocate(b"w", block_size(5, [b.nbytes for b in buffers]))
    parts = writer.write(offset, b"hello", buffers)
    big_store.seal(b"w", parts)
    header, views = Arena(big_store.path).read(offset, parts, lambda: None)
    assert bytes(header) == b"hello"
    assert bytes(views[0]) == bytes(buffers[0]) and bytes(views[1]) == b"x" * 100

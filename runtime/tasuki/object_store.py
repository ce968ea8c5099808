"""The node's shared-memory object store: one arena file in the store directory (/dev/shm by default,
TASUKI_STORE_DIR or --store-dir elsewhere), carved by a first-fit allocator.

The node agent owns the `Store` (allocation, seal, pins, spilling); every process on the node maps
the same file with `Arena` and writes or reads objects in place. Freed blocks are reused, so after
the first large object the store writes into warm pages (~8 GiB/s here) instead of faulting fresh
tmpfs pages (~1.4 GiB/s): that is why this is one arena and not a file per object.

An object's block holds the pickle header and then each out-of-band buffer, 64-byte aligned
(`layout_parts`). A reader gets NumPy arrays that are read-only views of the block; the block is
pinned while any such view lives (a weakref finalizer on the `_Pinned` view sends UNPIN), so a
freed object's memory is never reused under a reader. When an allocation does not fit, sealed
objects that nobody has mapped are spilled to disk, oldest first, and restored on the next pin.
An object the arena cannot hold even then (larger than the whole store, or the rest is mapped)
goes straight to a file of its own in the spill directory, as Ray's puts do: `allocate` answers
that file's path instead of an offset, the writer maps the file, readers map it read-only (a pin
that cannot restore a spilled object answers its path too), and transfers read and write it.

The file is sparse, and a process that touches a tmpfs page when tmpfs has none left dies with
SIGBUS. So the store reserves its memory for real (posix_fallocate) and the allocator hands out
only reserved space: the file grows in extents as allocations reach its end, and a background
thread keeps RESERVE_AHEAD bytes reserved beyond the highest block, so a put seldom waits for a
reservation. (Measured here: fallocate runs at ~3 GiB/s, and writing into reserved pages still
costs a minor fault a page, ~2.3 GiB/s, against ~2 GiB/s into fresh ones; so a put into memory
not reserved yet pays both, and reserving the whole store at start would cost seconds and commit
memory nobody uses.) When the directory is full the store spills or, failing that, raises an
error that names the directory, its size and free space and the fix.
"""
from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .exceptions import ObjectStoreFullError

ALIGN = 64
PARALLEL_COPY_MIN = 16 << 20     # bytes: larger buffers are copied into the arena by several threads
COPY_THREADS = 4                 # more than two cores' worth: page faults wait on the kernel, not only the CPU
RESERVE_EXTENT = 64 << 20        # bytes reserved per posix_fallocate call
SPILL_CHUNK = 32 << 20           # bytes written to (read from) a spill file between two calls of during_io
RESERVE_MIN = 1 << 20            # bytes: the smallest extent worth reserving
RESERVE_AT_START = 4 << 20       # bytes reserved before the node starts: proves the directory has room
RESERVE_AHEAD = 256 << 20        # bytes the background thread keeps reserved beyond the highest block


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def layout_parts(header_len: int, buffer_lens: list[int]) -> list[tuple[int, int]]:
    """(offset, length) of the header and of each buffer inside an object's block."""
    parts, at = [], 0
    for n in [header_len, *buffer_lens]:
        parts.append((at, n))
        at = align(at + n)
    return parts


def block_size(header_len: int, buffer_lens: list[int]) -> int:
    offset, length = layout_parts(header_len, buffer_lens)[-1]
    return max(ALIGN, align(offset + length))


class Allocator:
    """First-fit allocation of aligned blocks in [0, capacity), coalescing freed neighbours. Pure."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free_offsets = [0] if capacity else []     # sorted
        self.free_sizes = {0: capacity} if capacity else {}    # offset -> size
        self.used = 0

    def extend(self, capacity: int) -> None:
        """Grow to `capacity`: the new tail becomes free space (merged with a free block before it)."""
        if capacity > self.capacity:
            old, self.capacity = self.capacity, capacity
            self.used += capacity - old         # free() subtracts it again
            self.free(old, capacity - old)

    def tail_free(self) -> int:
        """Size of the free block that ends at `capacity` (0 when the last block is in use)."""
        if self.free_offsets:
            last = self.free_offsets[-1]
            if last + self.free_sizes[last] == self.capacity:
                return self.free_sizes[last]
        return 0

    def allocate(self, size: int) -> int | None:
        size = align(max(size, 1))
        for offset in self.free_offsets:
            available = self.free_sizes[offset]
            if available >= size:
                i = bisect.bisect_left(self.free_offsets, offset)
                del self.free_offsets[i]
                del self.free_sizes[offset]
                if available > size:
                    self.free_offsets.insert(i, offset + size)
                    self.free_sizes[offset + size] = available - size
                self.used += size
                return offset
        return None

    def free(self, offset: int, size: int) -> None:
        size = align(max(size, 1))
        self.used -= size
        i = bisect.bisect_left(self.free_offsets, offset)
        if i < len(self.free_offsets) and offset + size == self.free_offsets[i]:   # merge with next
            nxt = self.free_offsets.pop(i)
            size += self.free_sizes.pop(nxt)
        if i > 0:
            prev = self.free_offsets[i - 1]
            if prev + self.free_sizes[prev] == offset:                             # merge with previous
                self.free_sizes[prev] += size
                return
        self.free_offsets.insert(i, offset)
        self.free_sizes[offset] = size


class _Pinned(np.ndarray):
    """A read-only view of one object's block. Arrays built on it keep it alive (NumPy stops
    collapsing view chains at a change of type), and its finalizer unpins the block."""


class Arena:
    """The store's file (or one object's spill file) mapped into this process."""

    def __init__(self, path: str, readonly: bool = False) -> None:
        fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        try:
            self.size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, self.size, prot=mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.view = np.frombuffer(self.mm, dtype=np.uint8)
        self.readonly = self.view[:]
        self.readonly.flags.writeable = False

    def write(self, offset: int, header: bytes, buffers: list) -> list[tuple[int, int]]:
        """Copy a serialized object into its block; returns its layout."""
        parts = layout_parts(len(header), [b.nbytes for b in buffers])
        for (at, n), data in zip(parts, [header, *buffers]):
            if n >= PARALLEL_COPY_MIN:
                _parallel_copy(self.view[offset + at: offset + at + n], np.frombuffer(data, dtype=np.uint8))
            elif n:
                self.view[offset + at: offset + at + n] = np.frombuffer(data, dtype=np.uint8)
        return parts

    def read(self, offset: int, parts: list[tuple[int, int]], unpin) -> tuple[memoryview, list]:
        """(header, buffers) viewing the block in place; `unpin()` runs once no view is left."""
        end = parts[-1][0] + parts[-1][1]
        block = self.readonly[offset: offset + max(end, 1)].view(_Pinned)
        weakref.finalize(block, unpin)
        at, n = parts[0]
        header = memoryview(block[at: at + n])
        return header, [block[at: at + n] for at, n in parts[1:]]

    def close(self) -> None:
        self.view = self.readonly = None
        try:
            self.mm.close()
        except BufferError:      # a caller still holds a view: the mapping goes with the process
            pass


_copiers: ThreadPoolExecutor | None = None
_copiers_lock = threading.Lock()


def _parallel_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy in COPY_THREADS slices at once: into pages never written before, most of the time is
    the kernel faulting them in, which runs in parallel (measured on two cores, fresh /dev/shm
    pages: 1 thread 1.4 GiB/s, 2 threads 1.9, 4 threads 2.2; pre-faulting with
    MADV_POPULATE_WRITE first is slower, 1.4)."""
    global _copiers
    with _copiers_lock:
        if _copiers is None:
            _copiers = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="tasuki-copy")
    step = -(-len(dst) // COPY_THREADS)
    for future in [_copiers.submit(np.copyto, dst[at: at + step], src[at: at + step])
                   for at in range(0, len(dst), step)]:
        future.result()


@dataclass(eq=False)
class Entry:
    object_id: bytes
    size: int
    offset: int | None = None       # None while spilled
    parts: list = field(default_factory=list)
    sealed: bool = False
    pins: int = 0
    freed: bool = False             # released by the head; memory returns once unpinned
    spill_path: str | None = None


class Store:
    """The node agent's bookkeeping of the arena: objects, pins, spilling and reserving its memory
    (file I/O only for those two; a "tasuki-reserve" thread reserves ahead, under `_reserve_lock`)."""

    def __init__(self, path: str, capacity: int, spill_dir: str, reserve_ahead: int = RESERVE_AHEAD,
                 during_io: Callable[[], None] | None = None) -> None:
        """Create the arena file at `path` and reserve its first RESERVE_AT_START bytes; raises
        ObjectStoreFullError (saying what to do) when its directory cannot hold even that. With
        `reserve_ahead`, a thread keeps that many bytes reserved beyond the highest block.
        `during_io` is called between the SPILL_CHUNK pieces of spilling and restoring (the node
        agent heartbeats there: a slow disk must not make the head declare it dead)."""
        self.path = path
        self.during_io = during_io or (lambda: None)
        self.capacity = capacity
        self.spill_dir = spill_dir
        self.allocator = Allocator(0)                 # grows with the reservation: hands out reserved bytes only
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()     # oldest first, for spilling
        self.spilled_bytes = 0
        self.spilled_total = 0
        with open(path, "wb") as f:
            f.truncate(capacity)
        self.arena = Arena(path)
        self.reserved = 0                             # bytes [0, reserved) are backed by real pages
        self.reserve_failed = False                   # the last reservation stopped short: the directory is full
        self._fd = os.open(path, os.O_RDWR)
        self._reserve_lock = threading.Lock()
        self._reserve_target = 0
        self._reserve_wake = threading.Event()
        self._reserve_ahead = reserve_ahead
        self._reserver: threading.Thread | None = None
        self._closing = False
        if not self._reserve(min(capacity, RESERVE_AT_START)):
            self.close()
            raise ObjectStoreFullError(self.directory_full(f"the object store's first {RESERVE_AT_START >> 20} MiB"))
        if reserve_ahead:
            self._reserver = threading.Thread(target=self._reserve_loop, name="tasuki-reserve", daemon=True)
            self._reserver.start()
            self._reserve_beyond(0)

    def allocate(self, object_id: bytes, size: int) -> int | str:
        """The offset of a new block of `size` bytes in the arena, spilling others to make room; when
        the arena cannot hold it, the path of a file of that size in the spill directory, reserved
        on disk, to be written there instead. ObjectStoreFullError when the disk has no room either."""
        offset = self._place(size)
        if offset is None:
            path = self._spill_file(object_id, size)
            self.entries[object_id] = Entry(object_id, size, None, spill_path=path)
            self.spilled_bytes += size
            self.spilled_total += size
            return path
        self.entries[object_id] = Entry(object_id, size, offset)
        return offset

    def _spill_file(self, object_id: bytes, size: int) -> str:
        """A file of `size` bytes reserved on disk in the spill directory, for an object the arena cannot hold."""
        os.makedirs(self.spill_dir, exist_ok=True)
        path = os.path.join(self.spill_dir, object_id.hex())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.posix_fallocate(fd, 0, max(size, 1))     # disk full: fail now, not with SIGBUS in the writer
        except OSError as e:
            _unlink(path)
            stat = os.statvfs(self.spill_dir)
            raise ObjectStoreFullError(
                f"{self._full_message(f'object of {size:,} bytes', size)} It could not be spilled to disk either: "
                f"{self.spill_dir} has {stat.f_bavail * stat.f_frsize / 2**20:,.0f} MiB free ({e.strerror}). Free "
                f"space there, or drop references to large objects you no longer need.") from None
        finally:
            os.close(fd)
        return path

    def read_range(self, entry: Entry, start: int, length: int):
        """Bytes [start, start + length) of a sealed object, from the arena or from its spill file."""
        end = min(entry.size, start + length)
        if entry.offset is not None:
            return memoryview(self.arena.view[entry.offset + start: entry.offset + end])
        with open(entry.spill_path, "rb") as f:
            return os.pread(f.fileno(), max(0, end - start), start)

    def write_range(self, entry: Entry, start: int, chunk) -> bool:
        """Write `chunk` at `start` inside the object's block or file; False if it would fall outside."""
        if not 0 <= start <= entry.size - len(chunk):
            return False               # only inside the object: the store reserved it, the pages past it may have no memory
        if entry.offset is not None:
            self.arena.view[entry.offset + start: entry.offset + start + len(chunk)] = chunk
        elif entry.spill_path is not None:
            with open(entry.spill_path, "r+b") as f:
                os.pwrite(f.fileno(), chunk, start)
        return True

    def directory_full(self, what: str) -> str:
        """Why `what` cannot be stored when the store's directory has no room, and the fixes."""
        directory = os.path.dirname(self.path)
        stat = os.statvfs(directory)
        return (f"{what} cannot be stored: {directory} is full ({stat.f_bavail * stat.f_frsize / 2**20:,.0f} MiB free "
                f"of {stat.f_blocks * stat.f_frsize / 2**20:,.0f} MiB), so the store holds only "
                f"{self.reserved / 2**20:,.0f} MiB of its {self.capacity / 2**20:,.0f} MiB. Give it more room "
                f"(Docker: docker run --shm-size={(self.capacity >> 20) + 256}m; Kubernetes: an emptyDir volume with "
                f"medium: Memory at /dev/shm), free space there, start the node with a smaller --object-store-memory "
                f"(object_store_memory in init()), or put the store on a disk with room with TASUKI_STORE_DIR or "
                f"`tasuki start --store-dir DIR`.")

    def _full_message(self, what: str, size: int) -> str:
        if self.reserve_failed and self.reserved < self.capacity and size <= self.capacity:
            return self.directory_full(what)
        return (f"{what} does not fit in the object store ({self.allocator.used:,} of "
                f"{self.capacity:,} bytes in use by objects that are mapped right now). Start the node "
                f"with a larger --object-store-memory, or drop references to large objects you no longer need.")

    def _place(self, size: int) -> int | None:
        """Offset of a reserved block of `size` bytes: reserving more of the file, then spilling; None if neither helps."""
        if align(size) > self.capacity:
            return None                 # spilling everything else would not make room
        self.allocator.extend(self.reserved & ~(ALIGN - 1))        # what the background thread reserved
        offset = self.allocator.allocate(size)
        if offset is None and self.reserved < self.capacity:
            needed = self.allocator.capacity - self.allocator.tail_free() + align(size)
            if needed <= self.capacity:
                self._reserve(min(self.capacity, -(-needed // RESERVE_MIN) * RESERVE_MIN))
                self.allocator.extend(self.reserved & ~(ALIGN - 1))
                offset = self.allocator.allocate(size)
        if offset is None and align(size) > self.allocator.capacity:
            return None                 # the reserved arena is too small: spilling everything would not make room
        while offset is None and self._spill_one():
            offset = self.allocator.allocate(size)
        if offset is not None:
            self._reserve_beyond(offset + size)
        return offset

    def _reserve(self, end: int) -> bool:
        """Back [reserved, end) of the file with real pages, an extent at a time (so the node's loop
        and the background thread take turns); whether `end` was reached (if not, reserve_failed is
        set). An extent is cut to the room statvfs reports: a fallocate that fails on tmpfs has
        taken that room for a moment, and another process touching a page then would die."""
        while self.reserved < end and not self._closing:
            with self._reserve_lock:
                at = self.reserved
                if at >= end:
                    break
                n = min(RESERVE_EXTENT, end - at, self._room())
                if n >= min(RESERVE_MIN, end - at):
                    try:
                        os.posix_fallocate(self._fd, at, n)
                        self.reserved = at + n
                        continue
                    except OSError:   # ENOSPC: another process took the room since statvfs
                        pass
                self.reserve_failed = True          # what we hold stays valid
                return False
        self.reserve_failed = False
        return True

    def _room(self) -> int:
        """Free bytes in the store's directory, in whole RESERVE_MIN (no limit for a tmpfs mounted without size)."""
        stat = os.fstatvfs(self._fd)
        if not stat.f_blocks:
            return self.capacity
        return stat.f_bavail * stat.f_frsize // RESERVE_MIN * RESERVE_MIN

    def _reserve_beyond(self, end: int) -> None:
        """Ask the background thread to keep RESERVE_AHEAD bytes reserved past `end`."""
        target = min(self.capacity, end + self._reserve_ahead)
        if self._reserver is not None and target > self._reserve_target:
            self._reserve_target = target
            if target > self.reserved:
                self._reserve_wake.set()

    def _reserve_loop(self) -> None:
        # Reserving ahead zeroes pages for later puts: it must not take CPU from the copies of the
        # puts running now (on two cores it halved the next puts' speed). Linux nices threads one by one.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._closing:
            self._reserve_wake.wait()
            self._reserve_wake.clear()
            self._reserve(self._reserve_target)

    def seal(self, object_id: bytes, parts: list) -> None:
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.parts = parts
            entry.sealed = True

    def add(self, object_id: bytes, header: bytes, buffers: list) -> Entry:
        """Allocate, write and seal an object in one go (used by the node itself)."""
        size = block_size(len(header), [b.nbytes for b in buffers])
        offset = self.allocate(object_id, size)
        if isinstance(offset, str):            # a spill file: the arena cannot hold it
            spill = Arena(offset)
            self.seal(object_id, spill.write(0, header, buffers))
            spill.close()
        else:
            self.seal(object_id, self.arena.write(offset, header, buffers))
        return self.entries[object_id]

    def pin(self, object_id: bytes) -> Entry | None:
        """The sealed object, pinned; in the arena when it has room for it, else (offset None) in its spill file."""
        entry = self.entries.get(object_id)
        if entry is None or not entry.sealed or entry.freed:
            return None
        if entry.offset is None and entry.pins <= 0:    # (a reader of the file may not have opened it yet)
            with contextlib.suppress(ObjectStoreFullError):      # no room: readers map the spill file
                self._restore(entry)
        entry.pins += 1
        self.entries.move_to_end(object_id)
        return entry

    def unpin(self, object_id: bytes) -> None:
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.pins -= 1
            if entry.freed and entry.pins <= 0:
                self._drop(entry)

    def free(self, object_id: bytes) -> None:
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.freed = True
            if entry.pins <= 0:
                self._drop(entry)

    def used(self) -> int:
        return self.allocator.used

    def close(self) -> None:
        self._closing = True
        if self._reserver is not None:
            self._reserve_wake.set()
            self._reserver.join()
        os.close(self._fd)
        self.arena.close()
        for entry in self.entries.values():
            if entry.spill_path:
                _unlink(entry.spill_path)
        _unlink(self.path)

    def _drop(self, entry: Entry) -> None:
        del self.entries[entry.object_id]
        if entry.offset is not None:
            self.allocator.free(entry.offset, entry.size)
        if entry.spill_path:
            self.spilled_bytes -= entry.size
            _unlink(entry.spill_path)

    def _spill_one(self) -> bool:
        for entry in self.entries.values():
            if entry.sealed and entry.pins <= 0 and entry.offset is not None and not entry.freed:
                os.makedirs(self.spill_dir, exist_ok=True)
                entry.spill_path = os.path.join(self.spill_dir, entry.object_id.hex())
                with open(entry.spill_path, "wb") as f:
                    for start in range(entry.offset, entry.offset + entry.size, SPILL_CHUNK):
                        f.write(self.arena.view[start: min(start + SPILL_CHUNK, entry.offset + entry.size)])
                        self.during_io()
                self.allocator.free(entry.offset, entry.size)
                entry.offset = None
                self.spilled_bytes += entry.size
                self.spilled_total += entry.size
                return True
        return False

    def _restore(self, entry: Entry) -> None:
        offset = self._place(entry.size)
        if offset is None:
            raise ObjectStoreFullError(self._full_message(f"a spilled object of {entry.size:,} bytes", entry.size))
        with open(entry.spill_path, "rb") as f:
            for start in range(offset, offset + entry.size, SPILL_CHUNK):
                f.readinto(memoryview(self.arena.view[start: min(start + SPILL_CHUNK, offset + entry.size)]))
                self.during_io()
        _unlink(entry.spill_path)
        self.spilled_bytes -= entry.size
        entry.spill_path = None
        entry.offset = offset


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

"""A dataset larger than you want in memory at once, made and reduced in 100 MB chunks.

Each chunk is produced by a task into the shared-memory object store and reduced by another
task that reads it zero-copy; the driver only ever holds small summaries. At most `--in-flight`
chunks exist at a time: the driver waits for a summary before starting the next chunk, and a
chunk is freed as soon as the task reducing it is done (nothing else holds its ref).
The values are k mod 1000 for row k, so the aggregate can be checked in closed form.

    python examples/chunked_dataset.py                      # 1000 MB in 100 MB chunks
    python examples/chunked_dataset.py --total-mb 200 --chunk-mb 20 --in-flight 2

Expected output (defaults):
    reduced 1000 MB in 10 chunks of 100 MB in ... s
    rows: 125000000  sum: 62437500000  mean: 499.5
    matches closed form: True
    object store: peak ... MB sampled while running (3 chunks in flight at most)
    object store after the run: 0 MB
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tasuki

MB = 1_000_000


@tasuki.remote
def make_chunk(index: int, rows: int) -> np.ndarray:
    """Rows [index * rows, (index + 1) * rows) of the dataset (in practice: read a file, query a DB)."""
    first = index * rows
    return np.arange(first, first + rows, dtype=np.int64) % 1000


@tasuki.remote
def summarize(chunk: np.ndarray) -> tuple[int, int]:
    """Row count and sum of one chunk (a read-only view of the store: no copy)."""
    return len(chunk), int(chunk.sum())


def closed_form_sum(rows: int) -> int:
    """Sum of k mod 1000 for k in [0, rows)."""
    full, rest = divmod(rows, 1000)
    return full * (999 * 1000 // 2) + rest * (rest - 1) // 2


def store_used() -> int:
    """Bytes in the cluster's object stores, as of the nodes' last heartbeat (at most 0.5 s old)."""
    return sum(n["ObjectStore"]["used"] for n in tasuki.nodes() if n["Alive"])


def store_used_once_settled(timeout: float = 5.0) -> int:
    """Store use after the run, once freed chunks have shown up in a heartbeat (or `timeout` passed)."""
    deadline = time.time() + timeout
    while (used := store_used()) and time.time() < deadline:
        time.sleep(0.1)
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mb", type=int, default=1000, help="size of the whole dataset")
    parser.add_argument("--chunk-mb", type=int, default=100, help="size of one chunk")
    parser.add_argument("--in-flight", type=int, default=3, help="chunks alive at once, at most")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    chunks = args.total_mb // args.chunk_mb
    rows_per_chunk = args.chunk_mb * MB // 8                  # int64 rows
    started = time.time()
    pending, summaries, peak = [], [], 0
    for index in range(chunks):
        if len(pending) >= args.in_flight:                    # bound the memory: wait for one to finish
            done, pending = tasuki.wait(pending, num_returns=1)
            summaries += tasuki.get(done)
            peak = max(peak, store_used())
        # the chunk's ref goes straight into summarize: the driver never holds the chunk itself
        pending.append(summarize.remote(make_chunk.remote(index, rows_per_chunk)))
    summaries += tasuki.get(pending)
    elapsed = time.time() - started
    rows = sum(n for n, _ in summaries)
    total = sum(s for _, s in summaries)
    print(f"reduced {chunks * args.chunk_mb} MB in {chunks} chunks of {args.chunk_mb} MB in {elapsed:.2f} s")
    print(f"rows: {rows}  sum: {total}  mean: {total / rows}")
    print(f"matches closed form: {rows == chunks * rows_per_chunk and total == closed_form_sum(rows)}")
    print(f"object store: peak {peak // MB} MB sampled while running ({args.in_flight} chunks in flight at most)")
    print(f"object store after the run: {store_used_once_settled() // MB} MB")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

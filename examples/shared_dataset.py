"""One NumPy dataset stored once with `put` and read by 100 tasks without copying it.

`tasuki.put` writes the array into the node's shared-memory object store once; every task that
takes the ref as an argument gets a read-only NumPy view of that same memory (no pickling, no
copy), so 100 tasks over an 80 MB array cost 80 MB, not 8 GB. Each task sums its own slice and
also reports whether its view was read-only and shared (it does not own its memory).

    python examples/shared_dataset.py                       # 10 million int64 values, 100 tasks
    python examples/shared_dataset.py --rows 1000000 --tasks 20

Expected output (defaults):
    stored 80 MB once; 100 tasks read it in ... s
    every task got a read-only zero-copy view: True
    total: 4994364431
    matches numpy: True
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tasuki


@tasuki.remote
def slice_sum(data: np.ndarray, start: int, stop: int) -> tuple[int, bool]:
    """The sum of data[start:stop], and whether `data` is a read-only view of shared memory."""
    zero_copy = not data.flags.writeable and not data.flags.owndata
    return int(data[start:stop].sum()), zero_copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="int64 values in the dataset")
    parser.add_argument("--tasks", type=int, default=100, help="tasks, each summing one slice")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    data = np.random.default_rng(42).integers(0, 1000, args.rows, dtype=np.int64)
    data_ref = tasuki.put(data)                              # stored once, shared by every task
    bounds = np.linspace(0, args.rows, args.tasks + 1).astype(int)
    started = time.time()
    results = tasuki.get([slice_sum.remote(data_ref, int(lo), int(hi)) for lo, hi in zip(bounds, bounds[1:])])
    elapsed = time.time() - started
    total = sum(s for s, _ in results)
    print(f"stored {data.nbytes // 1_000_000} MB once; {args.tasks} tasks read it in {elapsed:.2f} s")
    print(f"every task got a read-only zero-copy view: {all(zero_copy for _, zero_copy in results)}")
    print(f"total: {total}")
    print(f"matches numpy: {total == int(data.sum())}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

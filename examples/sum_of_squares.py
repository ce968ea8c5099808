"""Sum of squares of 1..10,000 two ways: 10,000 remote tasks, and `tasuki.Pool().map`.

The same plain function runs as a task (`tasuki.remote(square)`) and through `tasuki.Pool`, a
drop-in for `multiprocessing.Pool` whose workers are the cluster's. Both totals are checked
against the closed form n(n+1)(2n+1)/6.

    python examples/sum_of_squares.py
    python examples/sum_of_squares.py --n 1000

Expected output (defaults):
    remote tasks: 333383335000 (10000 tasks in ... s)
    tasuki.Pool.map: 333383335000 (... s)
    closed form n(n+1)(2n+1)/6: 333383335000
    all equal: True
"""
from __future__ import annotations

import argparse
import time

import tasuki


def square(x: int) -> int:
    return x * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="sum the squares of 1..n")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()
    numbers = range(1, args.n + 1)

    tasuki.init(address=args.address)
    remote_square = tasuki.remote(square)                 # the plain function, as a task
    started = time.time()
    by_tasks = sum(tasuki.get([remote_square.remote(x) for x in numbers]))
    print(f"remote tasks: {by_tasks} ({len(numbers)} tasks in {time.time() - started:.2f} s)")

    started = time.time()
    with tasuki.Pool() as pool:                           # as multiprocessing.Pool, on the cluster
        by_pool = sum(pool.map(square, numbers))
    print(f"tasuki.Pool.map: {by_pool} ({time.time() - started:.2f} s)")

    closed_form = args.n * (args.n + 1) * (2 * args.n + 1) // 6
    print(f"closed form n(n+1)(2n+1)/6: {closed_form}")
    print(f"all equal: {by_tasks == by_pool == closed_form}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

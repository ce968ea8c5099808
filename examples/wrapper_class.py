"""Plain classes and functions made remote without a decorator: `tasuki.remote(PlainClass)`.

Code you do not own (or want to keep importable without tasuki) stays undecorated; wrapping it
at the call site gives the same actor class or remote function that `@tasuki.remote` would.
The plain class and function still work locally as before.

    python examples/wrapper_class.py
    python examples/wrapper_class.py --values 1 2 3 4

Expected output (defaults):
    local: RunningStats(n=5, mean=6.0, max=10.0)
    remote actor: RunningStats(n=5, mean=6.0, max=10.0)
    remote function: [2.0, 4.0, 6.0, 8.0, 10.0] -> normalised [0.2, 0.4, 0.6, 0.8, 1.0]
    with options(num_cpus=0.5): RunningStats(n=5, mean=6.0, max=10.0)
"""
from __future__ import annotations

import argparse

import tasuki


class RunningStats:
    """An ordinary class: count, mean and maximum of the values fed to it."""

    def __init__(self) -> None:
        self.n, self.total, self.largest = 0, 0.0, float("-inf")

    def add(self, values: list[float]) -> int:
        for v in values:
            self.n, self.total, self.largest = self.n + 1, self.total + v, max(self.largest, v)
        return self.n

    def summary(self) -> str:
        return f"RunningStats(n={self.n}, mean={self.total / self.n}, max={self.largest})"


def normalise(values: list[float]) -> list[float]:
    """An ordinary function: scale values so that the largest is 1."""
    top = max(values)
    return [v / top for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0, 10.0])
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    local = RunningStats()
    local.add(args.values)
    print(f"local: {local.summary()}")

    tasuki.init(address=args.address)
    RemoteStats = tasuki.remote(RunningStats)            # an actor class, as if decorated
    stats = RemoteStats.remote()
    stats.add.remote(args.values)
    print(f"remote actor: {tasuki.get(stats.summary.remote())}")

    remote_normalise = tasuki.remote(normalise)          # a remote function, as if decorated
    print(f"remote function: {args.values} -> normalised {tasuki.get(remote_normalise.remote(args.values))}")

    small = tasuki.remote(num_cpus=0.5)(RunningStats).remote()   # options work the same way
    small.add.remote(args.values)
    print(f"with options(num_cpus=0.5): {tasuki.get(small.summary.remote())}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

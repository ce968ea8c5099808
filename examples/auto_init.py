"""No init() needed: the first `.remote()` starts a local cluster, as in Ray.

`tasuki.is_initialized()` is False until something needs a cluster; the first call of
`.remote()` (or `get`, `put`) then starts an embedded one on this machine, and `shutdown()`
(or the end of the program) stops it.

    python examples/auto_init.py
    python examples/auto_init.py --x 12

Expected output (defaults):
    initialized before any call: False
    square.remote(7) -> 49
    initialized after .remote(): True
    initialized after shutdown(): False
"""
from __future__ import annotations

import argparse

import tasuki


@tasuki.remote
def square(x: int) -> int:
    return x * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x", type=int, default=7, help="the number to square remotely")
    args = parser.parse_args()

    print(f"initialized before any call: {tasuki.is_initialized()}")
    ref = square.remote(args.x)              # no tasuki.init(): this starts a local cluster
    print(f"square.remote({args.x}) -> {tasuki.get(ref)}")
    print(f"initialized after .remote(): {tasuki.is_initialized()}")
    tasuki.shutdown()
    print(f"initialized after shutdown(): {tasuki.is_initialized()}")


if __name__ == "__main__":
    main()

"""An async actor: ten I/O-bound calls of one second each finish together in about one second.

An actor whose methods are `async def` runs them on its own event loop, so calls that wait on
I/O (here `await asyncio.sleep`, standing in for an HTTP request or a database query) overlap
instead of queueing behind each other: ten 1-second calls take about 1 s, not 10 s.

    python examples/async_actor.py
    python examples/async_actor.py --calls 50 --seconds 0.5

Expected output (defaults):
    10 calls of 1.0 s each finished in 1.0... s
    pages fetched, in call order: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    most calls in flight at once: 10
"""
from __future__ import annotations

import argparse
import asyncio
import time

import tasuki


@tasuki.remote
class Fetcher:
    """Pretends to fetch pages; counts how many fetches overlap."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_in_flight = 0

    async def fetch(self, page: int, seconds: float) -> int:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(seconds)                     # the I/O wait: other calls run meanwhile
        self.in_flight -= 1
        return page

    async def peak(self) -> int:
        return self.most_in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each call waits")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    fetcher = Fetcher.remote()
    tasuki.get(fetcher.peak.remote())                    # wait until the actor is up: time the calls only
    started = time.time()
    pages = tasuki.get([fetcher.fetch.remote(page, args.seconds) for page in range(args.calls)])
    elapsed = time.time() - started
    print(f"{args.calls} calls of {args.seconds} s each finished in {elapsed:.2f} s")
    print(f"pages fetched, in call order: {pages}")
    print(f"most calls in flight at once: {tasuki.get(fetcher.peak.remote())}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

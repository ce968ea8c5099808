"""1,000 CPU-heavy tasks on a cluster started from the command line, joined with init(address=...).

Each task counts the primes in its share of [0, limit) by trial division: pure Python that holds
the GIL, the kind of work threads cannot speed up and processes can. The tasks spread over every
CPU of every node in the cluster; the count is checked against a known value of pi(x).

    tasuki start --head --port 6380                         # once, on the head machine
    tasuki start --address HEAD_IP:6380                     # on each other machine (optional)
    python examples/heavy_tasks_cluster.py --address auto   # on the head machine (or HEAD_IP:6380 with TASUKI_TOKEN)
    python examples/heavy_tasks_cluster.py --address auto --tasks 100 --limit 100000
    tasuki stop

Expected output (defaults; on a 2-CPU cluster the run takes about 25 s):
    1000 tasks on a cluster of 1 node(s), 2 CPUs: ... s (... tasks/s)
    primes below 10000000: 664579
    matches the known value of pi(10000000): True
"""
from __future__ import annotations

import argparse
import time

import tasuki

KNOWN_PI = {10**4: 1229, 10**5: 9592, 10**6: 78498, 2 * 10**6: 148933, 10**7: 664579}   # pi(x): primes below x


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


@tasuki.remote
def count_primes(first: int, limit: int, step: int) -> int:
    """Primes among first, first + step, first + 2 step... below limit (a strided share: even load)."""
    return sum(1 for n in range(first, limit, step) if is_prime(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="auto",
                        help="the cluster: HOST:PORT, or auto for the one `tasuki start` ran here (default)")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=10_000_000, help="count the primes below this number")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    nodes = [n for n in tasuki.nodes() if n["Alive"]]
    cpus = int(tasuki.cluster_resources().get("CPU", 0))
    started = time.time()
    refs = [count_primes.remote(i, args.limit, args.tasks) for i in range(args.tasks)]
    total = sum(tasuki.get(refs))
    elapsed = time.time() - started
    print(f"{args.tasks} tasks on a cluster of {len(nodes)} node(s), {cpus} CPUs: "
          f"{elapsed:.2f} s ({args.tasks / elapsed:.0f} tasks/s)")
    print(f"primes below {args.limit}: {total}")
    if args.limit in KNOWN_PI:
        print(f"matches the known value of pi({args.limit}): {total == KNOWN_PI[args.limit]}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

"""Counting ERROR lines in 10 million log lines, 100 chunks processed in parallel tasks.

Each task makes its own chunk of log lines (seeded by the chunk number, so the "log" is the same
on every run: in practice each task would read one file or one S3 object) and counts the lines
whose level is ERROR. Only the counts travel back; the driver adds them up.

    python examples/log_errors.py                           # 10,000,000 lines in 100 chunks
    python examples/log_errors.py --lines 200000 --chunks 20

Expected output (defaults):
    scanned 10000000 lines in 100 chunks in ... s
    ERROR lines: 500884 (5.01%)
    busiest chunk: #47 with 5160 errors
"""
from __future__ import annotations

import argparse
import random
import time

import tasuki

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
WEIGHTS = [20, 65, 10, 5]                      # percent
SERVICES = ["api", "auth", "billing", "search", "worker"]


def log_lines(chunk: int, count: int) -> list[str]:
    """`count` log lines of chunk number `chunk`, the same on every call."""
    rng = random.Random(chunk)
    levels = rng.choices(LEVELS, weights=WEIGHTS, k=count)
    return [f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d} {level} {SERVICES[i % 5]} request {i} done"
            for i, level in enumerate(levels)]


def count_errors(lines: list[str]) -> int:
    return sum(1 for line in lines if line.split(" ", 2)[1] == "ERROR")


@tasuki.remote
def errors_in_chunk(chunk: int, count: int) -> int:
    return count_errors(log_lines(chunk, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000, help="log lines in all")
    parser.add_argument("--chunks", type=int, default=100, help="chunks (tasks)")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    per_chunk, extra = divmod(args.lines, args.chunks)
    sizes = [per_chunk + (c < extra) for c in range(args.chunks)]
    started = time.time()
    counts = tasuki.get([errors_in_chunk.remote(chunk, size) for chunk, size in enumerate(sizes)])
    elapsed = time.time() - started
    total = sum(counts)
    busiest = max(range(args.chunks), key=lambda c: counts[c])
    print(f"scanned {args.lines} lines in {args.chunks} chunks in {elapsed:.2f} s")
    print(f"ERROR lines: {total} ({100 * total / args.lines:.2f}%)")
    print(f"busiest chunk: #{busiest} with {counts[busiest]} errors")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

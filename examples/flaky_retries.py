"""Retrying a flaky task: `max_retries=3, retry_exceptions=True`, and a task that runs out of retries.

A retried task runs again from scratch, in a fresh call (maybe on another worker), so it cannot
count its own attempts in a local variable; here an `Attempts` actor counts them. `flaky` fails
with a ConnectionError on its first `--failures` attempts and then succeeds; `hopeless` fails
every time, so after 1 + 3 attempts `get` raises its last error, with its original type.

    python examples/flaky_retries.py
    python examples/flaky_retries.py --failures 3

Expected output (defaults):
    flaky: 'report.csv downloaded' on attempt 3 (2 failures retried)
    hopeless: gave up after 4 attempts: ConnectionError: server down (attempt 4)
"""
from __future__ import annotations

import argparse

import tasuki

MAX_RETRIES = 3


@tasuki.remote
class Attempts:
    """Counts attempts per task name; survives the retries of the tasks that call it."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def next(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)


@tasuki.remote(max_retries=MAX_RETRIES, retry_exceptions=True)
def flaky(attempts, failures: int) -> str:
    attempt = tasuki.get(attempts.next.remote("flaky"))
    if attempt <= failures:
        raise ConnectionError(f"connection reset (attempt {attempt})")
    return "report.csv downloaded"


@tasuki.remote(max_retries=MAX_RETRIES, retry_exceptions=True)
def hopeless(attempts) -> str:
    attempt = tasuki.get(attempts.next.remote("hopeless"))
    raise ConnectionError(f"server down (attempt {attempt})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", type=int, default=2,
                        help=f"attempts of `flaky` that fail (more than {MAX_RETRIES} exhausts its retries)")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    attempts = Attempts.remote()
    try:
        result = tasuki.get(flaky.remote(attempts, args.failures))
        n = tasuki.get(attempts.count.remote("flaky"))
        print(f"flaky: {result!r} on attempt {n} ({n - 1} failures retried)")
    except ConnectionError as error:
        print(f"flaky: gave up after {tasuki.get(attempts.count.remote('flaky'))} attempts: {error.cause}")
    try:
        tasuki.get(hopeless.remote(attempts))
    except ConnectionError as error:          # the task's own type (and a tasuki.exceptions.TaskError)
        n = tasuki.get(attempts.count.remote("hopeless"))
        cause = error.cause                    # the exception raised remotely; str(error) adds its traceback
        print(f"hopeless: gave up after {n} attempts: {type(cause).__name__}: {cause}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

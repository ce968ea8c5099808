"""A Counter actor: one stateful worker process whose methods run one at a time, in call order.

The driver calls `increment` several times without waiting (the results come back in call
order), then passes the same actor handle to tasks, which call it too; the actor serialises
every call, so no increment is lost.

    python examples/counter_actor.py                        # 10 calls here, 2 tasks × 100 calls
    python examples/counter_actor.py --calls 5 --tasks 4 --per-task 50

Expected output (defaults):
    driver calls returned, in order: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    2 tasks made 100 calls each through the same handle
    final count: 210
    by caller: {'driver': 10, 'task-0': 100, 'task-1': 100}
"""
from __future__ import annotations

import argparse

import tasuki


@tasuki.remote
class Counter:
    """A counter that also remembers who incremented it."""

    def __init__(self) -> None:
        self.value = 0
        self.by_caller: dict[str, int] = {}

    def increment(self, caller: str = "driver") -> int:
        self.value += 1
        self.by_caller[caller] = self.by_caller.get(caller, 0) + 1
        return self.value

    def get(self) -> int:
        return self.value

    def callers(self) -> dict[str, int]:
        return dict(sorted(self.by_caller.items()))


@tasuki.remote
def hammer(counter, name: str, calls: int) -> int:
    """Increment `counter` (an actor handle passed in as an argument) `calls` times."""
    return tasuki.get([counter.increment.remote(name) for _ in range(calls)])[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="increments made by the driver")
    parser.add_argument("--tasks", type=int, default=2, help="tasks sharing the actor handle")
    parser.add_argument("--per-task", type=int, default=100, help="increments made by each task")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    counter = Counter.remote()
    print(f"driver calls returned, in order: {tasuki.get([counter.increment.remote() for _ in range(args.calls)])}")
    tasuki.get([hammer.remote(counter, f"task-{i}", args.per_task) for i in range(args.tasks)])
    print(f"{args.tasks} tasks made {args.per_task} calls each through the same handle")
    print(f"final count: {tasuki.get(counter.get.remote())}")
    print(f"by caller: {tasuki.get(counter.callers.remote())}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

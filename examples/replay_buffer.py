"""A replay buffer actor, as in reinforcement learning: rollout tasks push experience, a learner samples.

Rollout tasks play a toy environment with their own seed and push (state, action, reward,
next_state, done) transitions to one ReplayBuffer actor through its handle, in small batches.
The buffer keeps the newest `--capacity` transitions and hands out random training batches as
NumPy arrays.

    python examples/replay_buffer.py                        # 8 rollouts × 500 steps, capacity 3000
    python examples/replay_buffer.py --rollouts 4 --steps 200 --capacity 500 --batch 32

Expected output (defaults):
    8 rollout tasks pushed 4000 transitions in ... s
    buffer holds 3000 transitions (capacity 3000; 4000 pushed, the oldest 1000 dropped)
    sampled a batch of 64: states (64, 4), actions (64,), rewards (64,), next_states (64, 4), dones (64,)
"""
from __future__ import annotations

import argparse
import random
import time
from collections import deque

import numpy as np

import tasuki


@tasuki.remote
class ReplayBuffer:
    """The newest `capacity` transitions; `sample` draws a training batch from them."""

    def __init__(self, capacity: int) -> None:
        self.buffer: deque = deque(maxlen=capacity)
        self.pushed = 0

    def push(self, transitions: list[tuple]) -> int:
        self.buffer.extend(transitions)
        self.pushed += len(transitions)
        return len(self.buffer)

    def stats(self) -> dict:
        return {"size": len(self.buffer), "pushed": self.pushed, "capacity": self.buffer.maxlen}

    def sample(self, batch_size: int, seed: int | None = None) -> dict[str, np.ndarray]:
        batch = random.Random(seed).sample(list(self.buffer), batch_size)
        states, actions, rewards, next_states, dones = zip(*batch)
        return {"states": np.array(states), "actions": np.array(actions), "rewards": np.array(rewards),
                "next_states": np.array(next_states), "dones": np.array(dones)}


@tasuki.remote
def rollout(buffer, seed: int, steps: int, push_every: int = 50) -> int:
    """Play `steps` steps of a toy environment (a random walk with a 4-number state) with a random
    policy, pushing transitions to `buffer` every `push_every` steps; returns how many were pushed."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=4)
    pending, pushes = [], []
    for _ in range(steps):
        action = int(rng.integers(2))
        next_state = state + rng.normal(scale=0.1, size=4) + (0.05 if action else -0.05)
        done = bool(abs(next_state[0]) > 2.0)
        pending.append((state.tolist(), action, 1.0 if not done else 0.0, next_state.tolist(), done))
        state = rng.normal(size=4) if done else next_state
        if len(pending) == push_every:
            pushes.append(buffer.push.remote(pending))
            pending = []
    if pending:
        pushes.append(buffer.push.remote(pending))
    tasuki.get(pushes)                                  # pushed: the buffer has them all
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=8, help="rollout tasks")
    parser.add_argument("--steps", type=int, default=500, help="environment steps per rollout")
    parser.add_argument("--capacity", type=int, default=3000, help="transitions the buffer keeps")
    parser.add_argument("--batch", type=int, default=64, help="training batch size")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    buffer = ReplayBuffer.remote(args.capacity)
    started = time.time()
    pushed = sum(tasuki.get([rollout.remote(buffer, seed, args.steps) for seed in range(args.rollouts)]))
    elapsed = time.time() - started
    stats = tasuki.get(buffer.stats.remote())
    print(f"{args.rollouts} rollout tasks pushed {pushed} transitions in {elapsed:.2f} s")
    print(f"buffer holds {stats['size']} transitions (capacity {stats['capacity']}; {stats['pushed']} pushed, "
          f"the oldest {stats['pushed'] - stats['size']} dropped)")
    batch = tasuki.get(buffer.sample.remote(args.batch, seed=0))
    print(f"sampled a batch of {args.batch}: " + ", ".join(f"{k} {v.shape}" for k, v in batch.items()))
    tasuki.shutdown()


if __name__ == "__main__":
    main()

"""A matrix product A @ B split into row blocks, one task per block, checked against NumPy.

B is stored once with `put` and shared by every task; each task gets one block of A's rows and
returns that block of the product. The driver stacks the blocks and compares with `A @ B`.

    python examples/matrix_blocks.py                        # 3000×3000 @ 3000×3000 in 10 blocks
    python examples/matrix_blocks.py --n 600 --blocks 10

Expected output (defaults; the error is 0 or a few units of rounding, under 1e-10):
    (3000, 3000) @ (3000, 3000) in 10 row blocks: ... s
    max abs error vs numpy: ...
    matches numpy: True
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tasuki


@tasuki.remote
def block_product(a_rows: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One row block of the product."""
    return a_rows @ b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="A and B are n×n")
    parser.add_argument("--blocks", type=int, default=10, help="row blocks (tasks)")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((args.n, args.n))
    b = rng.standard_normal((args.n, args.n))
    started = time.time()
    b_ref = tasuki.put(b)                                    # shared by every block
    blocks = [block_product.remote(rows, b_ref) for rows in np.array_split(a, args.blocks)]
    product = np.vstack(tasuki.get(blocks))
    elapsed = time.time() - started
    expected = a @ b
    error = float(np.abs(product - expected).max())
    print(f"{a.shape} @ {b.shape} in {args.blocks} row blocks: {elapsed:.2f} s")
    print(f"max abs error vs numpy: {error:.2e}")
    print(f"matches numpy: {np.allclose(product, expected)}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

"""A matrix product on a GPU with CuPy, in a task that asks for one GPU (`num_gpus=1`).

The scheduler places the task on a node with a free GPU and tells it which one:
`tasuki.get_gpu_ids()` inside the task (and CUDA_VISIBLE_DEVICES, which CuPy follows). The
product comes back as a NumPy array and is checked against NumPy on the CPU.
Without a GPU in the cluster, or without CuPy, it says why and exits 0 without running.

    pip install 'tasuki[gpu]'                               # CuPy for CUDA 12
    python examples/gpu_matmul.py                           # 4096×4096 float64
    python examples/gpu_matmul.py --n 1024

Expected output with a GPU (defaults):
    GPU product (4096, 4096) @ (4096, 4096) on GPU ids [0]: ... s
    max abs error vs numpy: ...
    matches numpy: True
Expected output without one (either line, exit status 0):
    no GPU in this cluster (cluster_resources has no 'GPU'): skipping
    cupy is not installed: pip install 'tasuki[gpu]' (skipping)
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

import tasuki


@tasuki.remote(num_gpus=1)
def gpu_matmul(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, list, float]:
    """a @ b on the GPU this task was given; returns the product, the GPU ids and the GPU time."""
    import cupy as cp

    gpu_ids = tasuki.get_gpu_ids()
    assert gpu_ids, "a task with num_gpus=1 is always given a GPU"
    a_gpu, b_gpu = cp.asarray(a), cp.asarray(b)
    started = time.time()
    product = a_gpu @ b_gpu
    cp.cuda.Device().synchronize()
    return cp.asnumpy(product), gpu_ids, time.time() - started


def skip_reason() -> str | None:
    """Why this example cannot run here, or None."""
    if not tasuki.cluster_resources().get("GPU"):
        return "no GPU in this cluster (cluster_resources has no 'GPU'): skipping"
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed: pip install 'tasuki[gpu]' (skipping)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="A and B are n×n")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    reason = skip_reason()
    if reason:
        print(reason)
        tasuki.shutdown()
        return
    rng = np.random.default_rng(0)
    a = rng.standard_normal((args.n, args.n))
    b = rng.standard_normal((args.n, args.n))
    product, gpu_ids, seconds = tasuki.get(gpu_matmul.remote(a, b))
    expected = a @ b
    print(f"GPU product {a.shape} @ {b.shape} on GPU ids {gpu_ids}: {seconds:.3f} s")
    print(f"max abs error vs numpy: {float(np.abs(product - expected).max()):.2e}")
    print(f"matches numpy: {np.allclose(product, expected)}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

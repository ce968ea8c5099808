"""260 weekly feature builds (5 years × 52 weeks) over one shared dataset, on a local cluster.

The dataset is stored once with `put` and every task reads it zero-copy from shared memory; the
tasks are ordinary Python functions defined in this script (no pickling trouble with __main__).

    python examples/weekly_features.py            # about 10 s on 2 cores
    python examples/weekly_features.py --rows 200000 --weeks 52

Expected output (numbers vary with --rows; the checksum line is deterministic for the defaults):
    built 260 weekly feature tables in ... s (... tables/s) on 2 CPUs
    checksum: 10400.35
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tasuki


def make_sales(rows: int, seed: int = 7) -> np.ndarray:
    """A synthetic sales log: (week, store, amount) rows."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, 3), dtype=np.float64)
    out[:, 0] = rng.integers(0, 260, rows)
    out[:, 1] = rng.integers(0, 50, rows)
    out[:, 2] = rng.gamma(2.0, 20.0, rows)
    return out


@tasuki.remote
def build_week(sales: np.ndarray, week: int) -> dict:
    """Per-store features of one week: revenue, order count, mean basket, 4-week trend."""
    this = sales[sales[:, 0] == week]
    past = sales[(sales[:, 0] < week) & (sales[:, 0] >= week - 4)]
    revenue = np.bincount(this[:, 1].astype(int), weights=this[:, 2], minlength=50)
    orders = np.bincount(this[:, 1].astype(int), minlength=50)
    past_revenue = np.bincount(past[:, 1].astype(int), weights=past[:, 2], minlength=50) / 4
    return {"week": week, "revenue": revenue.sum(), "orders": int(orders.sum()),
            "mean_basket": float(revenue.sum() / max(1, orders.sum())),
            "trend": float((revenue - past_revenue).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the synthetic sales log")
    parser.add_argument("--weeks", type=int, default=260)
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    sales_ref = tasuki.put(make_sales(args.rows))          # stored once, shared by every task
    started = time.time()
    refs = [build_week.remote(sales_ref, week) for week in range(args.weeks)]
    tables = tasuki.get(refs)
    elapsed = time.time() - started
    cpus = int(tasuki.cluster_resources().get("CPU", 0))
    print(f"built {len(tables)} weekly feature tables in {elapsed:.2f} s "
          f"({len(tables) / elapsed:.1f} tables/s) on {cpus} CPUs")
    print(f"checksum: {sum(t['mean_basket'] for t in tables):.2f}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

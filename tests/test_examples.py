"""Every script in examples/ runs, scaled down, and prints what its docstring promises.

EXPECTED holds each script's output, written as in its docstring: every line must appear in
the output, whole and in this order (other lines may come between them), and "..." stands for
one varying word (a timing, a count). The words a "..." matched go to the script's entry in
CHECKS, if it has one, for the checks a fixed text cannot make (a time under a bound, a count
equal to a serial computation).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
RUN_TIMEOUT_S = 180                      # one scaled-down example on a loaded two-core machine

SCALED_DOWN = {
    "async_actor.py": [],
    "auto_init.py": [],
    "chunked_dataset.py": ["--total-mb", "1000", "--chunk-mb", "20", "--in-flight", "2"],   # ~1 s: peaks get sampled
    "counter_actor.py": ["--calls", "5", "--tasks", "3", "--per-task", "20"],
    "flaky_retries.py": [],
    "gpu_matmul.py": ["--n", "256"],
    "heavy_tasks_cluster.py": ["--tasks", "100", "--limit", "100000"],    # run by its own test below
    "log_errors.py": ["--lines", "200000", "--chunks", "20"],
    "matrix_blocks.py": ["--n", "600", "--blocks", "10"],
    "monte_carlo.py": ["--paths", "2000", "--tasks", "4"],
    "random_forest_tune.py": ["--trials", "8"],
    "replay_buffer.py": ["--rollouts", "4", "--steps", "200", "--capacity", "500", "--batch", "32"],
    "shared_dataset.py": ["--rows", "1000000", "--tasks", "20"],
    "sum_of_squares.py": ["--n", "2000"],
    "trend_analyzer.py": [],
    "weekly_features.py": ["--rows", "200000", "--weeks", "52"],
    "wrapper_class.py": [],
}
ON_A_CLI_CLUSTER = {"heavy_tasks_cluster.py"}


def gpu_matmul_output() -> str:
    """What gpu_matmul.py prints on this machine: its result with a GPU and CuPy, else why it skipped."""
    from tasuki.node import detect_gpus           # how the runtime decides what the node offers
    if not detect_gpus():
        return "no GPU in this cluster (cluster_resources has no 'GPU'): skipping"
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed: pip install 'tasuki[gpu]' (skipping)"
    return """
        GPU product (256, 256) @ (256, 256) on GPU ids ...: ... s
        max abs error vs numpy: ...
        matches numpy: True"""


EXPECTED = {
    "async_actor.py": """
        10 calls of 1.0 s each finished in ... s
        pages fetched, in call order: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        most calls in flight at once: 10""",
    "auto_init.py": """
        initialized before any call: False
        square.remote(7) -> 49
        initialized after .remote(): True
        initialized after shutdown(): False""",
    "chunked_dataset.py": """
        reduced 1000 MB in 50 chunks of 20 MB in ... s
        rows: 125000000  sum: 62437500000  mean: 499.5
        matches closed form: True
        object store: peak ... MB sampled while running (2 chunks in flight at most)
        object store after the run: 0 MB""",
    "counter_actor.py": """
        driver calls returned, in order: [1, 2, 3, 4, 5]
        3 tasks made 20 calls each through the same handle
        final count: 65
        by caller: {'driver': 5, 'task-0': 20, 'task-1': 20, 'task-2': 20}""",
    "flaky_retries.py": """
        flaky: 'report.csv downloaded' on attempt 3 (2 failures retried)
        hopeless: gave up after 4 attempts: ConnectionError: server down (attempt 4)""",
    "gpu_matmul.py": gpu_matmul_output,
    "heavy_tasks_cluster.py": """
        100 tasks on a cluster of 2 node(s), 2 CPUs: ... s (... tasks/s)
        primes below 100000: 9592
        matches the known value of pi(100000): True""",
    "log_errors.py": """
        scanned 200000 lines in 20 chunks in ... s
        ERROR lines: ... (...%)
        busiest chunk: #... with ... errors""",
    "matrix_blocks.py": """
        (600, 600) @ (600, 600) in 10 row blocks: ... s
        max abs error vs numpy: ...
        matches numpy: True""",
    "monte_carlo.py": """
        simulated 2000 paths × 252 days in 4 tasks: ... s
        mean final price: 107.86 (closed form S0*exp(mu*T): 108.33)
        5% value at risk (1 year, per share): 22.84
        mean within 2% of the closed form: True""",
    "random_forest_tune.py": """
        tune: 8 trials in ... s, best accuracy 0.9543 with {'n_estimators': 30, 'max_depth': None, 'min_samples_leaf': 3, 'max_features': 'log2'}
        joblib GridSearchCV: 12 candidates in ... s, best accuracy 0.9719 with {'max_depth': None, 'max_features': 'log2', 'n_estimators': 20}
        same best parameters as a serial GridSearchCV: True""",
    "replay_buffer.py": """
        4 rollout tasks pushed 800 transitions in ... s
        buffer holds 500 transitions (capacity 500; 800 pushed, the oldest 300 dropped)
        sampled a batch of 32: states (32, 4), actions (32,), rewards (32,), next_states (32, 4), dones (32,)""",
    "shared_dataset.py": """
        stored 8 MB once; 20 tasks read it in ... s
        every task got a read-only zero-copy view: True
        total: 499184769
        matches numpy: True""",
    "sum_of_squares.py": """
        remote tasks: 2668667000 (2000 tasks in ... s)
        tasuki.Pool.map: 2668667000 (... s)
        closed form n(n+1)(2n+1)/6: 2668667000
        all equal: True""",
    "trend_analyzer.py": """
        4 producers sent 10000 posts in ... s; the analyzer received 10000
        top 5 trends:
          #python  4287
          #ai  3354
          #data  2403
          #rust  2013
          #climate  1583""",
    "weekly_features.py": """
        built 52 weekly feature tables in ... s (... tables/s) on ... CPUs
        checksum: 2086.16""",
    "wrapper_class.py": """
        local: RunningStats(n=5, mean=6.0, max=10.0)
        remote actor: RunningStats(n=5, mean=6.0, max=10.0)
        remote function: [2.0, 4.0, 6.0, 8.0, 10.0] -> normalised [0.2, 0.4, 0.6, 0.8, 1.0]
        with options(num_cpus=0.5): RunningStats(n=5, mean=6.0, max=10.0)""",
}


def load_example(script: str):
    """The example as a module (its functions, without running main)."""
    spec = importlib.util.spec_from_file_location(script[:-3], os.path.join(EXAMPLES, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log_errors_match_a_serial_count(elapsed, errors, percent, busiest, busiest_errors) -> bool:
    log = load_example("log_errors.py")
    counts = [log.count_errors(log.log_lines(chunk, 10_000)) for chunk in range(20)]
    return (int(errors), int(busiest), int(busiest_errors)) == (sum(counts), counts.index(max(counts)), max(counts))


CHECKS = {
    "async_actor.py": lambda elapsed: float(elapsed) < 5.0,          # ten 1-second waits overlapped
    "chunked_dataset.py": lambda elapsed, peak_mb: int(peak_mb) <= 3 * 20,   # 2 in flight + 1 being freed
    "log_errors.py": log_errors_match_a_serial_count,
    "matrix_blocks.py": lambda elapsed, error: float(error) < 1e-9,
}


def check_output(script: str, stdout: str) -> None:
    """Assert that `stdout` holds EXPECTED[script] (see the module docstring), then CHECKS[script]."""
    expected = EXPECTED[script]() if callable(EXPECTED[script]) else EXPECTED[script]
    lines = iter(stdout.splitlines())
    holes = []
    for want in filter(None, (line.strip() for line in expected.splitlines())):
        pattern = re.compile(r"\s*" + r"(\S+?)".join(map(re.escape, want.split("..."))) + r"\s*")
        match = next(filter(None, map(pattern.fullmatch, lines)), None)
        assert match, f"{script}: no line {want!r} (in order) in its output:\n{stdout}"
        holes += match.groups()
    if script in CHECKS:
        assert CHECKS[script](*holes), f"{script}: check failed on {holes}:\n{stdout}"


def run_example(script: str, env: dict, *more_args: str) -> str:
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *SCALED_DOWN[script], *more_args], env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{script} exited with {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout


def test_every_example_is_listed_here():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(SCALED_DOWN) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(set(SCALED_DOWN) - ON_A_CLI_CLUSTER))
def test_example_runs(script):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASUKI_")}    # a local cluster of its own
    check_output(script, run_example(script, {**env, "PYTHONPATH": os.path.join(ROOT, "runtime")}))


@pytest.fixture(scope="module")
def two_nodes(cli_cluster):
    """`tasuki start --head` (1 CPU) and a second node (1 CPU), for the examples that join with --address."""
    cli_cluster.add_node("127.0.0.2", "--num-cpus", "1")
    return cli_cluster


def test_heavy_tasks_on_a_cli_cluster(two_nodes):
    script = "heavy_tasks_cluster.py"
    check_output(script, run_example(script, two_nodes.env, "--address", two_nodes.host_port))


def test_weekly_features_move_to_a_cluster_by_changing_the_address(two_nodes):
    """The laptop run above, then the same script on a two-node CLI cluster with --address: same tables."""
    script = "weekly_features.py"
    stdout = run_example(script, two_nodes.env, "--address", two_nodes.host_port)
    check_output(script, stdout)
    assert "on 2 CPUs" in stdout

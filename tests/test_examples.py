"""Every script in examples/ runs, scaled down, and prints what its docstring promises."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
SCALED_DOWN = {"weekly_features.py": ["--rows", "200000", "--weeks", "52"]}


def test_every_example_is_listed_here():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(SCALED_DOWN)


@pytest.mark.parametrize("script", sorted(SCALED_DOWN))
def test_example_runs(script):
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "runtime")}
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *SCALED_DOWN[script]], env=env,
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    if script == "weekly_features.py":
        assert re.search(r"built 52 weekly feature tables in [\d.]+ s .* on \d+ CPUs", out.stdout), out.stdout
        assert re.search(r"checksum: \d+\.\d\d", out.stdout), out.stdout

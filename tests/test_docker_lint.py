"""docker/lint.py: tasuki's three Dockerfiles pass it, and each rule catches the mistake it is for."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docker_lint", ROOT / "docker" / "lint.py")
lint = sys.modules["docker_lint"] = importlib.util.module_from_spec(_spec)     # dataclasses look it up there
_spec.loader.exec_module(lint)

GOOD = """\
# a comment
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS builder
COPY wheels/ /wheels/
RUN python3 -m venv /opt/tasuki \\
 && /opt/tasuki/bin/pip install --no-index /wheels/*.whl

FROM ${BASE}
COPY --from=builder /opt/tasuki /opt/tasuki
USER 1000:1000
HEALTHCHECK --interval=10s CMD ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py"]
ENTRYPOINT ["/opt/tasuki/bin/dumb-init", "--"]
CMD ["tasuki", "start", "--head", "--block"]
"""


def test_the_repository_dockerfiles_pass():
    files = sorted((ROOT / "docker").glob("*.Dockerfile"))
    assert [f.name for f in files] == ["operator.Dockerfile", "runtime-gpu.Dockerfile", "runtime.Dockerfile"]
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "lint.py"), *map(str, files)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_good_dockerfile_passes():
    assert lint.check(GOOD) == []


@pytest.mark.parametrize("old, new, rule", [
    ("ARG BASE=python:3.11-slim-bookworm\n", "", "base-arg"),
    ("FROM ${BASE} AS builder", "FROM debian:bookworm AS builder", "from"),
    ("COPY wheels/ /wheels/", "ADD wheels/ /wheels/", "add"),
    ("RUN python3 -m venv", "RUN curl -fsSL https://example.invalid/x | sh && python3 -m venv", "fetch"),
    ("pip install --no-index /wheels/*.whl", "pip install tasuki", "pip-index"),
    ("RUN python3 -m venv", "RUN apt-get install -y python3 && python3 -m venv", "apt"),
    ("COPY --from=builder", "COPY --from=build", "copy-from"),
    ("USER 1000:1000\n", "", "user"),
    ("USER 1000:1000", "USER 0", "user"),
    ("USER 1000:1000", "USER tasuki", "user"),
    ('HEALTHCHECK --interval=10s CMD ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py"]\n', "",
     "healthcheck"),
    ('CMD ["/opt/tasuki/bin/python", "/opt/tasuki/healthcheck.py"]', "CMD python healthcheck.py", "healthcheck"),
    ('ENTRYPOINT ["/opt/tasuki/bin/dumb-init", "--"]', 'ENTRYPOINT ["tasuki"]', "entrypoint"),
    ('ENTRYPOINT ["/opt/tasuki/bin/dumb-init", "--"]', "ENTRYPOINT dumb-init -- tasuki", "entrypoint"),
])
def test_each_rule_catches_its_mistake(old, new, rule):
    assert old in GOOD
    assert [r for _, r in lint.check(GOOD.replace(old, new))] == [rule]


def test_a_compiler_in_a_stage_of_the_final_image_is_caught_but_not_in_a_discarded_one():
    install = ("RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev "
               "&& rm -rf /var/lib/apt/lists/*\n")
    in_builder = GOOD.replace("COPY wheels/", install + "COPY wheels/", 1)
    assert lint.check(in_builder) == []                      # the builder is left behind
    in_final = GOOD.replace("USER 1000:1000", install.strip() + "\nUSER 1000:1000")
    assert [r for _, r in lint.check(in_final)] == ["compiler"]


def test_problems_name_the_line_and_the_rule(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text(GOOD.replace("USER 1000:1000", "USER root"))
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "lint.py"), str(bad)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == f"{bad}:11: user: {lint.RULES['user']}\n"

"""The e2e suite's fixtures: one platform for the session (e2e/platform.py), and its logs on failure.

`platform` is a RealPlatform when TASUKI_E2E_KUBECONFIG is set, else the LocalPlatform, which needs
Docker: without it the suite FAILS, saying to run .ci/setup-docker.sh, unless TASUKI_SKIP_DOCKER=1
(then it is skipped, as tests/test_images.py is): a skip would hide a CI that lost its Docker.
When a scenario fails, the platform's logs (pods, Events, operator, kubelet) are printed with it.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from e2e.platform import BASE_IMAGE, Platform, platform_from_environment, use_terminal_of


def pytest_configure(config):
    use_terminal_of(config)


def require_docker() -> None:
    """Skip when TASUKI_SKIP_DOCKER=1; otherwise fail unless Docker answers and the base image is there."""
    if os.environ.get("TASUKI_SKIP_DOCKER") == "1":
        pytest.skip("TASUKI_SKIP_DOCKER=1: the local e2e target (pods as Docker containers) is left out")
    if shutil.which("docker") is None:
        problem = "there is no `docker` command"
    elif (info := subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                 text=True, timeout=60)).returncode != 0:
        problem = f"`docker info` failed: {(info.stderr or info.stdout).strip()[:300]}"
    elif subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True,
                        timeout=60).returncode != 0:
        problem = f"the base image {BASE_IMAGE} is missing"
    else:
        return
    pytest.fail(f"{problem}. The local e2e target runs pods as Docker containers: run `.ci/setup-docker.sh` as root "
                f"(it installs docker.io, starts dockerd without a bridge or iptables rules, and makes {BASE_IMAGE}), "
                f"point TASUKI_E2E_KUBECONFIG at a real cluster, or set TASUKI_SKIP_DOCKER=1 to leave the suite out.",
                pytrace=False)


@pytest.fixture(scope="session")
def platform() -> Platform:
    if not os.environ.get("TASUKI_E2E_KUBECONFIG"):
        require_docker()
    made = platform_from_environment()
    try:
        yield made.start()
    finally:
        made.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when == "call" and "platform" in item.funcargs:
        report.sections.append(("e2e platform logs", item.funcargs["platform"].logs()))
    return report

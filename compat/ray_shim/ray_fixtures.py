"""Ray's test fixtures by name, on tasuki, and the recorder of results (a pytest plugin).

compat/run_ray_tests.py loads this with `-p ray_fixtures`. The fixtures do what Ray's conftest
(python/ray/tests/conftest.py) does with the same names: `ray.init` with Ray's test defaults and
the test's `indirect` parameters, then `ray.shutdown`. Fixtures Ray has and these lack (the test
clusters of ray.cluster_utils, `ray start` on the command line, the dashboard, external Redis) mark
tests the classifier counts apart, so they need none here.

Environment, set by the runner:
  RAY_COMPAT_RESULTS  a file to append one JSON line per test outcome (and per collection error)
  RAY_COMPAT_SCOPE    a JSON file {test_name: reason} of out-of-scope tests of this file: skipped
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest

import ray

# Ray's defaults for its test fixtures (get_default_fixture_ray_kwargs): 1 CPU, a 150 MiB store.
DEFAULT_INIT = {"num_cpus": 1, "object_store_memory": 150 * 1024 * 1024, "namespace": "default_test_namespace"}


@contextmanager
def _ray_start(**kwargs):
    init_kwargs = {**DEFAULT_INIT, **kwargs}
    info = ray.init(**init_kwargs)
    try:
        yield info
    finally:
        ray.shutdown()


def _param(request) -> dict:
    return dict(getattr(request, "param", {}) or {})


@pytest.fixture
def shutdown_only():
    yield None
    ray.shutdown()


@pytest.fixture
def maybe_external_redis():
    yield None


@pytest.fixture(scope="class")
def class_ray_instance():
    yield ray.init()
    ray.shutdown()


@pytest.fixture
def ray_start_no_cpu(request):
    with _ray_start(**{"num_cpus": 0, **_param(request)}) as info:
        yield info


@pytest.fixture
def ray_start_regular(request):
    with _ray_start(**_param(request)) as info:
        yield info


@pytest.fixture(scope="module")
def ray_start_regular_shared(request):
    with _ray_start(**_param(request)) as info:
        yield info


@pytest.fixture(scope="module")
def ray_start_regular_shared_2_cpus(request):
    with _ray_start(**{"num_cpus": 2, **_param(request)}) as info:
        yield info


@pytest.fixture(scope="module", params=[{"local_mode": False}])
def ray_start_shared_local_modes(request):
    with _ray_start(**_param(request)) as info:
        yield info


@pytest.fixture
def ray_start_2_cpus(request):
    with _ray_start(**{"num_cpus": 2, **_param(request)}) as info:
        yield info


@pytest.fixture
def ray_start_10_cpus(request):
    with _ray_start(**{"num_cpus": 10, **_param(request)}) as info:
        yield info


@pytest.fixture
def ray_start_object_store_memory(request):
    store_size = getattr(request, "param", None)
    kwargs = {"object_store_memory": store_size} if store_size else {}
    with _ray_start(**kwargs) as info:
        yield info


# ---- results -------------------------------------------------------------------------------------

def pytest_collection_modifyitems(session, config, items):
    path = os.environ.get("RAY_COMPAT_SCOPE")
    if not path:
        return
    with open(path, encoding="utf-8") as f:
        out_of_scope = json.load(f)
    for item in items:
        name = _test_name(item)
        if name in out_of_scope:
            item.add_marker(pytest.mark.skip(reason=f"out of scope: {out_of_scope[name]}"))
            item.user_properties.append(("out_of_scope", out_of_scope[name]))


def _test_name(item) -> str:
    """The test function's name without its parameters, with its class: `TestX::test_y` or `test_y`."""
    base = getattr(item, "originalname", None) or item.name.split("[")[0]
    cls = getattr(item, "cls", None)
    return f"{cls.__name__}::{base}" if cls is not None else base


_outcomes: dict[str, dict] = {}


def _first_line(report) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):                     # a skip: (path, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return crash.message.splitlines()[0] if crash.message else ""
    text = str(longrepr).strip().splitlines()
    errors = [line for line in text if line.startswith("E ")]
    return (errors[0][1:].strip() if errors else (text[-1] if text else ""))


def pytest_runtest_logreport(report):
    entry = _outcomes.setdefault(report.nodeid, {"outcome": None, "message": "", "duration": 0.0})
    entry["duration"] += report.duration
    if report.when == "setup":
        if report.failed:
            entry.update(outcome="error", message=_first_line(report), phase="setup")
        elif report.skipped:
            entry.update(outcome="skipped", message=_first_line(report))
    elif report.when == "call":
        if report.passed:
            entry["outcome"] = "passed"
        elif report.failed:
            entry.update(outcome="failed", message=_first_line(report), phase="call")
        elif report.skipped:      # xfail, or pytest.skip() in the test
            entry.update(outcome="skipped", message=_first_line(report))
    elif report.when == "teardown" and report.failed and entry["outcome"] == "passed":
        entry.update(outcome="error", message=_first_line(report), phase="teardown")


def pytest_runtest_logfinish(nodeid, location):
    entry = _outcomes.pop(nodeid, None)
    if entry is not None:
        _write({"nodeid": nodeid, **entry})


def pytest_collectreport(report):
    if report.failed:
        _write({"nodeid": report.nodeid, "outcome": "collect-error", "message": _first_line(report),
                "duration": 0.0})


def _write(record: dict) -> None:
    path = os.environ.get("RAY_COMPAT_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

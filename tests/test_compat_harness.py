"""The Ray-test harness (compat/) stays alive: the `ray` shim imports and resolves to tasuki, missing Ray
names fail only when used, and the out-of-scope classifier decides inline sample sources as its rules say.
No Ray files are needed (Ray's tests are never in this repository)."""
import subprocess
import sys
from pathlib import Path

import pytest

COMPAT = Path(__file__).resolve().parent.parent / "compat"
sys.path.insert(0, str(COMPAT))
import ray_scope  # noqa: E402
import run_ray_tests  # noqa: E402


def _shim(code: str) -> str:
    """Run `code` in a fresh interpreter with the shim first on sys.path (so `ray` is ours)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(COMPAT / "ray_shim"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_shim_binds_ray_to_tasuki():
    out = _shim(
        "import ray, tasuki, ray.exceptions, ray.util, ray.actor\n"
        "from ray.util.queue import Queue, Empty\n"
        "from ray.util import ActorPool\n"
        "from ray._private.test_utils import SignalActor, wait_for_condition\n"
        "from ray._common.test_utils import wait_for_condition as w2\n"
        "assert ray.remote is tasuki.remote and ray.get is tasuki.get and ray.ObjectRef is tasuki.ObjectRef\n"
        "assert ray.exceptions.RayTaskError is tasuki.exceptions.TaskError\n"
        "assert Queue is tasuki.util.Queue and ActorPool is tasuki.util.ActorPool\n"
        "assert ray.__file__.startswith(%r)\n"
        "print('ok')\n" % str(COMPAT))
    assert out.strip() == "ok"


def test_missing_ray_names_fail_when_used_not_when_imported():
    out = _shim(
        "import ray\n"
        "from ray.util.state import list_tasks\n"                 # a module tasuki lacks
        "from ray._private.test_utils import BatchQueue\n"        # an internal helper with no stand-in
        "from ray.exceptions import OwnerDiedError\n"             # an exception tasuki does not raise
        "assert issubclass(OwnerDiedError, Exception)\n"
        "deferred = list_tasks(limit=1)\n"                       # at module level (a parametrize value): deferred
        "print(repr(deferred))\n"
        "def a_test():\n"
        "    list_tasks()\n"
        "try:\n"
        "    a_test()\n"
        "except NotImplementedError as e:\n"
        "    print(e)\n")
    assert "<missing ray.util.state.list_tasks(...)>" in out
    assert "ray.util.state.list_tasks: tasuki has no such name" in out


SAMPLE = '''
import pytest
import ray
from ray.util.state import list_tasks
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from ray._private.test_utils import SignalActor, wait_for_condition
from ray._private.utils import DeferSigint


def helper_with_state():
    return list_tasks()


@pytest.fixture
def my_cluster(ray_start_cluster):
    yield ray_start_cluster


def test_plain(ray_start_regular):
    sig = SignalActor.remote()
    wait_for_condition(lambda: True)
    assert ray.get(ray.put(1)) == 1


def test_uses_helper(shutdown_only):
    helper_with_state()


def test_pg(ray_start_regular):
    ray.get(f.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)).remote())


def test_generator(ray_start_regular):
    @ray.remote
    def gen():
        yield 1
    list(gen.remote())


def test_streaming(ray_start_regular):
    f.options(num_returns="streaming").remote()


def test_runtime_env(shutdown_only):
    ray.init(runtime_env={"env_vars": {"A": "1"}})


def test_internal():
    with DeferSigint():
        pass


def test_local_fixture(my_cluster):
    pass


def test_concurrency(ray_start_regular):
    @ray.remote(concurrency_groups={"io": 2})
    class A:
        pass


class TestGroup:
    def test_in_class(self, ray_start_regular):
        ray.get(ray.put(2))
'''


def test_classifier_decides_samples_by_rule():
    d = {name: (x.category, x.reason) for name, x in ray_scope.classify_source(SAMPLE).items()}
    assert d["test_plain"] == ("in_scope", "")                 # stand-ins are allowed
    assert d["TestGroup::test_in_class"] == ("in_scope", "")
    assert d["test_uses_helper"] == ("state_api", "ray.util.state.list_tasks")   # through a helper
    assert d["test_pg"][0] == "placement_groups"
    assert d["test_generator"][0] == "generators"
    assert d["test_streaming"] == ("generators", 'num_returns="streaming"')
    assert d["test_runtime_env"][0] == "runtime_env"
    assert d["test_internal"] == ("internals", "ray._private.utils.DeferSigint")
    assert d["test_local_fixture"] == ("cluster", "fixture ray_start_cluster")   # through a local fixture
    assert d["test_concurrency"][0] == "concurrency_groups"
    assert len(d) == 10


@pytest.mark.parametrize("message, key", [
    ("AssertionError: assert 3 == 4", "AssertionError: assert N == N"),
    ("ValueError: actor 0x7f00aa bad at /tmp/x/y.py", "ValueError: actor <addr> bad at /tmp/…"),
    ("", "(no message)"),
])
def test_failures_group_by_blurred_first_line(message, key):
    assert run_ray_tests.error_key(message) == key

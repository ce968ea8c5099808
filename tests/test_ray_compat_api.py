"""Ray compatibility of the core API (issue 15): nested errors, options, signatures, the runtime
context, refs and objects, init's context, worker environment, BaseException and shutdown.

Each test states Ray's behaviour it checks. One embedded cluster (2 CPUs) serves the module;
tests that need their own session (shutdown, a second driver) run a driver in a subprocess.
"""
from __future__ import annotations

import concurrent.futures
import inspect
import os
import subprocess
import sys
import textwrap
import time

import pytest

import tasuki
import conftest
from tasuki.exceptions import (ActorDiedError, ObjectLostError, OptionError, RayActorError, RayTaskError,
                               TaskCancelledError, TaskError, WorkerCrashedError)

GET_TIMEOUT_S = 60
RUNTIME = os.path.dirname(os.path.dirname(os.path.abspath(tasuki.__file__)))


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with conftest.embedded_cluster(num_cpus=2) as t:
        yield t


def run_driver(script: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TASUKI_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([RUNTIME, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=env)


# --- 1. exceptions keep their type through nested tasks --------------------------------------------
@tasuki.remote(max_retries=0)
def divide_by_zero():
    return 1 / 0


@tasuki.remote(max_retries=0)
def calls_divide_by_zero():
    return tasuki.get(divide_by_zero.remote())


@tasuki.remote(max_retries=0)
def calls_twice_down():
    return tasuki.get(calls_divide_by_zero.remote())


class CodedError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


@tasuki.remote(max_retries=0)
def raise_coded():
    raise CodedError("coded", 42)


@pytest.mark.parametrize("task, frames", [(calls_divide_by_zero, ["calls_divide_by_zero", "divide_by_zero"]),
                                          (calls_twice_down, ["calls_twice_down", "calls_divide_by_zero",
                                                              "divide_by_zero"])])
def test_a_nested_tasks_error_is_both_task_error_and_the_original_type(task, frames):
    with pytest.raises(ZeroDivisionError) as info:
        tasuki.get(task.remote(), timeout=GET_TIMEOUT_S)
    error = info.value
    assert isinstance(error, RayTaskError) and isinstance(error, TaskError)
    assert type(error.cause) is ZeroDivisionError and error.cause_type_name == "ZeroDivisionError"
    text = str(error)
    for name in frames:                      # every task's own frames, the innermost last
        assert f"in {name}" in text and f"tasuki::{name}() (pid=" in text
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "tasuki/api.py" not in text and "tasuki/client.py" not in text      # no tasuki internals


def test_the_dual_error_reads_the_causes_attributes():
    with pytest.raises(CodedError) as info:
        tasuki.get(raise_coded.remote(), timeout=GET_TIMEOUT_S)
    assert info.value.code == 42 and isinstance(info.value, RayTaskError)


def test_actor_errors_carry_the_actor_id():
    error = ActorDiedError("dead", actor_id="ab12")
    assert error.actor_id == "ab12" and isinstance(error, RayActorError)
    assert RayActorError("no id").actor_id is None


@pytest.mark.parametrize("options, error", [
    ({"num_cpus": "2"}, TypeError), ({"num_gpus": [1]}, TypeError), ({"max_retries": 1.5}, TypeError),
    ({"num_returns": "2"}, ValueError), ({"name": 3}, TypeError), ({"resources": ["x"]}, TypeError),
    ({"max_retries": True}, TypeError), ({"num_cpus": -1}, ValueError), ({"retry_exceptions": [int]}, ValueError),
])
def test_options_of_the_wrong_type_are_type_errors_bad_values_value_errors(options, error):
    with pytest.raises(error):
        divide_by_zero.options(**options)


def test_an_unknown_option_is_both_type_error_and_value_error():
    with pytest.raises(OptionError) as info:
        divide_by_zero.options(bogus=1)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


# --- 11. signatures at .remote(); options at their default ------------------------------------------
@tasuki.remote
def one_argument(x):
    return x


@tasuki.remote
def with_keywords(a, b=2, *, c=3):
    return a + b + c


@tasuki.remote
class NeedsTwo:
    def __init__(self, a, b):
        self.total = a + b

    def total_(self):
        return self.total


def test_a_call_that_does_not_match_the_signature_fails_at_remote():
    with pytest.raises(TypeError, match=r"one_argument.remote\(int 1, int 2\) does not match one_argument\(x\)"):
        one_argument.remote(1, 2)
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        one_argument.remote()
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        with_keywords.remote(1, d=4)
    with pytest.raises(TypeError, match="too many positional"):
        with_keywords.options(num_cpus=1).remote(1, 2, 3)        # options() keeps the check
    with pytest.raises(TypeError, match=r"NeedsTwo.remote\(int 1\) does not match NeedsTwo\(a, b\)"):
        NeedsTwo.remote(1)
    assert tasuki.get([one_argument.remote(x=5), with_keywords.remote(1, c=10)], timeout=GET_TIMEOUT_S) == [5, 13]


def test_rays_options_at_their_default_values_are_accepted():
    task = one_argument.options(concurrency_groups=None, max_pending_calls=-1, object_store_memory=None,
                                placement_group_capture_child_tasks=None, max_calls=0, num_returns=None,
                                max_retries=None, num_cpus=None)
    assert tasuki.get(task.remote(7), timeout=GET_TIMEOUT_S) == 7
    assert task._options["num_cpus"] == 1 and task._options["num_returns"] == 1      # None: the default
    handle = NeedsTwo.options(concurrency_groups=None, max_pending_calls=-1).remote(1, 2)
    assert tasuki.get(handle.total_.remote(), timeout=GET_TIMEOUT_S) == 3
    with pytest.raises(ValueError, match="does not support max_pending_calls"):
        NeedsTwo.options(max_pending_calls=5)


# --- 6. the runtime context --------------------------------------------------------------------------
@tasuki.remote
def context_in_task():
    c = tasuki.get_runtime_context()
    return (c.get_assigned_resources(), c.get_accelerator_ids(), c.namespace, c.get_actor_name(),
            c.get_task_id(), c.get_actor_id(), c.get_job_id(), c.get_node_id())


@tasuki.remote
class Introspective:
    def context(self):
        c = tasuki.get_runtime_context()
        return (c.get_actor_name(), c.namespace, c.was_current_actor_reconstructed, c.get_assigned_resources(),
                c.get_actor_id(), c.current_actor)

    def ping(self):
        return "pong"


def test_the_runtime_context_in_a_task():
    resources, accelerators, namespace, actor_name, task_id, actor_id, job_id, node_id = tasuki.get(
        context_in_task.options(num_cpus=0.5).remote(), timeout=GET_TIMEOUT_S)
    assert resources == {"CPU": 0.5} and accelerators == {"GPU": []}
    assert namespace == "default" and actor_name is None and actor_id is None
    assert task_id and job_id == tasuki.get_runtime_context().get_job_id()
    assert node_id == tasuki.nodes()[0]["NodeID"]


def test_the_runtime_context_in_an_actor():
    actor = Introspective.options(name="introspective", num_cpus=1).remote()
    name, namespace, reconstructed, resources, actor_id, me = tasuki.get(actor.context.remote(),
                                                                         timeout=GET_TIMEOUT_S)
    assert (name, namespace, reconstructed, resources) == ("introspective", "default", False, {"CPU": 1.0})
    assert actor_id == actor._actor_id.hex() and me == actor
    assert tasuki.get(me.ping.remote(), timeout=GET_TIMEOUT_S) == "pong"
    tasuki.kill(actor)


def test_the_runtime_context_in_the_driver():
    c = tasuki.get_runtime_context()
    assert c.get_assigned_resources() == {} and c.namespace == "default" and c.get_task_id() is None
    with pytest.raises(RuntimeError, match="inside an actor"):
        c.current_actor


# --- 7. ObjectRef and objects ------------------------------------------------------------------------
@tasuki.remote(max_retries=0)
def sleep_then(value, seconds):
    time.sleep(seconds)
    return value


def test_as_future_and_await():
    future = tasuki.put(5).as_future()
    assert isinstance(future, concurrent.futures.Future) and future.result(GET_TIMEOUT_S) == 5
    with pytest.raises(ZeroDivisionError):
        divide_by_zero.remote().as_future().result(GET_TIMEOUT_S)


def test_wait_on_an_empty_list_returns_two_empty_lists():
    assert tasuki.wait([]) == ([], [])
    assert tasuki.wait([], num_returns=3, timeout=0) == ([], [])


def test_get_of_a_list_fails_at_the_first_error_without_waiting_for_the_others():
    slow = sleep_then.remote(1, 60)
    started = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        tasuki.get([slow, divide_by_zero.remote()], timeout=GET_TIMEOUT_S)
    assert time.monotonic() - started < 30
    tasuki.cancel(slow, force=True)


def test_get_of_a_list_fails_at_once_when_a_member_failed_before_the_get():
    """The failed member is first and already here (an actor answers directly): before, get waited
    for the slow one, since only members still missing were looked at."""
    failed = divide_by_zero.remote()
    tasuki.wait([failed], timeout=GET_TIMEOUT_S)
    slow = sleep_then.remote(1, 60)
    started = time.monotonic()
    with pytest.raises(ZeroDivisionError):
        tasuki.get([failed, slow], timeout=GET_TIMEOUT_S)
    assert time.monotonic() - started < 30
    tasuki.cancel(slow, force=True)


# --- 8. the worker's environment ---------------------------------------------------------------------
@tasuki.remote
def thread_variables():
    return {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def test_thread_variables_follow_num_cpus_as_ray_sets_omp_num_threads():
    assert set(tasuki.get(thread_variables.remote(), timeout=GET_TIMEOUT_S).values()) == {"1"}
    assert set(tasuki.get(thread_variables.options(num_cpus=2).remote(), timeout=GET_TIMEOUT_S).values()) == {"2"}
    assert set(tasuki.get(thread_variables.options(num_cpus=0.5).remote(), timeout=GET_TIMEOUT_S).values()) == {"1"}


def test_thread_variables_the_user_set_are_kept():
    done = run_driver("""
        import os
        os.environ["OMP_NUM_THREADS"] = "3"
        import tasuki
        tasuki.init(num_cpus=2)
        @tasuki.remote(num_cpus=2)
        def f():
            return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")
        print("RESULT", tasuki.get(f.remote(), timeout=60))
    """)
    assert "RESULT ('3', '2')" in done.stdout, done.stdout + done.stderr


def test_log_to_driver_false_keeps_the_tasks_output_away():
    done = run_driver("""
        import tasuki
        tasuki.init(num_cpus=1, log_to_driver=False)
        @tasuki.remote
        def f():
            print("FROM THE TASK", flush=True)
            return 1
        print("RESULT", tasuki.get(f.remote(), timeout=60))
    """)
    assert "RESULT 1" in done.stdout and "FROM THE TASK" not in done.stdout + done.stderr, done.stdout + done.stderr


# --- 9. init's context ---------------------------------------------------------------------------------
def test_init_returns_a_context_manager_whose_address_a_second_driver_joins():
    done = run_driver("""
        import subprocess, sys, textwrap
        import tasuki
        with tasuki.init(num_cpus=1) as context:
            info = context.address_info
            assert {"address", "node_ip_address", "session_dir", "node_id"} <= set(info), info
            assert context["address"] == info["address"]
            assert info["node_id"] == tasuki.nodes()[0]["NodeID"], (info, tasuki.nodes())   # the driver's node
            other = textwrap.dedent('''
                import sys, tasuki
                tasuki.init(address=sys.argv[1])
                print("SECOND", tasuki.get(tasuki.put(41)) + 1, tasuki.cluster_resources()["CPU"])
            ''')
            second = subprocess.run([sys.executable, "-c", other, info["address"]], capture_output=True,
                                    text=True, timeout=60)
            print(second.stdout, second.stderr)
        print("INITIALIZED", tasuki.is_initialized())
    """)
    assert "SECOND 42 1.0" in done.stdout and "INITIALIZED False" in done.stdout, done.stdout + done.stderr


def test_a_misspelt_init_argument_is_named_and_a_type_and_runtime_error():
    for error in (TypeError, RuntimeError):          # Python's kind of error, and the one Ray's init raises
        with pytest.raises(error, match=r"unexpected keyword arguments \['logginglevel'\]; its arguments are "
                                        r"\[.*'logging_level'"):
            tasuki.init("localhost", logginglevel="<- missing underscore")


# --- 13. BaseException and shutdown --------------------------------------------------------------------
class MyBaseException(BaseException):
    pass


@tasuki.remote(max_retries=0)
def raise_base_exception():
    raise MyBaseException("abc")


@tasuki.remote(max_retries=0)
def raise_keyboard_interrupt():
    raise KeyboardInterrupt("abc")


@tasuki.remote(max_retries=0)
def raise_system_exit():
    raise SystemExit("abc")


def test_base_exceptions_in_a_task_come_back_as_ray_has_them():
    with pytest.raises(MyBaseException) as info:
        tasuki.get(raise_base_exception.remote(), timeout=GET_TIMEOUT_S)
    assert isinstance(info.value, RayTaskError)
    with pytest.raises(TaskCancelledError):
        tasuki.get(raise_keyboard_interrupt.remote(), timeout=GET_TIMEOUT_S)
    with pytest.raises(WorkerCrashedError, match="called sys.exit"):
        tasuki.get(raise_system_exit.remote(), timeout=GET_TIMEOUT_S)
    assert tasuki.get(one_argument.remote(1), timeout=GET_TIMEOUT_S) == 1      # the workers still serve


def test_refs_after_shutdown_fail_at_once():
    done = run_driver("""
        import tasuki
        from tasuki.exceptions import ObjectLostError
        from tasuki.exceptions import ActorDiedError
        tasuki.init(num_cpus=1)
        ref = tasuki.put(1)
        actor = tasuki.remote(type("A", (), {"ping": lambda self: 1})).remote()
        tasuki.get(actor.ping.remote())
        tasuki.shutdown()
        for call in (lambda: tasuki.get(ref), lambda: tasuki.wait([ref]), lambda: actor.ping.remote()):
            try:
                call()
            except (ObjectLostError, ActorDiedError) as e:
                print("LOST", "shut down" in str(e))
        print("INITIALIZED", tasuki.is_initialized())      # an old handle's call starts no new cluster
    """)
    assert done.stdout.count("LOST True") == 3 and "INITIALIZED False" in done.stdout, done.stdout + done.stderr


@tasuki.remote
def nested_depth(n):
    return 0 if n == 0 else tasuki.get(nested_depth.remote(n - 1)) + 1


def test_nested_tasks_on_one_cpu_finish_as_a_blocked_task_lends_its_cpu():
    done = run_driver("""
        import tasuki
        tasuki.init(num_cpus=1)
        @tasuki.remote
        def leaf(i):
            return i
        @tasuki.remote
        def middle(i):
            return tasuki.get(leaf.remote(i))
        @tasuki.remote
        def top():
            return sum(tasuki.get([middle.remote(i) for i in range(1000)]))
        print("SUM", tasuki.get(top.remote(), timeout=240))
    """, timeout=300)
    assert f"SUM {sum(range(1000))}" in done.stdout, done.stdout + done.stderr


# --- 12. ray.util ----------------------------------------------------------------------------------------
@tasuki.remote
class Doubler:
    def double(self, v):
        return 2 * v

    def pair(self, v):
        return v, -v

    pair = tasuki.method(num_returns=2)(pair)


def test_actor_pool_map_submits_eagerly_and_push_of_a_member_raises():
    from tasuki.util import ActorPool
    actors = [Doubler.remote() for _ in range(2)]
    pool = ActorPool(actors)
    results = pool.map(lambda a, v: a.double.remote(v), range(4))
    assert pool.has_next()                         # submitted at the call, before any iteration
    assert list(results) == [0, 2, 4, 6]
    pool.submit(lambda a, v: a.pair.remote(v), 5)  # a method with num_returns=2: a list of refs
    assert pool.get_next(timeout=GET_TIMEOUT_S) == [5, -5]
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(actors[0])
    for actor in actors:
        tasuki.kill(actor)


def test_queue_async_methods_and_util_helpers():
    import asyncio
    from tasuki.util import Queue, get_node_ip_address, list_named_actors
    queue = Queue()

    async def roundtrip():
        await queue.put_async(1)
        await queue.put_async(2, block=False)
        return [await queue.get_async(), await queue.get_async(timeout=GET_TIMEOUT_S)]
    assert asyncio.run(roundtrip()) == [1, 2]
    queue.shutdown()
    named = Doubler.options(name="util-named").remote()
    tasuki.get(named.double.remote(1), timeout=GET_TIMEOUT_S)
    assert "util-named" in list_named_actors()
    assert {"name": "util-named", "namespace": "default"} in list_named_actors(all_namespaces=True)
    tasuki.kill(named)
    assert get_node_ip_address() == "127.0.0.1"


def test_remote_needs_a_target_or_options():
    with pytest.raises(TypeError, match=r"write @remote without parentheses, or @remote\(num_cpus=1\)"):
        @tasuki.remote()
        class Actor:
            pass
    with pytest.raises(TypeError, match="takes a function or class, or only keyword options"):
        tasuki.remote(1, 2)


@tasuki.remote
class Reprd:
    def __init__(self, fail=False):
        if fail:
            raise ValueError("bad start")

    def f(self):
        raise ValueError(7)

    def __repr__(self):
        return "Reprd<7>"


def test_tracebacks_have_rays_header_for_tasks_actor_calls_and_constructors():
    """Ray's `ray::A.f() (pid=..., ip=..., actor_id=..., repr=...)` header, naming tasuki and the node,
    then the user's frames (no "Traceback" line, no tasuki frames), the cause last."""
    actor = Reprd.remote()
    with pytest.raises(ValueError) as info:
        tasuki.get(actor.f.remote(), timeout=60)
    header, *rest = str(info.value).splitlines()
    labels = dict(label.split("=", 1) for label in header.split(" (", 1)[1].rstrip(")").split(", "))
    assert header.startswith("tasuki::Reprd.f() (pid=")
    assert set(labels) == {"pid", "ip", "node", "actor_id", "repr"} and labels["repr"] == "Reprd<7>"
    assert labels["actor_id"] == actor._actor_id.hex()
    assert rest[0].startswith('  File "') and rest[-1] == "ValueError: 7" and "Traceback" not in str(info.value)
    broken = Reprd.remote(fail=True)
    with pytest.raises(tasuki.exceptions.ActorDiedError) as info:
        tasuki.get(broken.f.remote(), timeout=60)
    assert "an error was raised in its creation task, tasuki::Reprd.__init__() (pid=" in str(info.value)
    assert str(info.value).rstrip().endswith("ValueError: bad start")


@tasuki.remote(max_retries=0)
def raise_group():
    raise ExceptionGroup("several", [ValueError("v"), TypeError("t")])


@tasuki.remote
class GroupRaiser:
    def f(self):
        raise_group._function()


def test_an_exception_group_comes_back_as_one_for_except_star():
    """Ray: a task's ExceptionGroup is both RayTaskError and an ExceptionGroup with the same exceptions,
    so `except*` splits it."""
    for ref in (raise_group.remote(), GroupRaiser.remote().f.remote()):
        with pytest.raises(ExceptionGroup) as info:
            tasuki.get(ref, timeout=60)
        error = info.value
        assert isinstance(error, TaskError) and error.message == "several"
        assert [type(e) for e in error.exceptions] == [ValueError, TypeError]
        assert "tasuki::" in str(error) and "ValueError: v" in error.traceback_str
        caught = []
        try:
            raise error
        except* ValueError as group:
            caught.append([str(e) for e in group.exceptions])
        except* TypeError as group:
            caught.append([str(e) for e in group.exceptions])
        assert caught == [["v"], ["t"]]


def test_generator_tasks_are_defined_but_refused_when_called():
    """A module that defines a Ray generator task (num_returns="streaming") still imports and its other
    functions work; calling the generator says tasuki does not run them and what to do instead."""
    @tasuki.remote(num_returns="streaming")
    def numbers():
        yield 1

    @tasuki.remote(num_cpus=0)
    class Streamer:
        @tasuki.method(num_returns="dynamic")
        def items(self):
            yield 1

        def plain(self):
            return "plain"

    with pytest.raises(NotImplementedError, match=r"numbers is declared num_returns='streaming', a Ray generator "
                                                  r"task, which tasuki does not run: return a list"):
        numbers.remote()
    streamer = Streamer.remote()
    with pytest.raises(NotImplementedError, match="Streamer.items is declared num_returns='dynamic'"):
        streamer.items.remote()
    assert tasuki.get(streamer.plain.remote(), timeout=60) == "plain"
    with pytest.raises(ValueError, match="num_returns must be an integer of 0 or more .* got 'many'"):
        numbers.options(num_returns="many")


@tasuki.remote
def hold_briefly():
    return tasuki.get_runtime_context().get_assigned_resources()


def test_fractional_resources_come_back_exactly():
    """Ray counts resources in steps of 0.0001: after tasks of odd fractions, available_resources()
    is what it was, not 1.9999999999999998."""
    before = tasuki.available_resources()
    fractions = [0.1234, 0.5678, 0.9999, 0.3333, 0.1, 0.2]
    held = tasuki.get([hold_briefly.options(num_cpus=f).remote() for f in fractions], timeout=GET_TIMEOUT_S)
    assert [h["CPU"] for h in held] == fractions
    conftest.wait_until(lambda: tasuki.available_resources() == before, 30, f"available resources back to {before}")


def _positional(a, b=1): ...
def _star(*args): ...
def _head_and_star(a, /, b, *rest): ...
def _keyword_only(a, *, b): ...


@pytest.mark.parametrize("fn", [_positional, _star, _head_and_star, _keyword_only])
@pytest.mark.parametrize("args", [(), (1,), (1, 2), (1, 2, 3), tuple(range(40))])
def test_the_counting_shortcut_agrees_with_signature_bind(fn, args):
    """The check at .remote() counts positional arguments where it can: it must accept and refuse
    exactly what Signature.bind does."""
    check = tasuki.api._call_check(fn, fn.__name__)
    try:
        inspect.signature(fn).bind(*args)
        binds = True
    except TypeError:
        binds = False
    if binds:
        check(args, {})
    else:
        with pytest.raises(TypeError, match="does not match"):
            check(args, {})

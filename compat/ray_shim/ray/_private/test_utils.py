"""Stand-ins, written for tasuki, for the few helpers of Ray's test utilities that public-API tests
use. Behaviour follows what those tests expect of them; everything else in Ray's module is a
placeholder that fails when used (and so marks a test of Ray internals).

STAND_INS (below) is the list the out-of-scope classifier (compat/ray_scope.py) treats as allowed.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time

import tasuki

from .. import _missing

STAND_INS = ("wait_for_condition", "async_wait_for_condition", "SignalActor", "Semaphore",
             "run_string_as_driver", "run_string_as_driver_nonblocking", "client_test_enabled",
             "wait_for_pid_to_exit")
__all__ = list(STAND_INS)


def wait_for_condition(condition_predictor, timeout: float = 10, retry_interval_ms: float = 100,
                       raise_exceptions: bool = False, **kwargs) -> None:
    """Poll `condition_predictor(**kwargs)` until it returns truthy; RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if condition_predictor(**kwargs):
                return
        except Exception as e:
            if raise_exceptions:
                raise
            last_error = e
        time.sleep(retry_interval_ms / 1000.0)
    detail = f"; its last error: {type(last_error).__name__}: {last_error}" if last_error else ""
    raise RuntimeError(f"the condition {getattr(condition_predictor, '__name__', condition_predictor)} "
                       f"was not met within {timeout} s{detail}")


async def async_wait_for_condition(condition_predictor, timeout: float = 10, retry_interval_ms: float = 100,
                                   **kwargs) -> None:
    """The asyncio form of wait_for_condition; the predictor may be a coroutine function."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = condition_predictor(**kwargs)
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
        except Exception as e:
            last_error = e
        await asyncio.sleep(retry_interval_ms / 1000.0)
    detail = f"; its last error: {type(last_error).__name__}: {last_error}" if last_error else ""
    raise RuntimeError(f"the condition was not met within {timeout} s{detail}")


class _Signal:
    """An actor tests block on: `wait` returns once someone called `send`."""

    def __init__(self):
        self._event = asyncio.Event()
        self._waiters = 0

    async def send(self, clear: bool = False):
        self._event.set()
        if clear:
            self._event.clear()

    async def wait(self, should_wait: bool = True):
        if should_wait:
            self._waiters += 1
            try:
                await self._event.wait()
            finally:
                self._waiters -= 1

    async def cur_num_waiters(self) -> int:
        return self._waiters


class _Semaphore:
    def __init__(self, value: int = 1):
        self._sema = asyncio.Semaphore(value)

    async def acquire(self):
        await self._sema.acquire()

    async def release(self):
        self._sema.release()

    async def locked(self) -> bool:
        return self._sema.locked()


_Signal.__name__ = _Signal.__qualname__ = "SignalActor"
_Semaphore.__name__ = _Semaphore.__qualname__ = "Semaphore"
SignalActor = tasuki.remote(num_cpus=0)(_Signal)
Semaphore = tasuki.remote(num_cpus=0)(_Semaphore)


def run_string_as_driver(driver_script: str, env: dict | None = None, encode: str = "utf-8") -> str:
    """Run `driver_script` in a new Python process; its stdout and stderr together, or
    CalledProcessError (with that output) when it exits non-zero."""
    proc = subprocess.run([sys.executable, "-"], input=driver_script.encode(encode), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.decode(encode, errors="replace")
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, output)
    return output


def run_string_as_driver_nonblocking(driver_script: str, env: dict | None = None) -> subprocess.Popen:
    """Start `driver_script` in a new Python process and return it (stdout and stderr piped)."""
    proc = subprocess.Popen([sys.executable, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdin.write(driver_script.encode())
    proc.stdin.close()
    return proc


def client_test_enabled() -> bool:
    """Ray Client is not claimed: the client variants of tests never run."""
    return False


def wait_for_pid_to_exit(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"process {pid} was still alive after {timeout} s")


def __getattr__(name: str):
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return _missing.placeholder(f"{__name__}.{name}")

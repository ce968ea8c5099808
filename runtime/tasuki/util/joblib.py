"""A joblib backend: scikit-learn's `n_jobs` parallelism on the cluster.

    from tasuki.util.joblib import register_tasuki
    register_tasuki()
    with joblib.parallel_backend("tasuki"):
        GridSearchCV(RandomForestClassifier(), grid, n_jobs=-1).fit(X, y)

The backend is joblib's multiprocessing backend (its auto-batching of small calls included) over
a `tasuki.Pool`: `n_jobs=-1` means every CPU of the cluster. The pool outlives one `Parallel`
call by IDLE_S seconds, so a search that calls Parallel again (and again) finds its processes
warm, with scikit-learn imported; then it ends and gives its CPUs back. `register_ray()` registers
the same backend as "ray", for code written for Ray.
"""
from __future__ import annotations

import threading

from joblib import register_parallel_backend
from joblib._parallel_backends import MultiprocessingBackend

from .. import api
from ..pool import Pool

__all__ = ["TasukiBackend", "register_tasuki", "register_ray"]

IDLE_S = 10.0
_lock = threading.Lock()
_idle_pool: Pool | None = None        # the last pool, kept warm for the next Parallel call
_idle_timer: threading.Timer | None = None


def _take_pool(processes: int) -> Pool:
    """The warm pool when it has the right size and its cluster is still the one we use; else a new one."""
    global _idle_pool
    with _lock:
        pool, _idle_pool = _idle_pool, None
        if _idle_timer is not None:
            _idle_timer.cancel()
    if pool is not None and pool._state == "RUN" and pool._processes == processes and pool._client is api._get_client():
        return pool
    if pool is not None:
        pool.terminate()
    return Pool(processes=processes)


def _give_back(pool: Pool) -> None:
    """Keep `pool` warm for IDLE_S seconds, then terminate it."""
    global _idle_pool, _idle_timer
    with _lock:
        previous, _idle_pool = _idle_pool, pool
        if _idle_timer is not None:
            _idle_timer.cancel()
        _idle_timer = threading.Timer(IDLE_S, _expire, args=(pool,))
        _idle_timer.daemon = True
        _idle_timer.start()
    if previous is not None and previous is not pool:
        previous.terminate()


def _expire(pool: Pool) -> None:
    global _idle_pool
    with _lock:
        if _idle_pool is not pool:
            return
        _idle_pool = None
    pool.terminate()


class TasukiBackend(MultiprocessingBackend):
    """joblib's multiprocessing backend with a tasuki Pool spanning the cluster."""

    supports_timeout = True

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        cpus = max(1, int(api.cluster_resources().get("CPU", 1)))      # initialises tasuki if needed
        if n_jobs is None:
            return cpus
        return max(cpus + 1 + n_jobs, 1) if n_jobs < 0 else n_jobs

    def configure(self, n_jobs: int = 1, parallel=None, prefer=None, require=None, **_pool_kwargs) -> int:
        n_jobs = self.effective_n_jobs(n_jobs)
        self._pool = _take_pool(n_jobs)
        self.parallel = parallel
        return n_jobs

    def terminate(self) -> None:
        """The Parallel call is over: keep the pool warm a while for the next one."""
        if self._pool is not None:
            _give_back(self._pool)
            self._pool = None

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: stop its pool for good (its processes may be mid-task), start afresh."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self.parallel._backend_kwargs)


def register_tasuki() -> None:
    """Make `joblib.parallel_backend("tasuki")` run joblib's work on the tasuki cluster."""
    register_parallel_backend("tasuki", TasukiBackend)


def register_ray() -> None:
    """The same backend under Ray's name: `joblib.parallel_backend("ray")` keeps working."""
    register_parallel_backend("ray", TasukiBackend)

"""The joblib backend on a real cluster: scikit-learn's parallel work, joblib's own API, the warm pool."""
from __future__ import annotations

import os

import joblib
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV

import tasuki
from tasuki.util import joblib as tasuki_joblib
from conftest import wait_until


@pytest.fixture(scope="module", autouse=True)
def cluster():
    if tasuki.is_initialized():
        tasuki.shutdown()
    tasuki.init(num_cpus=2)
    tasuki_joblib.register_tasuki()
    tasuki_joblib.register_ray()
    yield
    if tasuki_joblib._idle_pool is not None:
        tasuki_joblib._expire(tasuki_joblib._idle_pool)
    tasuki.shutdown()


def test_grid_search_finds_the_same_best_parameters_as_a_serial_run():
    X, y = load_breast_cancer(return_X_y=True)
    grid = {"n_estimators": [5, 20], "max_depth": [2, None]}
    with joblib.parallel_backend("tasuki"):
        parallel = GridSearchCV(RandomForestClassifier(random_state=0), grid, cv=3, n_jobs=-1).fit(X, y)
    serial = GridSearchCV(RandomForestClassifier(random_state=0), grid, cv=3, n_jobs=1).fit(X, y)
    assert parallel.best_params_ == serial.best_params_
    assert parallel.best_score_ == pytest.approx(serial.best_score_)
    assert list(parallel.cv_results_["mean_test_score"]) == pytest.approx(list(serial.cv_results_["mean_test_score"]))


def test_parallel_runs_lambdas_in_cluster_processes_under_both_names():
    for name in ("tasuki", "ray"):
        with joblib.parallel_backend(name, n_jobs=-1):
            out = joblib.Parallel()(joblib.delayed(lambda x: (x * x, os.getpid()))(i) for i in range(20))
        assert [v for v, _ in out] == [i * i for i in range(20)]
        assert os.getpid() not in {pid for _, pid in out}


def test_n_jobs_minus_one_means_every_cpu_of_the_cluster():
    backend = tasuki_joblib.TasukiBackend()
    assert backend.effective_n_jobs(-1) == 2
    assert backend.effective_n_jobs(None) == 2
    assert backend.effective_n_jobs(1) == 1
    with pytest.raises(ValueError):
        backend.effective_n_jobs(0)


def test_an_exception_in_a_job_reaches_the_caller_with_its_type():
    def boom(i):
        if i == 3:
            raise KeyError(f"item {i}")
        return i
    with pytest.raises(KeyError, match="item 3"):
        joblib.Parallel(n_jobs=2, backend="tasuki")(joblib.delayed(boom)(i) for i in range(6))
    assert joblib.Parallel(n_jobs=2, backend="tasuki")(joblib.delayed(boom)(i) for i in range(3)) == [0, 1, 2]


def test_the_pool_stays_warm_between_calls_then_gives_its_cpus_back(monkeypatch):
    pids = lambda: set(joblib.Parallel(n_jobs=2, backend="tasuki")(   # noqa: E731
        joblib.delayed(os.getpid)() for _ in range(8)))
    first = pids()
    assert first & pids()                                  # the same processes served the second call
    monkeypatch.setattr(tasuki_joblib, "IDLE_S", 0.1)
    pids()                                                 # given back with the short idle time
    wait_until(lambda: tasuki.available_resources().get("CPU") == 2, what="the idle pool's CPUs returned")
    assert tasuki_joblib._idle_pool is None

"""tasuki.tune: search spaces, best-trial choice and the progress table as plain data; searches on a
real embedded cluster (2 CPUs and one custom "slot") for reports, failures, concurrency and results.

Concurrency is measured by the trials themselves: each leaves marker files in a shared directory and
counts the markers of trials running beside it. Their waits end on a condition or a deadline; the
deadline is the window in which a broken limit would show, never a synchronisation.
"""
from __future__ import annotations

import functools
import io
import math
import os
import time

import pytest

import tasuki
from conftest import embedded_cluster, user_module
from tasuki import tune
from tasuki.exceptions import WorkerCrashedError
from tasuki.tune import Result, _best, _format_table, _format_trial, _Progress, generate_variants


@pytest.fixture(scope="module")
def cluster():
    with embedded_cluster(num_cpus=2, resources={"slot": 1}) as tasuki_:
        yield tasuki_


# --- trainables (shipped by value to the workers) -------------------------------------------------
def quadratic(config):
    return {"loss": (config["x"] - 3) ** 2, "x_seen": config["x"]}


def shifted(config, shift):
    return {"loss": (config["x"] - shift) ** 2}


class Objective:
    """A trainable that is a callable object, with a method that is one too. The class itself is
    not a trainable (Ray's class trainables subclass tune.Trainable, which tasuki does not run)."""

    def __init__(self, shift):
        self.shift = shift

    def __call__(self, config):
        return shifted(config, self.shift)

    def loss(self, config):
        return self(config)


def reports_then_returns(config):
    tune.report(a=1, b=1)
    tune.report({"a": config["a"]})               # Ray's dict form; the last report counts
    return {"c": 3}


def fails_on_bad(config):
    if config["kind"] == "bad":
        tune.report(score=1000)                    # an errored trial's metrics never make it the best
        raise ValueError(f"bad config {config}")
    return {"score": config["score"]}


def occupy(config):
    """Count trials running beside this one: `active/` holds a marker per running trial, `arrived/` one per
    trial ever started. Ends once `want` trials have arrived, or after `hold_s`."""
    active, arrived = (os.path.join(config["dir"], d) for d in ("active", "arrived"))
    me = f"{os.getpid()}-{time.time_ns()}"
    open(os.path.join(active, me), "w").close()
    open(os.path.join(arrived, me), "w").close()
    deadline, peak = time.time() + config["hold_s"], 0
    while True:
        met = len(os.listdir(arrived)) >= config["want"]
        peak = max(peak, len(os.listdir(active)))
        if met or time.time() > deadline:
            break
        time.sleep(0.01)
    os.remove(os.path.join(active, me))
    return {"peak": peak, "met": met}


@pytest.fixture
def markers(tmp_path):
    for d in ("active", "arrived"):
        (tmp_path / d).mkdir()
    return str(tmp_path)


# --- search spaces (pure) ------------------------------------------------------------------------
def test_grid_axes_are_crossed_in_rays_order_and_constants_kept():
    space = {"b": tune.grid_search(["x", "y", "z"]), "a": tune.grid_search([1, 2]), "const": [5, "k"]}
    configs = generate_variants(space)       # as Ray: axes sorted by key, the first changing fastest
    assert configs == [{"b": b, "a": a, "const": [5, "k"]} for b in ("x", "y", "z") for a in (1, 2)]
    assert generate_variants({"a": {"grid_search": [1, 2]}}) == [{"a": 1}, {"a": 2}]    # Ray's literal form


def test_sampled_axes_stay_in_bounds_and_repeat_with_the_seed():
    space = {"u": tune.uniform(-1, 1), "lr": tune.loguniform(1e-4, 1e-1), "n": tune.randint(3, 6),
             "act": tune.choice(["relu", "tanh"])}
    configs = generate_variants(space, num_samples=200, seed=7)
    assert len(configs) == 200
    assert all(-1 <= c["u"] <= 1 and 1e-4 <= c["lr"] <= 1e-1 for c in configs)
    assert {c["n"] for c in configs} == {3, 4, 5}                   # upper bound excluded, as in Ray
    assert {c["act"] for c in configs} == {"relu", "tanh"}
    logs = [math.log10(c["lr"]) for c in configs]
    assert sum(lg < -2.5 for lg in logs) > 60                       # uniform in log space, not in value
    assert generate_variants(space, num_samples=200, seed=7) == configs
    assert generate_variants(space, num_samples=200, seed=8) != configs
    assert generate_variants(space, num_samples=3) == generate_variants(space, num_samples=3)   # default seed


def test_nested_dicts_and_lists_are_resolved():
    space = {"opt": {"lr": tune.grid_search([0.1, 0.01]), "betas": [tune.uniform(0.8, 0.9), 0.999]},
             "layers": [{"units": tune.choice([16, 32])}]}
    configs = generate_variants(space)
    assert [c["opt"]["lr"] for c in configs] == [0.1, 0.01]
    for c in configs:
        assert 0.8 <= c["opt"]["betas"][0] <= 0.9 and c["opt"]["betas"][1] == 0.999
        assert c["layers"][0]["units"] in (16, 32)


def test_num_samples_repeats_the_grid_with_fresh_samples():
    configs = generate_variants({"g": tune.grid_search(["a", "b", "c"]), "x": tune.uniform(0, 1)}, num_samples=2)
    assert [c["g"] for c in configs] == ["a", "b", "c", "a", "b", "c"]
    assert len({c["x"] for c in configs}) == 6


@pytest.mark.parametrize("make, message", [
    (lambda: tune.loguniform(0, 1), "0 < lower"),
    (lambda: tune.loguniform(-1, 1), "0 < lower"),
    (lambda: tune.uniform(2, 1), "lower <= upper"),
    (lambda: tune.randint(3, 3), "lower < upper"),
    (lambda: tune.choice([]), "at least one"),
    (lambda: tune.grid_search([]), "at least one"),
])
def test_bad_search_spaces_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mode": "best"}, ValueError, "mode must be 'max' or 'min'"),
    ({"num_samples": 0}, ValueError, "num_samples"),
    ({"max_concurrent_trials": -1}, ValueError, "max_concurrent_trials"),
    ({"resources_per_trial": {"cpu": -1}}, ValueError, "num_cpus"),
    ({"resources_per_trial": 2}, TypeError, "resources_per_trial"),
    ({"scheduler": object()}, TypeError, "scheduler"),
    ({"config": [1, 2]}, TypeError, "must be a dict"),
    ({"run_or_experiment": 42}, TypeError, "function of the config"),
    ({"run_or_experiment": dict}, TypeError, "function of the config"),
    ({"run_or_experiment": Objective}, TypeError, "function of the config"),
    ({"run_or_experiment": tasuki.remote(type("Model", (), {}))}, TypeError, "function of the config"),
])
def test_bad_arguments_are_refused_before_any_trial_runs(kwargs, error, message):
    kwargs = {"run_or_experiment": quadratic, "config": {"x": 1}, **kwargs}
    connected = tasuki.is_initialized()
    with pytest.raises(error, match=message):
        tune.run(**kwargs)
    assert tasuki.is_initialized() == connected        # refused before put() could start a cluster


def test_report_outside_a_trial_says_where_to_call_it():
    with pytest.raises(RuntimeError, match="outside a trial"):
        tune.report(loss=1)


# --- best trial and formatting (pure) --------------------------------------------------------------
def trial(i: int, status: str = "TERMINATED", **metrics) -> Result:
    return Result(f"t_{i:05d}", {"i": i, "opt": {"lr": 0.5}}, metrics, status, time_s=1.25)


def test_best_is_the_max_or_min_of_finished_trials():
    trials = [trial(0, score=1.0), trial(1, score=5.0), trial(2, score=3.0), trial(3, "ERROR", score=99.0),
              trial(4, score=float("nan")), trial(5, "RUNNING", score=50.0)]
    assert _best(trials, "score", "max").trial_id == "t_00001"
    assert _best(trials, "score", "min").trial_id == "t_00000"
    assert _best(trials, None, None).trial_id == "t_00001"          # the only metric; mode defaults to max
    assert _best([trial(0, "ERROR", score=1)], "score", "max") is None


def test_best_needs_a_metric_every_finished_trial_could_report():
    trials = [trial(0, loss=1.0, acc=0.5), trial(1, loss=2.0, acc=0.7)]
    with pytest.raises(ValueError, match=r"metric=.*\['acc', 'loss'\]"):
        _best(trials, None, "max")
    with pytest.raises(ValueError, match=r"'accuracy'.*\['acc', 'loss'\]"):
        _best(trials, "accuracy", "max")
    assert _best(trials, None, "max", strict=False) is None


def test_format_trial_and_table():
    errored = trial(3, "ERROR")
    errored.error = ValueError("boom")
    assert (_format_trial(trial(1, score=0.123456), "score")
            == "t_00001 TERMINATED 1.25s  score=0.1235  [i=1, opt/lr=0.5]")
    assert _format_trial(errored, "score") == "t_00003 ERROR 1.25s  error: ValueError: boom  [i=3, opt/lr=0.5]"
    trials = [trial(0, score=2.0), trial(1, "RUNNING"), trial(2, "PENDING"), errored, trial(4, score=7.0)]
    done = [trials[4], trials[0], errored]                          # in the order they finished
    lines = _format_table(trials, done, "score", "max", elapsed_s=12.34).splitlines()
    assert lines[0] == "tune: 5 trials, 12.3s: 1 running, 1 pending, 2 done, 1 errored"
    assert lines[1] == "best score=7 (t_00004) [i=4, opt/lr=0.5]"
    assert [line.split()[0] for line in lines[2:]] == ["t_00001", "t_00003", "t_00000", "t_00004"]
    assert len(_format_table(trials, done, "score", "min", 0, rows=2).splitlines()) == 4
    assert _format_table([trial(0, "RUNNING")], [], None, None, 0).splitlines()[1] == "best: none yet"
    assert _format_table(trials, done, "acc", None, 0).splitlines()[1] == "best: no finished trial reported 'acc'"
    two_metrics = [trial(0, loss=1.0, acc=0.5)]
    assert _format_table(two_metrics, two_metrics, None, None, 0).splitlines()[1] == \
        "best: pass metric=... to rank trials"


# --- searches on the cluster ----------------------------------------------------------------------
def test_run_grid_and_sampled_space(cluster, capsys):
    space = {"x": tune.grid_search([1, 3, 5]), "noise": tune.uniform(0, 1)}
    analysis = tune.run(quadratic, config=space, num_samples=2, metric="loss", mode="min", seed=3)
    results = analysis.results
    assert [r["config"] for r in results] == generate_variants(space, num_samples=2, seed=3)
    assert [r["trial_id"] for r in results] == [f"quadratic_{i:05d}" for i in range(6)]
    for r in results:
        assert r["status"] == "TERMINATED" and r["error"] is None and r["time_s"] >= 0
        assert r["metrics"] == {"loss": (r["config"]["x"] - 3) ** 2, "x_seen": r["config"]["x"]}
    assert analysis.best_config["x"] == 3 and analysis.best_result["loss"] == 0
    assert analysis.get_best_config(mode="max")["x"] in (1, 5)
    assert analysis.get_best_trial("x_seen", "max")["config"]["x"] == 5
    # not a terminal: a line per finished trial, then the summary
    out = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in out[:6]) == [r["trial_id"] for r in results]
    assert all(" TERMINATED " in line and "loss=" in line for line in out[:6])
    assert out[6].startswith("tune: 6 trials") and "6 done, 0 errored" in out[6]
    assert out[7].startswith("best loss=0 (") and "x=3" in out[7]


def test_report_last_wins_and_returned_dict_is_merged(cluster):
    analysis = tune.run(reports_then_returns, config={"a": tune.grid_search([7, 8])}, verbose=0)
    assert [r["metrics"] for r in analysis.results] == [{"a": 7, "c": 3}, {"a": 8, "c": 3}]


def test_a_remote_function_is_run_as_the_trainable(cluster):
    grid = tune.Tuner(tasuki.remote(quadratic), param_space={"x": 4}).fit()
    assert grid[0].metrics == {"loss": 1, "x_seen": 4} and grid[0].trial_id == "quadratic_00000"


TRAINABLES = {          # kind: (trainable, the name its trials take)
    "partial": (functools.partial(shifted, shift=3), "shifted"),
    "callable object": (Objective(3), "Objective"),
    "bound method": (Objective(3).loss, "loss"),
    "lambda": (lambda config: shifted(config, 3), "<lambda>"),
}


@pytest.mark.parametrize("kind", TRAINABLES)
def test_every_kind_of_callable_is_a_trainable(cluster, kind):
    trainable, name = TRAINABLES[kind]
    analysis = tune.run(trainable, config={"x": tune.grid_search([1, 3])}, verbose=0)
    assert [(r["trial_id"], r["metrics"]) for r in analysis.results] == [(f"{name}_00000", {"loss": 4}),
                                                                        (f"{name}_00001", {"loss": 0})]
    grid = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"x": 5}).fit()
    assert (grid[0].trial_id, grid[0].metrics) == (f"{name}_00000", {"loss": 4})


def test_a_partial_of_a_function_the_workers_cannot_import(cluster, tmp_path):
    source = "def shifted(config, shift):\n    return {'loss': (config['x'] - shift) ** 2}\n"
    with user_module(tmp_path, source) as module:
        grid = tune.Tuner(functools.partial(module.shifted, shift=1), param_space={"x": 4}).fit()
    assert grid.num_errors == 0 and grid[0].metrics == {"loss": 9}


def test_report_with_a_non_dict_errors_the_trial(cluster):
    def bad_report(config):
        tune.report(5)
    grid = tune.Tuner(bad_report).fit()
    assert grid.num_errors == 1 and isinstance(grid[0].error, TypeError)
    assert "takes a dict or keyword arguments" in grid[0].traceback


def test_failing_trial_is_recorded_and_tune_error_comes_after_all_trials(cluster, capsys):
    space = {"kind": tune.grid_search(["ok", "bad", "ok"]), "score": tune.randint(0, 100)}
    with pytest.raises(tune.TuneError) as info:
        tune.run(fails_on_bad, config=space, metric="score")
    err = info.value
    assert "1 of 3 trials errored: ['fails_on_bad_00001']" in str(err)
    assert "ValueError: bad config" in str(err) and "in fails_on_bad" in str(err)
    statuses = [r["status"] for r in err.analysis.results]
    assert statuses == ["TERMINATED", "ERROR", "TERMINATED"]       # the others ran to the end first
    assert "ERROR" in capsys.readouterr().out

    analysis = tune.run(fails_on_bad, config=space, metric="score", raise_on_failed_trial=False, verbose=0)
    bad = analysis.results[1]
    assert bad["status"] == "ERROR" and bad["metrics"] == {"score": 1000}
    assert "Traceback" in bad["error"] and "ValueError: bad config" in bad["error"]
    assert analysis.best_config["kind"] == "ok"                     # score 1000 of the errored trial ignored
    finished = [r for r in analysis.results if r["status"] == "TERMINATED"]
    assert analysis.best_result["score"] == max(r["config"]["score"] for r in finished)


def test_max_concurrent_trials_bounds_the_trials_in_flight(cluster, markers):
    config = {"dir": markers, "want": 2, "hold_s": 0.5, "i": tune.grid_search([0, 1, 2])}
    analysis = tune.run(occupy, config=config, max_concurrent_trials=1, verbose=0)
    # the first trial waited alone for its whole hold; the later ones found its marker in arrived/
    assert [r["metrics"] for r in analysis.results] == [{"peak": 1, "met": False}] + [{"peak": 1, "met": True}] * 2


def test_without_a_limit_trials_run_side_by_side(cluster, markers):
    config = {"dir": markers, "want": 2, "hold_s": 30, "i": tune.grid_search([0, 1])}
    analysis = tune.run(occupy, config=config, verbose=0)
    assert all(r["metrics"]["met"] for r in analysis.results)          # the first was still running
    assert max(r["metrics"]["peak"] for r in analysis.results) == 2


def test_resources_per_trial_become_task_resources(cluster, markers):
    config = {"dir": markers, "want": 2, "hold_s": 0.5, "i": tune.grid_search([0, 1])}
    analysis = tune.run(occupy, config=config, resources_per_trial={"cpu": 2, "gpu": 0}, verbose=0)
    assert [r["metrics"]["peak"] for r in analysis.results] == [1, 1]    # 2 CPUs each: one at a time


def test_tuner_with_resources_and_the_result_grid(cluster, markers):
    config = {"dir": markers, "want": 2, "hold_s": 0.5, "i": tune.grid_search([0, 1]), "score": tune.uniform(0, 1)}
    tuner = tune.Tuner(tune.with_resources(occupy, {"cpu": 1, "slot": 1}), param_space=config,
                       tune_config=tune.TuneConfig(metric="score", mode="min", num_samples=1, seed=1))
    grid = tuner.fit()
    assert len(grid) == 2 and [r.config["i"] for r in grid] == [0, 1] and grid[1] is list(grid)[1]
    assert [r.metrics["peak"] for r in grid] == [1, 1]                 # one "slot" in the cluster
    assert grid.num_terminated == 2 and grid.num_errors == 0 and grid.errors == []
    assert all(r.error is None for r in grid) and grid[0].time_s >= 0.5    # the first held alone


def test_result_grid_best_result_and_errors(cluster):
    space = {"kind": tune.grid_search(["ok", "bad", "ok", "ok"]), "score": tune.grid_search([1, 4])}
    grid = tune.Tuner(fails_on_bad, param_space=space,
                      tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=2)).fit()
    assert len(grid) == 8 and grid.num_errors == 2 and grid.num_terminated == 6
    assert all(isinstance(e, ValueError) for e in grid.errors)
    best = grid.get_best_result()
    assert best.config["score"] == 4 and best.metrics == {"score": 4} and best.status == "TERMINATED"
    assert grid.get_best_result(mode="min").metrics == {"score": 1}
    with pytest.raises(ValueError, match="'nope'"):
        grid.get_best_result(metric="nope")


def test_dataframes_flatten_config_and_metrics(cluster):
    pd = pytest.importorskip("pandas")
    space = {"x": tune.grid_search([2, 3]), "opt": {"lr": tune.loguniform(1e-3, 1e-1)}}
    analysis = tune.run(quadratic, config=space, verbose=0)
    df = analysis.dataframe()
    assert isinstance(df, pd.DataFrame) and len(df) == 2
    assert list(df.columns) == ["trial_id", "status", "loss", "x_seen", "time_s", "config/x", "config/opt/lr"]
    assert list(df["config/x"]) == [2, 3] and list(df["loss"]) == [1, 0]
    grid = tune.Tuner(quadratic, param_space=space).fit()
    assert list(grid.get_dataframe().columns) == list(df.columns)


def test_live_table_on_a_terminal(cluster, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    tune.run(quadratic, config={"x": tune.grid_search([1, 3])}, metric="loss", mode="min")
    out = screen.getvalue()
    assert out.count("\x1b[J") >= 1                                   # drawn in place
    last = out.rsplit("\x1b[J", 1)[1].splitlines()
    assert last[0].startswith("tune: 2 trials") and "2 done, 0 errored" in last[0]
    assert last[1].startswith("best loss=0 (quadratic_00001)")

    progress = _Progress(verbose=1, metric="loss", mode="min")      # redraws go back over the last table
    trials = [trial(0, "RUNNING"), trial(1, loss=2.0)]
    for _ in range(2):
        screen.seek(0), screen.truncate()
        progress.update(trials, trials[1:], force=True)
    assert screen.getvalue().startswith("\x1b[4F\x1b[Jtune: 2 trials")   # up 4 lines, clear


def test_verbose_0_prints_nothing(cluster, capsys):
    tune.run(quadratic, config={"x": 1}, verbose=0)
    assert capsys.readouterr().out == ""


# Last in the module: the node does not replace the dead worker, and later 1-CPU tasks then queue
# behind the one left instead of running side by side (a scheduler issue, not tune's).
def test_a_trial_whose_worker_dies_is_an_error_and_the_others_finish(cluster):
    def crash_on_bad(config):
        if config["kind"] == "bad":
            os._exit(3)
        return {"score": 1}
    grid = tune.Tuner(crash_on_bad, param_space={"kind": tune.grid_search(["bad", "ok"])}).fit()
    assert [r.status for r in grid] == ["ERROR", "TERMINATED"]
    assert isinstance(grid[0].error, WorkerCrashedError) and "exited with code 3" in grid[0].traceback

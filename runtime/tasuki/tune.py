"""Hyperparameter search, as in `ray.tune`: grid and random search, each trial a task.

    from tasuki import tune

    def train(config):
        tune.report(loss=(config["x"] - 3) ** 2)          # or: return {"loss": ...}

    analysis = tune.run(train, config={"x": tune.uniform(0, 10), "act": tune.grid_search(["relu", "tanh"])},
                        num_samples=4, metric="loss", mode="min")
    analysis.best_config

How a search runs (driver side, one loop in `_run_trials`):

    param space ──generate_variants(seed)──► configs ──► Result(PENDING) per trial
        ──_trial_task.remote(trainable, config)──► worker: _run_trial sets the report holder,
        calls the trainable, catches its exception ──► {metrics, error, traceback, time_s}
        ──wait()──► Result(TERMINATED | ERROR) ──► ExperimentAnalysis / ResultGrid

`tune.run` and `Tuner.fit` only differ in how they take arguments and present the results. There is
no scheduler, search algorithm, stopper or checkpointing: a trial runs its trainable to the end.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import pickle
import random
import shutil
import sys
import time
import traceback
from typing import Any, Callable, Iterator, Sequence

import cloudpickle

from .actor import ActorClass
from .api import RemoteFunction, _callable_name, _pickle_by_value_if_local, cancel, get, put, remote, wait
from .exceptions import TasukiError

__all__ = ["grid_search", "choice", "uniform", "loguniform", "randint", "report", "with_resources", "run",
           "Tuner", "TuneConfig", "ExperimentAnalysis", "ResultGrid", "Result", "TuneError"]

REDRAW_S = 0.25              # the live table is redrawn at most this often, in seconds
TABLE_ROWS = 10              # trials shown in the live table
_RAY_RUN_KWARGS_IGNORED = {"local_dir", "storage_path", "log_to_file", "reuse_actors", "sync_config"}


class TuneError(TasukiError):
    """Some trials of `tune.run` raised; `.analysis` holds every trial's result all the same."""

    def __init__(self, message: str, analysis: "ExperimentAnalysis | None" = None) -> None:
        super().__init__(message)
        self.analysis = analysis


# --- search spaces ------------------------------------------------------------------------------
class Domain:
    """A sampled axis of a search space: a fresh value per trial, drawn by `sample(rng)`."""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Categorical(Domain):
    categories: tuple

    def sample(self, rng: random.Random) -> Any:
        return self.categories[rng.randrange(len(self.categories))]


@dataclasses.dataclass(frozen=True)
class Float(Domain):
    lower: float
    upper: float
    log_base: float | None = None        # None: uniform; a base: uniform in log space

    def sample(self, rng: random.Random) -> float:
        if self.log_base is None:
            return rng.uniform(self.lower, self.upper)
        b = self.log_base
        value = b ** rng.uniform(math.log(self.lower, b), math.log(self.upper, b))
        return min(max(value, self.lower), self.upper)       # b ** log_b(x) may round just outside


@dataclasses.dataclass(frozen=True)
class Integer(Domain):
    lower: int
    upper: int                           # exclusive, as in Ray

    def sample(self, rng: random.Random) -> int:
        return rng.randrange(self.lower, self.upper)


def grid_search(values: Sequence) -> dict:
    """Try every one of `values` (grid axes are crossed with each other); Ray's `{"grid_search": [...]}`."""
    values = list(values)
    if not values:
        raise ValueError("grid_search() needs at least one value")
    return {"grid_search": values}


def choice(categories: Sequence) -> Categorical:
    """Draw one of `categories` uniformly per trial."""
    categories = tuple(categories)
    if not categories:
        raise ValueError("choice() needs at least one category")
    return Categorical(categories)


def uniform(lower: float, upper: float) -> Float:
    """Draw a float uniformly in [lower, upper]."""
    if not lower <= upper:
        raise ValueError(f"uniform() needs lower <= upper, got lower={lower!r}, upper={upper!r}")
    return Float(float(lower), float(upper))


def loguniform(lower: float, upper: float, base: float = 10) -> Float:
    """Draw a float in [lower, upper] uniformly in log space (learning rates: loguniform(1e-4, 1e-1))."""
    if not 0 < lower <= upper:
        raise ValueError(f"loguniform() needs 0 < lower <= upper, got lower={lower!r}, upper={upper!r}")
    if not base > 0 or base == 1:
        raise ValueError(f"loguniform() needs a base > 0 other than 1, got {base!r}")
    return Float(float(lower), float(upper), float(base))


def randint(lower: int, upper: int) -> Integer:
    """Draw an integer in [lower, upper) (upper excluded, as in Ray)."""
    if not (isinstance(lower, int) and isinstance(upper, int) and lower < upper):
        raise ValueError(f"randint() needs integers lower < upper, got lower={lower!r}, upper={upper!r}")
    return Integer(lower, upper)


def _is_grid(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value


def _axes(space: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, grid dict or Domain) for every search axis in a nested config of dicts and lists."""
    if _is_grid(space) or isinstance(space, Domain):
        yield path, space
    elif isinstance(space, dict):
        for key, value in space.items():
            yield from _axes(value, path + (key,))
    elif isinstance(space, (list, tuple)):
        for i, value in enumerate(space):
            yield from _axes(value, path + (i,))


def _substitute(space: Any, values: dict, path: tuple = ()) -> Any:
    """A copy of `space` with the axis at each path in `values` replaced by its value."""
    if path in values:
        return values[path]
    if isinstance(space, dict):
        return {k: _substitute(v, values, path + (k,)) for k, v in space.items()}
    if isinstance(space, (list, tuple)):
        return type(space)(_substitute(v, values, path + (i,)) for i, v in enumerate(space))
    return space


def generate_variants(space: dict, num_samples: int = 1, seed: int | None = 0) -> list[dict]:
    """The trial configs of `space`, as Ray's basic variant generator makes them.

    The grid (every grid_search axis crossed, the first in sorted key order changing fastest) is
    repeated `num_samples` times; each trial draws fresh values for the sampled axes from
    `random.Random(seed)`, so the same seed gives the same configs.
    """
    if not isinstance(space, dict):
        raise TypeError(f"the config / param_space must be a dict, got {type(space).__name__}")
    rng = random.Random(seed)
    axes = list(_axes(space))
    grid = sorted(((p, a["grid_search"]) for p, a in axes if _is_grid(a)),
                  key=lambda item: [(isinstance(k, str), k) for k in item[0]])
    domains = [(p, a) for p, a in axes if isinstance(a, Domain)]
    configs = []
    for _ in range(num_samples):
        for combo in itertools.product(*[values for _, values in reversed(grid)]):
            values = {path: v for (path, _), v in zip(reversed(grid), combo)}
            values.update((path, domain.sample(rng)) for path, domain in domains)
            configs.append(_substitute(space, values))
    return configs


# --- inside a trial (worker side) ---------------------------------------------------------------
_session: dict | None = None         # the running trial's last report; set only while a trainable runs


def report(metrics: dict | None = None, **kwargs: Any) -> None:
    """Record metrics of the running trial: `tune.report(loss=0.1)` or `tune.report({"loss": 0.1})`.

    Call it as often as you like; the last report counts (a dict the trainable returns is merged over it).
    """
    if _session is None:
        raise RuntimeError("tune.report() was called outside a trial: call it inside a trainable run by "
                           "tune.run() or Tuner.fit()")
    if metrics is not None and not isinstance(metrics, dict):
        raise TypeError(f"tune.report() takes a dict or keyword arguments, got {type(metrics).__name__}")
    _session["metrics"] = {**(metrics or {}), **kwargs}


def _run_trial(trainable: Callable, config: dict) -> dict:
    """The trial task: run the trainable; its exception comes back as data, so the trial is ERROR."""
    global _session
    _session = {"metrics": {}}
    started = time.perf_counter()
    try:
        returned = trainable(config)
        if returned is not None and not isinstance(returned, dict):
            raise TypeError(f"the trainable returned a {type(returned).__name__}: return a dict of metrics "
                            f"(or None, and call tune.report(...))")
        return {"metrics": {**_session["metrics"], **(returned or {})}, "error": None, "traceback": "",
                "time_s": time.perf_counter() - started}
    except Exception as exc:
        return {"metrics": _session["metrics"], "error": _picklable(exc), "traceback": traceback.format_exc(),
                "time_s": time.perf_counter() - started}
    finally:
        _session = None


def _picklable(exc: Exception) -> Exception:
    try:
        return pickle.loads(cloudpickle.dumps(exc))
    except Exception:        # an exception that cannot travel: keep its type name and message
        return RuntimeError(f"{type(exc).__name__}: {exc}")


_trial_task = remote(max_retries=0, retry_exceptions=False)(_run_trial)


# --- running trials (driver side) ---------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """One trial: its config, its last metrics, and how it ended (status TERMINATED or ERROR)."""
    trial_id: str
    config: dict
    metrics: dict = dataclasses.field(default_factory=dict)
    status: str = "PENDING"              # PENDING, RUNNING (submitted), TERMINATED, ERROR
    error: Exception | None = None
    traceback: str = ""
    time_s: float = 0.0

    def as_dict(self) -> dict:
        """The trial as `ExperimentAnalysis.results` lists it (`error` is the traceback text)."""
        return {"trial_id": self.trial_id, "config": self.config, "metrics": self.metrics, "status": self.status,
                "error": self.traceback or None, "time_s": self.time_s}


def with_resources(trainable: Callable, resources: dict) -> Callable:
    """The trainable with the resources each of its trials needs, e.g. {"cpu": 2, "gpu": 1} (for Tuner)."""
    _trial_task.options(**_task_options(resources))      # bad resources fail here, not when the search starts
    inner = _check_trainable(trainable)

    def trainable_with_resources(config):
        return inner(config)
    trainable_with_resources.__name__ = _callable_name(inner)
    trainable_with_resources._tune_resources = resources
    trainable_with_resources._tune_inner = inner
    return trainable_with_resources


def _task_options(resources: dict | None) -> dict:
    """Ray's resources_per_trial ({"cpu": 1, "gpu": 0, "custom": n}) as task options."""
    if resources is None:
        return {"num_cpus": 1}
    if not isinstance(resources, dict):
        raise TypeError(f"resources_per_trial must be a dict like {{'cpu': 1, 'gpu': 0}}, got {resources!r}")
    options: dict = {"num_cpus": 1, "resources": {}}
    for key, value in resources.items():
        if key.lower() in ("cpu", "gpu"):
            options[f"num_{key.lower()}s"] = value
        elif key == "custom_resources":
            options["resources"].update(value)
        elif key == "memory":            # bytes, a resource like num_cpus
            options["memory"] = value
        else:
            options["resources"][key] = value
    return options                       # checked by _trial_task.options()


def _check_trainable(trainable: Any) -> Callable:
    if isinstance(trainable, RemoteFunction):           # @tasuki.remote on the trainable: run it as is
        trainable = trainable.__wrapped__
    if isinstance(trainable, (type, ActorClass)) or not callable(trainable):
        raise TypeError(f"the trainable must be a function of the config, got {trainable!r} "
                        f"(tasuki.tune runs function trainables only)")
    return trainable


def _ship(trainable: Callable) -> None:
    """Functions from the user's modules travel by value, so workers need not import them."""
    for fn in (trainable, getattr(trainable, "_tune_inner", None)):       # a partial's function too
        if fn is not None:
            _pickle_by_value_if_local(fn)


def _check_mode(mode: str | None) -> None:
    if mode not in (None, "max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")


def _check_settings(num_samples: int, mode: str | None, max_concurrent: int | None) -> None:
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer of 1 or more, got {num_samples!r}")
    _check_mode(mode)
    if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 0):
        raise ValueError(f"max_concurrent_trials must be None or an integer >= 0 (0: no limit), got {max_concurrent!r}")


def _run_trials(trainable: Any, space: dict, *, num_samples: int, seed: int | None, resources: dict | None,
                max_concurrent: int | None, metric: str | None, mode: str | None, verbose: int,
                name: str | None) -> list[Result]:
    """Run every trial of the search, at most `max_concurrent` at a time; the one loop behind run and fit."""
    _check_settings(num_samples, mode, max_concurrent)
    trainable = _check_trainable(trainable)
    resources = getattr(trainable, "_tune_resources", None) if resources is None else resources
    name = name or _callable_name(trainable)
    task = _trial_task.options(name=f"tune:{name}", **_task_options(resources))
    trials = [Result(f"{name}_{i:05d}", config) for i, config in enumerate(generate_variants(space, num_samples, seed))]
    _ship(trainable)
    trainable_ref = put(trainable)        # pickled once, not once per trial
    queue, in_flight, done = collections.deque(trials), {}, []
    limit = max_concurrent or len(trials)
    progress = _Progress(verbose, metric, mode)
    try:
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                trial = queue.popleft()
                trial.status = "RUNNING"
                in_flight[task.remote(trainable_ref, trial.config)] = (trial, time.perf_counter())
            ready, _ = wait(list(in_flight), num_returns=1, timeout=progress.timeout)
            for ref in ready:
                trial, submitted = in_flight.pop(ref)
                _record(trial, ref, time.perf_counter() - submitted)
                done.append(trial)
                progress.finished(trial)
            progress.update(trials, done)
    except BaseException:
        for ref in in_flight:             # Ctrl-C: stop the trials still running
            cancel(ref, force=True)
        raise
    progress.close(trials, done)
    return trials


def _record(trial: Result, ref, elapsed_s: float) -> None:
    try:
        out = get(ref)
    except Exception as exc:              # the task itself failed: its worker died, or a result did not pickle
        trial.status, trial.error, trial.time_s = "ERROR", exc, elapsed_s
        trial.traceback = getattr(exc, "traceback_str", "") or "".join(traceback.format_exception(exc))
        return
    trial.metrics, trial.time_s = out["metrics"], out["time_s"]
    trial.error, trial.traceback = out["error"], out["traceback"]
    trial.status = "ERROR" if out["error"] is not None else "TERMINATED"


# --- choosing the best trial --------------------------------------------------------------------
def _infer_metric(trials: Sequence[Result], metric: str | None) -> str | None:
    """`metric`, else the only metric the finished trials report, else None."""
    if metric is not None:
        return metric
    keys = {k for t in trials if t.status == "TERMINATED" for k in t.metrics}
    return keys.pop() if len(keys) == 1 else None


def _best(trials: Sequence[Result], metric: str | None, mode: str | None, strict: bool = True) -> Result | None:
    """The finished trial with the max (or min) `metric`; None when no finished trial has a number for it.

    ValueError when no metric is named and the trials report several, or none reported `metric`
    (`strict=False`: None instead).
    """
    _check_mode(mode)
    finished = [t for t in trials if t.status == "TERMINATED"]
    if not finished:
        return None
    keys = sorted({k for t in finished for k in t.metrics})
    chosen = _infer_metric(trials, metric)
    if chosen is None or chosen not in keys:
        if not strict:
            return None
        if chosen is None:
            raise ValueError(f"name the metric to rank trials by (metric=...); the trials reported {keys}")
        raise ValueError(f"no finished trial reported the metric {chosen!r}; they reported {keys}")
    scored = [t for t in finished if _is_number(t.metrics.get(chosen))]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda t: t.metrics[chosen])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _dataframe(trials: Sequence[Result]):
    try:
        import pandas
    except ImportError:
        raise ImportError("dataframe() needs pandas: pip install pandas") from None
    return pandas.DataFrame([{"trial_id": t.trial_id, "status": t.status, **_flatten(t.metrics),
                              "time_s": t.time_s, **_flatten(t.config, "config/")} for t in trials])


# --- the two entry points -----------------------------------------------------------------------
class ExperimentAnalysis:
    """What `tune.run` returns: every trial's result, and the best one by `metric` and `mode`."""

    def __init__(self, trials: list[Result], metric: str | None, mode: str | None) -> None:
        self.trials, self.default_metric, self.default_mode = trials, metric, mode

    @property
    def results(self) -> list[dict]:
        """One dict per trial: trial_id, config, metrics, status, error (traceback or None), time_s."""
        return [t.as_dict() for t in self.trials]

    def get_best_trial(self, metric: str | None = None, mode: str | None = None) -> dict | None:
        best = _best(self.trials, metric or self.default_metric, mode or self.default_mode)
        return best.as_dict() if best else None

    def get_best_config(self, metric: str | None = None, mode: str | None = None) -> dict | None:
        best = self.get_best_trial(metric, mode)
        return best["config"] if best else None

    @property
    def best_config(self) -> dict | None:
        return self.get_best_config()

    @property
    def best_result(self) -> dict | None:
        """The best trial's metrics."""
        best = self.get_best_trial()
        return best["metrics"] if best else None

    def dataframe(self, metric: str | None = None, mode: str | None = None):
        """A pandas DataFrame, a row per trial: metrics, time_s and `config/<key>` columns.

        (`metric` and `mode` are accepted for Ray's signature: every trial has one row, its last report.)
        """
        return _dataframe(self.trials)


class ResultGrid:
    """What `Tuner.fit()` returns: a sequence of `Result`, one per trial, errored ones included."""

    def __init__(self, trials: list[Result], metric: str | None, mode: str | None) -> None:
        self._trials, self._metric, self._mode = trials, metric, mode

    def __len__(self) -> int:
        return len(self._trials)

    def __getitem__(self, i: int) -> Result:
        return self._trials[i]

    def __iter__(self) -> Iterator[Result]:
        return iter(self._trials)

    def get_best_result(self, metric: str | None = None, mode: str | None = None) -> Result:
        best = _best(self._trials, metric or self._metric, mode or self._mode)
        if best is None:
            raise RuntimeError(f"no best trial: none of the {len(self)} trials finished with a number for "
                               f"metric {_infer_metric(self._trials, metric or self._metric)!r}")
        return best

    @property
    def errors(self) -> list[Exception]:
        return [t.error for t in self._trials if t.status == "ERROR"]

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    @property
    def num_terminated(self) -> int:
        return sum(t.status == "TERMINATED" for t in self._trials)

    def get_dataframe(self):
        """A pandas DataFrame, a row per trial: metrics, time_s and `config/<key>` columns."""
        return _dataframe(self._trials)


def run(run_or_experiment: Callable, config: dict | None = None, num_samples: int = 1, metric: str | None = None,
        mode: str = "max", resources_per_trial: dict | None = None, max_concurrent_trials: int | None = None,
        *, seed: int | None = 0, verbose: int = 1, raise_on_failed_trial: bool = True, name: str | None = None,
        **kwargs: Any) -> ExperimentAnalysis:
    """Run a trial of `run_or_experiment(config)` per variant of `config`; returns an ExperimentAnalysis.

    Raises TuneError once every trial has finished if any raised (unless raise_on_failed_trial=False).
    """
    unknown = set(kwargs) - _RAY_RUN_KWARGS_IGNORED
    if unknown:
        raise TypeError(f"tune.run() got unexpected keyword arguments {sorted(unknown)}; tasuki.tune runs grid "
                        f"and random search only (no schedulers, search algorithms, stoppers or checkpoints)")
    trials = _run_trials(run_or_experiment, config or {}, num_samples=num_samples, seed=seed,
                         resources=resources_per_trial, max_concurrent=max_concurrent_trials, metric=metric,
                         mode=mode, verbose=verbose, name=name)
    analysis = ExperimentAnalysis(trials, metric, mode)
    failed = [t for t in trials if t.status == "ERROR"]
    if failed and raise_on_failed_trial:
        raise TuneError(f"{len(failed)} of {len(trials)} trials errored: {[t.trial_id for t in failed]} "
                        f"(their results are in this error's .analysis). First error, of {failed[0].trial_id}:\n"
                        f"{failed[0].traceback}", analysis)
    return analysis


@dataclasses.dataclass
class TuneConfig:
    """How `Tuner` searches: the metric to rank by, `mode` "max" or "min", samples, concurrency, seed."""
    metric: str | None = None
    mode: str | None = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    seed: int | None = 0


class Tuner:
    """Ray's newer entry point: `Tuner(trainable, param_space=..., tune_config=TuneConfig(...)).fit()`.

    Set per-trial resources with `tune.with_resources(trainable, {"cpu": 2})`.
    """

    def __init__(self, trainable: Callable, *, param_space: dict | None = None, tune_config: TuneConfig | None = None,
                 run_config: Any = None) -> None:
        self.trainable = _check_trainable(trainable)
        self.param_space = param_space or {}
        self.tune_config = tune_config or TuneConfig()
        c = self.tune_config
        _check_settings(c.num_samples, c.mode, c.max_concurrent_trials)
        self.verbose = getattr(run_config, "verbose", None)
        self.name = getattr(run_config, "name", None)

    def fit(self) -> ResultGrid:
        """Run every trial; errored trials are in the grid (`.errors`), nothing is raised for them."""
        c = self.tune_config
        trials = _run_trials(self.trainable, self.param_space, num_samples=c.num_samples, seed=c.seed,
                             resources=None, max_concurrent=c.max_concurrent_trials, metric=c.metric,
                             mode=c.mode, verbose=1 if self.verbose is None else self.verbose, name=self.name)
        return ResultGrid(trials, c.metric, c.mode)


# --- progress -----------------------------------------------------------------------------------
def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _format_config(config: dict) -> str:
    return ", ".join(f"{k}={_format_value(v)}" for k, v in _flatten(config).items())


def _format_trial(trial: Result, metric: str | None) -> str:
    """One line about one trial: id, status, the metric (or the error), time, config."""
    if trial.status == "ERROR":
        outcome = f"error: {type(trial.error).__name__}: {trial.error}"
    elif metric is not None and metric in trial.metrics:
        outcome = f"{metric}={_format_value(trial.metrics[metric])}"
    else:
        outcome = ", ".join(f"{k}={_format_value(v)}" for k, v in trial.metrics.items())
    timing = f" {trial.time_s:.2f}s" if trial.status in ("TERMINATED", "ERROR") else ""
    return "  ".join(filter(None, [f"{trial.trial_id} {trial.status}{timing}", outcome,
                                   f"[{_format_config(trial.config)}]"]))


def _format_table(trials: Sequence[Result], done: Sequence[Result], metric: str | None, mode: str | None,
                  elapsed_s: float, rows: int = TABLE_ROWS) -> str:
    """The live table: counts by status, the best trial so far, the running and latest finished trials."""
    counts = collections.Counter(t.status for t in trials)
    metric = _infer_metric(trials, metric)
    best = _best(trials, metric, mode, strict=False)
    if best is not None:
        best_line = (f"best {metric}={_format_value(best.metrics[metric])} ({best.trial_id}) "
                     f"[{_format_config(best.config)}]")
    elif not counts["TERMINATED"]:
        best_line = "best: none yet"
    else:
        best_line = f"best: no finished trial reported {metric!r}" if metric else "best: pass metric=... to rank trials"
    lines = [f"tune: {len(trials)} trials, {elapsed_s:.1f}s: {counts['RUNNING']} running, {counts['PENDING']} pending, "
             f"{counts['TERMINATED']} done, {counts['ERROR']} errored", best_line]
    shown = [t for t in trials if t.status == "RUNNING"][:rows]
    shown += list(reversed(done))[:rows - len(shown)]
    return "\n".join(lines + ["  " + _format_trial(t, metric) for t in shown])


class _Progress:
    """Trial progress on stdout: a live table on a terminal, else a line per finished trial and a summary."""

    def __init__(self, verbose: int, metric: str | None, mode: str | None) -> None:
        self.stream = sys.stdout
        self.verbose, self.metric, self.mode = verbose, metric, mode
        self.live = verbose > 0 and self.stream.isatty()
        self.timeout = REDRAW_S if self.live else None      # how long the loop may wait between redraws
        self.started = self.drawn_at = time.monotonic()
        self.height = 0                                     # lines of the table on screen now

    def finished(self, trial: Result) -> None:
        if self.verbose > 0 and not self.live:
            print(_format_trial(trial, self.metric), file=self.stream, flush=True)

    def update(self, trials: Sequence[Result], done: Sequence[Result], force: bool = False) -> None:
        now = time.monotonic()
        if not self.live or (not force and now - self.drawn_at < REDRAW_S):
            return
        width = shutil.get_terminal_size().columns - 1     # a wrapped line would break the redraw
        table = "\n".join(line[:width] for line in
                          _format_table(trials, done, self.metric, self.mode, now - self.started).splitlines())
        up = f"\x1b[{self.height}F" if self.height else ""  # back to the table's first line, then clear below
        self.stream.write(f"{up}\x1b[J{table}\n")
        self.stream.flush()
        self.height, self.drawn_at = table.count("\n") + 1, now

    def close(self, trials: Sequence[Result], done: Sequence[Result]) -> None:
        if self.live:
            self.update(trials, done, force=True)
        elif self.verbose > 0:
            table = _format_table(trials, done, self.metric, self.mode, time.monotonic() - self.started, rows=0)
            print(table, file=self.stream, flush=True)

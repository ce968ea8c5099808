"""A RandomForest hyperparameter search on scikit-learn's breast cancer data: with tune, then with joblib.

Two ways the seed articles search: `tasuki.tune` runs each trial (a 3-fold cross-validation of one
configuration) as a task; scikit-learn's own GridSearchCV runs its fits on the cluster through the
"tasuki" joblib backend, with `n_jobs=-1` meaning every CPU of the cluster.

    python examples/random_forest_tune.py                  # 50 trials, then a 12-point grid
    python examples/random_forest_tune.py --trials 8       # quicker

Expected output (accuracies to 4 places; both searches are seeded, so the lines repeat run to run):
    tune: 50 trials in ... s, best accuracy 0.9701 with {'n_estimators': 21, 'max_depth': None, 'min_samples_leaf': 1, 'max_features': 'log2'}
    joblib GridSearchCV: 12 candidates in ... s, best accuracy 0.9719 with {'max_depth': None, 'max_features': 'log2', 'n_estimators': 20}
    same best parameters as a serial GridSearchCV: True
"""
from __future__ import annotations

import argparse
import time

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, cross_val_score

import tasuki
from tasuki import tune
from tasuki.util.joblib import register_tasuki

X, y = load_breast_cancer(return_X_y=True)


def train_forest(config: dict) -> dict:
    """One trial: the mean 3-fold accuracy of a forest with this configuration."""
    model = RandomForestClassifier(random_state=0, **config)
    return {"accuracy": float(cross_val_score(model, X, y, cv=3).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="tune trials (sampled configurations)")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()
    tasuki.init(address=args.address)

    space = {"n_estimators": tune.randint(10, 100), "max_depth": tune.choice([3, 5, 8, None]),
             "min_samples_leaf": tune.randint(1, 5), "max_features": tune.choice(["sqrt", "log2"])}
    started = time.time()
    analysis = tune.run(train_forest, config=space, num_samples=args.trials, metric="accuracy", mode="max",
                        seed=42, verbose=0)
    print(f"tune: {len(analysis.results)} trials in {time.time() - started:.1f} s, best accuracy "
          f"{analysis.best_result['accuracy']:.4f} with {analysis.best_config}")

    register_tasuki()
    grid = {"n_estimators": [20, 50, 100], "max_depth": [4, None], "max_features": ["sqrt", "log2"]}
    started = time.time()
    with joblib.parallel_backend("tasuki"):
        search = GridSearchCV(RandomForestClassifier(random_state=0), grid, cv=3, n_jobs=-1).fit(X, y)
    print(f"joblib GridSearchCV: {len(search.cv_results_['params'])} candidates in {time.time() - started:.1f} s, "
          f"best accuracy {search.best_score_:.4f} with {search.best_params_}")
    serial = GridSearchCV(RandomForestClassifier(random_state=0), grid, cv=3, n_jobs=1).fit(X, y)
    print(f"same best parameters as a serial GridSearchCV: {serial.best_params_ == search.best_params_}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()

"""Reference-size runs (slow: minutes; `make bench` / `pytest -m bench`): the handbook protocol end to end."""

from __future__ import annotations

from dataclasses import replace

import pytest

from apps.fraud.config import REFERENCE_SIMULATION, FraudConfig
from apps.fraud.data import simulate
from apps.fraud.lifecycle import select_models
from apps.fraud.train import prepare

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def reference_prepared():
    return prepare(simulate(REFERENCE_SIMULATION), FraudConfig().features)


def test_handbook_baselines_reproduced_on_handbook_features(reference_prepared) -> None:
    """Logistic regression and a depth-limited tree on the handbook's 15 features land near its numbers
    (logistic regression: AUC 0.868, AP 0.623, CP@100 0.297; the simulator's randomness differs from the
    handbook's, so the band is a few points)."""
    cfg = FraudConfig()
    cfg = replace(cfg, features=replace(cfg.features, extended=False))
    res = select_models(reference_prepared, cfg, kinds=("logreg",), grids={"logreg": {"C": [0.1, 1, 10, 100]}})
    t = res["logreg"].test
    assert 0.84 < t["roc_auc"] < 0.90
    assert 0.58 < t["average_precision"] < 0.68
    assert 0.27 < t["card_precision@100"] < 0.33


def test_tuned_xgboost_beats_the_handbook(reference_prepared) -> None:
    """XGBoost tuned on the validation folds (20 Optuna trials) reaches the targets on the test folds:
    AUC >= 0.87, AP >= 0.70, CP@100 >= 0.31 (handbook best: 0.869 / 0.687-0.694 / 0.303-0.305)."""
    res = select_models(reference_prepared, FraudConfig(), kinds=("xgboost",), tune_trials=20)
    t = res["xgboost"].test
    assert t["roc_auc"] >= 0.87
    assert t["average_precision"] >= 0.70
    assert t["card_precision@100"] >= 0.31


def test_default_model_reaches_the_targets_without_tuning(reference_prepared) -> None:
    """The default model (config parameters, 22 features, no tuning) on draw 0: AUC >= 0.87, AP >= 0.70,
    CP@100 >= 0.31 (measured 0.888 / 0.731 / 0.314; `bench --draws 5` gives the mean over draws)."""
    res = select_models(reference_prepared, FraudConfig(), kinds=("xgboost",))
    t = res["xgboost"].test
    assert t["roc_auc"] >= 0.87
    assert t["average_precision"] >= 0.70
    assert t["card_precision@100"] >= 0.31

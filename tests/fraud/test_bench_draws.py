"""The across-draw benchmark (``bench --draws N``) and the handbook reproduction on a small draw."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from apps.fraud import bench
from apps.fraud.config import DEMO_SIMULATION, TINY_SIMULATION, FraudConfig
from apps.fraud.data import simulate
from apps.fraud.features import feature_names
from apps.fraud.train import grid_search, prepare
from bench import report
from common.data import DataError


def test_handbook_logistic_regression_reproduced_on_a_small_draw() -> None:
    """The handbook's logistic regression (its 15 features, its C grid, selection by validation AP) on the demo
    world (seed 0, 2 folds). Measured on demo-size seeds 0-4: AUC 0.782-0.836, AP 0.534-0.577, CP@100
    0.112-0.134 (seed 0: 0.836 / 0.569 / 0.112); the band is that range widened by a few points. At the
    reference size (tests/fraud/test_bench.py, bench tier) the same code gives the handbook's 0.868 / 0.623 / 0.297
    within a few points. A broken feature (the label delay, a window) or protocol step moves it out of the band."""
    cfg = FraudConfig()
    fc = replace(cfg.features, extended=False)
    prepared = prepare(simulate(replace(DEMO_SIMULATION, seed=0)), fc)
    best = grid_search(
        prepared, "logreg", bench.HANDBOOK_LOGREG_GRID, feature_names(fc), replace(cfg.protocol, n_folds=2)
    )
    t = best.test
    assert len(feature_names(fc)) == 15
    assert 0.80 <= t["roc_auc"] <= 0.87
    assert 0.52 <= t["average_precision"] <= 0.62
    assert 0.09 <= t["card_precision@100"] <= 0.15


@pytest.fixture(scope="module")
def two_draws() -> dict:
    """Two tiny draws, every model of the across-draw bench (grids cut to one point: seconds)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(
        bench,
        "HANDBOOK_XGB_GRID",
        {**bench.HANDBOOK_XGB_GRID, "max_depth": [2], "n_estimators": [10], "learning_rate": [0.1]},
    )
    mp.setattr(bench, "HANDBOOK_LOGREG_GRID", {"C": [1]})
    cfg = FraudConfig()
    cfg = replace(cfg, protocol=replace(cfg.protocol, n_folds=2), xgb=replace(cfg.xgb, n_estimators=20))
    try:
        part, _raw = bench.evaluate_draws(cfg, [0, 1], sim=TINY_SIMULATION, groups=("amount_ratio",))
    finally:
        mp.undo()
    return part


def test_draws_report_mean_and_std_across_draws_and_folds(two_draws: dict) -> None:
    models, draws = two_draws["models"], two_draws["draws"]
    assert draws["n"] == 2 and draws["seeds"] == [0, 1]
    sizes = [d["transactions"] for d in draws["per_draw"]]
    assert sizes[0] != sizes[1]  # two different simulations, not one evaluated twice
    assert {
        "xgboost",
        "xgboost_handbook_features",
        "xgboost_handbook_features+amount_ratio",
        "handbook_xgboost_grid",
        "handbook_logreg_grid",
    } <= set(models)
    for m in models.values():
        met = m["metrics"]
        for name in ("roc_auc", "average_precision", "card_precision@100"):
            per = [d[name] for d in m["per_draw"]]
            assert met[name] == pytest.approx(np.mean(per), abs=1e-4)
            assert met[f"{name}_std"] == pytest.approx(np.std(per, ddof=1), abs=1e-4)  # across draws
            assert met[f"{name}_fold_std"] > 0  # across folds (2 folds per draw)


def test_feature_group_gain_is_paired_by_draw(two_draws: dict) -> None:
    models, gain = two_draws["models"], two_draws["feature_groups"]["amount_ratio"]
    with_group = [d["average_precision"] for d in models["xgboost_handbook_features+amount_ratio"]["per_draw"]]
    without = [d["average_precision"] for d in models["xgboost_handbook_features"]["per_draw"]]
    diffs = np.subtract(with_group, without)
    assert gain["features"] == ["amount_to_customer_avg_7d", "amount_to_customer_avg_30d"]
    assert gain["per_draw_ap_gain"] == pytest.approx(diffs, abs=2e-4)
    assert gain["ap_gain"] == pytest.approx(diffs.mean(), abs=2e-4)


def test_readme_table_shows_draws_and_the_handbook(two_draws: dict) -> None:
    res = {
        "app": "fraud",
        "dataset": "2 tiny draws",
        "protocol": "prequential",
        **two_draws,
        "published": {"handbook xgboost": bench.ANCHORS["xgboost"]},
    }
    table = report.app_table(res)
    x = two_draws["models"]["xgboost"]["metrics"]
    assert f"| xgboost | {x['roc_auc']:.3f} ± {x['roc_auc_std']:.3f} [± {x['roc_auc_fold_std']:.3f}] |" in table
    assert "| handbook xgboost (published) | 0.869 | 0.687 | 0.303 | | |" in table
    assert "std across 2 draws (seeds 0, 1)" in table


def test_draws_refuse_a_user_dataset() -> None:
    with pytest.raises(DataError, match="--draws"):
        bench.run(draws=2, dataset="transactions.csv")
    with pytest.raises(DataError, match="--draws must be >= 1"):
        bench.run(draws=0)


def test_serving_only_needs_an_earlier_result_and_says_so(tmp_path) -> None:
    with pytest.raises(DataError, match=r"none\.json does not exist: run `python -m apps.fraud bench` first"):
        bench.run_serving_only(tmp_path / "none.json")

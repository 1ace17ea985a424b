"""The fraud app on ``common.app``: its config loader and flags, and the commands with the app's own options."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from apps.fraud.__main__ import app
from apps.fraud.config import TINY_SIMULATION, FraudConfig, load_config
from apps.fraud.pipeline import APP_IMPL
from common import registry
from common.errors import ConfigError
from common.workspace import Workspace

runner = CliRunner()


def test_flags_and_file_reach_the_frozen_sections(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"xgb": {"max_depth": 6}, "features": {"customer_windows": [1, 7]}, "tune": 3}))
    cfg = load_config(path, {"xgb.learning_rate": 0.2, "protocol.n_folds": 1, "sim_size": "tiny", "seed": 5})
    assert cfg.xgb.max_depth == 6 and cfg.xgb.learning_rate == 0.2 and cfg.protocol.n_folds == 1 and cfg.tune == 3
    assert cfg.features.customer_windows == (1, 7)  # JSON lists become the section's tuples
    assert cfg.world() == replace(TINY_SIMULATION, seed=5)
    assert FraudConfig().world() == FraudConfig().simulation  # no --sim-size: the simulation section


def test_xgboost_flags_with_another_model_are_its_parameters() -> None:
    """``train --model random_forest --max-depth 8`` fits a forest of depth 8, as before the port."""
    cfg = load_config(None, {"model": "random_forest", "xgb.max_depth": 8, "xgb.n_estimators": 20})
    assert cfg.params == {"max_depth": 8, "n_estimators": 20} and cfg.xgb.max_depth == FraudConfig().xgb.max_depth


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"sim_size": "huge"}, "sim_size"),
        ({"model": "svm"}, "model"),
        ({"models": "xgboost,svm"}, "models"),
        ({"model": "logreg", "scheduler": "local"}, "scheduler"),
        ({"protocol.n_folds": 0}, "protocol.n_folds"),
        ({"xgb.depth": 3}, "depth"),
    ],
)
def test_bad_values_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(None, values)


def test_every_option_of_the_fraud_commands_is_kept() -> None:
    """The options of the commands before the port (README, bench's `serve` subprocess, #22's --workers)."""
    group = get_command(app)
    expected = {
        "train": {"--sim-size", "--model", "--n-estimators", "--max-depth", "--learning-rate", "--train-days"}
        | {"--n-folds", "--alerts-per-day", "--scheduler", "--config", "--tune", "--promote", "--seed", "--dataset"},
        "evaluate": {"--dataset", "--sim-size", "--config", "--tune", "--models", "--n-folds", "--seed"},
        "serve": {"--dataset", "--host", "--port", "--log-level", "--refresh-interval", "--workers"},
        "batch": {
            "--input",
            "--output",
            "--history",
            "--chunksize",
            "--reasons",
            "--n-reasons",
            "--ref",
            "--scheduler",
        },
        "monitor": {"--dataset", "--sim-size", "--days", "--ref", "--seed"},
        "retrain": {"--dataset", "--sim-size", "--config", "--margin", "--seed"},
        "demo": {"--dataset", "--sim-size", "--tune", "--seed"},
    }
    for name, options in expected.items():
        got = {o for p in group.commands[name].params for o in p.opts}
        assert options <= got, f"{name}: missing {sorted(options - got)}"


def test_train_another_model_then_monitor_the_simulated_world() -> None:
    args = ["--sim-size", "tiny", "--model", "random_forest", "--n-estimators", "20", "--max-depth", "5"]
    r = runner.invoke(app, ["train", *args, "--n-folds", "1", "--train-days", "14"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (
        out["version"] == "1"
        and out["dataset"] == "simulated"
        and out["params"] == {"n_estimators": 20, "max_depth": 5}
    )
    model, _ = APP_IMPL.load_model(Workspace.from_env(), "1")
    assert model.kind == "random_forest" and model.estimator[-1].max_depth == 5
    assert model.info["train_days"][1] - model.info["train_days"][0] == 13  # --train-days 14
    # monitor without --dataset: the latest --days of the simulated world, a report in the shared directories
    r = runner.invoke(app, ["monitor", "--sim-size", "tiny", "--days", "5"])
    assert r.exit_code in (0, 1), r.output
    watched = json.loads(r.stdout)
    assert (r.exit_code == 1) == bool(watched["alerts"]) and watched["version"] == "1"
    report = Path(watched["report"])
    assert report.parent.parent.name == "monitor" and report.parent.parent.parent.name == "simulated"
    assert {"drift", "drifted_features", "daily_performance", "served_alert_precision"} <= set(watched["stats"])
    assert registry.get("fraud", registry.CHAMPION).version == "1"

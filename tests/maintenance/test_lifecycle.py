"""Lifecycle: registration with the fairness tag, batch scoring, drift per operating condition with error and
coverage once failures are observed, the retrain decision, and the command line."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.maintenance.__main__ import app
from apps.maintenance.data import failure_times, simulate_fleet
from apps.maintenance.lifecycle import batch_score, monitor, recent_window, register, retrain
from common import registry, retraining
from common.data import DataError
from tests.maintenance.conftest import tiny_config


def test_register_tags_the_newest_training_failure(fleet, tiny_model) -> None:
    mv = register(tiny_model, fleet.train, metrics={"test_rmse": 1.0}, dataset="t", alias=registry.CHAMPION)
    assert mv.last_training_timestamp == float(fleet.train["timestamp"].max())
    names = {p.name for p in registry.fetch_model_dir(mv).iterdir()}
    assert {"model.json", "booster_0.json", "reference.json"} <= names
    assert {f"reference_condition_{k}.json" for k in range(tiny_model.pre.n_conditions)} <= names


def test_batch_scores_every_unit_most_urgent_first(fleet, tiny_model, tmp_path) -> None:
    fleet.test.to_csv(tmp_path / "running.csv", index=False)
    res = batch_score(tiny_model, tmp_path / "running.csv", tmp_path / "rul.parquet")
    out = pd.read_parquet(tmp_path / "rul.parquet")
    assert res["units"] == fleet.test["unit"].nunique() == len(out)
    assert out["lower"].is_monotonic_increasing and set(out.columns) >= {"unit", "cycle", "rul", "lower", "upper"}


def test_monitor_finds_sensor_drift_in_one_condition_and_measures_observed_failures(
    fleet, tiny_model, tmp_path
) -> None:
    mv = register(tiny_model, fleet.train, metrics={}, dataset="t", alias=registry.CHAMPION)
    model_dir = registry.fetch_model_dir(mv)
    recent = simulate_fleet(12, seed=21).assign(failed=1)  # same machines, failures observed
    quiet = monitor(tiny_model, model_dir, recent, tmp_path / "quiet")
    assert not any("operating condition" in a for a in quiet.alerts)
    assert quiet.stats["observed_failed_units"] == 12 and 0 <= quiet.stats["observed_coverage"] <= 1
    assert quiet.stats["observed_rmse"] > 0
    shifted = recent.copy()
    cond = tiny_model.pre.conditions(shifted)
    shifted.loc[cond == 1, "sensor_3"] *= 1.05
    loud = monitor(tiny_model, model_dir, shifted, tmp_path / "loud")
    assert any("condition c1" in a and "sensor_3" in a for a in loud.alerts), loud.alerts
    assert loud.stats["drift_by_condition"] == {"c1": ["sensor_3"]}
    assert loud.exit_code == 1 and (tmp_path / "loud" / "drift.md").exists()


def test_recent_window_is_the_latest_failures() -> None:
    df = simulate_fleet(10, seed=1)
    before, window, start = recent_window(df, 3)
    times = failure_times(df)
    assert set(window["unit"]) == set(times.nlargest(3).index) and start == times.nlargest(3).min()
    assert (failure_times(before) < start).all()
    with pytest.raises(DataError, match="retraining needs more than 9"):
        recent_window(df, 9)


def test_retrain_promotes_only_a_winner_on_recent_failures(fleet, tiny_model) -> None:
    cfg = tiny_config()
    register(tiny_model, fleet.train, metrics={}, dataset="t", alias=registry.CHAMPION)
    new = simulate_fleet(8, seed=30, shift=0.5, unit_prefix="new-", start=int(fleet.train["timestamp"].max()) + 1)
    histories = pd.concat([fleet.train, new], ignore_index=True)
    decision = retrain(histories, cfg, dataset="t+new")
    assert decision.champion_version == "1" and decision.challenger_version == "2"
    promoted, _ = retraining.decide(decision.champion_score, decision.challenger_score, higher_is_better=False)
    assert decision.promoted == promoted
    assert registry.version_of("maintenance", registry.CHAMPION) == ("2" if promoted else "1")
    # a champion that has seen the window is never compared there: refused, nothing trained or promoted
    champion_before = registry.version_of("maintenance", registry.CHAMPION)
    _, _, start = recent_window(histories, cfg.window_units)
    seen = register(tiny_model, histories, metrics={}, dataset="all", alias=registry.CHAMPION)
    refused = retrain(histories, cfg, dataset="t+new")
    assert not refused.promoted and refused.reason.startswith(retraining.NO_FAIR_COMPARISON)
    assert refused.challenger_version == "" and seen.last_training_timestamp >= start
    assert registry.version_of("maintenance", registry.CHAMPION) == seen.version != champion_before
    with pytest.raises(DataError):
        retrain(fleet.train.iloc[:0].assign(), cfg, dataset="empty")


def test_command_line_train_predict_batch_monitor(fleet, tmp_path) -> None:
    runner = CliRunner()
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                k: v
                for k, v in tiny_config().to_dict().items()
                if k in ("window", "channels", "kernel", "hidden", "batch_size", "lr", "max_train_s", "window_units")
            }
        )
    )
    table = pd.concat([fleet.train.assign(failed=1)], ignore_index=True)
    table.to_csv(tmp_path / "fleet.csv", index=False)
    r = runner.invoke(
        app,
        ["train", "--dataset", str(tmp_path / "fleet.csv"), "--config", str(tmp_path / "cfg.json"), "--epochs", "1"],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["version"] == "1" and "champion" in out["aliases"] and out["test"]["units"] >= 1
    fleet.test.head(200).to_csv(tmp_path / "running.csv", index=False)
    r = runner.invoke(app, ["predict", str(tmp_path / "running.csv")])
    assert r.exit_code == 0 and json.loads(r.stdout)["units"][0]["unit"], r.output
    r = runner.invoke(app, ["batch", "-i", str(tmp_path / "running.csv"), "-o", str(tmp_path / "o.csv")])
    assert r.exit_code == 0 and (tmp_path / "o.csv").exists(), r.output
    bad = fleet.test.head(20).copy()
    bad.loc[3, "sensor_2"] = None
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = runner.invoke(app, ["batch", "-i", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "b.csv")])
    # a user error (cli.run maps it to exit 2), naming unit, cycle and column; no output file
    assert isinstance(r.exception, DataError) and "unit test-1 cycle 4" in str(r.exception)
    assert "sensor_2" in str(r.exception) and not (tmp_path / "b.csv").exists()
    r = runner.invoke(app, ["monitor", "--dataset", str(tmp_path / "running.csv")])
    assert r.exit_code in (0, 1) and "alerts" in json.loads(r.stdout), r.output
    r = runner.invoke(app, ["train", "--tune", "3"])
    assert r.exit_code == 2

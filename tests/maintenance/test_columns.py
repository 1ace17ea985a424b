"""A user's own column names (issue 20): engine_id, cycle, T24, P30 ... train, predict and batch-score with a
mapping, keep the sensor names, and say which columns were not used."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.maintenance.__main__ import app
from apps.maintenance.data import simulate
from common.errors import DataError

NAMES = ["T2", "T24", "T30", "T50", "P2", "P15", "P30", "Nf", "Nc", "epr", "Ps30", "phi"]


def _user_table(fleet: pd.DataFrame) -> pd.DataFrame:
    """The simulator's fleet as a user would export it: their own names, and a free-text column."""
    renamed = {f"sensor_{i + 1}": name for i, name in enumerate(NAMES)}
    renamed |= {f"setting_{i}": f"op{i}" for i in (1, 2, 3)}
    return fleet.rename(columns=renamed | {"unit": "engine_id"}).assign(notes="ok")


def test_train_predict_batch_on_a_table_with_its_own_names(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet = simulate(12, 4, seed=1)
    _user_table(fleet.train).to_csv(tmp_path / "fleet.csv", index=False)
    assert fleet.test is not None
    _user_table(fleet.test).head(120).to_csv(tmp_path / "running.csv", index=False)
    (tmp_path / "cfg.json").write_text(
        json.dumps({"window": 10, "boost_trees": 30, "calibration_folds": 0, "baselines": ["mean"]})
    )
    runner = CliRunner()
    args = ["train", "-d", str(tmp_path / "fleet.csv"), "--config", str(tmp_path / "cfg.json")]
    # without the mapping: refused, saying what the table lacks
    r = runner.invoke(app, args)
    assert isinstance(r.exception, DataError) and "expected columns unit, cycle" in str(r.exception)
    mapping = ["--unit-column", "engine_id", "--sensors", ",".join(NAMES), "--setting-columns", "op1,op2,op3"]
    with caplog.at_level(logging.WARNING):
        r = runner.invoke(app, args + mapping)
    assert r.exit_code == 0, r.output
    assert "notes" in caplog.text  # the unused column is named, not silently dropped
    out = json.loads(r.stdout)
    report = Path(out["report"])  # train writes the report of the version it registered ...
    text = report.read_text()
    assert "held-out units are cut from your own run-to-failure histories" in text  # ... in words true for a table
    assert "as published" not in text
    r = runner.invoke(app, ["predict", str(tmp_path / "running.csv")])
    assert r.exit_code == 0, r.output
    units = json.loads(r.stdout)["units"]
    assert {u["unit"] for u in units} == set(fleet.test["unit"].head(120))
    r = runner.invoke(app, ["batch", "-i", str(tmp_path / "running.csv"), "-o", str(tmp_path / "rul.csv")])
    assert r.exit_code == 0, r.output
    from apps.maintenance.pipeline import APP_IMPL
    from common.workspace import Workspace

    model, _ = APP_IMPL.load_model(Workspace.from_env())
    assert set(model.pre.sensors) <= {f"sensor_{n}" for n in NAMES}  # the user's names, readable in the API


def test_a_mapped_column_that_is_not_there_is_named(tmp_path: Path) -> None:
    fleet = simulate(4, 2, seed=1)
    _user_table(fleet.train).to_csv(tmp_path / "fleet.csv", index=False)
    r = CliRunner().invoke(
        app, ["train", "-d", str(tmp_path / "fleet.csv"), "--unit-column", "engine", "--sensors", "T24"]
    )
    assert isinstance(r.exception, DataError) and "['engine'] not found" in str(r.exception)

"""The command line on a user's own transactions file: train registers a champion; bad rows are named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from apps.fraud.__main__ import app
from apps.fraud.config import MODEL_NAME
from common import registry

runner = CliRunner()
COLUMNS = ["tx_id", "timestamp", "customer_id", "terminal_id", "amount", "label"]


def test_train_on_own_csv_registers_a_champion(tiny_raw: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "my_transactions.csv"
    tiny_raw[COLUMNS].to_csv(path, index=False)  # the user's schema: no scenario column
    result = runner.invoke(app, ["train", "--dataset", str(path), "--n-estimators", "20"])
    assert result.exit_code == 0, result.output
    mv = registry.get(MODEL_NAME, registry.CHAMPION)
    assert mv.version == "1" and mv.metrics["validation_average_precision"] > 0.2


def test_bad_rows_in_own_file_are_reported(tiny_raw: pd.DataFrame, tmp_path: Path) -> None:
    bad = tiny_raw[COLUMNS].head(500).copy()
    bad[["amount", "timestamp"]] = bad[["amount", "timestamp"]].astype(object)
    bad.loc[bad.index[3], "amount"] = -12.5
    bad.loc[bad.index[7], "timestamp"] = "not a time"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    result = runner.invoke(app, ["train", "--dataset", str(path)])
    assert result.exit_code != 0
    message = str(result.exception) + result.output
    assert "'amount'" in message and "row 3" in message
    assert "'timestamp'" in message and "row 7" in message
    assert registry.find(MODEL_NAME) is None  # nothing registered from a bad file

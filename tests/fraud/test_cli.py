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


def _exit_and_stderr(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the CLI as ``python -m apps.fraud`` would (cli.run maps errors to exit codes)."""
    from common import cli

    monkeypatch.setattr("sys.argv", ["fraud", *args])
    try:
        cli.run(app)
    except SystemExit as exit_:
        return exit_.code, capsys.readouterr().err
    raise AssertionError("cli.run returned without an exit code")


def test_string_ids_and_delayed_labels_then_predict_from_the_recorded_history(tiny_raw, tmp_path) -> None:
    """A user's file with C171-style ids and no labels on the last week trains; `predict` without --dataset
    scores on the history recorded with the version (not a simulation) and names the version."""
    import json

    import numpy as np

    df = tiny_raw[COLUMNS].copy()
    df["customer_id"] = "C" + df["customer_id"].astype(str)
    df["terminal_id"] = "T" + df["terminal_id"].astype(str)
    df["label"] = df["label"].astype(float)
    df.loc[df["timestamp"] > df["timestamp"].max() - pd.Timedelta(days=7), "label"] = np.nan
    path = tmp_path / "mine.csv"
    df.to_csv(path, index=False)
    r = runner.invoke(app, ["train", "--dataset", str(path), "--n-estimators", "20", "--n-folds", "1"])
    assert r.exit_code == 0, r.output
    card = df["customer_id"].iloc[-1]
    when = (df["timestamp"].max() + pd.Timedelta(minutes=1)).isoformat()
    r = runner.invoke(
        app,
        [
            "predict",
            "--tx-id",
            "NEW-1",
            "--timestamp",
            when,
            "--customer-id",
            card,
            "--terminal-id",
            df["terminal_id"].iloc[-1],
            "--amount",
            "42.0",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout[r.stdout.index("{") :])
    assert out["tx_id"] == "NEW-1" and out["model_version"] == "1" and 0 <= out["score"] <= 1
    # batch: new transactions after the training data, preceded by the recorded history, 2 reasons per alert
    new = df[df["timestamp"] > df["timestamp"].max() - pd.Timedelta(days=2)].drop(columns=["label"])
    new = new.assign(timestamp=new["timestamp"] + pd.Timedelta(days=2), tx_id="N" + new["tx_id"].astype(str))
    new.to_csv(tmp_path / "new.csv", index=False)
    r = runner.invoke(
        app,
        ["batch", "-i", str(tmp_path / "new.csv"), "-o", str(tmp_path / "scored.csv"), "--reasons", "--n-reasons", "2"],
    )
    assert r.exit_code == 0, r.output
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert len(scored) == len(new) and scored["tx_id"].str.startswith("N").all()
    alerts = scored.loc[scored["decision"] == "alert", "reasons"]
    assert len(alerts) and alerts.str.split(",").map(len).eq(2).all()


def test_too_few_days_and_header_only_files_are_one_line_exit_2(tiny_raw, tmp_path, monkeypatch, capsys) -> None:
    short = tiny_raw[tiny_raw["timestamp"] < tiny_raw["timestamp"].min() + pd.Timedelta(days=20)]
    path = tmp_path / "three_weeks.csv"
    short[COLUMNS].to_csv(path, index=False)
    code, err = _exit_and_stderr(["train", "--dataset", str(path)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: the data spans 20 days") and "--n-folds 1" in err
    header = tmp_path / "header.csv"
    header.write_text(",".join(COLUMNS) + "\n")
    code, err = _exit_and_stderr(["train", "--dataset", str(header)], monkeypatch, capsys)
    assert code == 2 and "no transactions" in err and err.count("\n") == 1
    assert registry.find(MODEL_NAME) is None

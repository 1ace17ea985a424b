"""Data: the C-MAPSS loader on a tiny fixture in the real format, the download path, a user's long table validated
row by row, the simulator and the truncation of histories into test units."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from apps.maintenance import data as mdata
from apps.maintenance.data import (
    CMAPSS_COLUMNS,
    available_subsets,
    failure_times,
    load,
    load_cmapss,
    read_fleet,
    simulate_fleet,
    truncate,
    validate_fleet,
)
from common.data import DataError, DownloadError, sha256_file


def _line(unit: int, cycle: int, base: float = 0.0) -> str:
    values = [unit, cycle, -0.0007, 0.0003, 100.0] + [round(500 + base + j + 0.01 * cycle, 2) for j in range(21)]
    return " ".join(str(v) for v in values) + "  \n"  # the NASA files end lines with trailing spaces


def write_cmapss(root, subset: str = "FD001", *, train_cycles=(5, 7), test_cycles=(3, 4), rul=(12, 30)) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"train_{subset}.txt").write_text(
        "".join(_line(u + 1, c + 1) for u, n in enumerate(train_cycles) for c in range(n))
    )
    (root / f"test_{subset}.txt").write_text(
        "".join(_line(u + 1, c + 1) for u, n in enumerate(test_cycles) for c in range(n))
    )
    (root / f"RUL_{subset}.txt").write_text("".join(f"{r} \n" for r in rul))


def test_cmapss_loader_on_a_tiny_fixture(tmp_path) -> None:
    write_cmapss(tmp_path / "cmapss")
    fleet = load_cmapss("fd001", tmp_path / "cmapss")
    assert list(fleet.train.columns) == CMAPSS_COLUMNS
    assert fleet.train.groupby("unit").size().to_dict() == {"1": 5, "2": 7}
    assert fleet.train["cycle"].dtype == np.int64 and fleet.train["sensor_21"].iloc[0] == 520.01
    assert fleet.test.groupby("unit").size().to_dict() == {"1": 3, "2": 4}
    assert fleet.test_rul.to_dict() == {"1": 12.0, "2": 30.0}


def test_true_rul_follows_the_numeric_unit_order_past_unit_9(tmp_path) -> None:
    """RUL_FD00x.txt lists units 1, 2, ..., 10, 11; unit ids are strings, whose order would pair unit 10 with
    line 2 (the bug that made FD001's test RMSE 50 with a validation RMSE of 13)."""
    write_cmapss(tmp_path / "cmapss", test_cycles=(2,) * 12, rul=[10 * u for u in range(1, 13)])
    rul = load_cmapss("FD001", tmp_path / "cmapss").test_rul
    assert {u: rul[str(u)] for u in (1, 2, 9, 10, 11, 12)} == {1: 10, 2: 20, 9: 90, 10: 100, 11: 110, 12: 120}


def test_cmapss_bad_files_are_named(tmp_path) -> None:
    root = tmp_path / "cmapss"
    write_cmapss(root)
    lines = (root / "train_FD001.txt").read_text().splitlines(keepends=True)
    lines[2] = " ".join(lines[2].split()[:-1]) + "\n"
    (root / "train_FD001.txt").write_text("".join(lines))
    with pytest.raises(DataError, match=r"train_FD001.txt: line 3 has 25 fields, expected 26"):
        load_cmapss("FD001", root)
    write_cmapss(root, rul=(12,))
    with pytest.raises(DataError, match="1 RUL values for 2 test units"):
        load_cmapss("FD001", root)
    with pytest.raises(DataError, match="unknown C-MAPSS subset"):
        load_cmapss("FD009", root)


def test_offline_error_names_the_file_and_where_to_put_it(mlref_home, monkeypatch) -> None:
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as err:
        load("FD002")
    msg = str(err.value)
    assert "train_FD002.txt" in msg and str(mlref_home / "data" / "cmapss" / "train_FD002.txt") in msg
    assert available_subsets() == []


def test_present_files_are_checksummed(mlref_home, monkeypatch) -> None:
    root = mlref_home / "data" / "cmapss"
    write_cmapss(root)
    monkeypatch.setattr(
        mdata,
        "CMAPSS_SHA256",
        {n: sha256_file(root / n) for n in ("train_FD001.txt", "test_FD001.txt", "RUL_FD001.txt")},
    )
    assert available_subsets() == ["FD001"]
    assert load("FD001").train[mdata.UNIT].nunique() == 2  # read from MLREF_DATA_DIR/cmapss, checksums match
    with open(root / "test_FD001.txt", "r+b") as fh:
        fh.seek(10)
        fh.write(b"9")
    with pytest.raises(DownloadError, match="sha256"):
        load("FD001")


def _table(n_units: int = 3, n_cycles: int = 6) -> pd.DataFrame:
    rows = [
        {"unit": u, "cycle": c, "setting_1": 0.0, "sensor_1": 1.0 + c, "sensor_2": 2.0 * c}
        for u in range(1, n_units + 1)
        for c in range(1, n_cycles + 1)
    ]
    return pd.DataFrame(rows)


def test_a_users_table_is_validated_row_by_row(tmp_path) -> None:
    df = _table().astype(object)
    df.loc[4, "sensor_2"] = "abc"  # unit 1 cycle 5
    df.loc[8, "sensor_1"] = float("inf")  # unit 2 cycle 3
    df.loc[13, "cycle"] = 1.5  # unit 3
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as err:
        read_fleet(tmp_path / "bad.csv")
    msg = str(err.value)
    assert "column 'sensor_2' is missing or not a finite number in 1 row(s): unit 1 cycle 5 (row 4)" in msg
    assert "column 'sensor_1'" in msg and "unit 2 cycle 3 (row 8)" in msg
    assert "column 'cycle' is not an integer" in msg and "unit 3 cycle 1.5" in msg

    dup = _table()
    dup.loc[3, "cycle"] = 3
    with pytest.raises(
        DataError,
        match=r"column 'cycle' repeats a cycle of the same unit in 1 row\(s\): unit 1 "
        r"cycle 3 \(row 3\)",
    ):
        validate_fleet(dup)
    mixed = _table().assign(failed=1)
    mixed.loc[7, "failed"] = 0
    with pytest.raises(DataError, match="column 'failed' differs between rows of the same unit"):
        validate_fleet(mixed)
    with pytest.raises(DataError, match=r"missing \['cycle'\]"):
        validate_fleet(_table().drop(columns="cycle"))


def test_a_users_table_is_sorted_and_split_into_training_and_test(tmp_path) -> None:
    df = simulate_fleet(12, seed=5).sample(frac=1.0, random_state=0)  # shuffled rows
    df.to_parquet(tmp_path / "fleet.parquet")
    fleet = load(tmp_path / "fleet.parquet", test_fraction=0.25)
    assert set(fleet.train["unit"]).isdisjoint(fleet.test["unit"])  # split by unit
    assert fleet.train.groupby("unit")["cycle"].apply(lambda c: c.is_monotonic_increasing).all()
    assert len(fleet.test_rul) == 3 and (fleet.test_rul >= 0).all()
    _table(1).to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match="training needs run-to-failure histories"):
        load(tmp_path / "one.csv")


def test_the_simulator_degrades_units_to_a_failure_threshold() -> None:
    df = simulate_fleet(30, seed=1, n_conditions=3)
    lives = df.groupby("unit")["cycle"].max()
    assert lives.nunique() > 20 and lives.min() > 80 and lives.max() < 600  # different wear and rates
    assert df[["setting_1", "setting_2", "setting_3"]].round(1).drop_duplicates().shape[0] == 3
    assert df["sensor_11"].nunique() == 1  # constant sensors exist (preprocessing must drop them)
    # an informative sensor moves exponentially towards failure: the change in the last 10 % of life is larger than
    # in the first half, per condition
    df["frac"] = df["cycle"] / df.groupby("unit")["cycle"].transform("max")
    df["cond"] = df["setting_1"].round(0)
    level = df.groupby(["cond", pd.cut(df["frac"], [0, 0.5, 0.9, 1.0])], observed=True)["sensor_1"].mean().unstack()
    early, late = (level.iloc[:, 1] - level.iloc[:, 0]).abs(), (level.iloc[:, 2] - level.iloc[:, 1]).abs()
    assert (late > early).all()


def test_truncation_and_failure_times() -> None:
    df = simulate_fleet(8, seed=2)
    cut, truth = truncate(df, seed=0)
    lives = df.groupby("unit")["cycle"].max()
    kept = cut.groupby("unit")["cycle"].max()
    assert ((lives - kept) == truth.loc[kept.index]).all() and (truth >= 1).all() and (kept >= 31).all()
    times = failure_times(df)
    assert (times == df.groupby("unit")["timestamp"].max().astype(float)).all()
    assert failure_times(df.drop(columns="timestamp")).tolist() == list(range(8))

"""The streaming generator (apps/fraud/synth.py): seeded, chunk-size invariant, time-sorted row groups."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from apps.fraud.config import REFERENCE_SIMULATION, TINY_SIMULATION
from apps.fraud.data import LABEL, SCENARIO, TIMESTAMP, TX_ID, validate
from apps.fraud.synth import FILE, META, for_rows, main, scaled, write_synthetic

SMALL = replace(TINY_SIMULATION, n_customers=120, n_terminals=240, n_days=30)


def _read(directory) -> pd.DataFrame:
    return pd.read_parquet(directory / FILE)


def test_two_chunk_sizes_write_the_same_rows(tmp_path) -> None:
    a = write_synthetic(SMALL, tmp_path / "a", chunk_days=4)
    b = write_synthetic(SMALL, tmp_path / "b", chunk_days=11)
    assert a["rows"] == b["rows"] > 1000
    pd.testing.assert_frame_equal(_read(tmp_path / "a"), _read(tmp_path / "b"))
    # one row group per block of days, in time order
    assert pq.ParquetFile(tmp_path / "a" / FILE).num_row_groups == 8  # ceil(30 / 4)
    assert pq.ParquetFile(tmp_path / "b" / FILE).num_row_groups == 3
    assert json.loads((tmp_path / "a" / META).read_text())["spec"] == SMALL.asdict()


def test_same_seed_same_data_other_seed_other_data(tmp_path) -> None:
    write_synthetic(SMALL, tmp_path / "a", chunk_days=7)
    write_synthetic(SMALL, tmp_path / "b", chunk_days=7)
    write_synthetic(replace(SMALL, seed=1), tmp_path / "c", chunk_days=7)
    a, b, c = (_read(tmp_path / d) for d in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) != len(c) or not a[TIMESTAMP].equals(c[TIMESTAMP])


def test_output_is_the_apps_dataset_format(tmp_path) -> None:
    write_synthetic(SMALL, tmp_path, chunk_days=7)
    df = _read(tmp_path)
    assert df[TIMESTAMP].is_monotonic_increasing and df[TX_ID].is_unique
    assert (df[TX_ID] == range(len(df))).all()
    assert set(df[SCENARIO].unique()) <= {0, 1, 2, 3} and ((df[SCENARIO] > 0) == (df[LABEL] == 1)).all()
    assert {1, 2, 3} <= set(df[SCENARIO].unique())  # every fraud scenario occurs
    assert len(validate(df)) == len(df)  # the schema of --dataset


def test_population_scales_with_the_size() -> None:
    ten = scaled(10)
    assert (ten.n_customers, ten.n_terminals) == (50_000, 100_000)
    assert (ten.compromised_terminals_per_day, ten.compromised_customers_per_day) == (20, 30)
    assert ten.n_days == REFERENCE_SIMULATION.n_days
    assert for_rows(1.8e7).n_customers == pytest.approx(50_000, rel=0.01)
    with pytest.raises(ValueError, match="scale must be > 0"):
        scaled(0)


def test_command_line(tmp_path, capsys) -> None:
    assert main(["--scale", "0.02", "--days", "10", "--chunk-days", "5", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == len(_read(tmp_path)) > 0
    with pytest.raises(SystemExit) as exc:
        main(["--scale", "-1", "--out", str(tmp_path)])
    assert exc.value.code == 2

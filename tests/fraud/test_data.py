"""Simulator statistics, determinism, and the loader's validation of a user's file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.fraud.config import REFERENCE_SIMULATION, TINY_SIMULATION
from apps.fraud.data import (
    AMOUNT,
    CUSTOMER,
    LABEL,
    SCENARIO,
    TERMINAL,
    TIMESTAMP,
    TX_ID,
    add_day,
    load,
    simulate,
)
from common.data import DataError


@pytest.mark.bench  # 1.8 M transactions: minutes on 2 cores, so not in the default tier
def test_reference_simulation_statistics() -> None:
    """The handbook's reference world: ~1.75 M transactions, ~0.84 % fraud, scenario mix like the handbook's
    (its data: 1,754,155 transactions; 973 / 9,077 / 4,631 frauds of scenarios 1 / 2 / 3)."""
    df = simulate(REFERENCE_SIMULATION)
    assert 1_650_000 < len(df) < 1_900_000
    assert 0.0075 < df[LABEL].mean() < 0.0095
    counts = df[SCENARIO].value_counts()
    assert 700 < counts[1] < 1_300
    assert 7_500 < counts[2] < 11_000
    assert 3_800 < counts[3] < 5_600
    assert (df[LABEL] == (df[SCENARIO] > 0)).all()
    # genuine behaviour: amounts >= 0 with cents, times spread over the day, ids in range
    assert df[AMOUNT].min() >= 0 and np.allclose(df[AMOUNT], df[AMOUNT].round(2))
    assert df[TIMESTAMP].min() >= pd.Timestamp("2018-04-01") and df[TIMESTAMP].max() < pd.Timestamp("2018-10-01")
    assert df[CUSTOMER].max() < 5_000 and df[TERMINAL].max() < 10_000
    assert df[TIMESTAMP].is_monotonic_increasing and df[TX_ID].is_unique
    # scenario 1 is exactly "amount > 220" among transactions no later scenario overwrote
    assert (df.loc[df[SCENARIO] == 0, AMOUNT] <= 220).all()


def test_simulation_is_deterministic_by_seed() -> None:
    a, b = simulate(TINY_SIMULATION), simulate(TINY_SIMULATION)
    pd.testing.assert_frame_equal(a, b)
    c = simulate(TINY_SIMULATION.__class__(**{**TINY_SIMULATION.asdict(), "seed": 1}))
    assert not a[AMOUNT].equals(c[AMOUNT])


def test_terminals_are_within_radius() -> None:
    """Each customer only uses terminals within r=5: re-derive the geometry and check a sample."""
    from apps.fraud.data import _customer_profiles, _terminal_profiles

    cfg = TINY_SIMULATION
    rng = np.random.default_rng(cfg.seed)
    cust, term = _customer_profiles(cfg, rng), _terminal_profiles(cfg, rng)
    df = simulate(cfg).sample(2000, random_state=0)
    d = np.hypot(
        cust.x.to_numpy()[df[CUSTOMER]] - term.x.to_numpy()[df[TERMINAL]],
        cust.y.to_numpy()[df[CUSTOMER]] - term.y.to_numpy()[df[TERMINAL]],
    )
    assert d.max() <= cfg.radius


def test_load_user_file_roundtrip_and_label_optional(tmp_path) -> None:
    df = simulate(TINY_SIMULATION).head(500).drop(columns=[SCENARIO])
    path = tmp_path / "tx.csv"
    df.drop(columns=[LABEL]).to_csv(path, index=False)
    got = load(path, require_label=False)
    assert list(got.columns) == [TX_ID, TIMESTAMP, CUSTOMER, TERMINAL, AMOUNT]
    assert pd.api.types.is_datetime64_any_dtype(got[TIMESTAMP])
    with pytest.raises(DataError, match="label"):
        load(path, require_label=True)
    assert add_day(got)["day"].min() == 0


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [
        (AMOUNT, -3.0, "minimum"),
        (TIMESTAMP, "not a time", "datetime"),
        (LABEL, 2, "one of"),
    ],
)
def test_load_rejects_bad_rows_naming_the_column(tmp_path, column: str, value, why: str) -> None:
    df = simulate(TINY_SIMULATION).head(50).drop(columns=[SCENARIO])
    df[column] = df[column].astype(object)
    df.loc[7, column] = value
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"'{column}'.*{why}"):
        load(path)


def test_load_rejects_missing_column(tmp_path) -> None:
    path = tmp_path / "x.parquet"
    simulate(TINY_SIMULATION).head(20).drop(columns=[TERMINAL]).to_parquet(path)
    with pytest.raises(DataError, match=TERMINAL):
        load(path)

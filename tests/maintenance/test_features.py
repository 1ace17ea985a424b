"""Preprocessing: the capped RUL target and sliding windows on hand-made cases, operating conditions, constant
sensors, and no leakage (scalers fitted on training units only; splits by unit, never by row)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.maintenance.data import simulate_fleet
from apps.maintenance.features import (
    Preprocessor,
    add_rul,
    health_feature_names,
    health_features,
    split_units,
    windows,
)
from apps.maintenance.train import prepare
from common.data import DataError
from tests.maintenance.conftest import tiny_config


def _two_units() -> pd.DataFrame:
    return pd.DataFrame(
        {"unit": ["a"] * 5 + ["b"] * 2, "cycle": [1, 2, 3, 4, 5, 1, 2], "sensor_1": [10.0, 11, 12, 13, 14, 20, 21]}
    )


def test_rul_is_piecewise_linear_and_capped() -> None:
    df = add_rul(_two_units(), cap=3)
    assert df["rul"].tolist() == [3, 3, 2, 1, 0, 1, 0]
    assert add_rul(_two_units())["rul"].tolist() == [4, 3, 2, 1, 0, 1, 0]


def test_windows_by_hand() -> None:
    df = add_rul(_two_units(), cap=3)
    x = df[["sensor_1"]].to_numpy(np.float32)
    xw, y, index = windows(x, df, 3, y=df["rul"].to_numpy(float), every_cycle=False)
    # unit a: windows ending at cycles 3, 4, 5; unit b (2 cycles < 3): one window padded with its first row
    assert xw[..., 0].tolist() == [[10, 11, 12], [11, 12, 13], [12, 13, 14], [20, 20, 21]]
    assert y.tolist() == [2, 1, 0, 0] and index == [("a", 3), ("a", 4), ("a", 5), ("b", 2)]
    last, _, idx = windows(x, df, 3, last_only=True)
    assert last[..., 0].tolist() == [[12, 13, 14], [20, 20, 21]] and idx == [("a", 5), ("b", 2)]
    every, _, idx = windows(x, df, 3)  # one window per cycle, padded at the front
    assert every[..., 0].tolist()[:3] == [[10, 10, 10], [10, 10, 11], [10, 11, 12]] and len(idx) == 7


def test_split_by_unit_never_by_row() -> None:
    units = [f"u{i}" for i in range(20) for _ in range(5)]  # each unit appears on many rows
    kept, held = split_units(units, 0.25, seed=1)
    assert len(held) == 5 and len(kept) == 15 and set(kept).isdisjoint(held) and set(kept) | set(held) == set(units)
    with pytest.raises(DataError, match="needs at least 2"):
        split_units(["u1", "u1"], 0.5)


def test_scalers_are_fitted_on_training_units_only() -> None:
    df = simulate_fleet(12, seed=4)
    cfg = tiny_config(val_fraction=0.25)
    data = prepare(df, cfg)
    assert set(data.fit_units).isdisjoint(data.val_units) and len(data.val_units) == 3
    poisoned = df.copy()
    sensors = [c for c in df.columns if c.startswith("sensor_")]
    poisoned.loc[poisoned["unit"].isin(data.val_units), sensors] *= 100  # only held-out units change
    again = prepare(poisoned, cfg, val_units=data.val_units)
    assert again.pre.to_dict() == data.pre.to_dict()
    np.testing.assert_array_equal(again.x_fit, data.x_fit)
    # and every training-unit value lands in [-1, 1] (min-max per condition), held-out ones need not
    assert np.abs(data.x_fit).max() <= 1 + 1e-5 and np.abs(again.x_val).max() > 10


def test_conditions_are_clustered_from_the_settings_and_constants_dropped() -> None:
    multi = simulate_fleet(10, seed=2, n_conditions=4)
    pre = Preprocessor.fit(multi)
    assert pre.n_conditions == 4 and {"sensor_11", "sensor_12"} <= set(pre.dropped)
    cond = pre.conditions(multi)
    assert pd.crosstab(cond, multi["setting_1"].round(0)).gt(0).sum(axis=1).eq(1).all()  # one condition each
    single = simulate_fleet(10, seed=2, n_conditions=1)  # settings only jitter around one point
    assert Preprocessor.fit(single).n_conditions == 1
    # per-condition normalisation removes the level each condition imposes
    z = pre.transform(multi)
    means = pd.DataFrame(z).groupby(cond).mean()
    assert (means.max() - means.min()).abs().max() < 0.5
    assert Preprocessor.fit(multi, n_conditions=2).n_conditions == 2
    assert Preprocessor.from_dict(pre.to_dict()) == pre


def test_health_features_by_hand() -> None:
    df = _two_units()
    x = df[["sensor_1"]].to_numpy(np.float32)
    h = health_features(x, df, baseline_cycles=2)
    names = health_feature_names(["sensor_1"], 2)
    assert h.shape == (7, len(names)) == (7, 7)
    col = {n: h[:, i].tolist() for i, n in enumerate(names)}
    assert col["age"] == [1, 2, 3, 4, 5, 1, 2]
    assert col["mean5_sensor_1"] == pytest.approx([10, 10.5, 11, 11.5, 12, 20, 20.5])  # never across units
    assert col["std10_sensor_1"] == pytest.approx(
        [0, 0.5, np.std([10, 11, 12]), np.std([10, 11, 12, 13]), np.sqrt(2), 0, 0.5]
    )
    # drift = 10-cycle mean minus the mean of the unit's first 2 cycles (fewer before it has 2)
    assert col["drift2_sensor_1"] == pytest.approx([0, 0, 0.5, 1, 1.5, 0, 0])


def test_health_features_use_only_the_past() -> None:
    df = simulate_fleet(3, seed=2)
    x = np.random.default_rng(0).normal(size=(len(df), 4)).astype(np.float32)
    full = health_features(x, df)
    cut = df.groupby("unit", sort=False).cumcount().to_numpy() < 40  # every unit's first 40 cycles only
    np.testing.assert_allclose(health_features(x[cut], df[cut].reset_index(drop=True)), full[cut], rtol=1e-5, atol=1e-5)


def test_an_absurd_reading_does_not_reach_the_next_unit() -> None:
    df = _two_units()
    x = df[["sensor_1"]].to_numpy(np.float64, copy=True)
    alone = health_features(x[5:].astype(np.float32), df.iloc[5:].reset_index(drop=True))
    x[2] = 1e300  # finite, accepted by validation; its square overflows
    h = health_features(x.astype(np.float32), df)
    np.testing.assert_array_equal(h[5:], alone)  # unit b is featurised as if unit a were sane
    assert np.isfinite(h).all()

"""common.columns: a user's table mapped onto an app's names, every unused column reported, missing ones named."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from common.columns import ColumnMap, split_names
from common.errors import DataError


def test_roles_renamed_features_prefixed_and_unused_columns_reported(caplog: pytest.LogCaptureFixture) -> None:
    raw = pd.DataFrame({"engine_id": [1], "n": [1], "T24": [0.5], "P30": [2.0], "notes": ["x"], "sensor_9": [1.0]})
    cmap = ColumnMap(roles={"unit": "engine_id", "cycle": "n"}, features=("T24", "P30"), feature_prefix="sensor_")
    with caplog.at_level(logging.WARNING):
        df, ignored = cmap.apply(raw, source="fleet.csv")
    assert list(df.columns) == ["unit", "cycle", "sensor_T24", "sensor_P30", "notes"]
    assert ignored == ["sensor_9", "notes"]  # a listed sensor set is the whole set; the rest is named, not lost
    assert "notes" in caplog.text and "fleet.csv" in caplog.text


def test_missing_and_clashing_columns_are_one_clear_error() -> None:
    raw = pd.DataFrame({"engine_id": [1], "unit": [2], "T24": [0.1]})
    with pytest.raises(DataError, match=r"fleet.csv: mapped column\(s\) \['P30'\] not found"):
        ColumnMap(features=("T24", "P30"), feature_prefix="sensor_").apply(raw, source="fleet.csv")
    with pytest.raises(DataError, match=r"mapping onto \['unit'\], which the table already has"):
        ColumnMap(roles={"unit": "engine_id"}).apply(raw, source="fleet.csv")


def test_identity_map_keeps_prefixed_columns_and_names() -> None:
    raw = pd.DataFrame({"unit": [1], "cycle": [1], "sensor_1": [0.0], "setting_1": [0.0]})
    cmap = ColumnMap(feature_prefix="sensor_", known=("unit", "cycle"), known_prefixes=("setting_",))
    df, ignored = cmap.apply(raw)
    assert cmap.is_identity and ignored == [] and list(df.columns) == list(raw.columns)
    assert split_names(" T24, ,P30 ") == ("T24", "P30") and split_names(None) == ()

"""Data loading, validation and the evaluation splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.recommender.data import (
    COLUMNS,
    ITEM,
    TIMESTAMP,
    USER,
    WEIGHT,
    load_dataset,
    normalize_interactions,
    synthetic,
)
from apps.recommender.evaluate import leave_last_out, stratified_split
from common.data import DataError


def test_synthetic_is_seeded_and_structured(small):
    again = synthetic(n_users=400, n_items=200, n_clusters=6, mean_activity=25.0, seed=7)
    pd.testing.assert_frame_equal(small.interactions, again.interactions)
    df = small.interactions
    assert list(df.columns) == COLUMNS
    assert not df.duplicated([USER, ITEM]).any()
    per_item = df.groupby(ITEM).size().sort_values(ascending=False)
    assert per_item.iloc[:20].sum() > 3 * per_item.iloc[-20:].sum()  # popularity skew
    per_user = df.groupby(USER).size()
    assert per_user.max() > 3 * per_user.median()  # very different activity (capped at n_items / 3)
    assert df[TIMESTAMP].is_monotonic_increasing


def test_user_file_any_id_types_and_dates(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame({"user": [1, 1, 2, 2], "item": ["x", "y", "x", "x"], "weight": [1, 2.5, 1, 1],
                  "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
                  "extra": 0}).to_csv(path, index=False)
    pd.DataFrame({"item": ["x", "x", "y"], "title": ["X-men", "dup", "Y"]}).to_csv(tmp_path / "mine.items.csv",
                                                                                index=False)
    ds = load_dataset(path)
    assert ds.items.loc["x", "title"] == "X-men"  # metadata beside the file, first row of a duplicate wins
    df = ds.interactions
    assert df[USER].tolist() == ["1", "1", "2"]  # ids as strings; duplicate (2, x) merged
    assert df.loc[df[USER] == "2", WEIGHT].item() == 2.0
    assert df[TIMESTAMP].iloc[0] == 1704067200


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"customer": [1], "item": [1]}), "missing column"),
    (pd.DataFrame({"user": [1, None], "item": [1, 2]}), "'user' is empty in 1 row"),
    (pd.DataFrame({"user": [1, 2], "item": [1, 2], "weight": [1, -3]}), "must be a finite number > 0"),
    (pd.DataFrame({"user": [1, 2], "item": [1, 2], "weight": ["a", 1]}), "'weight' is not a number"),
    (pd.DataFrame({"user": [1, 2], "item": [1, 2], "timestamp": ["2024-01-01", "soon"]}), "not a unix time"),
])
def test_bad_rows_have_clear_errors(frame, message):
    with pytest.raises(DataError, match=message):
        normalize_interactions(frame, source="f.csv")


def test_stratified_split_matches_ms_rule():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({USER: rng.integers(0, 30, 900).astype(str), ITEM: np.arange(900).astype(str),
                       WEIGHT: 1.0, TIMESTAMP: np.arange(900)})
    train, test = stratified_split(df, 0.75, seed=42)
    assert len(train) + len(test) == len(df)
    n = df.groupby(USER).size()
    n_train = train.groupby(USER).size()
    # per user: the first floor(0.75 n) (rank/count <= 0.75) of a random order go to training
    assert (n_train == np.floor(0.75 * n + 1e-9).astype(int)).all()
    # deterministic and identical to assigning np.random.seed(42); rand(n) in file order
    key = np.random.RandomState(42).rand(len(df))
    first = df.assign(key=key).sort_values([USER, "key"]).groupby(USER).head(1)
    assert set(first[ITEM]) <= set(train[ITEM])


def test_leave_last_out_holds_out_latest():
    df = pd.DataFrame({USER: ["a", "a", "a", "b"], ITEM: ["1", "2", "3", "1"], WEIGHT: 1.0,
                       TIMESTAMP: [5, 9, 1, 3]})
    train, test = leave_last_out(df)
    assert test[ITEM].tolist() == ["2"]  # a's latest; b has a single interaction and stays in training
    assert sorted(train[ITEM]) == ["1", "1", "3"]

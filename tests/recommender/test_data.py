"""Data loading, validation and the evaluation splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apps.recommender.__main__ import app
from apps.recommender.data import (
    COLUMNS,
    ITEM,
    TIMESTAMP,
    USER,
    WEIGHT,
    estimated_rows,
    load_dataset,
    load_interactions,
    load_users,
    normalize_interactions,
    synthetic,
)
from apps.recommender.evaluate import leave_last_out, stratified_split
from common import cli
from common.data import DataError
from common.scaling import MemoryRefused


def _cli_train(path, monkeypatch) -> tuple[int, str]:
    import contextlib
    import io

    monkeypatch.setattr("sys.argv", ["recommender", "train", "--dataset", str(path)])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        cli.run(app)
    return int(exc.value.code), err.getvalue()


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
    pd.DataFrame(
        {
            "user": [1, 1, 2, 2],
            "item": ["x", "y", "x", "x"],
            "weight": [1, 2.5, 1, 1],
            "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"],
            "extra": 0,
        }
    ).to_csv(path, index=False)
    pd.DataFrame({"item": ["x", "x", "y"], "title": ["X-men", "dup", "Y"]}).to_csv(
        tmp_path / "mine.items.csv", index=False
    )
    ds = load_dataset(path)
    assert ds.items.loc["x", "title"] == "X-men"  # metadata beside the file, first row of a duplicate wins
    df = ds.interactions
    assert df[USER].tolist() == ["1", "1", "2"]  # ids as strings; duplicate (2, x) merged
    assert df.loc[df[USER] == "2", WEIGHT].item() == 2.0
    assert df[TIMESTAMP].iloc[0] == 1704067200


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame({"customer": [1], "item": [1]}),
            r"f.csv: missing required column\(s\) \['user'\]; found \['customer', 'item'\]; "
            r"expected a header user,item\[,weight\]\[,timestamp\]",
        ),
        (pd.DataFrame({"user": [1, None], "item": [1, 2]}), r"f.csv: column 'user' is empty/null in 1 row\(s\): row 1"),
        (
            pd.DataFrame({"user": ["a", "  "], "item": [1, 2]}),
            r"column 'user' is empty/null in 1 row\(s\): row 1: '  '",
        ),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "weight": [1, -3]}),
            r"column 'weight' is not greater than 0 in 1 row\(s\): row 1: -3",
        ),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "weight": [0.0, float("inf")]}),
            r"column 'weight' is not a valid float in 1 row\(s\): row 1: inf; .*not greater than 0 .*row 0: 0.0",
        ),
        (pd.DataFrame({"user": [1, 2], "item": [1, 2], "weight": [1, 1e39]}), r"'weight' is above the maximum"),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "weight": ["a", 1]}),
            r"'weight' is not a valid float .*row 0: 'a'",
        ),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "timestamp": ["2024-01-01", "soon"]}),
            r"'timestamp' is not a valid unix time in seconds .* or a date in 1 row\(s\): row 1: 'soon'",
        ),
        (
            pd.DataFrame({"user": [1, 2], "item": [1, 2], "timestamp": [1_700_000_000_000, 1_700_000_000]}),
            r"'timestamp' is not a valid unix time in seconds .*row 0: 1700000000000",
        ),  # milliseconds, not seconds
        (pd.DataFrame({"user": ["u" * 201], "item": [1]}), r"'user' is longer than 200 characters in 1 row"),
        (pd.DataFrame({"user": [], "item": []}), r"f.csv: 0 row\(s\); at least 1 needed"),
    ],
)
def test_bad_rows_have_clear_one_line_errors(frame, message):
    with pytest.raises(DataError, match=message) as err:
        normalize_interactions(frame, source="f.csv")
    assert "\n" not in str(err.value)


def test_timestamps_mix_unix_seconds_and_dates_and_weights_default_to_one():
    df = pd.DataFrame(
        {
            "user": [1.0, 2.0, 3.0],
            "item": ["a", "b", "c"],
            "timestamp": [1_700_000_000.9, "2024-01-01", "2024-01-01T01:00:00+01:00"],
        }
    )
    out = normalize_interactions(df)
    assert out[USER].tolist() == ["1", "2", "3"]  # integral floats read as ints, not "1.0"
    assert out[TIMESTAMP].tolist() == [1_700_000_000, 1_704_067_200, 1_704_067_200]
    assert out[WEIGHT].tolist() == [1.0, 1.0, 1.0] and out[WEIGHT].dtype == np.float32
    parquet_dates = pd.DataFrame({"user": ["x"], "item": ["y"], "timestamp": pd.to_datetime(["2024-01-01"])})
    assert normalize_interactions(parquet_dates)[TIMESTAMP].tolist() == [1_704_067_200]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("", "could not read"),
        ("customer\nc1\n", r"missing required column\(s\) \['user'\]"),
        ("user\n", r"0 row\(s\); at least 1 needed"),
        ('user\nu1\n""\n', r"column 'user' is empty/null in 1 row\(s\): row 1"),
    ],
)
def test_users_file_problems_are_data_errors(tmp_path, content, message):
    path = tmp_path / "users.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_users(path)


def test_users_file_ids_stay_strings(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("user,extra\n007,1\nu/2,2\n")
    assert load_users(path) == ["007", "u/2"]


def test_stratified_split_matches_ms_rule():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            USER: rng.integers(0, 30, 900).astype(str),
            ITEM: np.arange(900).astype(str),
            WEIGHT: 1.0,
            TIMESTAMP: np.arange(900),
        }
    )
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
    df = pd.DataFrame({USER: ["a", "a", "a", "b"], ITEM: ["1", "2", "3", "1"], WEIGHT: 1.0, TIMESTAMP: [5, 9, 1, 3]})
    train, test = leave_last_out(df)
    assert test[ITEM].tolist() == ["2"]  # a's latest; b has a single interaction and stays in training
    assert sorted(train[ITEM]) == ["1", "1", "3"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_file_too_big_for_memory_is_refused_before_it_is_read(tmp_path, monkeypatch, suffix):
    df = pd.DataFrame({"user": [f"u{i % 50}" for i in range(4000)], "item": [f"i{i}" for i in range(4000)]})
    path = tmp_path / f"big{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path)
    assert len(load_interactions(path).interactions) == 4000  # fits on this machine
    monkeypatch.setenv("MLREF_MEMORY_BYTES", str(100_000))  # rehearse a machine with 100 kB free
    with pytest.raises(MemoryRefused, match=r"4,000 interactions in memory .* needs about 1 MiB of memory and 0 MiB"):
        load_interactions(path)
    code, err = _cli_train(path, monkeypatch)
    assert code == 2 and "--engine spark" in err
    assert 3000 <= estimated_rows(path) <= 5000

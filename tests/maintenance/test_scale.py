"""The scaling bench's pieces on tiny fleets: the chunked generator, the optimised feature and scoring paths against
straightforward references, the memory guard, the ``bench --scale`` arguments and one end-to-end run."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.maintenance import scale
from apps.maintenance.__main__ import app
from apps.maintenance.data import CYCLE, UNIT, validate_fleet
from apps.maintenance.features import HEALTH_SPANS, HEALTH_STD_SPANS, health_features, unit_starts, windows
from apps.maintenance.lifecycle import predict_table
from apps.maintenance.synth import fleet_units, read_truth, write_fleet
from apps.maintenance.train import check_memory, prepare
from common.data import DataError

from .conftest import tiny_config


def test_generator_is_seeded_and_independent_of_the_chunk_size(tmp_path) -> None:
    paths = {k: tmp_path / f"c{k}.parquet" for k in (1, 3, 50)}
    for k, p in paths.items():
        write_fleet(p, 7, seed=5, chunk_units=k, running=True)
    tables = {k: pd.read_parquet(p) for k, p in paths.items()}
    pd.testing.assert_frame_equal(tables[1], tables[3])
    pd.testing.assert_frame_equal(tables[1], tables[50])
    pd.testing.assert_series_equal(read_truth(paths[1]), read_truth(paths[3]))
    other = tmp_path / "other.parquet"
    write_fleet(other, 7, seed=6)
    assert not pd.read_parquet(other)[["sensor_1"]].head(20).equals(tables[1][["sensor_1"]].head(20))
    # a unit depends on (seed, its index) only: units 4..6 of the fleet are the fleet's last three
    tail, _ = fleet_units(4, 3, seed=5, running=True)
    pd.testing.assert_frame_equal(tail, tables[1][tables[1][UNIT].isin(["u5", "u6", "u7"])].reset_index(drop=True))


def test_generated_fleet_is_a_valid_fleet_with_truth_at_the_cut(tmp_path) -> None:
    hist, run = tmp_path / "h.parquet", tmp_path / "r.parquet"
    write_fleet(hist, 6, seed=1, chunk_units=4)
    write_fleet(run, 6, seed=1, chunk_units=4, running=True)
    h, r = validate_fleet(pd.read_parquet(hist)), validate_fleet(pd.read_parquet(run))
    assert h[UNIT].nunique() == r[UNIT].nunique() == 6
    lives, cuts = h.groupby(UNIT)[CYCLE].max(), r.groupby(UNIT)[CYCLE].max()
    truth = read_truth(run)
    np.testing.assert_array_equal((lives - cuts).to_numpy(), truth.loc[lives.index].to_numpy())
    assert (truth >= 1).all() and (cuts >= np.minimum(31, lives - 1)).all()


def _reference_health(x: np.ndarray, df: pd.DataFrame, baseline: int) -> np.ndarray:
    """health_features computed the straightforward way: one unit at a time, every row from its own past rows."""
    rows = []
    x = np.clip(x.astype(np.float64), -100, 100)
    for _, g in df.groupby(UNIT, sort=False):
        xu = x[g.index.to_numpy()]
        for i in range(len(xu)):
            feats = [float(g[CYCLE].iloc[i])]
            for w in HEALTH_SPANS:
                feats += list(xu[max(0, i + 1 - w) : i + 1].mean(0))
            for w in HEALTH_STD_SPANS:
                feats += list(xu[max(0, i + 1 - w) : i + 1].std(0))
            feats += list(xu[max(0, i + 1 - 10) : i + 1].mean(0) - xu[: min(i + 1, baseline)].mean(0))
            rows.append(feats)
    return np.asarray(rows, np.float32)


def test_health_features_equal_a_per_unit_reference(fleet) -> None:
    df = fleet.train[fleet.train[UNIT].isin(list(dict.fromkeys(fleet.train[UNIT]))[:4])].reset_index(drop=True)
    x = np.random.default_rng(0).normal(size=(len(df), 3)).astype(np.float32)
    np.testing.assert_allclose(health_features(x, df, 20), _reference_health(x, df, 20), rtol=1e-4, atol=1e-4)
    first = df.groupby(UNIT, sort=False).cumcount().to_numpy()
    np.testing.assert_array_equal(unit_starts(df), np.arange(len(df)) - first)


def test_windows_index_names_each_windows_last_row(fleet) -> None:
    df = fleet.test
    x = np.arange(len(df) * 2, dtype=np.float32).reshape(-1, 2)
    for kw in ({}, {"last_only": True}, {"every_cycle": False}):
        w, _, index = windows(x, df, 10, **kw)
        assert len(index) == len(w)
        lookup = {(u, c): i for i, (u, c) in enumerate(zip(df[UNIT], df[CYCLE], strict=True))}
        np.testing.assert_array_equal(w[:, -1, :], x[[lookup[k] for k in index]])  # the window ends at that row


def test_boost_training_builds_no_windows_and_the_dcnn_still_gets_them(fleet) -> None:
    data = prepare(fleet.train, tiny_config())
    data.health(tiny_config())
    assert data._windows == {}
    assert data.x_fit.shape[1:] == (10, len(data.pre.sensors)) and len(data.y_fit) == len(data.x_fit)


def test_chunked_fleet_scoring_equals_scoring_at_once(tiny_model, fleet) -> None:
    whole = tiny_model.predict(fleet.test)
    chunked = predict_table(tiny_model, fleet.test, chunk_units=3)
    expected = whole.sort_values(["lower", "rul"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(chunked, expected)


def test_memory_guard_names_the_memory_it_needs() -> None:
    check_memory(1000, available=2**40)
    with pytest.raises(DataError, match=r"training on 10,000,000 cycles needs about \d+\.\d GiB"):
        check_memory(10_000_000, available=2**30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "abc"], "--sizes: comma-separated numbers of units"),
        (["--sizes", "5"], "--sizes: at least 10 units"),
        (["--dataset", "FD001"], "--dataset does not go with --scale"),
    ],
)
def test_bench_scale_argument_errors_exit_2(args, message) -> None:
    r = CliRunner().invoke(app, ["bench", "--scale", *args])
    assert r.exit_code == 2 and message in r.output


def test_sizes_without_scale_exit_2() -> None:
    r = CliRunner().invoke(app, ["bench", "--sizes", "100"])
    assert r.exit_code == 2 and "--sizes goes with --scale" in r.output


@pytest.mark.slow  # seven child interpreters (about 30 s on a quiet machine)
def test_scale_bench_end_to_end_on_tiny_fleets(tmp_path) -> None:
    out = tmp_path / "ms.json"
    args = [
        "--sizes",
        "12,24",
        "--api-units",
        "24",
        "--data-dir",
        str(tmp_path / "d"),
        "--output",
        str(out),
        "--trees",
        "20",
    ]
    assert scale.main(args) == 0
    doc = json.loads(out.read_text())
    assert out.with_suffix(".png").exists()
    steps = {(r["step"], r["units"]) for r in doc["results"] if "failed" not in r and "timed_out" not in r}
    assert steps == {(s, n) for s in ("generate", "train", "score") for n in (12, 24)} | {("api", 24)}
    assert set(doc["summary"]) == {"generate", "train", "score", "api"}
    assert doc["summary"]["train"]["seconds_exponent"] is not None
    assert doc["quality"]["24"]["rmse"] > 0
    api = doc["api"]
    assert api["ranked_units"] == 24 and {"median_ms", "p95_ms"} <= set(api["unit_rul"]) <= set(api["fleet_page"])
    assert {"machine", "loadavg_start", "note"} <= set(doc["conditions"])


@pytest.mark.slow  # two child interpreters
def test_scale_bench_refuses_training_that_will_not_fit(tmp_path) -> None:
    out = tmp_path / "ms.json"
    args = ["--sizes", "12", "--data-dir", str(tmp_path / "d"), "--output", str(out), "--available-bytes", "1000"]
    args += ["--trees", "20"]
    assert scale.main(args) == 0
    doc = json.loads(out.read_text())
    [train] = [r for r in doc["results"] if r["step"] == "train"]
    assert re.search(r"training on 12 units on [\d,]+ cycles needs about \d+ MiB of memory", train["refused"])
    assert not [r for r in doc["results"] if r["step"] == "score"]
    assert doc["summary"]["train"]["not_run"][0]["why"] == train["refused"]

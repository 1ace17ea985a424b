"""Real data (marked bench): the C-MAPSS FD001 files load as published and the benchmark writes its results in the
shared schema. The full benchmark is ``python -m apps.maintenance bench`` (see the app's README)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from apps.maintenance.__main__ import app
from apps.maintenance.data import load_cmapss
from apps.maintenance.features import Preprocessor

pytestmark = pytest.mark.bench


@pytest.fixture
def cmapss_dir(shared_data, monkeypatch):
    if not (shared_data / "cmapss" / "train_FD001.txt").exists():
        pytest.skip("C-MAPSS FD001 not in the shared data")
    monkeypatch.setenv("MLREF_DATA_DIR", str(shared_data))
    return shared_data / "cmapss"


def test_fd001_loads_as_published(cmapss_dir) -> None:
    fleet = load_cmapss("FD001")  # through MLREF_DATA_DIR, checksums verified
    assert fleet.train.shape == (20631, 26) and fleet.train["unit"].nunique() == 100
    assert fleet.test.shape == (13096, 26) and len(fleet.test_rul) == 100
    assert fleet.test_rul.min() == 7 and fleet.test_rul.max() == 145
    pre = Preprocessor.fit(fleet.train)
    assert pre.n_conditions == 1 and pre.sensors == [
        f"sensor_{i}" for i in (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
    ]


def test_a_short_bench_writes_the_shared_schema(cmapss_dir, tmp_path) -> None:
    out = tmp_path / "maintenance.json"
    r = CliRunner().invoke(
        app,
        [
            "bench",
            "--dataset",
            "FD001",
            "--output",
            str(out),
            "--seeds",
            "2",
            "--dcnn-seeds",
            "1",
            "--epochs",
            "1",
            "--baselines",
            "mean,linear",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert {"app", "dataset", "protocol", "models", "published", "machine"} <= set(doc)
    models = doc["models"]
    assert {
        "FD001 boost (mean of 2 seeds)",
        "FD001 boost ensemble of 2 seeds",
        "FD001 dcnn (mean of 1 seeds)",
        "FD001 mean",
        "FD001 linear",
    } <= set(models)
    assert models["FD001 mean"]["metrics"]["rmse"] > 35  # predicting the mean is far off (about 43)
    boost = models["FD001 boost (mean of 2 seeds)"]["metrics"]
    assert boost["rmse"] < 13.5 and boost["score"] < 300 and "rmse_std" in boost  # measured 12.2 / 200
    assert doc["published"]["DCNN (Li et al. 2018), FD001"] == {"rmse": 12.61, "score": 274.0}

"""Distributed training of the default XGBoost model with ``xgboost.dask`` on 2 local worker processes.

One LocalCluster for the module (starting it costs ~4 s on 2 cores); the tiny simulated world of conftest.py.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from apps.fraud.config import MODEL_NAME, FraudConfig
from apps.fraud.data import DAY, LABEL
from apps.fraud.evaluate import alert_threshold
from apps.fraud.lifecycle import register_model
from apps.fraud.model import FraudModel
from apps.fraud.service import load_model
from apps.fraud.train import train_model, train_model_dask
from common import registry
from common.metrics.classification import average_precision, roc_auc

N_TREES = 100


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("xgboost.dask")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl,
        distributed.Client(cl) as client,
    ):
        yield client


def _params() -> dict:
    return {**FraudConfig().xgb.params(), "n_estimators": N_TREES}


@pytest.fixture(scope="module")
def models(tiny_prepared, dask_client) -> tuple[FraudModel, FraudModel]:
    cfg = FraudConfig()
    single = train_model(tiny_prepared, cfg, params=_params())
    dist = train_model_dask(tiny_prepared, cfg, client=dask_client, params=_params())
    return single, dist


def _test_period(prepared, cfg: FraudConfig):
    """The days after the training window (labels unseen by either model): the latest ``delay_days``."""
    return prepared[prepared[DAY] > prepared[DAY].max() - cfg.features.delay_days]


def test_dask_model_scores_like_the_single_machine_model(tiny_prepared, models) -> None:
    cfg = FraudConfig()
    single, dist = models
    assert isinstance(dist, FraudModel) and dist.kind == "xgboost" and dist.features == single.features
    assert dist.info["distributed"]["workers"] == 2 and dist.info["distributed"]["partitions"] >= 2
    # the same window and parameters as the single-machine fit
    for k in ("train_days", "train_rows", "train_frauds", "alerts_per_day"):
        assert dist.info[k] == single.info[k]
    assert dist.params == single.params and dist.estimator.num_boosted_rounds() == N_TREES

    test = _test_period(tiny_prepared, cfg)
    y = test[LABEL].to_numpy()
    assert 0 < y.sum() < len(y)
    m = {}
    for name, model in (("single", single), ("dask", dist)):
        s = model.predict_proba(test)
        m[name] = {"auc": roc_auc(y, s), "ap": average_precision(y, s)}
    base_rate = y.mean()
    # a model that learned nothing (constant or shuffled labels) has AUC ~0.5 and AP ~ the fraud rate
    assert m["dask"]["auc"] > 0.8, m
    assert m["dask"]["ap"] > base_rate + 0.4, (m, base_rate)
    assert abs(m["dask"]["auc"] - m["single"]["auc"]) < 0.02, m
    assert abs(m["dask"]["ap"] - m["single"]["ap"]) < 0.05, m
    # scores themselves agree closely (same features, params, rows; only the bins and subsampling differ)
    corr = np.corrcoef(single.predict_proba(test), dist.predict_proba(test))[0, 1]
    assert corr > 0.95, corr
    # the threshold logic is train_model's: about alerts_per_day alerts a day on the training window
    window = tiny_prepared[tiny_prepared[DAY].between(*dist.info["train_days"])]
    scores = dist.predict_proba(window)
    assert dist.threshold == alert_threshold(window[DAY].to_numpy(), scores, cfg.serving.alerts_per_day)
    per_day = (scores >= dist.threshold).sum() / window[DAY].nunique()
    assert 0.5 * cfg.serving.alerts_per_day < per_day < 1.5 * cfg.serving.alerts_per_day, per_day


def test_dask_model_saves_registers_and_loads(tmp_path, tiny_prepared, models) -> None:
    _, dist = models
    x = tiny_prepared[dist.features].iloc[:200]
    back = FraudModel.load(dist.save(tmp_path / "direct"))
    assert back.threshold == dist.threshold and back.info["distributed"]["workers"] == 2
    np.testing.assert_allclose(back.predict_proba(x), dist.predict_proba(x), rtol=1e-6)
    assert json.loads((tmp_path / "direct" / "meta.json").read_text())["kind"] == "xgboost"

    mv = register_model(dist, tiny_prepared, work_dir=tmp_path / "reg", alias=registry.CHAMPION)
    served, got = registry.load(MODEL_NAME, registry.CHAMPION, load_model)
    assert got.version == mv.version
    np.testing.assert_allclose(served.predict_proba(x), dist.predict_proba(x), rtol=1e-6)
    contrib, base = served.attribution(x.iloc[:5])  # TreeSHAP works on the dask-trained booster
    np.testing.assert_allclose(base + contrib.sum(axis=1), served.log_odds(x.iloc[:5]), atol=1e-4)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_scheduler_address_is_a_clear_error(tiny_prepared) -> None:
    with pytest.raises(ConnectionError, match=r"cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:\d+'"):
        train_model_dask(
            tiny_prepared,
            FraudConfig(),
            scheduler=f"tcp://127.0.0.1:{_closed_port()}",
            params=_params(),
            connect_timeout=1.0,
        )
    with pytest.raises(ConnectionError, match="unknown address scheme"):
        train_model_dask(tiny_prepared, FraudConfig(), scheduler="nonsense://x", params=_params())


def test_cli_train_with_scheduler_registers_the_model(dask_client) -> None:
    from typer.testing import CliRunner

    from apps.fraud.__main__ import app

    runner = CliRunner()
    res = runner.invoke(
        app, ["train", "--sim-size", "tiny", "--n-estimators", "40", "--scheduler", dask_client.scheduler.address]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["alias"] == registry.CHAMPION and out["distributed"]["workers"] == 2
    model, mv = registry.load(MODEL_NAME, registry.CHAMPION, load_model)
    assert mv.version == out["version"] and model.info["distributed"]["backend"] == "xgboost.dask"

    bad = runner.invoke(app, ["train", "--sim-size", "tiny", "--scheduler", "nonsense://x"])
    assert bad.exit_code == 2 and "cannot reach the Dask scheduler" in bad.output

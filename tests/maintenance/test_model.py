"""Models and metrics: the NASA score by hand, conformal coverage on synthetic data, the alert trade-off by hand,
each model kind against the baselines on the simulator, and save/load."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from apps.maintenance.evaluate import alert_tradeoff, evaluate_last_cycle, metrics
from apps.maintenance.model import DCNN, Conformal, RULModel, coverage
from apps.maintenance.train import fit_baselines, prepare, train
from common.data import DataError
from tests.maintenance.conftest import tiny_config


def test_nasa_score_by_hand() -> None:
    truth = np.array([50.0, 50.0, 50.0, 20.0])
    pred = np.array([37.0, 60.0, 50.0, 40.0])  # 13 early, 10 late, exact, 20 late
    expected = (math.e - 1) + (math.e - 1) + 0 + (math.exp(2) - 1)
    m = metrics(pred, truth, cap=125)
    assert m["score"] == pytest.approx(expected)
    assert m["rmse"] == pytest.approx(math.sqrt((169 + 100 + 0 + 400) / 4))
    # capping: a truth of 140 is compared with 125 in rmse_capped, with 140 in rmse
    m = metrics(np.array([125.0]), np.array([140.0]), cap=125)
    assert m["rmse"] == 15 and m["rmse_capped"] == 0


def test_conformal_intervals_cover_synthetic_data() -> None:
    rng = np.random.default_rng(0)

    def draw(n):
        pred = rng.uniform(0, 125, n)
        return pred + rng.normal(0, 2 + 0.15 * pred), pred  # noise grows with the prediction

    y_cal, p_cal = draw(3000)
    conf = Conformal.calibrate(y_cal, p_cal, alpha=0.1)
    y, p = draw(50_000)
    lo, hi = conf.interval(p)
    assert abs(coverage(y, lo, hi) - 0.9) < 0.02
    width = hi - lo
    assert width[p < 30].mean() < 0.6 * width[p > 95].mean()  # Mondrian bins adapt to the noise level
    assert (lo >= 0).all()


def test_alert_tradeoff_by_hand() -> None:
    per_unit = pd.DataFrame(
        {"unit": list("abcd"), "lower": [5.0, 25.0, 40.0, 90.0], "true_rul": [10.0, 20.0, 60.0, 100.0]}
    )
    curve = alert_tradeoff(per_unit, horizon=30, thresholds=np.array([0, 30, 100]))
    # a and b need service (true RUL <= 30); at threshold 30, a and b alert, c and d do not
    r = curve.set_index("threshold")
    assert r.loc[0, "missed"] == 2 and r.loc[30, "missed"] == 0 and r.loc[30, "alerts"] == 2
    assert r.loc[30, "wasted_per_alert"] == 15 and r.loc[100, "false_alarms"] == 2
    assert r.loc[100, "wasted_per_unit"] == pytest.approx((10 + 20 + 60 + 100) / 4)


def test_dcnn_shapes_and_paper_layout() -> None:
    net = DCNN(14, 30)
    convs = [m for m in net.conv if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 10, 10),
        (10, 10, 10),
        (10, 10, 10),
        (10, 10, 10),
        (10, 1, 3),
    ]
    assert net(torch.zeros(7, 30, 14)).shape == (7,)


@pytest.mark.parametrize("kind", ["boost", "dcnn"])
def test_each_model_beats_the_mean_and_round_trips(kind, fleet, request, tmp_path) -> None:
    tiny_model = request.getfixturevalue("tiny_model" if kind == "boost" else "tiny_dcnn")
    assert tiny_model.kind == kind
    ours, per_unit = evaluate_last_cycle(tiny_model, fleet.test, fleet.test_rul, 125)
    data = prepare(fleet.train, tiny_config())
    base = fit_baselines(data, tiny_config(), kinds=("mean", "linear"))
    mean, _ = evaluate_last_cycle(base["mean"], fleet.test, fleet.test_rul, 125)
    assert ours["rmse"] < 0.8 * mean["rmse"]
    assert {"lower", "upper", "alert"} <= set(per_unit.columns) and (per_unit.lower <= per_unit.rul).all()
    saved = tiny_model.save(tmp_path / "m")
    assert {p.name for p in saved.iterdir()} == (
        {"model.json", "booster_0.json"} if kind == "boost" else {"model.json", "weights.pt"}
    )
    again = RULModel.load(saved)
    pd.testing.assert_frame_equal(again.predict(fleet.test), tiny_model.predict(fleet.test))
    pd.testing.assert_frame_equal(again.predict_cycles(fleet.test), tiny_model.predict_cycles(fleet.test))
    assert again.info["fit_units"] == tiny_model.info["fit_units"]


def test_boost_members_differ_by_seed_and_average(fleet) -> None:
    two = train(fleet.train, tiny_config(n_seeds=2))
    assert two.members == 2 and [m["seed"] for m in two.info["members"]] == [0, 1]
    h = np.random.default_rng(0).normal(size=(50, 1 + 6 * len(two.pre.sensors))).astype(np.float32)
    a, b = (m.predict(h) for m in two.boosters)
    assert not np.allclose(a, b)  # row and feature subsampling differ by seed
    np.testing.assert_allclose(two.predict_features(h), np.clip((a + b) / 2, 0, 125), rtol=1e-6)


def test_intervals_are_calibrated_on_held_out_and_out_of_fold_units(fleet) -> None:
    cfg = tiny_config()
    data = prepare(fleet.train, cfg)
    held_out = len(data.health(cfg)[2])
    both = train(fleet.train, cfg, data=data)
    only = train(fleet.train, tiny_config(calibration_folds=0), data=data)
    assert only.info["calibration_examples"] == held_out < both.info["calibration_examples"]
    assert only.info["val_rmse"] == pytest.approx(both.info["val_rmse"])  # the held-out units' error either way
    assert only.conformal.n_calibration == held_out and both.conformal.n_calibration > held_out


def test_a_config_with_an_unknown_model_is_refused() -> None:
    with pytest.raises(DataError, match="model must be 'boost' or 'dcnn'"):
        tiny_config(model="lstm").check()
    with pytest.raises(DataError, match=r"baseline_cycles must be in 1\.\.50"):
        tiny_config(baseline_cycles=80).check()


def test_training_stops_at_its_time_budget() -> None:
    from torch.utils.data import TensorDataset

    from common import training

    x, y = torch.randn(64, 10, 3), torch.randn(64)
    ds = TensorDataset(x, y)
    cfg = training.TrainConfig(epochs=50, max_time_s=0.0, progress=False, device="cpu", batch_size=32)
    result = training.fit(DCNN(3, 10, channels=2, kernel=3, hidden=4), ds, ds, torch.nn.MSELoss(), cfg)
    assert len(result.history) == 1 and result.stopped_early  # common.training's max_time_s (added for this app)


class _Clock:
    """A perf_counter that advances 10 ms per call: the budget arithmetic without the machine's load in it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.01
        return self.now


def test_a_time_budget_sizes_the_schedule_instead_of_cutting_it(fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.maintenance import train as train_mod
    from apps.maintenance.model import make_net
    from apps.maintenance.train import epochs_for_budget, fit_member

    cfg = tiny_config(epochs=10_000)
    data = prepare(fleet.train, cfg)
    net = make_net(data.x_fit.shape[2], cfg.to_dict())
    monkeypatch.setattr(train_mod, "time", _Clock())  # every timed step "takes" 10 ms
    epochs, epoch_s = epochs_for_budget(net, data, cfg, budget_s=1e9)
    assert epochs == cfg.epochs and epoch_s > 0  # a budget that does not bind leaves the schedule alone
    few, _ = epochs_for_budget(net, data, cfg, budget_s=5.5 * epoch_s)
    assert few == 5  # exactly what fits, never 10,000
    assert epochs_for_budget(net, data, cfg, budget_s=0.0)[0] == 1
    # the cosine schedule spans the ~10 epochs that fit, not 10,000 (after one epoch of 10,000 the rate would still
    # be within 3e-8 of its start; after one of even 1,000 it has decayed by 2.5e-6)
    _, result = fit_member(data, tiny_config(epochs=10_000, max_train_s=10 * epoch_s), seed=0)
    assert len(result.history) < 100 and result.history[0]["lr"] < (1 - 1e-6) * cfg.lr

"""Training: split the run-to-failure histories by unit, fit the preprocessing on the training units only, train
the members (gradient-boosted trees on health features, or DCNNs with ``common.training.fit``) and calibrate the
conformal intervals on the held-out units."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from apps.maintenance.config import Config
from apps.maintenance.data import CYCLE, RUL, UNIT
from apps.maintenance.features import Preprocessor, add_rul, health_features, split_units, windows
from apps.maintenance.model import (
    Booster,
    Conformal,
    LastWindowLinear,
    MeanBaseline,
    RULModel,
    SktimeRegressor,
    WindowRegressor,
    make_net,
    predict_net,
)
from common import training
from common.metrics.regression import rmse

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One split: training units (fit) and held-out units (validation/calibration), with their histories and the
    capped ``rul`` column. The DCNN's windows (``x_fit[n, window, f]``, ``y_fit``, ``x_val``, ``y_val``) are built
    on first use: the boosted trees never need them (at 10,000 units they would take 2 GB)."""

    pre: Preprocessor
    fit_units: list[str]
    val_units: list[str]
    fit_rows: pd.DataFrame
    val_rows: pd.DataFrame
    window: int
    _windows: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def _part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._windows:
            df = self.fit_rows if name == "fit" else self.val_rows
            log.info("windows of %d %s cycles (the DCNN's input)", len(df), name)
            x, y, _ = windows(self.pre.transform(df), df, self.window, y=df[RUL].to_numpy(float), every_cycle=False)
            assert y is not None
            self._windows[name] = (x, y)
        return self._windows[name]

    @property
    def x_fit(self) -> np.ndarray:
        return self._part("fit")[0]

    @property
    def y_fit(self) -> np.ndarray:
        return self._part("fit")[1]

    @property
    def x_val(self) -> np.ndarray:
        return self._part("val")[0]

    @property
    def y_val(self) -> np.ndarray:
        return self._part("val")[1]

    def health(self, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(h_fit, y_fit, h_cal, y_cal)``: health features and capped RUL at every cycle of the training units,
        and at the held-out cycles the intervals are calibrated on: from cycle ``window`` on, the same cycles as
        the DCNN's windows (every unit's first cycles, all at the cap and easy, would narrow the intervals where
        they matter)."""
        out = []
        for df in (self.fit_rows, self.val_rows):
            out += [health_features(self.pre.transform(df), df, cfg.baseline_cycles), df[RUL].to_numpy(np.float32)]
        cal = self.val_rows[CYCLE].to_numpy() >= cfg.window
        return out[0], out[1], out[2][cal], out[3][cal]


def prepare(histories: pd.DataFrame, cfg: Config, *, val_units: list[str] | None = None) -> Prepared:
    """Split ``histories`` by unit (``cfg.val_fraction`` held out unless ``val_units`` is given), fit the
    preprocessing on the kept units only; the windows of both parts follow on first use."""
    if val_units is None:
        fit_units, val_units = split_units(histories[UNIT], cfg.val_fraction, cfg.seed)
    else:
        fit_units = [u for u in dict.fromkeys(histories[UNIT]) if u not in set(val_units)]
    fit_df = histories[histories[UNIT].isin(fit_units)].reset_index(drop=True)
    val_df = histories[histories[UNIT].isin(val_units)].reset_index(drop=True)
    pre = Preprocessor.fit(fit_df, n_conditions=cfg.n_conditions, norm=cfg.norm, seed=cfg.seed)
    fit_rows, val_rows = add_rul(fit_df, cfg.rul_cap), add_rul(val_df, cfg.rul_cap)
    return Prepared(pre, fit_units, list(val_units), fit_rows, val_rows, cfg.window)


# Bytes per training row at the peak of a boosted-tree fit (the table, its health features in float32 and
# float64 intermediates, xgboost's quantised copy), measured on the scaling bench (apps/maintenance/scale.py);
# ``training_memory_bytes`` uses it to refuse what will not fit.
TRAIN_BYTES_PER_ROW = 2000


def training_memory_bytes(rows: int) -> int:
    """Resident memory a boosted-tree training on ``rows`` cycles needs at its peak (bytes), table included."""
    return int(rows * TRAIN_BYTES_PER_ROW)


def check_memory(rows: int, *, what: str = "training", resident: int = 0, available: int | None = None) -> None:
    """Raise :class:`common.scaling.MemoryRefused` naming the memory ``what`` needs on ``rows`` cycles when it
    exceeds what is available (``available`` bytes, default: the machine's available memory now, plus ``resident``
    bytes of the estimate already in memory, such as the loaded table)."""
    from common.scaling import available_memory
    from common.scaling import check_memory as check

    check(
        training_memory_bytes(rows),
        what=f"{what} on {rows:,} cycles",
        instead="train on fewer units (a sample of the fleet's units) or on a machine with more memory",
        available=(available_memory() if available is None else available) + resident,
    )


def _rmse_metric(out: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((out.float() - target.float()) ** 2)))


def epochs_for_budget(
    net: nn.Module, data: Prepared, cfg: Config, budget_s: float, *, steps: int = 4
) -> tuple[int, float]:
    """``(epochs, seconds per epoch)``: how many of ``cfg.epochs`` fit in ``budget_s`` on this machine now.

    Times ``steps`` training steps (after one warm-up) of a copy of ``net`` at the configured batch size, plus a
    validation pass, so that a time-capped run gets a complete learning-rate schedule sized to its budget instead
    of a long schedule cut off half-way (on a CPU twice as slow, half the epochs, each with the full decay)."""
    probe = copy.deepcopy(net).train()
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr)
    n = min(cfg.batch_size, len(data.x_fit))
    x, y = torch.from_numpy(data.x_fit[:n]), torch.from_numpy(data.y_fit[:n])
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.mse_loss(probe(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times[1:]))
    probe.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(data.x_val), 4096):
            probe(torch.from_numpy(data.x_val[i : i + 4096]))
    epoch_s = step_s * math.ceil(len(data.x_fit) / cfg.batch_size) + (time.perf_counter() - t0)
    return max(1, min(cfg.epochs, int(budget_s / epoch_s))), epoch_s


def fit_member(
    data: Prepared, cfg: Config, seed: int, *, checkpoint_dir: Path | None = None, progress: bool = False
) -> tuple[nn.Module, training.FitResult]:
    """One DCNN trained on the fit windows; the epoch with the best validation RMSE is kept.

    With ``cfg.max_train_s``, the epoch count is first sized to each member's share of that budget
    (:func:`epochs_for_budget`); the cap still stops the loop should the machine slow down meanwhile."""
    torch.manual_seed(seed)
    net = make_net(data.x_fit.shape[2], cfg.to_dict())
    with torch.no_grad():  # start at the mean target: the first epochs learn shape, not the offset
        net.head[-1].bias.fill_(float(np.mean(data.y_fit)) / net.out_scale)
    train_ds = TensorDataset(torch.from_numpy(data.x_fit), torch.from_numpy(data.y_fit))
    val_ds = TensorDataset(torch.from_numpy(data.x_val), torch.from_numpy(data.y_val))
    epochs = cfg.epochs
    budget = cfg.max_train_s / cfg.n_seeds if cfg.max_train_s else None
    if budget is not None and checkpoint_dir is None:  # a resumed run keeps the schedule it started with
        epochs, epoch_s = epochs_for_budget(net, data, cfg, budget)
        if epochs < cfg.epochs:
            log.info(
                "%.1f s per epoch here: %d of %d epochs fit in %.0f s, the schedule is sized to them",
                epoch_s,
                epochs,
                cfg.epochs,
                budget,
            )
    tc = training.TrainConfig(
        epochs=epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        grad_clip=None,
        amp=False,
        scheduler="cosine",
        early_stopping_patience=cfg.patience,
        monitor="val_rmse",
        mode="min",
        restore_best=True,
        checkpoint_dir=checkpoint_dir,
        resume=checkpoint_dir is not None,
        seed=seed,
        device="cpu",
        progress=progress,
        max_time_s=budget,
        ema_decay=cfg.ema_decay,
    )
    result = training.fit(net, train_ds, val_ds, nn.MSELoss(), tc, metrics={"rmse": _rmse_metric})
    net.eval()
    return net, result


def train(
    histories: pd.DataFrame,
    cfg: Config,
    *,
    val_units: list[str] | None = None,
    progress: bool = False,
    data: Prepared | None = None,
) -> RULModel:
    """The registered model: ``cfg.n_seeds`` members of kind ``cfg.model`` on the training units, conformal
    intervals calibrated on the held-out units. ``info`` records the split, epochs, timings and validation RMSE."""
    cfg.check()
    if cfg.model == "boost" and data is None:
        check_memory(len(histories), resident=int(histories.memory_usage().sum()))
    t0 = time.perf_counter()
    data = data or prepare(histories, cfg, val_units=val_units)
    if cfg.model == "boost":
        return _train_boost(data, cfg, t0)
    nets, runs = [], []
    for k in range(cfg.n_seeds):
        net, res = fit_member(data, cfg, cfg.seed + k, progress=progress)
        nets.append(net)
        runs.append(
            {
                "seed": cfg.seed + k,
                "epochs": len(res.history),
                "best_epoch": res.best_epoch,
                "best_val_rmse": res.best_metric,
            }
        )
    val_pred = np.clip(np.mean([predict_net(n, data.x_val) for n in nets], axis=0), 0, cfg.rul_cap)
    conformal, info = _calibrate(data, data.y_val, val_pred, cfg, runs, t0, train_windows=len(data.x_fit))
    return RULModel(data.pre, nets, conformal, cfg.to_dict(), info)


def _train_boost(data: Prepared, cfg: Config, t0: float) -> RULModel:
    """``cfg.n_seeds`` boosted-tree members on the health features of every training cycle."""
    health = data.health(cfg)
    h_fit, y_fit = health[0], health[1]
    boosters, runs = [], []
    log.info(
        "boosted trees: %d member(s) x %d trees on %d cycles of health features, then %d calibration fold(s)",
        cfg.n_seeds,
        cfg.boost_trees,
        len(h_fit),
        cfg.calibration_folds,
    )
    for k in range(cfg.n_seeds):
        t1 = time.perf_counter()
        boosters.append(Booster.fit(h_fit, y_fit, cfg.boost_params(), cfg.seed + k))
        runs.append({"seed": cfg.seed + k, "trees": cfg.boost_trees, "fit_s": round(time.perf_counter() - t1, 2)})
    log.info("member(s) fitted in %.1f s; calibrating the intervals", time.perf_counter() - t0)
    y, pred, n_val = boost_calibration(data, cfg, boosters, health)
    conformal, info = _calibrate(data, y, pred, cfg, runs, t0, n_val=n_val, train_rows=len(h_fit))
    return RULModel(data.pre, [], conformal, cfg.to_dict(), info, boosters)


def boost_calibration(
    data: Prepared,
    cfg: Config,
    boosters: list[Booster],
    health: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(y, pred, n_val)``: the examples the intervals are calibrated on. First the ``n_val`` held-out cycles
    (:meth:`Prepared.health`) predicted by ``boosters``; then, with ``cfg.calibration_folds`` >= 2, the training
    units' cycles from ``window`` on, each predicted by a booster fitted on the other folds' units (one booster
    a fold, the first member's seed). The residuals of 100 units instead of 15 steady the quantiles: FD001 test
    coverage of the 90 % intervals, 3 seeds, 0.85 / 0.89 / 0.84 from the held-out units alone, 0.88 / 0.89 /
    0.90 with 5 folds. Costs ``calibration_folds`` more fits, so the folds are left out once ``calibration_units``
    or more units are held out (their residuals alone are plenty: 1,500 units at a fleet of 10,000)."""
    h_fit, y_fit, h_cal, y_cal = health if health is not None else data.health(cfg)
    assert data.fit_rows is not None
    ys = [y_cal]
    preds = [np.clip(np.mean([b.predict(h_cal) for b in boosters], axis=0), 0, cfg.rul_cap)]
    units = data.fit_rows[UNIT].to_numpy()
    distinct = np.array(list(dict.fromkeys(units)))
    k = min(cfg.calibration_folds, len(distinct) // 2) if len(data.val_units) < cfg.calibration_units else 0
    if k >= 2:
        np.random.default_rng(cfg.seed).shuffle(distinct)
        late = data.fit_rows[CYCLE].to_numpy() >= cfg.window
        for fold in np.array_split(distinct, k):
            out = np.isin(units, fold)
            booster = Booster.fit(h_fit[~out], y_fit[~out], cfg.boost_params(), cfg.seed)
            ys.append(y_fit[out & late])
            preds.append(np.clip(booster.predict(h_fit[out & late]), 0, cfg.rul_cap))
    return np.concatenate(ys), np.concatenate(preds), len(y_cal)


def _calibrate(
    data: Prepared,
    y: np.ndarray,
    pred: np.ndarray,
    cfg: Config,
    runs: list,
    t0: float,
    *,
    n_val: int | None = None,
    **sizes: int,
) -> tuple[Conformal, dict[str, Any]]:
    """Conformal intervals on calibration targets and predictions whose first ``n_val`` (default: all) are the
    held-out units' (``val_rmse`` is theirs), and the model's ``info``."""
    conformal = Conformal.calibrate(y, pred, cfg.alpha)
    lo, hi = conformal.interval(pred)
    n_val = len(y) if n_val is None else n_val
    info: dict[str, Any] = {
        "model": cfg.model,
        "members": runs,
        "fit_units": len(data.fit_units),
        "val_units": len(data.val_units),
        **sizes,
        "calibration_examples": len(y),
        "val_rmse": rmse(y[:n_val], pred[:n_val]),
        "val_coverage_in_sample": float(np.mean((y >= lo) & (y <= hi))),
        "sensors": data.pre.sensors,
        "dropped_sensors": data.pre.dropped,
        "conditions": data.pre.n_conditions,
        "fit_s": round(time.perf_counter() - t0, 2),
    }
    log.info("trained %d member(s) in %.1f s; validation RMSE %.2f", len(runs), info["fit_s"], info["val_rmse"])
    return conformal, info


BASELINES = ("mean", "linear", "summary", "minirocket")


def fit_baselines(
    data: Prepared, cfg: Config, kinds: tuple[str, ...] = BASELINES, *, max_windows: int = 20_000
) -> dict[str, WindowRegressor]:
    """The comparison models on the same training windows (every other window once there are more than
    ``max_windows``): ``mean`` (training mean), ``linear`` (ridge on the flattened window), ``summary`` (window
    statistics + gradient boosting) and ``minirocket`` (sktime MiniRocket, 1,000 kernels, + ridge); ``fit_s``
    records each one's fitting seconds."""
    x, y = data.x_fit, data.y_fit
    if len(x) > max_windows:
        step = int(np.ceil(len(x) / max_windows))
        x, y = x[::step], y[::step]
    makers = {
        "mean": MeanBaseline,
        "linear": LastWindowLinear,
        "summary": lambda: SktimeRegressor("summary", seed=cfg.seed),
        "minirocket": lambda: SktimeRegressor("minirocket", num_kernels=1000, seed=cfg.seed),
    }
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        reg = makers[kind]().fit(x, y)
        out[kind] = WindowRegressor(data.pre, reg, cfg.window, cfg.rul_cap, round(time.perf_counter() - t0, 2))
    return out

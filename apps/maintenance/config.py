"""Settings and defaults of the maintenance app: one place to read what it does out of the box.

Override with flags (``--epochs 40``) or a JSON file (``--config my.json`` with any field of :class:`Config`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from apps.maintenance.features import HEALTH_SPANS
from common.config import from_json_file
from common.data import DataError

APP = "maintenance"
REGISTRY_NAME = "maintenance"  # the model's name in the registry
MAX_BASELINE_CYCLES = 50  # the service keeps this many of each unit's first readings (its baseline)


@dataclass
class Config:
    """Everything a training run needs besides the data.

    ``model="boost"`` (the default): gradient-boosted trees on causal health features of every cycle (age,
    rolling means and deviations, drift from the unit's first ``baseline_cycles`` cycles); seconds to train.
    ``model="dcnn"``: the FD001 recipe of Li et al. 2018 (window 30, RUL cap 125, 14 informative sensors, Adam
    1e-3, batch 512) with the schedule the benchmark measured; the demo shortens ``epochs``.
    """

    model: str = "boost"  # "boost" (xgboost on health features) or "dcnn" (the sequence model)

    # your table's columns (a table already named unit, cycle, setting_*, sensor_* needs none of these)
    unit_column: str = "unit"  # the column that names the unit (engine, machine)
    cycle_column: str = "cycle"  # the column that counts its cycles (1, 2, ...)
    sensors: str = ""  # comma-separated sensor columns, kept as sensor_<name> (empty: the table's sensor_* columns)
    setting_columns: str = ""  # comma-separated operating-setting columns, kept as setting_<name> (empty: setting_*)

    # preprocessing (fitted on training units only)
    window: int = 30  # cycles per input window
    rul_cap: float = 125.0  # piecewise-linear target: min(RUL, cap)
    n_conditions: int | None = None  # operating-condition clusters of the settings; None = chosen from the data
    norm: str = "minmax"  # per-condition scaling of sensors: "minmax" (to [-1, 1]) or "zscore"
    val_fraction: float = 0.15  # share of training units held out (early stopping, conformal calibration)
    baseline_cycles: int = 20  # a unit's first cycles that define its own healthy baseline (boost features)
    # gradient-boosted trees (model.Booster)
    boost_trees: int = 800
    boost_depth: int = 4
    boost_lr: float = 0.03
    boost_min_child_weight: float = 20.0  # rows per leaf, at least
    calibration_folds: int = 5  # boost: out-of-fold training units join the held-out ones for the intervals (0: off)
    calibration_units: int = 100  # ... only while fewer units than this are held out (enough residuals without)
    # the sequence model (model.DCNN)
    channels: int = 10
    kernel: int = 10
    hidden: int = 100
    dropout: float = 0.5
    epochs: int = 250
    lr: float = 1e-3
    scale_output: bool = True  # network output in units of rul_cap (faster start than the paper's raw output)
    ema_decay: float | None = None  # exponential moving average of the weights (None = off)
    weight_decay: float = 0.0
    batch_size: int = 512
    patience: int | None = None  # early stopping on validation RMSE (epochs); None = fixed schedule
    max_train_s: float | None = 1200.0  # stop the epoch loop after this many seconds (20 minutes)
    n_seeds: int = 1  # members of the seed ensemble (predictions averaged)
    baselines: tuple[str, ...] = ("mean", "linear", "summary")  # what evaluate compares with (summary: ~30 s)
    # prediction intervals and alerts
    alpha: float = 0.1  # conformal miscoverage: intervals aim at 1 - alpha coverage
    horizon: float = 30.0  # alert when the interval's lower bound is at or below this many cycles
    lead_time: float = 10.0  # cycles maintenance needs: an alert later than this before failure is a miss
    # lifecycle
    window_units: int = 20  # retrain compares champion and challenger on the latest failed units
    max_readings: int = 1000  # cycles per HTTP request
    history_cycles: int = 200  # cycles of raw readings the service keeps per unit
    max_units: int = 10_000  # units the service tracks
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_file(cls, path: str | Path | None) -> Config:
        """Defaults, updated from a JSON file (unknown keys are an error)."""
        return from_json_file(cls, path).check()

    def boost_params(self) -> dict[str, float]:
        return {
            "trees": self.boost_trees,
            "depth": self.boost_depth,
            "lr": self.boost_lr,
            "min_child_weight": self.boost_min_child_weight,
        }

    def check(self) -> Config:
        """Raise DataError on values no run can use."""
        if self.model not in ("boost", "dcnn"):
            raise DataError(f"config: model must be 'boost' or 'dcnn', got {self.model!r}")
        if not 1 <= self.baseline_cycles <= MAX_BASELINE_CYCLES:
            raise DataError(f"config: baseline_cycles must be in 1..{MAX_BASELINE_CYCLES}, got {self.baseline_cycles}")
        if self.history_cycles < max(self.window, *HEALTH_SPANS):
            raise DataError(
                f"config: history_cycles ({self.history_cycles}) must cover the window ({self.window}) and the "
                f"longest rolling feature ({max(HEALTH_SPANS)} cycles)"
            )
        if self.boost_trees < 1 or self.boost_depth < 1 or not self.boost_lr > 0 or self.calibration_folds < 0:
            raise DataError("config: boost_trees and boost_depth must be >= 1, boost_lr > 0, calibration_folds >= 0")
        if self.window < 2 or self.rul_cap <= 0 or not 0 < self.val_fraction < 1 or not 0 < self.alpha < 1:
            raise DataError("config: need window >= 2, rul_cap > 0, 0 < val_fraction < 1, 0 < alpha < 1")
        if unknown := set(self.baselines) - {"mean", "linear", "summary"}:
            raise DataError(f"config: baselines must be among mean, linear, summary; unknown {sorted(unknown)}")
        if self.norm not in ("minmax", "zscore"):
            raise DataError(f"config: norm must be 'minmax' or 'zscore', got {self.norm!r}")
        if self.epochs < 1 or self.n_seeds < 1 or self.batch_size < 1:
            raise DataError("config: epochs, n_seeds and batch_size must be >= 1")
        return self

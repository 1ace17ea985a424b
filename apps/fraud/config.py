"""Defaults of the fraud app: simulation size, feature windows, evaluation protocol, model and serving settings.

Every number that shapes a result lives here, so a run is reproduced by its config alone. The evaluation protocol
is the one of the ULB/Worldline fraud-detection handbook (chapter 5: 7 days training, 7 days feedback delay,
7 days test, 4 prequential folds, model selection on validation folds before the test folds).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from common.data import DataError
from common.errors import ConfigError

APP = "fraud"
MODEL_NAME = "fraud"  # registry name of the champion/challenger model

# ---------------------------------------------------------------- input limits (files and the API alike)
# Ids (tx_id, customer_id, terminal_id) are strings: 1-64 characters of letters, digits and ``_ - . : @``.
# Integer ids (a CSV's 171, a JSON 171) are accepted and mean the string "171"; booleans never are.
ID_MAX_LENGTH = 64
ID_PATTERN = r"[A-Za-z0-9_.:@-]{1,64}"
# Amounts above this are refused (a card payment of a billion is a unit or parsing error, and float32 - the
# model's input type - overflows at 3.4e38).
MAX_AMOUNT = 1e9
# Labels per POST /v1/labels call (more: 422; send them in several calls).
MAX_LABELS_PER_REQUEST = 10_000


@dataclass(frozen=True)
class SimulationConfig:
    """Size and randomness of the transaction simulator (handbook chapter 3.2 defaults = the reference set)."""

    n_customers: int = 5_000
    n_terminals: int = 10_000
    n_days: int = 183
    start_date: str = "2018-04-01"
    radius: float = 5.0  # a customer uses terminals within this distance on the 100 x 100 grid
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    amount_fraud_threshold: float = 220.0
    seed: int = 0

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


REFERENCE_SIMULATION = SimulationConfig()
# The demo's smaller world: same mechanisms, ~1/10 of the transactions, enough days for 2 prequential folds.
DEMO_SIMULATION = SimulationConfig(n_customers=1_000, n_terminals=2_000, n_days=84)
# Tiny world for tests (seconds).
TINY_SIMULATION = SimulationConfig(n_customers=300, n_terminals=600, n_days=70)
SIZES = {"reference": REFERENCE_SIMULATION, "demo": DEMO_SIMULATION, "tiny": TINY_SIMULATION}  # --sim-size
ENGINES = ("pandas", "dask")  # --engine: in memory, or out of core over parquet partitions
MODEL_KINDS = ("xgboost", "logreg", "random_forest", "decision_tree")
# the xgboost flags of `train`; given with another --model they are that model's parameters (FraudConfig.params)
MODEL_FLAGS = ("n_estimators", "max_depth", "learning_rate")


@dataclass(frozen=True)
class FeatureConfig:
    """Windows (days) of the customer-spending and terminal-risk features, and the label feedback delay."""

    customer_windows: tuple[int, ...] = (1, 7, 30)
    terminal_windows: tuple[int, ...] = (1, 7, 30)
    delay_days: int = 7  # fraud labels are known this many days after the transaction
    night_end_hour: int = 6  # a transaction at hour <= 6 (00:00-06:59) is a night transaction (handbook)
    extended: bool = True  # add the feature groups below to the handbook's 15 (False: the handbook's 15 only)
    # feature groups beyond the handbook's 15 (apps.fraud.features.FEATURE_GROUPS); each one raised validation
    # AP on its own, all four together the most (apps/fraud/README.md, "What moved the numbers")
    groups: tuple[str, ...] = ("amount_ratio", "amount_vs_past", "spend_shift", "terminal_fraud_age")

    @property
    def history_days(self) -> int:
        """How much history the online state must keep (days)."""
        return max(max(self.customer_windows), self.delay_days + max(self.terminal_windows))


@dataclass(frozen=True)
class ProtocolConfig:
    """The handbook's prequential protocol (chapter 5.2-5.3); days are indices from the data's first day.

    ``anchor_day`` is the handbook's ``start_date_training`` (2018-07-25 = day 115 of the reference data).
    Validation folds train from ``anchor - (delay + test)`` backwards, test folds from ``anchor + (n_folds-1)*test``
    backwards, one ``delta_test`` per fold. ``None`` picks the handbook's day when the data is long enough, else
    the latest anchor whose test folds fit in the data.
    """

    delta_train: int = 7
    delta_delay: int = 7
    delta_test: int = 7
    n_folds: int = 4
    anchor_day: int | None = 115
    top_k: int = 100

    def resolve_anchor(self, n_days: int) -> int:
        """The anchor day for data spanning ``n_days`` days; raises when the data is too short."""
        span_after = (self.n_folds - 1) * self.delta_test + self.delta_train + self.delta_delay + self.delta_test
        span_before = self.delta_delay + self.delta_test + (self.n_folds - 1) * self.delta_test
        latest = n_days - span_after
        anchor = self.anchor_day if self.anchor_day is not None and self.anchor_day <= latest else latest
        if anchor - span_before < 0:
            one = replace(self, n_folds=1).days_needed()
            raise DataError(
                f"the data spans {n_days} days, too few for the evaluation protocol: {self.n_folds} validation + "
                f"{self.n_folds} test folds need at least {span_before + span_after} days (1 fold needs {one}); "
                f"use --n-folds 1 or supply at least {one} days of transactions"
            )
        return anchor

    def days_needed(self) -> int:
        """Days of data the protocol needs: ``n_folds`` validation folds before the anchor, test folds after."""
        span_after = (self.n_folds - 1) * self.delta_test + self.delta_train + self.delta_delay + self.delta_test
        span_before = self.delta_delay + self.delta_test + (self.n_folds - 1) * self.delta_test
        return span_before + span_after

    def fitted(self, n_days: int) -> ProtocolConfig:
        """This protocol with as many folds (up to ``n_folds``) as ``n_days`` of data allow."""
        for k in range(self.n_folds, 0, -1):
            candidate = replace(self, n_folds=k)
            try:
                candidate.resolve_anchor(n_days)
            except ValueError:
                continue
            return candidate
        return self  # not even one fold: resolve_anchor raises the explanation


@dataclass(frozen=True)
class XGBConfig:
    """XGBoost hyper-parameters without tuning; ``--tune N`` searches from here on the validation folds (the
    benchmark's tuned values are in apps/fraud/README.md and bench/results/fraud.json)."""

    n_estimators: int = 300
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    gamma: float = 0.0
    scale_pos_weight: float = 1.0
    # Split finding. xgboost 3.x defaults to histograms of 256 bins and an estimated base_score; the handbook's
    # xgboost 1.x used exact greedy splits and base_score 0.5. 256 bins blur the amount > 220 rule (scenario 1):
    # on the handbook's 15 features validation AP went 0.676 (256 bins) -> 0.703 (1024) -> 0.714 (exact, 13x slower
    # to train); base_score 0.5 added 0.004 (README, "What moved the numbers").
    tree_method: str = "hist"
    max_bin: int = 1024
    base_score: float | None = 0.5
    n_jobs: int = 1  # one thread: on a shared 2-core machine, 2 OpenMP threads ran 10x slower

    def params(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServingConfig:
    """Alerting and online behaviour.

    Timestamp policy of the online path (see apps/fraud/README.md, "Online state"): a transaction dated more than
    ``future_skew_s`` after the server's clock, or more than ``max_late_days`` before the newest transaction the
    state has seen, is refused with 422 and changes nothing; a late transaction inside that window is scored on
    the history up to its own time and inserted in time order, without rewinding anything else.
    """

    alerts_per_day: int = 100  # daily alert budget; the decision threshold is set to meet it (train/retrain)
    n_reasons: int = 3  # feature contributions returned per explained transaction
    # which responses carry reasons by default: "alerts" (exact TreeSHAP costs 1-5 ms a row, more than the rest
    # of the request; investigators need it for alerts) or "all"; a request can ask with ?explain=true|false
    explain: str = "alerts"
    max_late_days: float = 7.0  # oldest accepted transaction, in days before the newest one in the state
    future_skew_s: float = 300.0  # newest accepted transaction, in seconds after the server's clock (UTC)


@dataclass(frozen=True)
class RetrainConfig:
    """Weekly retraining: train on the latest labelled weeks, compare on the most recent labelled week."""

    train_days: int = 7
    eval_days: int = 7
    metric: str = "average_precision"
    margin: float = 0.0


@dataclass
class DemoConfig:
    """The demo's own knobs (``python -m apps.fraud demo``)."""

    dataset: str | None = None  # your labelled transactions (>= 70 days) instead of the simulated world
    seed: int = 42  # seed of the demo's models (the world's: FraudConfig.seed)
    new_days: int = 21  # the latest days: served, batch-scored, drifted (amounts x1.5) and retrained on
    n_folds: int = 2  # prequential folds of the demo's evaluation
    n_requests: int = 200  # transactions scored over HTTP


@dataclass
class FraudConfig:
    """Everything the app needs, in one object: frozen sections, and the run's own choices as flat fields (the
    command-line flags of :mod:`apps.fraud.pipeline`)."""

    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    xgb: XGBConfig = field(default_factory=XGBConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    sim_size: str | None = None  # simulated world without --dataset: reference, demo or tiny (None: section)
    seed: int | None = None  # seed of the simulated world (None: the simulation section's, 0)
    model: str = "xgboost"  # the kind train fits: xgboost, logreg, random_forest or decision_tree
    params: dict[str, Any] = field(default_factory=dict)  # parameters of a --model other than xgboost
    train_days: int = 7  # train on the latest labelled N days
    # fit the final xgboost model on a Dask cluster with xgboost.dask: ADDRESS (tcp://host:8786) or 'local'
    # (2 local worker processes); validation and tuning stay local
    scheduler: str | None = None  # Dask scheduler ADDRESS (tcp://host:8786) or 'local'
    # pandas: everything in memory (refused, with the memory it needs, when it will not fit); dask: out of core,
    # features and training over a parquet --dataset's partitions on the --scheduler cluster (apps/fraud/outofcore.py)
    engine: str = "pandas"  # pandas (in memory) or dask (out of core: a parquet --dataset's partitions on Dask)
    tune: int = 0  # Optuna trials for XGBoost on the validation folds (0: the xgb section as it is)
    models: str = ",".join(MODEL_KINDS)  # evaluate: comma-separated model kinds
    grids: str = "full"  # baselines' grids: full (train.BASELINE_GRIDS) or small (train.SMALL_GRIDS, the demo's)
    monitor_days: int = 7  # monitor compares the most recent N days with the model's reference

    def with_(self, **kwargs: Any) -> FraudConfig:
        return replace(self, **kwargs)

    def asdict(self) -> dict[str, Any]:
        return asdict(self)

    def world(self) -> SimulationConfig:
        """The simulated world without ``--dataset``: ``sim_size``'s preset (else the simulation section), with
        ``seed`` when given."""
        sim = SIZES[self.sim_size] if self.sim_size is not None else self.simulation
        return replace(sim, seed=self.seed) if self.seed is not None else sim

    def kinds(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.models.split(",") if m.strip())

    def check(self) -> FraudConfig:
        """Bad values are a :class:`ConfigError` naming the field."""
        if self.sim_size is not None and self.sim_size not in SIZES:
            raise ConfigError(f"sim_size: {self.sim_size!r} is not one of {', '.join(SIZES)}")
        for name, kinds in (("model", (self.model,)), ("models", self.kinds())):
            bad = [k for k in kinds if k not in MODEL_KINDS]
            if bad or not kinds:
                raise ConfigError(f"{name}: {', '.join(bad) or 'none'} (choose from {', '.join(MODEL_KINDS)})")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine: {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.engine == "dask" and self.model != "xgboost":
            raise ConfigError(f"engine: only the xgboost model trains out of core on Dask, not {self.model!r}")
        if self.scheduler and self.model != "xgboost":
            raise ConfigError(f"scheduler: only the xgboost model trains on Dask, not {self.model!r}")
        if self.grids not in ("full", "small"):
            raise ConfigError(f"grids: {self.grids!r} is not full or small")
        for name in ("train_days", "monitor_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.tune < 0:
            raise ConfigError(f"tune: must be >= 0, got {self.tune}")
        if self.protocol.n_folds < 1:
            raise ConfigError(f"protocol.n_folds: must be >= 1, got {self.protocol.n_folds}")
        if self.serving.alerts_per_day < 1:
            raise ConfigError(f"serving.alerts_per_day: must be >= 1, got {self.serving.alerts_per_day}")
        return self


def load_config(path: str | Path | None = None, values: Mapping[str, Any] | None = None) -> FraudConfig:
    """Defaults, updated from a JSON file (sections and fields: ``{"xgb": {"max_depth": 6}, "model": "logreg"}``),
    then from ``values`` (dotted names reach the sections: ``{"xgb.max_depth": 6}``), checked.

    ``xgb.n_estimators``/``max_depth``/``learning_rate`` given in ``values`` with a ``model`` other than xgboost
    are that model's parameters (``train --model random_forest --max-depth 8``)."""
    cfg = FraudConfig()
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"config {path}: {exc}") from None
        known = {f.name for f in fields(cfg)}
        if not isinstance(data, dict) or set(data) - known:
            raise ConfigError(f"config {path}: expected an object with keys from {sorted(known)}")
        cfg = _updated(cfg, data, f"config {path}")
    values = dict(values or {})
    model = values.get("model", cfg.model)
    if model != "xgboost":
        moved = {k: values.pop(f"xgb.{k}") for k in MODEL_FLAGS if f"xgb.{k}" in values}
        values["params"] = {**cfg.params, **values.get("params", {}), **moved}
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return _updated(cfg, nested, "config").check()


def _updated(obj: Any, data: Mapping[str, Any], where: str) -> Any:
    """``obj`` (a dataclass) with ``data``'s fields replaced; an object for a section updates that section; JSON
    lists become tuples where the field holds a tuple."""
    known = {f.name for f in fields(obj)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: no field {unknown[0]!r} in {type(obj).__name__} (known: {sorted(known)})")
    updates = {}
    for key, value in data.items():
        current = getattr(obj, key)
        if is_dataclass(current) and isinstance(value, Mapping):
            updates[key] = _updated(current, value, f"{where}, section {key!r}")
        else:
            updates[key] = tuple(value) if isinstance(value, list) and isinstance(current, tuple) else value
    return replace(obj, **updates)

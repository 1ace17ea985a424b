"""The recommender's settings and defaults: one place to read what the app does out of the box.

Override from the command line (``--factors 32``; the flags of each command are config fields, see
``pipeline.py``) or a JSON file (``--config my.json`` with any of the fields of :class:`RecommenderConfig`, e.g.
``{"model": "ease", "params": {"ease": {"lambda_": 300}}}``), read by :meth:`common.app.App.config`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from common.errors import ConfigError

APP = "recommender"
REGISTRY_NAME = "recommender"  # model name in the registry
MODELS = ("als", "bpr", "itemknn", "ease", "popular", "random")

# Hyper-parameters per model. ALS values: docs/measurements.md (factors 16 / reg 0.1 / alpha 5 on ML-100K; more
# factors overfit at that size). EASE lambda 500 sits in the measured 250-1000 plateau.
# EASE holds ~2 dense n_items² float32 arrays at its peak: 20k items ~ 3 GiB; above that it refuses (use als/itemknn).
EASE_MAX_ITEMS = 20_000
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "als": {"factors": 16, "regularization": 0.1, "alpha": 5.0, "iterations": 15},
    "bpr": {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100},  # implicit defaults
    "itemknn": {"K": 100, "similarity": "cosine"},
    "ease": {"lambda_": 500.0, "max_items": EASE_MAX_ITEMS},
    "popular": {},
    "random": {},
}


# Flags of ``train`` that set one hyper-parameter of the configured model (None: the model's ``params``).
PARAM_FIELDS = ("factors", "regularization", "alpha", "iterations", "lambda_")
PROTOCOLS = ("ms-stratified", "leave-last-out")
ENGINES = ("implicit", "spark")  # who trains ALS: implicit (one machine) or Spark MLlib (local mode or a cluster)
WEIGHTINGS = ("none", "bm25", "tfidf")


@dataclass
class RecommenderConfig:
    """Everything a run needs besides the data; every field can be set in a ``--config`` JSON file."""

    model: str = "als"  # one of als, bpr, itemknn, ease, popular, random
    params: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PARAMS.items()})
    # one hyper-parameter of the configured model, on top of its params (train's flags)
    factors: int | None = None  # ALS/BPR latent factors
    regularization: float | None = None  # ALS/BPR regularisation
    alpha: float | None = None  # ALS confidence scale (confidence = alpha * weight)
    iterations: int | None = None  # ALS/BPR iterations
    lambda_: float | None = None  # EASE L2 regularisation
    engine: str = "implicit"  # ALS trainer: implicit | spark (Spark MLlib; its factors are served without a JVM)
    spark_conf: dict[str, str] = field(default_factory=dict)  # Spark session settings, e.g. {"spark.master": ...}
    weighting: str = "none"  # confidence weighting of interactions: none | bm25 | tfidf
    binary: bool = True  # treat every interaction as weight 1 (repeat counts/ratings ignored)
    k: int = 10  # cut-off of the ranking metrics
    max_k: int = 100  # largest k the API accepts
    seed: int = 42
    threads: int = 2  # implicit's worker threads; BLAS is limited to 1 thread inside implicit fits
    test_ratio: float = 0.25  # stratified split: share of each user's interactions held out
    tune_budget: float = 120.0  # seconds of tuning per model at most (trials stop when the next would overrun)
    baselines: tuple[str, ...] = ("popular", "random", "ease", "itemknn", "bpr")
    # evaluate
    protocol: str = "ms-stratified"  # ms-stratified | leave-last-out
    models: str = "als,ease,itemknn,bpr,popular,random"  # comma-separated models evaluate compares
    leave_last_out_models: tuple[str, ...] = ()  # also evaluated under leave-last-out (a report section)
    # retrain
    new: str | None = None  # new interactions to fold in ('synthetic-next' for the demo's)
    window_days: float = 7.0  # the latest window both models are compared on
    # the built-in synthetic data
    tiny: bool = False  # a few hundred users: seconds instead of minutes

    def model_params(self, model: str | None = None) -> dict[str, Any]:
        """Hyper-parameters of ``model`` (default: the configured model), defaults filled in; the single-parameter
        fields (``factors``, ``lambda_`` ...) apply to the configured model."""
        name = model or self.model
        if name not in DEFAULT_PARAMS:
            raise ValueError(f"unknown model {name!r}; choose one of {list(DEFAULT_PARAMS)}")
        params = {**DEFAULT_PARAMS[name], **self.params.get(name, {})}
        if name == self.model:
            params.update({f: getattr(self, f) for f in PARAM_FIELDS if getattr(self, f) is not None})
        if name == "als" and self.engine != "implicit":  # the engine is part of the recipe (saved, retrained)
            params.update(engine=self.engine, spark_conf=dict(self.spark_conf))
        return params

    def model_names(self) -> list[str]:
        """The models ``evaluate`` compares (from the comma-separated ``models``)."""
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def check(self) -> RecommenderConfig:
        """Raise :class:`ConfigError` naming the field when a value is unusable; returns ``self``."""
        if self.model not in MODELS:
            raise ConfigError(f"config model: unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        names = self.model_names()
        unknown = sorted((set(names) | set(self.leave_last_out_models)) - set(MODELS))
        if unknown or not names:
            raise ConfigError(f"config models: unknown models {unknown}; choose from {', '.join(MODELS)}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"config protocol: {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self._check_engine()
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"config weighting: {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if not 1 <= self.k <= self.max_k:
            raise ConfigError(f"config k: {self.k} is outside 1..{self.max_k}")
        for name in ("factors", "iterations"):
            if (value := getattr(self, name)) is not None and value < 1:
                raise ConfigError(f"config {name}: must be >= 1, got {value}")
        for name in ("regularization", "alpha", "lambda_"):
            if (value := getattr(self, name)) is not None and value < 0:
                raise ConfigError(f"config {name}: must be >= 0, got {value}")
        if self.tune_budget < 1:
            raise ConfigError(f"config tune_budget: at least 1 second, got {self.tune_budget}")
        if self.window_days < 0.01:
            raise ConfigError(f"config window_days: at least 0.01, got {self.window_days}")
        if not 0 < self.test_ratio < 1:
            raise ConfigError(f"config test_ratio: must be in (0, 1), got {self.test_ratio}")
        return self

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"config engine: {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.engine != "implicit" and self.model != "als":
            raise ConfigError(f"config engine: {self.engine} trains only --model als, not {self.model!r}")
        if not isinstance(self.spark_conf, dict) or not all(isinstance(k, str) for k in self.spark_conf):
            raise ConfigError(f"config spark_conf: an object of Spark settings, got {self.spark_conf!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        d["leave_last_out_models"] = list(self.leave_last_out_models)
        return d


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity / container limits), at most 2 by default."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, int(os.environ.get("MLREF_THREADS", "2"))))

"""The recommender's settings and defaults: one place to read what the app does out of the box.

Override from the command line (``--factors 32``) or a JSON file (``--config my.json`` with any of the fields of
:class:`RecommenderConfig`, e.g. ``{"model": "ease", "params": {"ease": {"lambda_": 300}}}``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class RecommenderConfig:
    """Everything a training run needs besides the data."""

    model: str = "als"
    params: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PARAMS.items()})
    weighting: str = "none"  # confidence weighting of interactions: none | bm25 | tfidf
    binary: bool = True  # treat every interaction as weight 1 (repeat counts/ratings ignored)
    k: int = 10
    max_k: int = 100  # largest k the API accepts
    seed: int = 42
    threads: int = 2  # implicit's worker threads; BLAS is limited to 1 thread inside implicit fits
    test_ratio: float = 0.25  # stratified split: share of each user's interactions held out
    tune_budget_s: float = 120.0  # seconds per tuned model (Optuna trials stop early when the next would overrun)
    baselines: tuple[str, ...] = ("popular", "random", "ease", "itemknn", "bpr")

    def model_params(self, model: str | None = None) -> dict[str, Any]:
        """Hyper-parameters of ``model`` (default: the configured model), defaults filled in."""
        name = model or self.model
        if name not in DEFAULT_PARAMS:
            raise ValueError(f"unknown model {name!r}; choose one of {list(DEFAULT_PARAMS)}")
        return {**DEFAULT_PARAMS[name], **self.params.get(name, {})}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        return d

    @classmethod
    def from_file(cls, path: str | Path | None) -> RecommenderConfig:
        """Defaults, updated from a JSON file when given (unknown keys are an error, not silently ignored)."""
        cfg = cls()
        if path is None:
            return cfg
        data = json.loads(Path(path).read_text())
        unknown = set(data) - set(asdict(cfg))
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}; known: {sorted(asdict(cfg))}")
        for key, value in data.items():
            if key == "params":
                for model, p in value.items():
                    cfg.params.setdefault(model, {}).update(p)
            elif key == "baselines":
                cfg.baselines = tuple(value)
            else:
                setattr(cfg, key, value)
        return cfg


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity / container limits), at most 2 by default."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, int(os.environ.get("MLREF_THREADS", "2"))))

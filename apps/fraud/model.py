"""The fraud model (XGBoost) and its baselines (logistic regression, random forest, decision tree).

:class:`FraudModel` wraps any of them behind one interface - ``predict_proba``, ``contributions``, ``reasons``,
``save``/``load`` - and is saved as a *directory* the registry hashes:

    model_dir/
      meta.json        kind, feature list, decision threshold, params, training summary
      model.json       xgboost booster (XGBoost's portable JSON format)       | kind == "xgboost"
      model.joblib     scikit-learn pipeline (scaler + estimator)              | baselines
      reference.json   monitoring reference profile (written by train.py)

Joblib files execute code when loaded: acceptable here only because ``common.registry`` verifies the directory's
sha256 before any load. XGBoost models never need it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

KINDS = ("xgboost", "logreg", "random_forest", "decision_tree")
META = "meta.json"


def build_estimator(kind: str, params: dict[str, Any] | None = None, *, seed: int = 0) -> Any:
    """An unfitted estimator of ``kind`` with ``params`` (scikit-learn naming; xgboost's sklearn API).

    Baselines are ``StandardScaler -> estimator`` pipelines, as in the handbook (it scales every model's inputs).
    """
    params = dict(params or {})
    if kind == "xgboost":
        import xgboost as xgb

        params.setdefault("n_jobs", 1)
        params.setdefault("tree_method", "hist")
        return xgb.XGBClassifier(objective="binary:logistic", eval_metric="aucpr", random_state=seed, **params)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        params.setdefault("max_iter", 1000)
        est = LogisticRegression(random_state=seed, **params)
    elif kind == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        params.setdefault("n_jobs", 1)
        est = RandomForestClassifier(random_state=seed, **params)
    elif kind == "decision_tree":
        from sklearn.tree import DecisionTreeClassifier

        est = DecisionTreeClassifier(random_state=seed, **params)
    else:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {KINDS}")
    return make_pipeline(StandardScaler(), est)


@dataclass
class FraudModel:
    """A fitted model of any kind, with its feature list and alert threshold."""

    kind: str
    features: list[str]
    estimator: Any  # xgboost.Booster for "xgboost", a fitted sklearn Pipeline otherwise
    params: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    # -- construction
    @classmethod
    def fit(
        cls, kind: str, X: pd.DataFrame, y: np.ndarray, params: dict[str, Any] | None = None, *, seed: int = 0
    ) -> FraudModel:
        """Fit ``kind`` on features ``X`` (columns = feature names) and labels ``y`` (0/1)."""
        est = build_estimator(kind, params, seed=seed)
        features = list(X.columns)
        est.fit(X.to_numpy(dtype=np.float32), np.asarray(y))
        if kind == "xgboost":
            est = est.get_booster()
            est.feature_names = features
        return cls(kind=kind, features=features, estimator=est, params=dict(params or {}))

    # -- scoring
    def _matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            X = X[self.features].to_numpy(dtype=np.float32)
        X = np.asarray(X, dtype=np.float32)
        return X.reshape(1, -1) if X.ndim == 1 else X

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Fraud probability per row, shape ``(n,)``."""
        M = self._matrix(X)
        if self.kind == "xgboost":
            return np.asarray(self.estimator.inplace_predict(M, validate_features=False), dtype=float)
        return self.estimator.predict_proba(M)[:, 1]

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray | None:
        """Per-feature contributions to the log-odds, shape ``(n, n_features)`` (bias dropped), or None.

        XGBoost: exact TreeSHAP values (``pred_contribs``). Logistic regression: ``coef * standardised x``.
        Tree baselines: None (use the feature importances of the report instead).
        """
        M = self._matrix(X)
        if self.kind == "xgboost":
            import xgboost as xgb

            # a one-row DMatrix built with all threads costs more than the prediction itself
            dm = xgb.DMatrix(M, feature_names=self.features, nthread=1 if len(M) < 1000 else -1)
            return np.asarray(self.estimator.predict(dm, pred_contribs=True))[:, :-1]
        if self.kind == "logreg":
            scaler, lr = self.estimator[0], self.estimator[-1]
            return scaler.transform(M) * lr.coef_[0]
        return None

    def reasons(self, x: np.ndarray, n: int = 3) -> list[dict[str, float | str]]:
        """The ``n`` features pushing one transaction's score up the most: ``{feature, value, contribution}``."""
        contrib = self.contributions(x)
        if contrib is None:
            return []
        c = contrib[0]
        top = np.argsort(-c, kind="mergesort")[:n]
        x = np.asarray(x, dtype=float).ravel()
        return [{"feature": self.features[i], "value": float(x[i]), "contribution": round(float(c[i]), 4)} for i in top]

    def feature_importance(self) -> pd.Series:
        """Global importance per feature (xgboost gain, |coef| for logreg, impurity decrease for trees)."""
        if self.kind == "xgboost":
            gain = self.estimator.get_score(importance_type="gain")
            s = pd.Series({f: gain.get(f, 0.0) for f in self.features})
        elif self.kind == "logreg":
            s = pd.Series(np.abs(self.estimator[-1].coef_[0]), index=self.features)
        else:
            s = pd.Series(self.estimator[-1].feature_importances_, index=self.features)
        return (s / s.sum() if s.sum() > 0 else s).sort_values(ascending=False)

    # -- persistence
    def save(self, model_dir: str | Path) -> Path:
        """Write the model directory (see module docstring). Returns it."""
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        if self.kind == "xgboost":
            self.estimator.save_model(str(d / "model.json"))
        else:
            import joblib

            joblib.dump(self.estimator, d / "model.joblib")
        meta = {
            "kind": self.kind,
            "features": self.features,
            "threshold": self.threshold,
            "params": self.params,
            "info": self.info,
        }
        (d / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return d

    @classmethod
    def load(cls, model_dir: str | Path, *, nthread: int | None = None) -> FraudModel:
        """Read a model directory written by :meth:`save` (verify its hash first: ``common.registry.load``)."""
        d = Path(model_dir)
        meta = json.loads((d / META).read_text())
        if meta["kind"] == "xgboost":
            import xgboost as xgb

            est = xgb.Booster()
            est.load_model(str(d / "model.json"))
            est.feature_names = meta["features"]
            if nthread is not None:
                est.set_param({"nthread": nthread})
        else:
            import joblib

            est = joblib.load(d / "model.joblib")
        return cls(
            kind=meta["kind"],
            features=meta["features"],
            estimator=est,
            params=meta.get("params", {}),
            threshold=float(meta.get("threshold", 0.5)),
            info=meta.get("info", {}),
        )

"""The fraud model (XGBoost) and its baselines (logistic regression, random forest, decision tree).

:class:`FraudModel` wraps any of them behind one interface - ``predict_proba``, ``explain`` (signed reasons),
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


@dataclass(frozen=True)
class Explanation:
    """One prediction explained by :meth:`FraudModel.explain`.

    ``reasons``: ``{feature, label, value, contribution, direction}``, contribution = signed log-odds
    contribution, direction ``"raises"``/``"lowers"``, all in the decision's direction (see ``explain``).
    ``base_value + sum of every feature's contribution == log_odds``; ``others`` = the unlisted features' sum.
    ``method``: ``"treeshap"`` (xgboost), ``"linear"`` (logistic regression) or ``"none"`` (tree baselines: no
    per-prediction attribution; reasons empty, the numbers None).
    """

    alert: bool
    method: str
    base_value: float | None
    log_odds: float | None
    reasons: list[dict[str, Any]]
    summary: str
    others: float | None


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _summary(alert: bool, labels: list[str], kind: str) -> str:
    """One sentence that agrees with the decision, naming the listed reasons' labels."""
    if kind not in ("xgboost", "logreg"):
        verdict = "Flagged as possible fraud" if alert else "Not flagged"
        return f"{verdict}; a {kind} model gives no per-transaction explanation."
    if alert:
        if labels:
            return f"Flagged mainly because of {_join(labels)}, which raised the risk."
        return "Flagged: the risk is at or above the alert threshold, though no single feature of it raised the risk."
    if labels:
        return f"Not flagged: the risk is low mainly because of {_join(labels)}, which lowered it."
    return (
        "Not flagged: the risk stays below the alert threshold; nothing about this transaction lowered it, "
        "and what raised it was not enough for an alert."
    )


@dataclass
class FraudModel:
    """A fitted model of any kind, with its feature list and alert threshold."""

    kind: str
    features: list[str]
    estimator: Any  # xgboost.Booster for "xgboost", a fitted sklearn Pipeline otherwise
    params: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)
    # the directory it was loaded from (a registered version's: its recorded history lies beside it); not saved
    source: Path | None = field(default=None, compare=False, repr=False)

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

    def log_odds(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """The model's log-odds of fraud per row (xgboost's margin, logistic regression's decision function;
        the logit of the probability for the tree baselines)."""
        M = self._matrix(X)
        if self.kind == "xgboost":
            margin = self.estimator.inplace_predict(M, predict_type="margin", validate_features=False)
            return np.asarray(margin, dtype=float)
        if self.kind == "logreg":
            return np.asarray(self.estimator.decision_function(M), dtype=float)
        p = np.clip(self.predict_proba(M), 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))

    def attribution(self, X: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact signed per-prediction contributions to the log-odds: ``(contributions (n, n_features), base (n,))``
        with ``base + contributions.sum(1) == log_odds(X)``; None for the tree baselines (they have none).

        XGBoost: TreeSHAP (``pred_contribs``; base = the model's expected margin). Logistic regression:
        ``coef * (x - training mean)`` in the scaler's units, i.e. ``coef_j * standardised x_j`` (base = the
        intercept, the log-odds at the training mean).
        """
        M = self._matrix(X)
        if self.kind == "xgboost":
            import xgboost as xgb

            # a one-row DMatrix built with all threads costs more than the prediction itself
            dm = xgb.DMatrix(M, feature_names=self.features, nthread=1 if len(M) < 1000 else -1)
            phi = np.asarray(self.estimator.predict(dm, pred_contribs=True), dtype=float)
            return phi[:, :-1], phi[:, -1]
        if self.kind == "logreg":
            scaler, lr = self.estimator[0], self.estimator[-1]
            contrib = scaler.transform(M) * lr.coef_[0]
            return np.asarray(contrib, dtype=float), np.full(len(M), float(lr.intercept_[0]))
        return None

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray | None:
        """Per-feature contributions to the log-odds, shape ``(n, n_features)`` (base dropped), or None
        (see :meth:`attribution`)."""
        attr = self.attribution(X)
        return None if attr is None else attr[0]

    def explain(self, x: np.ndarray, n: int = 3, *, score: float | None = None) -> Explanation:
        """Why one transaction (feature vector ``x``) got its decision: the ``n`` largest contributions in the
        direction of the decision - for an alert the ones that raised the risk most, for a pass the ones that
        lowered it most - each with its words (:func:`apps.fraud.features.feature_label`), and a sentence that
        agrees with the decision. ``score``: the probability already computed for ``x`` (saves a prediction)."""
        from apps.fraud.features import feature_label

        x = np.asarray(x, dtype=float).ravel()
        if score is None:
            score = float(self.predict_proba(x)[0])
        alert = score >= self.threshold
        attr = self.attribution(x)
        if attr is None:
            return Explanation(alert, "none", None, None, [], _summary(alert, [], self.kind), None)
        c, base = attr[0][0], float(attr[1][0])
        if alert:  # the biggest pushes up, positive only
            order = [i for i in np.argsort(-c, kind="stable") if c[i] > 0][:n]
        else:  # the biggest pushes down, negative only
            order = [i for i in np.argsort(c, kind="stable") if c[i] < 0][:n]
        reasons = [
            {
                "feature": self.features[i],
                "label": feature_label(self.features[i]),
                "value": float(x[i]),
                "contribution": float(c[i]),
                "direction": "raises" if c[i] > 0 else "lowers",
            }
            for i in order
        ]
        log_odds = base + float(c.sum())
        others = log_odds - base - sum(r["contribution"] for r in reasons)
        method = "treeshap" if self.kind == "xgboost" else "linear"
        labels = [r["label"] for r in reasons]
        return Explanation(alert, method, base, log_odds, reasons, _summary(alert, labels, self.kind), others)

    def reasons(self, x: np.ndarray, n: int = 3) -> list[dict[str, Any]]:
        """The reasons of :meth:`explain`: ``{feature, label, value, contribution, direction}`` dicts."""
        return self.explain(x, n).reasons

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
            source=d,
        )

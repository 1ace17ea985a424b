"""The lifecycle steps the CLI, the demo and the benchmark share: model selection + report, register, batch,
monitor, retrain. Each is one function on prepared data (see :func:`apps.fraud.train.prepare`)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import APP, MODEL_NAME, FraudConfig
from apps.fraud.data import DAY, LABEL, SCHEMA, TIMESTAMP
from apps.fraud.evaluate import METRICS, alert_threshold, write_report
from apps.fraud.features import feature_names
from apps.fraud.model import FraudModel
from apps.fraud.service import load_model
from apps.fraud.train import (
    BASELINE_GRIDS,
    Candidate,
    grid_search,
    save_with_reference,
    score_test,
    score_validation,
    train_model,
    tune_xgboost,
)
from common import monitoring, registry, retraining, tracking
from common.config import get_settings
from common.data import fingerprint
from common.metrics.classification import average_precision, card_precision_at_k, precision_at_k, roc_auc

log = logging.getLogger(__name__)


def select_models(prepared: pd.DataFrame, cfg: FraudConfig, *, kinds: tuple[str, ...] = (
        "xgboost", "logreg", "random_forest", "decision_tree"), tune_trials: int = 0,
        grids: dict[str, dict[str, list[Any]]] | None = None, extras: bool = False,
        seed: int = 0) -> dict[str, Candidate]:
    """Handbook model selection for each kind: best configuration on validation, reported on test.

    XGBoost: Optuna with ``tune_trials`` trials (0 = the config's parameters, validated and tested as they are).
    ``extras`` adds the measured variants: class weights (``*_balanced``) and XGBoost on the handbook's 15
    features only (``xgboost_handbook_features``), both with the selected parameters.
    """
    features = feature_names(cfg.features)
    grids = grids or BASELINE_GRIDS
    p = cfg.protocol
    out: dict[str, Candidate] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        if kind == "xgboost":
            if tune_trials > 0:
                out[kind] = tune_xgboost(prepared, features, p, n_trials=tune_trials, seed=seed,
                                         base=cfg.xgb.params())
            else:
                c = Candidate(kind, cfg.xgb.params())
                c.validation = score_validation(prepared, kind, c.params, features, p, seed=seed)
                c.test, c.test_folds = score_test(prepared, kind, c.params, features, p, seed=seed)
                out[kind] = c
        else:
            out[kind] = grid_search(prepared, kind, grids[kind], features, p, seed=seed)
        log.info("%s selected %s: test %s (%.0f s)", kind, out[kind].params,
                 {m: round(out[kind].test[m], 4) for m in METRICS}, time.perf_counter() - t0)
    if extras:
        if "xgboost" in out:
            xp = out["xgboost"].params
            n_pos = prepared[LABEL].mean()
            bal = {**xp, "scale_pos_weight": float((1 - n_pos) / n_pos)}
            out["xgboost_balanced"] = _variant(prepared, "xgboost", bal, features, cfg, seed)
            hb = feature_names(replace(cfg.features, extended=False))
            out["xgboost_handbook_features"] = _variant(prepared, "xgboost", xp, hb, cfg, seed)
        if "logreg" in out:
            out["logreg_balanced"] = _variant(prepared, "logreg", {**out["logreg"].params,
                                                                   "class_weight": "balanced"}, features, cfg, seed)
    return out


def _variant(prepared: pd.DataFrame, kind: str, params: dict[str, Any], features: list[str], cfg: FraudConfig,
             seed: int) -> Candidate:
    c = Candidate(kind, params)
    c.validation = score_validation(prepared, kind, params, features, cfg.protocol, seed=seed)
    c.test, c.test_folds = score_test(prepared, kind, params, features, cfg.protocol, seed=seed)
    c.params = {**params, "features": len(features)}
    return c


def results_table(candidates: dict[str, Candidate]) -> dict[str, dict[str, Any]]:
    """``{model: {metric (test mean), metric_std, validation AP, train_s, predict_s}}``."""
    table = {}
    for name, c in candidates.items():
        row = {k: round(v, 4) for k, v in c.test.items()}
        row["validation_average_precision"] = round(c.validation.get("average_precision", float("nan")), 4)
        table[name] = row
    return table


def report_selection(candidates: dict[str, Candidate], cfg: FraudConfig, out_dir: Path, *,
                     dataset: str, champion: FraudModel | None = None) -> Path:
    """The evaluation report (markdown + PNG + metrics.json) of a model selection."""
    p = cfg.protocol
    sections = {
        "Protocol": (
            f"Handbook prequential protocol: {p.delta_train} days training, {p.delta_delay} days feedback delay, "
            f"{p.delta_test} days test, {p.n_folds} folds; cards known compromised removed from test days. "
            "Parameters chosen on the validation folds (by average precision), numbers below from the test "
            "folds (mean and std over folds)."
        ),
        "Data": dataset,
        "Selected parameters": "\n".join(f"- **{k}**: `{c.params}`" for k, c in candidates.items()),
    }
    if champion is not None and champion.kind == "xgboost":
        imp = champion.feature_importance()
        sections["Feature importance (gain share)"] = "\n".join(f"- {f}: {v:.3f}" for f, v in imp.head(10).items())
    importance = champion.feature_importance() if champion is not None else None
    metrics = {name: {m: c.test.get(m) for m in METRICS} | {f"{m}_std": c.test.get(f"{m}_std") for m in METRICS}
               | {"train_s": c.test.get("train_s")} for name, c in candidates.items()}
    return write_report(out_dir, title="Fraud detection: prequential evaluation", results=metrics,
                        importance=importance, sections=sections,
                        model_info={"app": APP, "selection_metric": "average_precision (validation)"})


def training_rows(model: FraudModel, prepared: pd.DataFrame) -> pd.DataFrame:
    """The rows ``model`` was trained on (its ``info["train_days"]``)."""
    first, last = model.info["train_days"]
    return prepared[(prepared[DAY] >= first) & (prepared[DAY] <= last)]


def register_model(model: FraudModel, prepared: pd.DataFrame, *, work_dir: Path,
                   metrics: dict[str, float] | None = None, alias: str | None = None) -> registry.ModelVersion:
    """Save ``model`` (+ monitoring reference of its training window) and register it as a version."""
    window = training_rows(model, prepared)
    model_dir = save_with_reference(model, work_dir, window)
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and np.isfinite(v)}
    params = {"kind": model.kind, **{k: v for k, v in model.params.items()}, "threshold": model.threshold}
    return registry.register(MODEL_NAME, model_dir, metrics=clean, params=params,
                             data_fingerprint=fingerprint(window[[c for c in SCHEMA.names if c in window]]),
                             tags={"app": APP, "kind": model.kind}, alias=alias)


def window_metrics(model: FraudModel, rows: pd.DataFrame, top_k: int = 100) -> dict[str, float]:
    """AUC, AP, CP@k and the alert precision (precision of score >= threshold) on labelled ``rows``."""
    s = model.predict_proba(rows[model.features])
    y = rows[LABEL].to_numpy()
    frame = rows[["customer_id", DAY, LABEL]].assign(score=s)
    alerts = s >= model.threshold
    return {
        "roc_auc": roc_auc(y, s) if 0 < y.sum() < len(y) else float("nan"),
        "average_precision": average_precision(y, s),
        f"card_precision@{top_k}": card_precision_at_k(frame, top_k),
        "alert_precision": float(y[alerts].mean()) if alerts.any() else float("nan"),
        "alerts_per_day": float(alerts.sum() / max(1, rows[DAY].nunique())),
        f"precision@{top_k}": precision_at_k(y, s, top_k),
    }


def monitor(model: FraudModel, model_dir: Path, current: pd.DataFrame, out_dir: Path,
            *, top_k: int = 100) -> tuple[monitoring.DriftReport, pd.DataFrame]:
    """Feature + score drift of ``current`` (prepared rows) against the model's reference profile, and the daily
    performance where labels are present; writes drift.md/json/png and performance.csv to ``out_dir``."""
    ref = monitoring.ReferenceProfile.load(model_dir / "reference.json")
    cur = current[model.features].copy()
    cur["prediction"] = model.predict_proba(cur)
    report = monitoring.detect_drift(ref, cur)
    report.save(out_dir, title="Fraud: drift of features and scores against the champion's training window")
    perf = pd.DataFrame()
    if LABEL in current.columns and current[LABEL].notna().any():
        thr = model.threshold
        perf = monitoring.performance_over_time(
            current.assign(score=cur["prediction"].to_numpy()), time_col=TIMESTAMP, label_col=LABEL,
            score_col="score", freq="D",
            metrics={"average_precision": average_precision,
                     "alert_precision": lambda y, s: float(np.asarray(y)[np.asarray(s) >= thr].mean())
                     if (np.asarray(s) >= thr).any() else float("nan"),
                     f"precision@{top_k}": lambda y, s: precision_at_k(y, s, min(top_k, len(y)))},
        )
        perf.to_csv(out_dir / "performance.csv", index=False)
    return report, perf


def alert_precision_from_logs() -> dict[str, float] | None:
    """Alert precision of the served predictions whose labels came in through ``POST /v1/labels``."""
    from common.serving import PredictionLog

    s = get_settings()
    preds = PredictionLog(s.path("predictions", f"{MODEL_NAME}.jsonl")).read()
    labels = PredictionLog(s.path("labels", f"{MODEL_NAME}.jsonl")).read()
    if preds.empty or labels.empty:
        return None
    joined = preds.merge(labels[["tx_id", "label"]].drop_duplicates("tx_id", keep="last"), on="tx_id")
    alerts = joined[joined["alert"].astype(bool)]
    return {"labelled_predictions": int(len(joined)), "alerts": int(len(alerts)),
            "alert_precision": float(alerts["label"].mean()) if len(alerts) else float("nan")}


def retrain(prepared: pd.DataFrame, cfg: FraudConfig, *, work_dir: Path, params: dict[str, Any] | None = None,
            kind: str = "xgboost") -> retraining.Decision:
    """Weekly retraining: a challenger fit on the ``train_days`` labelled days before the most recent labelled
    week, compared with the champion on that week (average precision); promoted only if it wins by the margin."""
    rc = cfg.retrain
    last_labelled = int(prepared[DAY].max()) - cfg.features.delay_days
    eval_first = last_labelled - rc.eval_days + 1
    eval_rows = prepared[(prepared[DAY] >= eval_first) & (prepared[DAY] <= last_labelled)]
    champion_mv = registry.find(MODEL_NAME, registry.CHAMPION)
    if champion_mv is not None:
        seen_until = _trained_until(champion_mv)
        if seen_until is not None and seen_until >= eval_first:
            # the champion has seen the evaluation week: no fair comparison, and no labelled week is newer
            decision = retraining.Decision(
                app=MODEL_NAME, champion_version=champion_mv.version, challenger_version="", metric=rc.metric,
                champion_score=None, challenger_score=float("nan"), margin=rc.margin, higher_is_better=True,
                promoted=False, reason=f"no labelled week newer than the champion's training data (it saw day "
                                       f"{seen_until}, the latest labelled week starts on day {eval_first}): kept")
            retraining.record(decision)
            log.info("retrain skipped: %s", decision.reason)
            return decision
    challenger = train_model(prepared, cfg, kind=kind, params=params, train_days=rc.train_days,
                             end_day=last_labelled - rc.eval_days)
    challenger.threshold = alert_threshold(eval_rows[DAY].to_numpy(),
                                           challenger.predict_proba(eval_rows[challenger.features]),
                                           cfg.serving.alerts_per_day)
    mv = register_model(challenger, prepared, work_dir=work_dir,
                        metrics={f"recent_{k}": v for k, v in window_metrics(challenger, eval_rows).items()})

    def evaluate(version: registry.ModelVersion) -> float:
        model, _ = registry.load(MODEL_NAME, version.version, load_model)
        return window_metrics(model, eval_rows, cfg.protocol.top_k)[rc.metric]

    decision = retraining.champion_vs_challenger(MODEL_NAME, mv, evaluate, metric=rc.metric, margin=rc.margin)
    log.info("retrain decision: %s", decision.reason)
    return decision


def _trained_until(mv: registry.ModelVersion) -> int | None:
    """Last training day (data day index) of a registered model, from its ``meta.json``."""
    import json

    try:
        meta = json.loads((registry.fetch_model_dir(mv) / "meta.json").read_text())
        return int(meta["info"]["train_days"][1])
    except (KeyError, TypeError, ValueError, OSError):
        return None


def log_selection(candidates: dict[str, Candidate], cfg: FraudConfig, dataset: str) -> None:
    """One MLflow run per selected model with its params and test metrics."""
    for name, c in candidates.items():
        with tracking.start_run(f"{APP}-evaluation", run_name=name,
                                params={"kind": c.kind, "dataset": dataset, **c.params},
                                tags={"app": APP}):
            tracking.log_metrics({k: v for k, v in c.test.items() if np.isfinite(v)})

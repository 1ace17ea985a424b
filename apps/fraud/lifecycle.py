"""The lifecycle steps the CLI, the demo and the benchmark share: model selection + report, register, batch,
monitor, retrain. Each is one function on prepared data (see :func:`apps.fraud.train.prepare`)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.fraud.config import APP, MODEL_NAME, FraudConfig
from apps.fraud.data import CUSTOMER, DAY, LABEL, SCHEMA, TERMINAL, TIMESTAMP, labelled
from apps.fraud.evaluate import alert_threshold, metric_names, write_report
from apps.fraud.features import feature_names, history_needed
from apps.fraud.model import FraudModel
from apps.fraud.service import load_model
from apps.fraud.train import (
    BASELINE_GRIDS,
    Candidate,
    feature_config_of,
    grid_search,
    save_with_reference,
    score_test,
    score_validation,
    train_model,
    tune_xgboost,
)
from common import monitoring, registry, retraining, tracking
from common.data import DataError, fingerprint
from common.metrics.classification import average_precision, card_precision_at_k, precision_at_k, roc_auc
from common.workspace import Workspace

log = logging.getLogger(__name__)


def select_models(
    prepared: pd.DataFrame,
    cfg: FraudConfig,
    *,
    kinds: tuple[str, ...] = ("xgboost", "logreg", "random_forest", "decision_tree"),
    tune_trials: int = 0,
    grids: dict[str, dict[str, list[Any]]] | None = None,
    extras: bool = False,
    seed: int = 0,
    xgb_params: dict[str, Any] | None = None,
) -> dict[str, Candidate]:
    """Handbook model selection for each kind: best configuration on validation, reported on test.

    XGBoost: Optuna with ``tune_trials`` trials (0 = the config's parameters, or ``xgb_params`` - a fitted
    model's - validated and tested as they are).
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
                out[kind] = tune_xgboost(prepared, features, p, n_trials=tune_trials, seed=seed, base=cfg.xgb.params())
            else:
                c = Candidate(kind, dict(xgb_params) if xgb_params is not None else cfg.xgb.params())
                c.validation = score_validation(prepared, kind, c.params, features, p, seed=seed)
                c.test, c.test_folds = score_test(prepared, kind, c.params, features, p, seed=seed)
                out[kind] = c
        else:
            out[kind] = grid_search(prepared, kind, grids[kind], features, p, seed=seed)
        log.info(
            "%s selected %s: test %s (%.0f s)",
            kind,
            out[kind].params,
            {m: round(out[kind].test[m], 4) for m in metric_names(p.top_k)},
            time.perf_counter() - t0,
        )
    if extras:
        if "xgboost" in out:
            xp = out["xgboost"].params
            n_pos = prepared[LABEL].mean()
            bal = {**xp, "scale_pos_weight": float((1 - n_pos) / n_pos)}
            out["xgboost_balanced"] = _variant(prepared, "xgboost", bal, features, cfg, seed)
            hb = feature_names(replace(cfg.features, extended=False))
            out["xgboost_handbook_features"] = _variant(prepared, "xgboost", xp, hb, cfg, seed)
        if "logreg" in out:
            out["logreg_balanced"] = _variant(
                prepared, "logreg", {**out["logreg"].params, "class_weight": "balanced"}, features, cfg, seed
            )
    return out


def _variant(
    prepared: pd.DataFrame, kind: str, params: dict[str, Any], features: list[str], cfg: FraudConfig, seed: int
) -> Candidate:
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


def report_selection(
    candidates: dict[str, Candidate],
    cfg: FraudConfig,
    out_dir: Path,
    *,
    dataset: str,
    champion: FraudModel | None = None,
    data: pd.DataFrame | None = None,
) -> Path:
    """The evaluation report / model card (markdown + PNG + metrics.json) of a model selection: intended use,
    the data (``data``: the prepared rows evaluated on), test metrics mean ± std over folds against the
    baselines, precision-recall and calibration curves of the pooled test folds, limitations."""
    p = cfg.protocol
    sections = {
        "Protocol": (
            f"Handbook prequential protocol: {p.delta_train} days training, {p.delta_delay} days feedback delay, "
            f"{p.delta_test} days test, {p.n_folds} folds; cards known compromised removed from test days. "
            "Parameters chosen on the validation folds (by average precision), numbers below from the test "
            "folds (mean ± std over folds)."
        ),
        "Selected parameters": "\n".join(f"- **{k}**: `{c.params}`" for k, c in candidates.items()),
    }
    if champion is not None and champion.kind == "xgboost":
        imp = champion.feature_importance()
        sections["Feature importance (gain share)"] = "\n".join(f"- {f}: {v:.3f}" for f, v in imp.head(10).items())
    importance = champion.feature_importance() if champion is not None else None
    names = metric_names(p.top_k)
    metrics = {
        name: {m: c.test.get(m) for m in names}
        | {f"{m}_std": c.test.get(f"{m}_std") for m in names}
        | {"train_s": c.test.get("train_s")}
        for name, c in candidates.items()
    }
    curves = {
        name: (np.concatenate(c.test_folds["y_true"].to_list()), np.concatenate(c.test_folds["y_score"].to_list()))
        for name, c in candidates.items()
        if c.test_folds is not None and "y_score" in c.test_folds
    }
    return write_report(
        out_dir,
        title="Fraud detection: prequential evaluation",
        results=metrics,
        importance=importance,
        sections=sections,
        top_k=p.top_k,
        curves={k: v for k, v in curves.items() if 0 < v[0].sum() < len(v[0])},
        model_info={"app": APP, "selection_metric": "average_precision (validation)"},
        intended_use=(
            "Ranks card transactions by fraud risk in real time so that investigators check the "
            f"{cfg.serving.alerts_per_day} riskiest a day (the alert budget sets the decision threshold). "
            "Decision support for a human investigator, not automatic blocking. Labels arrive "
            f"{cfg.features.delay_days} days after a transaction; the model is retrained weekly on the latest "
            "labelled days."
        ),
        limitations=(
            f"Measured on {dataset}. Simulated fraud scenarios are simpler than real fraud: expect other numbers "
            "on real data. Frauds of the last feedback-delay days are unknown at training time. "
            f"Mean ± std over {p.n_folds} test folds of {p.delta_test} days: a rough guide to the spread, not a "
            "confidence interval. Scores rank transactions; they are probabilities only as far as the calibration "
            "figure shows (class-weighted variants are not calibrated). Fraud patterns drift: run `monitor` and "
            "`retrain` weekly."
        ),
        data=_data_facts(data, dataset),
        data_columns=_data_columns(data),
        baselines=[n for n, c in candidates.items() if c.kind != "xgboost"],
        champion=champion.kind if champion is not None and champion.kind in candidates else None,
        interval_note=f"± = standard deviation over {p.n_folds} prequential test folds",
    )


def _data_facts(data: pd.DataFrame | None, dataset: str) -> dict[str, Any]:
    """Dataset-level facts of the model card."""
    facts: dict[str, Any] = {"dataset": dataset}
    if data is None or data.empty:
        return facts
    labels = data[LABEL] if LABEL in data.columns else pd.Series(dtype=float)
    facts |= {
        "transactions": len(data),
        "labelled": int(labels.notna().sum()),
        "fraud_rate (labelled)": float(labels.mean()) if labels.notna().any() else float("nan"),
        "days": int(data[DAY].nunique()) if DAY in data.columns else None,
    }
    for col, name in ((CUSTOMER, "customers"), (TERMINAL, "terminals")):
        if col in data.columns:
            facts[name] = int(data[col].nunique())
    if TIMESTAMP in data.columns:
        facts |= {"first": str(data[TIMESTAMP].min()), "last": str(data[TIMESTAMP].max())}
    return facts


def _data_columns(data: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per-column profile of the raw transaction columns (not the engineered features)."""
    if data is None or data.empty:
        return None
    from common.reports import data_summary

    return data_summary(data, [c for c in SCHEMA.names if c in data.columns])


def training_rows(model: FraudModel, prepared: pd.DataFrame) -> pd.DataFrame:
    """The rows ``model`` was trained on (its ``info["train_days"]``)."""
    first, last = model.info["train_days"]
    return prepared[(prepared[DAY] >= first) & (prepared[DAY] <= last)]


def register_model(
    model: FraudModel,
    prepared: pd.DataFrame,
    *,
    work_dir: Path | None = None,
    metrics: dict[str, float] | None = None,
    alias: str | None = None,
    dataset: str | None = None,
) -> registry.ModelVersion:
    """Save ``model`` (+ monitoring reference of its training window, + the latest transactions of ``prepared`` as
    its online feature history) in a temporary directory and register it as a version
    (:func:`common.registry.register_dir`).

    The version is tagged with ``last_training_timestamp`` (unix seconds of its newest training row: the
    retraining fairness guard) and, registered inside an active MLflow run, linked to it as its training run.
    ``work_dir`` is ignored (kept so that older callers still work): nothing is left on disk but the registry's copy.
    """
    del work_dir
    window = training_rows(model, prepared)
    if window.empty:
        raise DataError(
            f"none of the given transactions is in the model's training days {model.info['train_days']}"
            ": register it with the data it was trained on"
        )
    clean = {k: float(v) for k, v in (metrics or {}).items() if v is not None and np.isfinite(v)}
    params = {"kind": model.kind, **{k: v for k, v in model.params.items()}, "threshold": model.threshold}
    return registry.register_dir(
        MODEL_NAME,
        lambda d: save_with_reference(model, d, window, history=prepared),
        metrics=clean,
        params=params,
        data_fingerprint=fingerprint(window[[c for c in SCHEMA.names if c in window]]),
        tags={"app": APP, "kind": model.kind, **({"dataset": dataset} if dataset else {})},
        alias=alias,
        last_training_timestamp=retraining.last_training_timestamp(window[TIMESTAMP]),
    )


def window_metrics(model: FraudModel, rows: pd.DataFrame, top_k: int = 100) -> dict[str, float]:
    """AUC, AP, CP@k and the alert precision (precision of score >= threshold) on the labelled ``rows``."""
    rows = labelled(rows)
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


def monitor(
    model: FraudModel,
    model_dir: Path,
    current: pd.DataFrame,
    out_dir: Path | None = None,
    *,
    top_k: int = 100,
    model_version: str | None = None,
    warnings: list[str] | None = None,
) -> monitoring.MonitorVerdict:
    """Feature + score drift of ``current`` (prepared rows) against the model's reference profile, and the daily
    performance (AP, alert precision, precision@k) where labels are in, via :func:`common.monitoring.run_check`.

    Writes drift.md (every alert, the metric-over-time chart), drift.json, monitor.json, PNGs and performance.csv
    to ``out_dir`` when given. The verdict alerts on drift (exit code 1), as before labels are charted.

    When the data before ``current`` (its first :data:`DAY`) is shorter than a feature's window, that feature
    (and the score, which depends on it) is left out of the drift check with a warning: its values are
    truncated by the missing history, not shifted by the world (a 10-day file has 10-day "30-day" counts).
    """
    notes = list(warnings or [])
    reference: Any = model_dir
    short = short_history_features(model, current)
    if short:
        profile = monitoring.ReferenceProfile.load(model_dir / monitoring.REFERENCE_FILE)
        left_out = {*short, monitoring.PREDICTION}
        reference = replace(profile, features={k: v for k, v in profile.features.items() if k not in left_out})
        notes.append(
            f"only {int(current[DAY].min())} day(s) of history before the monitored rows: "
            f"{len(short)} window feature(s) ({', '.join(short)}) and the score are incomplete and left "
            f"out of the drift check; monitor a file with at least {max(short.values())} days before "
            "the window"
        )
        log.warning(notes[-1])
    cur = current[model.features].copy()
    cur[monitoring.PREDICTION] = model.predict_proba(cur)
    perf = pd.DataFrame()
    if LABEL in current.columns and current[LABEL].notna().any():
        thr = model.threshold
        perf = monitoring.performance_over_time(
            current.assign(score=cur[monitoring.PREDICTION].to_numpy()),
            time_col=TIMESTAMP,
            label_col=LABEL,
            score_col="score",
            freq="D",
            metrics={
                "average_precision": average_precision,
                "alert_precision": lambda y, s: (
                    float(np.asarray(y)[np.asarray(s) >= thr].mean()) if (np.asarray(s) >= thr).any() else float("nan")
                ),
                f"precision@{top_k}": lambda y, s: precision_at_k(y, s, min(top_k, len(y))),
            },
        )
    return monitoring.run_check(
        reference,
        cur,
        out_dir,
        performance=perf,
        warnings=notes,
        model_version=model_version,
        title="Fraud: drift of features and scores against the champion's training window",
    )


def short_history_features(model: FraudModel, current: pd.DataFrame) -> dict[str, int]:
    """``{feature: days needed}`` for the features of ``model`` whose window is longer than the history before
    ``current`` (its first :data:`DAY`, counted from the data's first day)."""
    if DAY not in current.columns or current.empty:
        return {}
    available = int(current[DAY].min())
    need = history_needed(feature_config_of(model))
    return {f: need[f] for f in model.features if need.get(f, 0) > available}


def read_log(path: Path) -> pd.DataFrame:
    """A JSONL log (predictions, labels) as a frame, ids kept as strings (a 31-digit ``tx_id`` is no int64);
    unreadable lines (a crash mid-write) are skipped with a warning."""
    if not path.exists():
        return pd.DataFrame()
    rows, bad = [], 0
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", path, bad)
    df = pd.DataFrame(rows)
    for col in ("tx_id", "customer_id", "terminal_id", "version"):
        if col in df.columns:
            df[col] = df[col].map(lambda v: None if v is None or v != v else str(v))
    return df


def alert_precision_from_logs(
    version: str | None = None, *, ws: Workspace | None = None
) -> dict[str, dict[str, float]]:
    """Per served model version: how many logged predictions got a label through ``POST /v1/labels``, how many
    of those were alerts, and the alert precision. ``version``: that version only. Empty when nothing joins.

    Predictions of a model set by hand (no registry version) are reported under ``"unregistered"``. The logs are
    the ones the service writes in ``ws`` (default: the workspace of the environment).
    """
    ws = ws or Workspace.from_env()
    preds = read_log(ws.path("predictions", f"{MODEL_NAME}.jsonl"))
    labels = read_log(ws.path("labels", f"{MODEL_NAME}.jsonl"))
    if preds.empty or labels.empty:
        return {}
    preds["version"] = preds["version"].fillna("unregistered") if "version" in preds else "unregistered"
    if version is not None:
        preds = preds[preds["version"] == str(version)]
    joined = preds.merge(labels[["tx_id", "label"]].drop_duplicates("tx_id", keep="last"), on="tx_id")
    out: dict[str, dict[str, float]] = {}
    for v, rows in joined.groupby("version", sort=True):
        alerts = rows[rows["alert"].astype(bool)]
        out[str(v)] = {
            "labelled_predictions": len(rows),
            "alerts": len(alerts),
            "alert_precision": float(alerts["label"].mean()) if len(alerts) else float("nan"),
        }
    return out


def retrain(
    prepared: pd.DataFrame,
    cfg: FraudConfig,
    *,
    work_dir: Path | None = None,
    params: dict[str, Any] | None = None,
    kind: str | None = None,
) -> retraining.Decision:
    """Weekly retraining: the champion vs a challenger of the same kind and parameters, compared fairly on the most
    recent labelled week; promoted only if it wins by ``cfg.retrain.margin``.

    1. The evaluation week is the ``eval_days`` labelled days ending ``delay_days`` before the data's last day.
       If the champion was trained on any of it (tag ``last_training_timestamp`` >= the week's first timestamp, or
       no tag), nothing is trained and the refusal is recorded (:func:`common.retraining.guard`).
    2. The challenger has the champion's kind and hyper-parameters (read from its saved model; ``kind``/``params``
       override them, the config's XGBoost when there is no champion) and is fitted on the ``train_days``
       labelled days before that week; its alert threshold meets the alert budget on the week.
    3. Both are scored on the week (``cfg.retrain.metric``) and the challenger, as trained, is promoted if it wins
       (compare-and-set: only if the champion is unchanged). The training run is logged in ``fraud-training``.

    Missing or unlabelled data is a :class:`common.data.DataError` (one line for the CLI), never a silent skip.
    ``work_dir`` is ignored (see :func:`register_model`).
    """
    del work_dir
    rc = cfg.retrain
    if prepared.empty or LABEL not in prepared.columns:
        raise DataError(
            "retrain needs labelled transactions (a 'label' column): got "
            + ("no rows" if prepared.empty else f"columns {list(prepared.columns)}")
        )
    last_labelled = int(prepared[DAY].max()) - cfg.features.delay_days
    eval_first = last_labelled - rc.eval_days + 1
    in_week = (prepared[DAY] >= eval_first) & (prepared[DAY] <= last_labelled)
    eval_rows = labelled(prepared[in_week])
    if eval_rows.empty or eval_rows[LABEL].nunique() < 2:
        raise DataError(
            f"retrain needs labelled frauds and genuine transactions in the evaluation week (days {eval_first}.."
            f"{last_labelled}, the {rc.eval_days} days ending {cfg.features.delay_days} days before the data's "
            f"last day); found {len(eval_rows)} labelled rows, {int(eval_rows[LABEL].sum()) if len(eval_rows) else 0}"
            " frauds: bring more recent labelled data"
        )
    window_start = retraining.unix_seconds(prepared.loc[in_week, TIMESTAMP].min())
    refused = retraining.guard(MODEL_NAME, window_start, metric=rc.metric, margin=rc.margin)
    if refused is not None:
        return refused

    champion_mv = registry.find(MODEL_NAME, registry.CHAMPION)
    champion = registry.load(MODEL_NAME, champion_mv.version, load_model)[0] if champion_mv is not None else None
    if champion is not None:
        kind = kind or champion.kind
        if params is None and kind == champion.kind:
            params = dict(champion.params)
        if list(champion.features) != feature_names(cfg.features):
            log.warning(
                "the champion was trained on features %s, the challenger uses %s",
                champion.features,
                feature_names(cfg.features),
            )
    kind = kind or "xgboost"
    with tracking.start_run(
        f"{APP}-training",
        run_name="retrain-challenger",
        params={
            "kind": kind,
            **(params or {}),
            "window_start": window_start,
            "champion_version": champion_mv.version if champion_mv else None,
        },
        tags={"app": APP},
    ):
        challenger = train_model(
            prepared, cfg, kind=kind, params=params, train_days=rc.train_days, end_day=last_labelled - rc.eval_days
        )
        challenger.threshold = alert_threshold(
            eval_rows[DAY].to_numpy(),
            challenger.predict_proba(eval_rows[challenger.features]),
            cfg.serving.alerts_per_day,
        )
        recent = window_metrics(challenger, eval_rows, cfg.protocol.top_k)
        tracking.log_metrics({f"recent_{k}": v for k, v in recent.items()})
        mv = register_model(challenger, prepared, metrics={f"recent_{k}": v for k, v in recent.items()})

    def evaluate(version: registry.ModelVersion) -> float:
        if version.version == mv.version:
            return recent[rc.metric]
        model = (
            champion
            if champion_mv is not None and version.version == champion_mv.version
            else registry.load(MODEL_NAME, version.version, load_model)[0]
        )
        return window_metrics(model, eval_rows, cfg.protocol.top_k)[rc.metric]

    decision = retraining.champion_vs_challenger(
        MODEL_NAME, mv, evaluate, metric=rc.metric, margin=rc.margin, window_start=window_start
    )
    log.info("retrain decision: %s", decision.reason)
    return decision


def log_selection(candidates: dict[str, Candidate], dataset: str) -> None:
    """One MLflow run per selected model with its params and test metrics."""
    for name, c in candidates.items():
        with tracking.start_run(
            f"{APP}-evaluation",
            run_name=name,
            params={"kind": c.kind, "dataset": dataset, **c.params},
            tags={"app": APP},
        ):
            tracking.log_metrics({k: v for k, v in c.test.items() if np.isfinite(v)})

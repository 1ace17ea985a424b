"""HTTP service: real-time scoring with online features, delayed-label ingestion, on top of ``common.serving``.

Routes (besides common's /healthz, /readyz, /metrics, /v1/model, /admin/reload):

- ``POST /v1/transactions/score[?explain=true]``: one transaction -> ``score`` (fraud probability), ``decision``
  (``alert`` when the score reaches the model's threshold, set for the daily alert budget), ``reasons`` (top
  feature contributions to the log-odds, exact TreeSHAP via xgboost ``pred_contribs``) for alerts, or for any
  transaction with ``?explain=true``. The transaction is then added to the online state, so the next
  transactions of that card and terminal see it.
- ``POST /v1/labels``: delayed fraud labels ``[{tx_id, label}]``; they feed the terminal-risk features (once older
  than the feedback delay) and are logged for monitoring (alert precision).

The online state (:class:`~apps.fraud.features.OnlineFeatureStore`) belongs to the service, not to a model
version: a hot-swapped champion keeps the card and terminal history. A lock serialises state access.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from apps.fraud.config import MODEL_NAME, FeatureConfig, ServingConfig
from apps.fraud.features import OnlineFeatureStore, Transaction
from apps.fraud.model import FraudModel
from common import serving
from common.config import get_settings

log = logging.getLogger(__name__)


class TransactionIn(BaseModel):
    """A card transaction to score (the :data:`apps.fraud.data.SCHEMA` columns, without the label)."""

    tx_id: int = Field(ge=0, description="unique transaction id")
    timestamp: datetime = Field(description="ISO 8601 date-time, e.g. 2018-09-01T12:30:00")
    customer_id: int = Field(ge=0)
    terminal_id: int = Field(ge=0)
    amount: float = Field(ge=0, allow_inf_nan=False, description="amount, >= 0")


class Reason(BaseModel):
    feature: str
    value: float
    contribution: float = Field(description="contribution to the log-odds of fraud (TreeSHAP)")


class ScoreOut(BaseModel):
    tx_id: int
    score: float = Field(description="fraud probability")
    decision: Literal["alert", "pass"]
    threshold: float
    reasons: list[Reason] = Field(description="top contributions; for alerts (or ?explain=true), else empty")
    model_version: str | None
    latency_ms: float


class LabelIn(BaseModel):
    tx_id: int = Field(ge=0)
    label: Literal[0, 1]


class LabelsIn(BaseModel):
    labels: list[LabelIn] = Field(min_length=1)


class LabelsOut(BaseModel):
    received: int
    applied: int = Field(description="labels of transactions still in the online state (used by features)")
    unknown: int


class FraudScorer:
    """The single-transaction path: online features -> model -> decision + reasons; owns the state."""

    def __init__(self, store: OnlineFeatureStore, serving_cfg: ServingConfig | None = None,
                 label_log: serving.PredictionLog | None = None) -> None:
        self.store = store
        self.cfg = serving_cfg or ServingConfig()
        self.label_log = label_log
        self.lock = threading.Lock()

    def score(self, tx: Transaction, model: FraudModel, *, reasons: bool | None = None) -> tuple[float, bool, list]:
        """(score, alert?, reasons) for ``tx``; adds ``tx`` to the state.

        ``reasons``: True/False forces the explanation on/off; None follows ``ServingConfig.explain``
        (default: explain alerts only).
        """
        if model.features != self.store.names:
            raise RuntimeError(f"model features {model.features} != online features {self.store.names}")
        with self.lock:
            x = self.store.score_and_update(tx)
        p = float(model.predict_proba(x)[0])
        alert = p >= model.threshold
        explain = reasons if reasons is not None else (self.cfg.explain == "all" or alert)
        why = model.reasons(x, self.cfg.n_reasons) if explain else []
        return p, alert, why

    def add_labels(self, labels: list[tuple[int, int]]) -> int:
        with self.lock:
            applied = sum(self.store.add_label(t, lab) for t, lab in labels)
        if self.label_log is not None:
            for t, lab in labels:
                self.label_log.log({"tx_id": t, "label": lab})
        return applied


def build_router(scorer: FraudScorer) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["fraud"])

    # ``async def`` on purpose: the work is ~1-3 ms of CPU with no I/O to wait for, so running it on the event
    # loop (one request at a time) beats dispatching every request to the thread pool, where concurrent
    # requests only fight over the GIL. The model snapshot is taken once per request (hot-swap safe).
    @router.post("/transactions/score", response_model=ScoreOut)
    async def score(tx: TransactionIn, request: Request, explain: bool | None = None) -> ScoreOut:
        """Score one transaction; ``?explain=true`` returns reasons even when it is not an alert."""
        t0 = time.perf_counter()
        loaded = serving.get_loaded(request)
        p, alert, why = scorer.score(Transaction(**tx.model_dump()), loaded.model, reasons=explain)
        request.app.state.metrics.observe_prediction(p)
        plog = request.app.state.prediction_log
        if plog is not None:
            plog.log({"tx_id": tx.tx_id, "timestamp": tx.timestamp.isoformat(), "customer_id": tx.customer_id,
                      "terminal_id": tx.terminal_id, "amount": tx.amount, "prediction": p,
                      "alert": bool(alert), "version": loaded.version_id})
        return ScoreOut(tx_id=tx.tx_id, score=p, decision="alert" if alert else "pass",
                        threshold=loaded.model.threshold, reasons=[Reason(**r) for r in why],
                        model_version=loaded.version_id, latency_ms=(time.perf_counter() - t0) * 1e3)

    @router.post("/labels", response_model=LabelsOut)
    async def labels(body: LabelsIn) -> LabelsOut:
        pairs = [(item.tx_id, item.label) for item in body.labels]
        applied = scorer.add_labels(pairs)
        return LabelsOut(received=len(pairs), applied=applied, unknown=len(pairs) - applied)

    return router


def load_model(model_dir: Path) -> FraudModel:
    """Registry loader: one xgboost thread per request (latency, not throughput)."""
    return FraudModel.load(model_dir, nthread=1)


def build_app(history: pd.DataFrame | None = None, *, feature_cfg: FeatureConfig | None = None,
              serving_cfg: ServingConfig | None = None, model: FraudModel | None = None,
              refresh_interval_s: float | None = 5.0, log_predictions: bool = True) -> FastAPI:
    """The fraud service. ``history``: past transactions (with labels when known) that warm the online state.

    ``model``: serve this model instead of the registry's champion (tests, benchmarks); the registry is then
    not polled.
    """
    store = (OnlineFeatureStore.from_history(history, feature_cfg) if history is not None
             else OnlineFeatureStore(feature_cfg))
    gc.collect()
    gc.freeze()  # start-up objects (libraries, the warm state) leave the GC's working set: shorter pauses
    settings = get_settings()
    label_log = serving.PredictionLog(settings.path("labels", f"{MODEL_NAME}.jsonl")) if log_predictions else None
    scorer = FraudScorer(store, serving_cfg, label_log)
    holder = serving.ModelHolder(MODEL_NAME, load_model)
    if model is not None:
        holder.set(serving.Loaded(model, None))
        refresh_interval_s = None
    plog = (serving.PredictionLog(settings.path("predictions", f"{MODEL_NAME}.jsonl"))
            if log_predictions else None)
    app = serving.create_app("mlref fraud scoring", holder, [build_router(scorer)],
                             refresh_interval_s=refresh_interval_s, prediction_log=plog,
                             load_on_startup=model is None,
                             prediction_buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0))
    app.state.scorer = scorer
    return app


class BatchScorer:
    """Stateful ``score_fn`` for :func:`common.batch.score_file`: chunks of a time-sorted transaction file in,
    ``tx_id, score, decision[, label][, reasons]`` out (reasons: top-3 features of each alert).

    Features need each card's and terminal's history, which crosses chunk boundaries: the scorer keeps the last
    ``history_days`` of transactions of earlier chunks and computes each chunk's features on (tail + chunk), so
    the result equals :func:`apps.fraud.features.compute_features` on the whole file. ``history`` optionally
    prepends earlier transactions (e.g. the training data) so the first rows see their past too.
    """

    def __init__(self, model: FraudModel, feature_cfg: FeatureConfig | None = None,
                 history: pd.DataFrame | None = None, *, reasons: bool = False) -> None:
        from apps.fraud.data import SCHEMA, TIMESTAMP

        self.model, self.cfg = model, feature_cfg or FeatureConfig()
        self.reasons = reasons
        self._ts = TIMESTAMP
        self.tail = None
        if history is not None and len(history):
            cols = [c for c in SCHEMA.names if c in history.columns]
            start = history[TIMESTAMP].max() - pd.Timedelta(days=self.cfg.history_days)
            self.tail = history.loc[history[TIMESTAMP] > start, cols].reset_index(drop=True)
        self._last: pd.Timestamp | None = None

    def __call__(self, chunk: pd.DataFrame) -> pd.DataFrame:
        from apps.fraud.data import LABEL, TX_ID, validate
        from apps.fraud.features import compute_features
        from common.data import DataError

        chunk = validate(chunk, source="batch input")
        first = chunk[self._ts].iloc[0] if len(chunk) else None
        if self._last is not None and first is not None and first < self._last:
            raise DataError(f"batch input is not sorted by {self._ts}: {first} comes after {self._last}; sort the file")
        frame = chunk if self.tail is None else pd.concat([self.tail, chunk], ignore_index=True)
        feats = compute_features(frame, self.cfg).iloc[len(frame) - len(chunk):]
        scores = self.model.predict_proba(feats[self.model.features])
        out = pd.DataFrame({TX_ID: chunk[TX_ID].to_numpy(), "score": scores,
                            "decision": np.where(scores >= self.model.threshold, "alert", "pass")})
        if LABEL in chunk.columns:
            out[LABEL] = chunk[LABEL].to_numpy()
        if self.reasons:  # exact TreeSHAP costs ~1 ms a row: explain the alerts only
            out["reasons"] = ""
            alert = np.flatnonzero(scores >= self.model.threshold)
            contrib = self.model.contributions(feats[self.model.features].iloc[alert]) if alert.size else None
            if contrib is not None:
                names = np.asarray(self.model.features)
                top = np.argsort(-contrib, axis=1)[:, :3]
                out.loc[out.index[alert], "reasons"] = [",".join(names[r]) for r in top]
        if len(chunk):
            self._last = chunk[self._ts].iloc[-1]
            keep_from = self._last - pd.Timedelta(days=self.cfg.history_days)
            self.tail = frame[frame[self._ts] > keep_from].reset_index(drop=True)
        return out


def latency_percentiles(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    a = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "n": int(a.size)}

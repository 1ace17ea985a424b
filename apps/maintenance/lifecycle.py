"""Registry, batch scoring, monitoring and retraining of the maintenance model, on top of ``common/``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.maintenance.config import REGISTRY_NAME, Config
from apps.maintenance.data import FAILED, UNIT, failure_times, validate_fleet
from apps.maintenance.features import add_rul
from apps.maintenance.model import RULModel
from apps.maintenance.train import train
from common import monitoring, registry, retraining
from common.data import DataError, fingerprint, write_table
from common.metrics.regression import rmse

log = logging.getLogger(__name__)

CONDITION = "condition"


def condition_reference_name(k: int) -> str:
    return f"reference_condition_{k}.json"


def register(
    model: RULModel, histories: pd.DataFrame, *, metrics: dict[str, float], dataset: str, alias: str | None = None
) -> registry.ModelVersion:
    """Save ``model`` with its monitoring references (scaled sensors + condition mix + predictions overall, raw
    sensors per operating condition) and register it, tagged with ``last_training_timestamp``: the failure time
    of the newest training unit (see :func:`apps.maintenance.data.failure_times`)."""
    cond = model.pre.conditions(histories)
    scaled = pd.DataFrame(model.pre.transform(histories), columns=model.pre.sensors)
    scaled[CONDITION] = [f"c{k}" for k in cond]

    def build(path: Path) -> None:
        model.save(path)
        monitoring.ReferenceProfile.from_frame(scaled, categorical=[CONDITION]).save(path / monitoring.REFERENCE_FILE)
        for k in range(model.pre.n_conditions):
            rows = histories.loc[cond == k, model.pre.sensors]
            if len(rows):
                monitoring.ReferenceProfile.from_frame(rows).save(path / condition_reference_name(k))

    params = {
        k: model.cfg[k]
        for k in ("model", "window", "rul_cap", "epochs", "lr", "batch_size", "n_seeds", "alpha", "horizon")
        if k in model.cfg
    }
    return registry.register_dir(
        REGISTRY_NAME,
        build,
        metrics=metrics,
        params=params,
        data_fingerprint=fingerprint(histories),
        tags={"dataset": dataset, "model": model.kind, "members": str(model.members)},
        alias=alias,
        last_training_timestamp=float(failure_times(histories).max()),
    )


def load_version(ref: str = registry.CHAMPION) -> tuple[RULModel, registry.ModelVersion]:
    """The model of an alias or version number (hash-verified by the registry)."""
    return registry.load(REGISTRY_NAME, ref, RULModel.load)


def predict_table(model: RULModel, table: pd.DataFrame, *, chunk_units: int = 1000) -> pd.DataFrame:
    """RUL, interval and alert per unit (at its last cycle) for a validated long table, ``chunk_units`` at a time."""
    units = list(dict.fromkeys(table[UNIT]))
    parts = []
    for i in range(0, len(units), chunk_units):
        rows = table[table[UNIT].isin(units[i : i + chunk_units])].reset_index(drop=True)
        parts.append(model.predict(rows))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["lower", "rul"], kind="stable").reset_index(drop=True) if "lower" in out else out


def batch_score(model: RULModel, input_path: Path, output: Path, *, chunk_units: int = 1000) -> dict[str, Any]:
    """``unit, cycle, rul, lower, upper, alert`` for every unit of a long table (units still running), sorted by
    urgency; the output file appears only when complete (atomic write)."""
    from apps.maintenance.data import read_fleet

    table = read_fleet(input_path)
    out = predict_table(model, table, chunk_units=chunk_units)
    write_table(out, output)
    return {
        "units": len(out),
        "rows_in": len(table),
        "alerts": int(out["alert"].sum()) if "alert" in out else 0,
        "output": str(output),
    }


# ------------------------------------------------------------------ monitoring


def observed_performance(model: RULModel, failed: pd.DataFrame) -> dict[str, float]:
    """Error and interval coverage at every cycle of units whose failure has been observed (truth = capped RUL)."""
    df = add_rul(failed, model.rul_cap)
    y = df["rul"].to_numpy(float)
    pred, _ = model.predict_rows(df)
    out = {"failed_units": float(df[UNIT].nunique()), "cycles": float(len(y)), "rmse": rmse(y, pred)}
    if model.conformal is not None:
        lo, hi = model.conformal.interval(pred)
        out["coverage"] = float(np.mean((y >= lo) & (y <= hi)))
    return out


def monitor(
    model: RULModel,
    model_dir: Path,
    recent: pd.DataFrame,
    out_dir: Path,
    *,
    coverage_tolerance: float = 0.1,
    rmse_factor: float = 1.5,
) -> monitoring.MonitorVerdict:
    """Sensor drift of ``recent`` rows overall and per operating condition against the training references; once
    failures are observed (units with ``failed == 1``), RMSE and interval coverage on them. Alerts: drift in
    any condition, coverage below ``1 - alpha - coverage_tolerance``, RMSE above ``rmse_factor`` x the
    validation RMSE recorded at training. The report goes to ``out_dir``."""
    recent = validate_fleet(recent, source="recent data")
    cond = model.pre.conditions(recent)
    alerts: list[str] = []
    stats: dict[str, Any] = {"units": int(recent[UNIT].nunique()), "rows": len(recent)}
    per_condition: dict[str, list[str]] = {}
    for k in range(model.pre.n_conditions):
        ref_path = Path(model_dir) / condition_reference_name(k)
        rows = recent.loc[cond == k, model.pre.sensors]
        stats[f"rows_condition_{k}"] = len(rows)
        if not ref_path.exists() or len(rows) == 0:
            continue
        rep = monitoring.detect_drift(monitoring.ReferenceProfile.load(ref_path), rows)
        if rep.drifted_features:
            per_condition[f"c{k}"] = rep.drifted_features
            alerts.append(f"sensor drift in operating condition c{k}: {', '.join(rep.drifted_features)}")
    failed = recent[recent[FAILED] == 1].reset_index(drop=True) if FAILED in recent else recent.iloc[0:0]
    if len(failed):
        perf = observed_performance(model, failed)
        stats.update({f"observed_{k}": v for k, v in perf.items()})
        floor = 1 - model.conformal.alpha - coverage_tolerance if model.conformal is not None else None
        if floor is not None and perf.get("coverage", 1.0) < floor:
            alerts.append(f"interval coverage {perf['coverage']:.2f} on observed failures < {floor:.2f}")
        ref_rmse = model.info.get("val_rmse")
        if ref_rmse and perf["rmse"] > rmse_factor * float(ref_rmse):
            alerts.append(
                f"RMSE {perf['rmse']:.1f} on observed failures > {rmse_factor} x validation {float(ref_rmse):.1f}"
            )
    current = pd.DataFrame(model.pre.transform(recent), columns=model.pre.sensors)
    current[CONDITION] = [f"c{k}" for k in cond]
    verdict = monitoring.run_check(
        Path(model_dir),
        current,
        out_dir,
        title=f"{REGISTRY_NAME}: recent readings vs training",
        extra_alerts=alerts,
        stats=stats,
    )
    verdict.stats["drift_by_condition"] = per_condition
    return verdict


# ------------------------------------------------------------------ retraining


def recent_window(histories: pd.DataFrame, n_units: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(units that failed before the window, the ``n_units`` most recent failures, window start), by failure time."""
    times = failure_times(histories).sort_values(kind="stable")
    if len(times) < n_units + 2:
        raise DataError(
            f"{len(times)} failed unit(s): retraining needs more than {n_units} + 2 (the latest "
            f"{n_units} failures are the evaluation window; lower window_units in the config)"
        )
    window_units = set(times.index[-n_units:])
    start = float(times.iloc[-n_units])
    before = histories[~histories[UNIT].isin(window_units)].reset_index(drop=True)
    window = histories[histories[UNIT].isin(window_units)].reset_index(drop=True)
    return before, window, start


def retrain(histories: pd.DataFrame, cfg: Config, *, dataset: str, margin: float = 0.0) -> retraining.Decision:
    """A challenger trained on the units that failed before the latest ``cfg.window_units`` failures, compared
    with the champion on those recent failures (RMSE over every cycle, capped truth; lower wins); promoted only
    when it wins by more than ``margin`` cycles. Refused (recorded, nothing trained) when the champion has seen
    the window."""
    metric = "rmse_recent_failures"
    before, window, start = recent_window(histories, cfg.window_units)
    refused = retraining.guard(REGISTRY_NAME, start, metric=metric, margin=margin, higher_is_better=False)
    if refused is not None:
        return refused
    challenger = train(before, cfg)
    score = observed_performance(challenger, window)["rmse"]
    mv = register(challenger, before, metrics={metric: score}, dataset=dataset)

    def evaluate(version: registry.ModelVersion) -> float:
        model, _ = load_version(version.version)
        return observed_performance(model, window)["rmse"]

    return retraining.champion_vs_challenger(
        REGISTRY_NAME, mv, evaluate, metric=metric, margin=margin, higher_is_better=False, window_start=start
    )


def summary(decision: retraining.Decision) -> dict[str, Any]:
    return {
        k: decision.to_dict()[k]
        for k in ("champion_version", "challenger_version", "champion_score", "challenger_score", "promoted", "reason")
    }

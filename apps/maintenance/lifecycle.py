"""Registry, batch scoring, monitoring and retraining of the maintenance model, on top of ``common/``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.maintenance.config import REGISTRY_NAME, Config
from apps.maintenance.data import CYCLE, FAILED, UNIT, failure_times, validate_fleet
from apps.maintenance.features import add_rul, unit_slices
from apps.maintenance.model import RULModel
from apps.maintenance.reference import (
    AGE_REFERENCE_FILE,
    CONDITION,
    LIFE,
    age_matched_profile,
    alive_until,
    load_reference_rows,
    save_reference_rows,
    scaled,
)
from apps.maintenance.train import train
from common import monitoring, registry, retraining
from common.data import DataError, fingerprint, write_table
from common.metrics.regression import rmse

log = logging.getLogger(__name__)


def condition_reference_name(k: int) -> str:
    return f"reference_condition_{k}.json"


def register(
    model: RULModel, histories: pd.DataFrame, *, metrics: dict[str, float], dataset: str, alias: str | None = None
) -> registry.ModelVersion:
    """Save ``model`` with its monitoring references and register it, tagged with ``last_training_timestamp``: the
    failure time of the newest training unit (see :func:`apps.maintenance.data.failure_times`).

    References: the training rows with cycle and condition (:data:`AGE_REFERENCE_FILE`), from which
    :func:`monitor` draws the readings at the monitored units' ages; and the all-ages profiles (scaled sensors +
    condition mix in ``reference.json``, raw sensors per operating condition), which models registered before the
    age-matched reference are still monitored against."""
    cond = model.pre.conditions(histories)
    scaled = pd.DataFrame(model.pre.transform(histories), columns=model.pre.sensors)
    scaled[CONDITION] = [f"c{k}" for k in cond]

    def build(path: Path) -> None:
        model.save(path)
        save_reference_rows(model.pre, histories, path / AGE_REFERENCE_FILE)
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
    """RUL, interval and alert per unit (at its last cycle) for a validated long table (sorted by unit and cycle),
    ``chunk_units`` at a time: each chunk is a slice of consecutive rows, so the cost grows with the table (a
    filter of the whole table per chunk made it grow with its square)."""
    slices = unit_slices(table)
    parts = []
    for i in range(0, len(slices), chunk_units):
        group = slices[i : i + chunk_units]
        parts.append(model.predict(table.iloc[group[0][1] : group[-1][2]].reset_index(drop=True)))
        if len(slices) > 10 * chunk_units and (i // chunk_units) % 10 == 9:
            log.info("scored %d of %d units", i + len(group), len(slices))
    if not parts:
        return model.predict(table)
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["lower", "rul"], kind="stable").reset_index(drop=True) if "lower" in out else out


def batch_score(model: RULModel, input_path: Path, output: Path, *, chunk_units: int = 1000) -> dict[str, Any]:
    """``unit, cycle, rul, lower, upper, alert`` for every unit of a long table (units still running), sorted by
    urgency; the output file appears only when complete (atomic write)."""
    from apps.maintenance.data import read_fleet

    table = read_fleet(input_path, columns=model.cfg)
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
    """Sensor drift of ``recent`` rows per operating condition and overall against the training readings at the
    same ages (:mod:`apps.maintenance.reference`: training rows at the recent rows' cycles, of units that lived
    at least as long as the recent units have run, so a fleet early in life is not compared with histories that
    end in failure); once failures are observed (units with ``failed == 1``), RMSE and interval coverage on them.
    Alerts: drift in any condition, coverage below ``1 - alpha - coverage_tolerance``, RMSE above
    ``rmse_factor`` x the validation RMSE recorded at training. The report goes to ``out_dir``; ``stats`` holds
    the largest PSI per condition. A model registered without the age-matched reference is compared with its
    all-ages profiles, with a warning in the report."""
    recent = validate_fleet(recent, source="recent data")
    pre = model.pre
    cond = pre.conditions(recent)
    cycles, alive = recent[CYCLE].to_numpy(), alive_until(recent)
    alerts: list[str] = []
    warnings: list[str] = []
    stats: dict[str, Any] = {"units": int(recent[UNIT].nunique()), "rows": len(recent)}
    age_path = Path(model_dir) / AGE_REFERENCE_FILE
    ref = load_reference_rows(age_path, pre) if age_path.exists() else None
    stats["age_matched"] = ref is not None
    if ref is None:
        warnings.append(
            "this model version was registered without the age-matched reference: drift compares the recent rows "
            "with training rows of all ages, so a fleet early in life reads as drifted; register it again"
        )
    ref_cond = ref[CONDITION].to_numpy() if ref is not None else np.zeros(0, np.int64)
    per_condition: dict[str, list[str]] = {}
    for k in range(pre.n_conditions):
        rows = recent.loc[cond == k, pre.sensors]
        stats[f"rows_condition_{k}"] = len(rows)
        if len(rows) == 0:
            continue
        if ref is not None:
            if not (ref_cond == k).any():
                continue
            mine = ref_cond == k
            profile = age_matched_profile(
                ref.loc[mine, pre.sensors],
                ref.loc[mine, CYCLE].to_numpy(),
                ref.loc[mine, LIFE].to_numpy(),
                cycles[cond == k],
                alive[cond == k],
            )
        elif (Path(model_dir) / condition_reference_name(k)).exists():
            profile = monitoring.ReferenceProfile.load(Path(model_dir) / condition_reference_name(k))
        else:
            continue
        rep = monitoring.detect_drift(profile, rows)
        stats[f"max_psi_condition_{k}"] = round(float(rep.features["psi"].max()), 4)
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
    reference: monitoring.ReferenceProfile | Path = Path(model_dir)
    if ref is not None:
        current = pd.DataFrame(scaled(pre, recent[pre.sensors].to_numpy(), cond), columns=pre.sensors)
        overall = pd.DataFrame(scaled(pre, ref[pre.sensors].to_numpy(), ref_cond), columns=pre.sensors)
        overall[CONDITION] = [f"c{k}" for k in ref_cond]
        reference = age_matched_profile(
            overall, ref[CYCLE].to_numpy(), ref[LIFE].to_numpy(), cycles, alive, categorical=(CONDITION,)
        )
        stats["reference_effective_rows"] = reference.meta["effective_rows"]
    else:
        current = pd.DataFrame(pre.transform(recent), columns=pre.sensors)
    current[CONDITION] = [f"c{k}" for k in cond]
    verdict = monitoring.run_check(
        reference,
        current,
        out_dir,
        title=f"{REGISTRY_NAME}: recent readings vs training readings"
        + (" at the same ages" if ref is not None else ""),
        extra_alerts=alerts,
        stats=stats,
        warnings=warnings,
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

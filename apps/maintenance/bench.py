"""The C-MAPSS benchmark: ``python -m apps.maintenance bench`` -> ``bench/results/maintenance.json``.

For every subset present in ``$MLREF_DATA_DIR/cmapss`` (or the one given): the default model (boosted trees on
health features) and the DCNN, each trained with ``seeds`` seeds (mean ± std over seeds, each one's time), each
kind's seed ensemble (predictions averaged), and the baselines, on
the official protocol (last cycle of each test unit, true RUL as published). Published anchors are FD001 rows.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np

from apps.maintenance.config import APP, Config
from apps.maintenance.data import available_subsets, load_cmapss
from apps.maintenance.evaluate import evaluate_last_cycle
from apps.maintenance.model import Conformal, RULModel
from apps.maintenance.train import Prepared, boost_calibration, fit_baselines, prepare
from apps.maintenance.train import train as fit
from common.config import machine_info
from common.data import DataError, resolve_data_path

log = logging.getLogger(__name__)

PUBLISHED = {
    "LSTM (Zheng et al. 2017), FD001": {"rmse": 16.14, "score": 338.0},
    "DCNN (Li et al. 2018), FD001": {"rmse": 12.61, "score": 274.0},
}
MEAN_KEYS = ("rmse", "score", "rmse_capped", "coverage", "width")


def _mean_std(rows: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in MEAN_KEYS:
        vals = [r[k] for r in rows if k in r]
        if vals:
            out[k] = round(float(np.mean(vals)), 4)
            out[f"{k}_std"] = round(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, 4)
    return out


def _seed_runs(fleet: Any, data: Prepared, cfg: Config, kind: str, seeds: int) -> tuple[dict[str, Any], list[RULModel]]:
    """``seeds`` models of ``kind`` (seed = cfg.seed + k, same split): mean ± std over seeds and each seed's row."""
    members, per_seed = [], []
    for k in range(seeds):
        scfg = replace(cfg, model=kind, seed=cfg.seed + k, n_seeds=1)
        t0 = time.perf_counter()
        model = fit(fleet.train, scfg, data=data)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        met, _ = evaluate_last_cycle(model, fleet.test, fleet.test_rul, cfg.rul_cap)
        per_seed.append(
            {
                **{k2: round(v, 4) for k2, v in met.items()},
                "train_s": round(train_s, 1),
                "predict_s": round(time.perf_counter() - t1, 3),
                **model.info["members"][0],
            }
        )
        members.append(model)
        log.info("%s seed %d: RMSE %.2f score %.0f in %.0f s", kind, scfg.seed, met["rmse"], met["score"], train_s)
    row = {
        "metrics": _mean_std(per_seed),
        "train_s": round(float(np.mean([r["train_s"] for r in per_seed])), 1),
        "predict_s": round(float(np.mean([r["predict_s"] for r in per_seed])), 3),
        "per_seed": per_seed,
    }
    return row, members


def _ensemble(fleet: Any, data: Prepared, cfg: Config, members: list[RULModel]) -> dict[str, Any]:
    """The members' predictions averaged, its intervals recalibrated as :func:`train.train` does."""
    kind = members[0].kind
    ecfg = replace(cfg, model=kind, n_seeds=len(members))
    nets = [n for m in members for n in m.nets]
    boosters = [b for m in members for b in m.boosters]
    ens = RULModel(data.pre, nets, None, ecfg.to_dict(), {}, boosters)
    if kind == "boost":
        y_val, val_pred, _ = boost_calibration(data, ecfg, boosters)
    else:
        val_pred, y_val = ens.predict_windows(data.x_val), data.y_val
    ens.conformal = Conformal.calibrate(y_val, val_pred, cfg.alpha)
    t1 = time.perf_counter()
    met, _ = evaluate_last_cycle(ens, fleet.test, fleet.test_rul, cfg.rul_cap)
    return {"metrics": {k: round(v, 4) for k, v in met.items()}, "predict_s": round(time.perf_counter() - t1, 3)}


def bench_subset(
    subset: str,
    *,
    seeds: int = 3,
    dcnn_seeds: int | None = None,
    epochs: int | None = None,
    max_train_s: float | None = None,
    baselines: tuple[str, ...] = ("mean", "linear", "summary", "minirocket"),
) -> dict[str, Any]:
    """Every model on one subset: ``{name: {"metrics", "train_s", "predict_s", ...}}``. The default model
    (boosted trees on health features) and the DCNN each over ``seeds`` (``dcnn_seeds``; 0 skips the DCNN) seeds,
    mean ± std and the seeds' ensemble; then the baselines."""
    fleet = load_cmapss(subset)
    assert fleet.test is not None and fleet.test_rul is not None
    cfg = Config()
    if epochs is not None:
        cfg.epochs = epochs
    if max_train_s is not None:
        cfg.max_train_s = max_train_s
    data = prepare(fleet.train, cfg)
    models: dict[str, Any] = {}
    for kind, n in (("boost", seeds), ("dcnn", seeds if dcnn_seeds is None else dcnn_seeds)):
        if n < 1:
            continue
        row, members = _seed_runs(fleet, data, cfg, kind, n)
        if kind == "dcnn":
            row.update(epochs=cfg.epochs, max_train_s_per_seed=cfg.max_train_s)
        models[f"{subset} {kind} (mean of {n} seeds)"] = row
        if n > 1:
            ens = _ensemble(fleet, data, cfg, members)
            models[f"{subset} {kind} ensemble of {n} seeds"] = {**ens, "train_s": round(row["train_s"] * n, 1)}
    for name, reg in fit_baselines(data, cfg, kinds=baselines).items():
        t1 = time.perf_counter()
        met, _ = evaluate_last_cycle(reg, fleet.test, fleet.test_rul, cfg.rul_cap)
        models[f"{subset} {name}"] = {
            "metrics": {k: round(v, 4) for k, v in met.items()},
            "train_s": reg.fit_s,
            "predict_s": round(time.perf_counter() - t1, 3),
        }
    return models


def run_bench(
    dataset: str | None = None,
    *,
    seeds: int = 3,
    dcnn_seeds: int | None = None,
    epochs: int | None = None,
    max_train_s: float | None = None,
    baselines: tuple[str, ...] = ("mean", "linear", "summary", "minirocket"),
) -> dict[str, Any]:
    """The results document (the schema of ``bench/report.py``) for ``dataset`` or every subset present."""
    subsets = [dataset.upper()] if dataset else available_subsets()
    if not subsets:
        raise DataError(
            f"no C-MAPSS subset in {resolve_data_path('cmapss')}: put train_FD001.txt, test_FD001.txt "
            "and RUL_FD001.txt there (or set MLREF_DATA_DIR), or pass --dataset FD001 to download"
        )
    load = os.getloadavg()
    models: dict[str, Any] = {}
    t0 = time.perf_counter()
    for subset in subsets:
        models.update(
            bench_subset(
                subset,
                seeds=seeds,
                dcnn_seeds=dcnn_seeds,
                epochs=epochs,
                max_train_s=max_train_s,
                baselines=baselines,
            )
        )
    cfg = Config()
    return {
        "app": APP,
        "dataset": f"NASA C-MAPSS {', '.join(subsets)}",
        "protocol": (
            f"official: one prediction per test unit at its last cycle; RMSE and NASA score (sum) against "
            f"the published true RUL; training RUL capped at {cfg.rul_cap:.0f}, window {cfg.window}; "
            f"{cfg.val_fraction:.0%} of training units held out (best epoch, conformal calibration); "
            f"coverage of {1 - cfg.alpha:.0%} conformal intervals vs capped truth; boosted trees on health "
            "features (the default model) and DCNN as mean ± std over seeds on the same split, ensembles "
            "separately"
        ),
        "models": models,
        "published": PUBLISHED,
        "anchors": {
            "source": "Zheng et al. 2017 (LSTM), Li, Ding & Sun 2018 (DCNN), FD001 test set; published "
            "numbers are often best-of-runs",
            "target_fd001": {"rmse": 12.6, "score": 274},
            "stretch_fd001": {"rmse": 12.0, "score": 250},
        },
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
    }

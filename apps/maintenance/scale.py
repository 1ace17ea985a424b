"""How the maintenance app's cost grows with the fleet: training, fleet scoring and the fleet API at growing sizes.

``python -m apps.maintenance bench --scale [--sizes 100,1000,10000] [--api-units 10000]`` (the same as
``python -m apps.maintenance.scale``) writes ``bench/results/maintenance-scale.json`` and ``.png`` (log-log).

For each size N (units), in this order, each step in a fresh interpreter (:func:`common.scaling.run_measured`:
wall time and peak resident memory of its process tree):

- ``generate``: N run-to-failure histories and N running units (cut at random cycles) written to parquet by
  :func:`apps.maintenance.synth.write_fleet`, 1,000 units per chunk (cached in ``--data-dir`` while the spec
  matches); its memory stays flat as N grows;
- ``train``: the app's default model (gradient-boosted trees on health features, conformal intervals) fitted on
  the N histories with the app's default configuration; quality is RMSE / coverage at the last cycle of 500
  held-out running units (the same units at every size). Refused with the memory it would need when
  :func:`apps.maintenance.train.check_memory` says it will not fit;
- ``score``: ``batch`` scoring of the N running units (:func:`apps.maintenance.lifecycle.predict_table`).
- ``api`` (at ``--api-units``, default 10,000, when it is among the sizes): the fleet service
  (:mod:`apps.maintenance.service`) in process with FastAPI's TestClient over N stored units: start-up (reading
  the fleet store), the first ``GET /v1/fleet`` (scores the whole fleet), then per-request median and p95 of
  ``GET /v1/units/{unit}/rul``, ``GET /v1/fleet?limit=100`` at random offsets and ``POST .../readings`` (one
  new cycle: an fsynced file write and the unit re-ranked).

Per step, the exponent b of ``cost ∝ N^b`` is fitted on log-log axes for time and peak memory
(:func:`common.scaling.exponents`); the machine's load and CPU are recorded (:func:`common.scaling.conditions`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import scaling

log = logging.getLogger(__name__)

STEPS = ("generate", "train", "score", "api")
DEFAULT_OUTPUT = Path("bench/results/maintenance-scale.json")
DEFAULT_SIZES = "100,1000,10000"
TEST_UNITS = 500  # held-out running units the quality is measured on (the same at every size)
API_REQUESTS = 200  # timed requests per endpoint


# ------------------------------------------------------------------ the children (one step each)


def _spec(size: int, seed: int) -> dict[str, Any]:
    return {"units": size, "seed": seed, "generator": 1}


def data_paths(size: int, data_dir: Path) -> dict[str, Path]:
    """The files of size ``size`` under ``data_dir``: histories, running units, and the shared test units."""
    d = data_dir / f"fleet-{size}"
    return {
        "dir": d,
        "histories": d / "histories.parquet",
        "running": d / "running.parquet",
        "test": data_dir / f"test-{TEST_UNITS}.parquet",
    }


def step_generate(size: int, data_dir: Path, seed: int) -> dict[str, Any]:
    """Write the fleet of ``size`` units (and the shared test units) unless already there with the same spec."""
    from apps.maintenance.synth import write_fleet

    p = data_paths(size, data_dir)
    meta = p["dir"] / "fleet.json"
    out: dict[str, Any] = {"step": "generate", "units": size}
    if not p["test"].exists():
        write_fleet(p["test"], TEST_UNITS, seed=seed + 1, running=True, unit_prefix="test-")
    if meta.exists() and json.loads(meta.read_text()).get("spec") == _spec(size, seed):
        out |= json.loads(meta.read_text())["written"] | {"cached": True}  # the seconds of the run that wrote it
    else:
        h = write_fleet(p["histories"], size, seed=seed, unit_prefix="unit-")
        r = write_fleet(p["running"], size, seed=seed + 2, running=True, unit_prefix="run-")
        written = {"rows": h["rows"], "running_rows": r["rows"], "seconds": h["seconds"] + r["seconds"]}
        meta.write_text(json.dumps({"spec": _spec(size, seed), "written": written}))
        out |= written
    out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
    return out


def _rows_in(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def step_train(
    size: int, data_dir: Path, seed: int, *, available: int | None = None, trees: int | None = None
) -> dict[str, Any]:
    """Fit the default model on the ``size`` histories; RMSE on the shared test units; save it for ``score``."""
    import pandas as pd

    from apps.maintenance.config import Config
    from apps.maintenance.data import validate_fleet
    from apps.maintenance.evaluate import evaluate_last_cycle
    from apps.maintenance.synth import read_truth
    from apps.maintenance.train import check_memory, train
    from common.data import DataError

    p = data_paths(size, data_dir)
    rows = _rows_in(p["histories"])
    out: dict[str, Any] = {"step": "train", "units": size, "rows": rows}
    try:
        check_memory(rows, what=f"training on {size:,} units", available=available)
    except DataError as exc:
        out["refused"] = str(exc)
        return out
    t0 = time.perf_counter()
    histories = validate_fleet(pd.read_parquet(p["histories"]), source=str(p["histories"]))
    out["load_s"] = time.perf_counter() - t0
    cfg = Config(seed=seed) if trees is None else Config(seed=seed, boost_trees=trees)
    out["trees"] = cfg.boost_trees
    t0 = time.perf_counter()
    model = train(histories, cfg)
    out["train_s"] = time.perf_counter() - t0
    out["seconds"] = out["train_s"]
    out["calibration_examples"] = model.info.get("calibration_examples")
    test = validate_fleet(pd.read_parquet(p["test"]), source=str(p["test"]))
    metrics, _ = evaluate_last_cycle(model, test, read_truth(p["test"]), cfg.rul_cap)
    out.update({k: metrics[k] for k in ("rmse", "coverage") if k in metrics})
    model.save(p["dir"] / "model")
    out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
    return out


def step_score(size: int, data_dir: Path) -> dict[str, Any]:
    """Score the ``size`` running units with the model ``train`` saved (the ``batch`` command's path)."""
    from apps.maintenance.lifecycle import batch_score
    from apps.maintenance.model import RULModel

    p = data_paths(size, data_dir)
    model = RULModel.load(p["dir"] / "model")
    t0 = time.perf_counter()
    r = batch_score(model, p["running"], p["dir"] / "scored.parquet")
    out = {"step": "score", "units": size, "rows": r["rows_in"], "alerts": r["alerts"]}
    out["seconds"] = out["score_s"] = time.perf_counter() - t0
    out["units_per_s"] = size / out["score_s"]
    out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
    return out


def write_store(table: Any, root: Path) -> int:
    """The fleet service's state for every unit of ``table`` (a long table sorted by unit, cycle): one JSON file
    per unit in the store's format (:class:`apps.maintenance.service.FleetStore`), written directly (no fsync: a
    bench fixture, 10,000 POSTs would time the disk). Returns the number of units."""
    from apps.maintenance.config import MAX_BASELINE_CYCLES
    from apps.maintenance.data import CYCLE, sensors_of, settings_of
    from apps.maintenance.features import unit_slices
    from apps.maintenance.service import CFG, STATE_FORMAT

    root.mkdir(parents=True, exist_ok=True)
    fields = settings_of(table) + sensors_of(table)
    values, cycles = table[fields].to_numpy(float), table[CYCLE].to_numpy()
    slices = unit_slices(table)
    for unit, a, b in slices:
        v, c = values[a:b].tolist(), cycles[a:b].tolist()
        doc = {
            "format": STATE_FORMAT,
            "unit": unit,
            "fields": fields,
            "cycles": c[-CFG.history_cycles :],
            "values": v[-CFG.history_cycles :],
            "head_cycles": c[:MAX_BASELINE_CYCLES],
            "head_values": v[:MAX_BASELINE_CYCLES],
        }
        (root / f"{unit}.json").write_text(json.dumps(doc))
    return len(slices)


def _ms(times: list[float]) -> dict[str, float]:
    a = np.asarray(times) * 1000
    return {"median_ms": round(float(np.median(a)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)}


def step_api(size: int, data_dir: Path, seed: int, *, requests: int = API_REQUESTS) -> dict[str, Any]:
    """The fleet service over ``size`` stored units: start-up, first fleet page, per-request cost (see module)."""
    import tempfile

    import pandas as pd
    from fastapi.testclient import TestClient

    from apps.maintenance.data import CYCLE, UNIT, validate_fleet
    from apps.maintenance.model import RULModel
    from apps.maintenance.service import build_app
    from common.workspace import Workspace

    p = data_paths(size, data_dir)
    model = RULModel.load(p["dir"] / "model")
    table = validate_fleet(pd.read_parquet(p["running"]), source=str(p["running"]))
    out: dict[str, Any] = {"step": "api", "units": size}
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "units"
        t0 = time.perf_counter()
        write_store(table, state)
        out["store_write_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        app = build_app(model=model, state_dir=state, ws=Workspace.at(Path(tmp) / "home"))
        with TestClient(app) as client:
            out["startup_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            first = client.get("/v1/fleet", params={"limit": 100})
            out["first_fleet_page_s"] = time.perf_counter() - t0
            assert first.status_code == 200, first.text
            out["ranked_units"] = first.json()["total"]
            units = list(dict.fromkeys(table[UNIT]))
            last = table.groupby(UNIT, sort=False)[CYCLE].max()
            timed: dict[str, list[float]] = {"unit_rul": [], "fleet_page": [], "post_reading": []}
            for i in range(requests):
                unit = units[int(rng.integers(len(units)))]
                t0 = time.perf_counter()
                r = client.get(f"/v1/units/{unit}/rul")
                timed["unit_rul"].append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                t0 = time.perf_counter()
                r = client.get("/v1/fleet", params={"limit": 100, "offset": int(rng.integers(max(size - 100, 1)))})
                timed["fleet_page"].append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                if i % 4 == 0:  # a quarter as many writes: each is an fsync
                    rows = table[table[UNIT] == unit].iloc[-1:].drop(columns=[UNIT, "timestamp"], errors="ignore")
                    reading = {k: float(v) for k, v in rows.iloc[0].items()}
                    last[unit] += 1
                    reading[CYCLE] = int(last[unit])
                    t0 = time.perf_counter()
                    r = client.post(f"/v1/units/{unit}/readings", json={"readings": [reading]})
                    timed["post_reading"].append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                if (i + 1) % 50 == 0:
                    log.info("api: %d of %d requests per endpoint", i + 1, requests)
            for k, v in timed.items():
                out[k] = _ms(v) | {"requests": len(v)}
    out["seconds"] = out["startup_s"] + out["first_fleet_page_s"]
    out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
    return out


# ------------------------------------------------------------------ the parent


def run_scale(
    sizes: list[int],
    *,
    output: Path = DEFAULT_OUTPUT,
    data_dir: Path,
    api_units: int = 10_000,
    seed: int = 0,
    timeout_s: float = 1800.0,
    available: int | None = None,
    trees: int | None = None,
) -> dict[str, Any]:
    """Every step at every size (see the module docstring); writes ``output`` and its PNG; returns the document."""
    load_start, t_start = os.getloadavg(), time.perf_counter()
    # xgboost's OpenMP threads spin while they wait: on a shared, loaded machine that made a 20-unit fit take
    # minutes instead of seconds (measured: 200 trees on 3,000 rows, 2 threads, > 100 s spinning, 3 s passive)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    results: list[dict[str, Any]] = []
    for size in sizes:
        steps = ["generate", "train", "score"] + (["api"] if size == api_units else [])
        for step in steps:
            args = ["--child", step, "--units", str(size), "--data-dir", str(data_dir), "--seed", str(seed)]
            if available is not None:
                args += ["--available-bytes", str(available)]
            if trees is not None:
                args += ["--trees", str(trees)]
            log.info("%d units: %s ...", size, step)
            r = scaling.run_measured(
                scaling.python_child("apps.maintenance.scale", *args), timeout_s=timeout_s, env=env
            )
            r.setdefault("step", step)
            r["units"] = size
            results.append(r)
            shown = ("seconds", "peak_rss_bytes", "rmse", "refused", "failed", "timed_out")
            log.info("%d units: %s %s", size, step, {k: r[k] for k in shown if k in r})
            write_results(results, sizes, output, t_start, load_start)  # a long run keeps what it measured
            if step == "train" and "train_s" not in r:
                break  # nothing to score
    return write_results(results, sizes, output, t_start, load_start)


def write_results(
    results: list[dict[str, Any]], sizes: list[int], output: Path, t_start: float, load_start: tuple[float, ...]
) -> dict[str, Any]:
    """The JSON document (fitted exponents, quality, API cost, memory wall, conditions) and its log-log PNG."""
    from apps.maintenance.train import TRAIN_BYTES_PER_ROW
    from common.reports.files import write_json

    trains = [r for r in results if r["step"] == "train" and "train_s" in r]
    per_row = max((r["peak_rss_bytes"] / r["rows"] for r in trains if r["units"] >= 1000), default=None)
    doc = {
        "what": "maintenance cost vs fleet size (units): wall seconds and peak RSS of the process tree per step; "
        "quality (RMSE, interval coverage) at the last cycle of 500 held-out running units; the fleet API's "
        "per-request cost with the fleet loaded",
        "model": "boost (the default configuration unless trees says otherwise: depth 4, conformal intervals)",
        "trees": next((r["trees"] for r in results if "trees" in r), None),
        "sizes": sizes,
        "results": results,
        "summary": scaling.exponents(results, series="step", x="units", metrics=["seconds", "peak_rss_bytes"]),
        "quality": {str(r["units"]): {k: r.get(k) for k in ("rows", "rmse", "coverage")} for r in trains},
        "api": next((r for r in results if r["step"] == "api" and "unit_rul" in r), None),
        "memory_wall": {
            "guard_bytes_per_row": TRAIN_BYTES_PER_ROW,
            "measured_peak_bytes_per_row": round(per_row) if per_row else None,
            "units_on_24_gib": int(24 * 2**30 / TRAIN_BYTES_PER_ROW / 176),
            "note": "training needs the whole fleet's health features in memory; past the wall, train on a "
            "sample of units (the model sees every cycle of each unit it trains on)",
        },
        "conditions": scaling.conditions(t_start, load_start),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, doc)
    scaling.plot_curves(
        results,
        output.with_suffix(".png"),
        series="step",
        x="units",
        x_label="units in the fleet",
        panels=[("seconds", "wall seconds", 1.0), ("peak_rss_bytes", "peak RSS GiB (process tree)", 2**30)],
        title="Maintenance scaling on simulated fleets (boosted trees)",
    )
    return doc


def parse_units(text: str) -> list[int]:
    """``"100,1e3"`` -> ``[100, 1000]``; ValueError naming ``--sizes`` (at least 10 units each)."""
    return scaling.parse_sizes(text, minimum=10, what="units")


def _sizes(text: str) -> list[int]:
    try:
        return parse_units(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.maintenance.scale``: exit 0 done, 2 bad arguments (or a child that refused its data)."""
    p = argparse.ArgumentParser(prog="python -m apps.maintenance.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes, default=_sizes(DEFAULT_SIZES), help=f"units, e.g. {DEFAULT_SIZES}")
    p.add_argument("--api-units", type=int, default=10_000, help="fleet size the API is measured at (one of sizes)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--data-dir", type=Path, default=None, help="where the simulated fleets are cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per step and size")
    p.add_argument("--trees", type=int, default=None, help="boosted trees per fit (default: the app's 800)")
    p.add_argument("--available-bytes", type=int, default=None, help=argparse.SUPPRESS)  # the guard's memory
    p.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    p.add_argument("--units", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.child:
        r = _child(a)
        print(json.dumps(r, default=float))
        return scaling.REFUSED_EXIT if "refused" in r else 0
    from common.workspace import Workspace

    data_dir = a.data_dir or Workspace.from_env().data_dir / "maintenance-scale"
    doc = run_scale(
        a.sizes,
        output=a.output,
        data_dir=data_dir,
        api_units=a.api_units,
        seed=a.seed,
        timeout_s=a.timeout,
        available=a.available_bytes,
        trees=a.trees,
    )
    print(json.dumps({"output": str(a.output), "summary": doc["summary"], "quality": doc["quality"]}))
    return 0


def _child(a: argparse.Namespace) -> dict[str, Any]:
    if a.child == "generate":
        return step_generate(a.units, a.data_dir, a.seed)
    if a.child == "train":
        return step_train(a.units, a.data_dir, a.seed, available=a.available_bytes, trees=a.trees)
    if a.child == "score":
        return step_score(a.units, a.data_dir)
    return step_api(a.units, a.data_dir, a.seed)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

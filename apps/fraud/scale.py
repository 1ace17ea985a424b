"""How the fraud app's cost grows: feature computation, training and batch scoring, in memory and on Dask.

``python -m apps.fraud bench --scale [--sizes 1.8e5,1.8e6,1.8e7]`` (or ``python -m apps.fraud.scale``) writes
``bench/results/fraud-scale.json`` and ``fraud-scale.png`` (log-log curves with fitted exponents).

For each size (transactions; the population is scaled, :func:`apps.fraud.synth.for_rows`) the streaming generator
writes a parquet file once (cached in ``--data-dir``); then each step runs in its own child process
(:func:`common.scaling.run_measured`: wall time, peak RSS of the process tree, Dask workers included):

- ``features/pandas``: load + validate + :func:`apps.fraud.train.prepare` in memory, refused by the memory guard
  (:func:`apps.fraud.outofcore.check_fits`) when it will not fit: the refusal names the memory it needs;
- ``features/dask``: :func:`apps.fraud.outofcore.features_dask` on a ``LocalCluster`` of 2 worker processes;
- ``train/pandas``: load + prepare + :func:`apps.fraud.train.train_model` (guarded like features/pandas);
- ``train/dask``: :func:`apps.fraud.outofcore.train_from_features` (xgboost.dask) on the feature parts;
- ``score/pandas``: ``batch`` (:func:`common.batch.score_file` with the app's ``BatchScorer``): one process,
  streaming chunks; ``score/dask``: :func:`apps.fraud.outofcore.score_dask`. Both score with the same model.

``step_s`` is the step's own time (the cluster start, ``cluster_s``, is apart); quality is AUC and average precision
on the test period, the ``delay_days`` after the training window (labels neither model saw). The parent checks
that the two engines agree: feature column sums (relative) and the scores of every transaction (max abs diff).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common import scaling

log = logging.getLogger(__name__)

STEPS = ("features", "train", "score")
ENGINES = ("pandas", "dask")
DEFAULT_SIZES = "1.8e5,1.8e6,1.8e7"
DEFAULT_OUTPUT = Path("bench/results/fraud-scale.json")
MIN_ROWS = 2_000


# ------------------------------------------------------------------ one step on one data set (the child)


@contextlib.contextmanager
def _cluster(n_workers: int):
    """A LocalCluster of ``n_workers`` single-threaded processes and its client; yields (client, start seconds)."""
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cl,
        Client(cl) as client,
    ):
        yield client, time.perf_counter() - t0


def _quality(model: Any, test: pd.DataFrame) -> dict[str, float]:
    from apps.fraud.data import LABEL
    from common.metrics.classification import average_precision, roc_auc

    y = test[LABEL].to_numpy()
    s = model.predict_proba(test)
    return {"test_rows": len(test), "test_frauds": int(y.sum()), "auc": roc_auc(y, s), "ap": average_precision(y, s)}


def _params(n_estimators: int | None) -> dict[str, Any]:
    from apps.fraud.config import XGBConfig

    p = XGBConfig().params()
    return p | {"n_estimators": n_estimators} if n_estimators else p


def run_step(
    step: str, engine: str, data: Path, work: Path, *, n_workers: int, n_estimators: int | None, available: int | None
) -> dict[str, Any]:
    """One measured step (see the module docstring); ``work``: the size's directory shared by its steps."""
    from apps.fraud.config import FraudConfig
    from apps.fraud.data import DAY, load
    from apps.fraud.model import FraudModel
    from apps.fraud.outofcore import check_fits, rows_in
    from common.scaling import MemoryRefused

    cfg = FraudConfig()
    out: dict[str, Any] = {"step": step, "engine": engine, "series": f"{step}/{engine}", "rows": rows_in(data)}
    if engine == "pandas" and step != "score":  # score/pandas streams chunks: bounded memory, no guard
        try:
            out["memory_estimate_bytes"] = check_fits(out["rows"], what=str(data), available=available)
        except MemoryRefused as exc:
            out["refused"] = str(exc)
            return out
    t0 = time.perf_counter()
    if step == "features" and engine == "pandas":
        from apps.fraud.train import prepare

        prepared = prepare(load(data))
        out["step_s"] = time.perf_counter() - t0
        feats = prepared.select_dtypes("number").drop(columns=["label", "scenario"], errors="ignore")
        out["column_sums"] = {c: float(v) for c, v in feats.sum().items()}
    elif step == "features":
        from apps.fraud.outofcore import features_dask

        with _cluster(n_workers) as (client, cluster_s):
            out["cluster_s"] = cluster_s
            t0 = time.perf_counter()
            res = features_dask(data, work / "features", cfg.features, client=client)
            out["step_s"] = time.perf_counter() - t0
        out["partitions"] = res["partitions"]
    elif step == "train" and engine == "pandas":
        from apps.fraud.train import prepare, train_model

        prepared = prepare(load(data))
        out["features_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = train_model(prepared, cfg, params=_params(n_estimators), train_days=cfg.train_days)
        out["step_s"] = time.perf_counter() - t0
        out |= _quality(model, prepared[prepared[DAY] > prepared[DAY].max() - cfg.features.delay_days])
        out["train_rows"] = model.info["train_rows"]
        model.save(work / "model-pandas")
    elif step == "train":
        from apps.fraud.outofcore import load_features, train_from_features

        if not (work / "features").exists():
            raise FileNotFoundError(f"{work / 'features'}: run features/dask first")
        with _cluster(n_workers) as (client, cluster_s):
            out["cluster_s"] = cluster_s
            t0 = time.perf_counter()
            model = train_from_features(work / "features", cfg, client=client, params=_params(n_estimators))
            out["step_s"] = time.perf_counter() - t0
        last = int(pd.read_parquet(work / "features", columns=[DAY])[DAY].max())
        out |= _quality(model, load_features(work / "features", since_day=last - cfg.features.delay_days))
        out["train_rows"] = model.info["train_rows"]
        model.save(work / "model-dask")
    else:  # score: the same model for both engines (the in-memory one when it ran)
        from apps.fraud.outofcore import score_dask

        model_dir = work / "model-pandas" if (work / "model-pandas").exists() else work / "model-dask"
        model = FraudModel.load(model_dir)
        out["model"] = model_dir.name
        dest = work / f"scores-{engine}.parquet"
        if engine == "pandas":
            from apps.fraud.service import BatchScorer
            from common.batch import score_file

            scorer = BatchScorer(model, cfg.features, None)
            score_file(data, dest, scorer, chunksize=100_000, progress=False)
            out["step_s"] = time.perf_counter() - t0
        else:
            with _cluster(n_workers) as (client, cluster_s):
                out["cluster_s"] = cluster_s
                t0 = time.perf_counter()
                score_dask(data, dest, model, client=client, cfg=cfg.features)
                out["step_s"] = time.perf_counter() - t0
    out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
    return out


# ------------------------------------------------------------------ the parent: data, children, checks, plot


def _feature_sums_dask(features_dir: Path, columns: list[str]) -> dict[str, float]:
    """Column sums of the feature parts, one part at a time."""
    import pyarrow.parquet as pq

    total = dict.fromkeys(columns, 0.0)
    for part in sorted(features_dir.glob("part-*.parquet")):
        t = pq.read_table(part, columns=columns).to_pandas()
        for c in columns:
            total[c] += float(t[c].sum())
    return total


def agreement(results: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    """Whether the dask path gave the in-memory path's features (column sums) and scores (every row)."""
    out: dict[str, Any] = {}
    feats = next((r for r in results if r.get("series") == "features/pandas" and "column_sums" in r), None)
    if feats is not None and (work / "features").exists():
        sums = _feature_sums_dask(work / "features", list(feats["column_sums"]))
        rel = {c: abs(sums[c] - v) / max(abs(v), 1e-12) for c, v in feats.pop("column_sums").items() if c in sums}
        out["features_max_rel_diff_of_column_sums"] = max(rel.values()) if rel else None
        out["features_identical"] = bool(rel) and max(rel.values()) < 1e-9
    a, b = work / "scores-pandas.parquet", work / "scores-dask.parquet"
    if a.exists() and b.exists():
        sa, sb = pd.read_parquet(a, columns=["score"])["score"], pd.read_parquet(b, columns=["score"])["score"]
        same_rows = len(sa) == len(sb)
        diff = float(np.abs(sa.to_numpy() - sb.to_numpy()).max()) if same_rows and len(sa) else None
        out |= {"scores_same_rows": same_rows, "scores_max_abs_diff": diff}
        out["scores_identical"] = same_rows and diff is not None and diff < 1e-6
    for r in results:
        r.pop("column_sums", None)
    return out


def run_scale(
    sizes: list[int],
    *,
    steps: list[str],
    engines: list[str],
    output: Path = DEFAULT_OUTPUT,
    data_dir: Path,
    seed: int = 0,
    n_workers: int = 2,
    n_estimators: int | None = None,
    timeout_s: float = 3600.0,
    available_gib: float | None = None,
    in_memory_max: int | None = None,
    append: bool = False,
) -> dict[str, Any]:
    """Every step and engine at every size; rewrites ``output`` and its PNG after each size (a run stopped at a
    large size keeps the smaller ones); returns the document. ``in_memory_max``: sizes above it skip the in-memory
    features and training (on a shared machine: leave the memory to others; the guard's limit is recorded)."""
    from apps.fraud.synth import dataset_for

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    earlier: list[dict[str, Any]] = []
    if append and output.exists():  # add sizes (or steps) to an earlier run: its results stay, same-size steps go
        old = json.loads(output.read_text())
        again = {(size, f"{st}/{en}") for size in sizes for st in steps for en in engines}
        results = [r for r in old["results"] if (r["size"], r["series"]) not in again]
        checks = {k: v for k, v in old["dask_vs_pandas"].items() if int(k) not in sizes}
        earlier = [*old.get("earlier_runs", []), {"sizes": old["sizes"], "conditions": old["conditions"]}]
    all_sizes = sorted({*sizes, *(r["size"] for r in results)})
    for size in sizes:
        t_gen = time.perf_counter()
        data = dataset_for(size, data_dir, seed=seed)
        gen_s = time.perf_counter() - t_gen
        work = data.parent / "work"
        work.mkdir(exist_ok=True)
        for old in ("model-pandas", "model-dask"):  # a model from an earlier run must not score this one
            shutil.rmtree(work / old, ignore_errors=True)
        for step in steps:
            for engine in engines:
                if engine == "pandas" and step != "score" and in_memory_max and size > in_memory_max:
                    why = f"skipped: above --in-memory-max {in_memory_max} (the guard's limit: memory_guard)"
                    results.append(
                        {
                            "series": f"{step}/{engine}",
                            "step": step,
                            "engine": engine,
                            "size": size,
                            "rows": size,
                            "skipped": why,
                        }
                    )
                    continue
                cmd = scaling.python_child("apps.fraud.scale", "--child", f"{step}/{engine}", "--data", str(data))
                cmd += ["--work", str(work), "--workers", str(n_workers)]
                cmd += ["--n-estimators", str(n_estimators)] if n_estimators else []
                cmd += ["--available-gib", str(available_gib)] if available_gib else []
                log.info("size %d: %s/%s ...", size, step, engine)
                r = scaling.run_measured(cmd, timeout_s=timeout_s)
                r = {"series": f"{step}/{engine}", "step": step, "engine": engine, **r, "size": size}
                r.setdefault("rows", size)
                results.append(r)
                shown = ("step_s", "wall_s", "peak_rss_bytes", "auc", "ap", "refused", "failed", "timed_out")
                log.info("size %d: %s/%s %s", size, step, engine, {k: r[k] for k in shown if k in r})
        checks[str(size)] = {"generate_s": round(gen_s, 1)} | agreement([r for r in results if r["size"] == size], work)
        log.info("size %d: dask vs in-memory %s", size, checks[str(size)])
        doc = _document(results, checks, all_sizes, steps, engines, n_workers, n_estimators, t0, load_start)
        if earlier:
            doc["earlier_runs"] = earlier
        _write(doc, output)
    return doc


def _document(
    results: list[dict[str, Any]],
    checks: dict[str, Any],
    sizes: list[int],
    steps: list[str],
    engines: list[str],
    n_workers: int,
    n_estimators: int | None,
    t0: float,
    load_start: tuple[float, float, float],
) -> dict[str, Any]:
    return {
        "what": "fraud app cost vs transactions: per step (features, train, score) and engine (pandas in memory, "
        "dask out of core on a LocalCluster), step seconds and peak RSS of the process tree; AUC/AP on the test "
        "period after the training window; simulated world with the population scaled (apps/fraud/synth.py)",
        "sizes": sizes,
        "steps": steps,
        "engines": engines,
        "workers": n_workers,
        "n_estimators": n_estimators or _params(None)["n_estimators"],
        "results": results,
        "exponents": scaling.exponents(results, series="series", x="rows", metrics=["step_s", "peak_rss_bytes"]),
        "dask_vs_pandas": checks,
        "memory_guard": memory_guard_summary(results),
        "conditions": scaling.conditions(t0, load_start),
    }


def _write(doc: dict[str, Any], output: Path) -> None:
    from common.reports.files import write_json

    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, doc)
    results = [r for r in doc["results"] if "skipped" not in r]
    scaling.plot_curves(
        results,
        output.with_suffix(".png"),
        series="series",
        x="rows",
        x_label="transactions",
        panels=[("step_s", "step seconds", 1.0), ("peak_rss_bytes", "peak RSS GiB (process tree)", 2**30)],
        title="Fraud scaling: in memory (pandas) vs out of core (dask, 2 workers); shared machine: upper bounds",
    )


def memory_guard_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The guard's estimate beside the measured peak of the in-memory steps, and where it stops on 24 GiB."""
    from apps.fraud.outofcore import memory_needed
    from common.scaling import GIB

    rows = [
        {
            "series": r["series"],
            "rows": r["rows"],
            "estimate_gib": round(memory_needed(r["rows"]) / GIB, 2),
            "measured_peak_gib": round(r["peak_rss_bytes"] / GIB, 2),
            "estimate_covers_peak": memory_needed(r["rows"]) >= r["peak_rss_bytes"],
        }
        for r in results
        if "memory_estimate_bytes" in r and "peak_rss_bytes" in r and "step_s" in r
    ]
    return {
        "estimate_gib_by_size": {str(r["size"]): round(memory_needed(r["rows"]) / GIB, 1) for r in results},
        "checks": rows,
        "refused": [{"series": r["series"], "rows": r["rows"], "why": r["refused"]} for r in results if "refused" in r],
        "in_memory_limit_rows_24gib": int((24 * GIB - memory_needed(0)) / (memory_needed(1) - memory_needed(0))),
    }


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    got = [s.strip() for s in text.split(",") if s.strip()]
    bad = sorted(set(got) - set(allowed))
    if bad or not got:
        raise argparse.ArgumentTypeError(f"{flag}: unknown {bad or 'none'}; choose from {','.join(allowed)}")
    return [s for s in allowed if s in got]


def _sizes(text: str) -> list[int]:
    try:
        return scaling.parse_sizes(text, minimum=MIN_ROWS, what="transactions")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m apps.fraud bench --scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes, default=None, help=f"transactions, e.g. {DEFAULT_SIZES} (the default)")
    p.add_argument("--steps", type=lambda s: _choices(s, STEPS, "--steps"), default=list(STEPS))
    p.add_argument("--engines", type=lambda s: _choices(s, ENGINES, "--engines"), default=list(ENGINES))
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--data-dir", type=Path, default=None, help="where the generated files are cached")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    p.add_argument("--n-estimators", type=int, default=None, help="xgboost trees (default: the config's)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per step and size")
    p.add_argument("--available-gib", type=float, default=None, help="memory the guard assumes (default: measured)")
    p.add_argument("--append", action="store_true", help="add to --output's results instead of replacing them")
    p.add_argument("--in-memory-max", type=float, default=None, help="skip in-memory features/train above N rows")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0 done, 2 bad arguments (one ``error:`` line from argparse) or a refused child step."""
    p = parser()
    a = p.parse_args(argv)
    for name in ("workers", "n_estimators", "timeout", "available_gib", "in_memory_max"):
        value = getattr(a, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')}: must be > 0, got {value}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    available = int(a.available_gib * 2**30) if a.available_gib else None
    if a.child:
        step, _, engine = a.child.partition("/")
        if step not in STEPS or engine not in ENGINES or a.data is None or a.work is None:
            p.error(f"--child: STEP/ENGINE with --data and --work, got {a.child!r}")
        r = run_step(
            step, engine, a.data, a.work, n_workers=a.workers, n_estimators=a.n_estimators, available=available
        )
        print(json.dumps(r))
        return scaling.REFUSED_EXIT if "refused" in r else 0
    from common.workspace import Workspace

    data_dir = a.data_dir or Workspace.from_env().data_dir / "fraud-scale"
    doc = run_scale(
        a.sizes or _sizes(DEFAULT_SIZES),
        steps=a.steps,
        engines=a.engines,
        output=a.output,
        data_dir=data_dir,
        seed=a.seed,
        n_workers=a.workers,
        n_estimators=a.n_estimators,
        timeout_s=a.timeout,
        available_gib=a.available_gib,
        in_memory_max=int(a.in_memory_max) if a.in_memory_max else None,
        append=a.append,
    )
    print(json.dumps({"output": str(a.output), "exponents": doc["exponents"], "dask_vs_pandas": doc["dask_vs_pandas"]}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""How the recommender's cost grows: time, peak memory and quality per engine at growing sizes.

``python -m apps.recommender.scale --sizes 1e5,1e6,1e7 [--engines implicit,spark,ease,bpr,itemknn,popular]``
writes ``bench/results/recommender-scale.json`` and ``recommender-scale.png`` (log-log curves).

For each size the scalable generator (:mod:`apps.recommender.synth`: users = size / 50, items = size / 100 between
1,000 and 200,000, 20 clusters) writes a data set once (cached in ``--data-dir``); then each engine runs in its own
subprocess (a fresh interpreter: its peak memory is its own) that loads the file, makes the MS-stratified 75/25
split, fits on the training part and measures nDCG@10 on the test interactions of ``--eval-users`` sampled users
(the same users for every engine). The parent samples the resident memory of the child's whole process tree
(Spark's JVM included) every 0.2 s. Engines: ``implicit`` (ALS), ``spark`` (Spark MLlib ALS in local mode; the
JVM start is timed apart from the fit), ``spark-native`` (the parquet read, validated, split and fitted in Spark,
:mod:`apps.recommender.spark_native`: the driver's own peak RSS stays flat while the JVM's grows; its evaluated
users come from its own seeded split), ``ease``, ``bpr``, ``itemknn``, ``popular``.

EASE refuses catalogues above its ``max_items`` guard with its message (recorded as ``refused``, never an OOM
kill); where it runs, its memory estimate (``EASE.memory_bytes``: the figure its refusal names) is recorded beside the
measured growth of resident memory during the fit, so the guard can be checked against a measured peak.

Per engine, the exponent b of ``cost ∝ size^b`` is fitted on log-log axes (least squares) for fit time and
peak memory. The machine's load average before and after is recorded: numbers from a loaded machine are upper
bounds.
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

from common.scaling import (
    REFUSED_EXIT,
    conditions,
    exponents,
    parse_sizes,
    peak_rss_self_bytes,
    plot_curves,
    python_child,
    rss_bytes,
    run_measured,
)

log = logging.getLogger(__name__)

ENGINES = ("implicit", "spark", "spark-native", "ease", "bpr", "itemknn", "popular")
# engine -> (model, extra params)
ENGINE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "implicit": ("als", {}),
    "spark": ("als", {"engine": "spark"}),
    "spark-native": ("als", {"engine": "spark"}),  # read, split, fitted in Spark: apps/recommender/spark_native.py
    "ease": ("ease", {}),
    "bpr": ("bpr", {}),
    "itemknn": ("itemknn", {}),
    "popular": ("popular", {}),
}
DEFAULT_OUTPUT = Path("bench/results/recommender-scale.json")


# ------------------------------------------------------------------ one engine on one data set (the child)


def run_one(engine: str, data: Path, *, eval_users: int, threads: int, seed: int, params: dict | None) -> dict:
    """Load ``data``, split, fit ``engine`` on the training part, evaluate: the child's measurements."""
    from apps.recommender.config import RecommenderConfig
    from apps.recommender.data import USER, load_dataset
    from apps.recommender.evaluate import evaluate_bundle, split
    from apps.recommender.model import EASE
    from apps.recommender.train import fit_bundle
    from common.data import DataError

    model, extra = ENGINE_MODELS[engine]
    if engine == "spark-native":  # the driver never loads the interactions: its own peak RSS is the point
        from apps.recommender.spark_native import scale_run

        return scale_run(str(data), eval_users=eval_users, threads=threads, seed=seed, params=params)
    out: dict[str, Any] = {"engine": engine, "model": model}
    t0 = time.perf_counter()
    ds = load_dataset(data)
    out["load_s"] = time.perf_counter() - t0
    inter = ds.interactions
    out.update(rows=len(inter), users=ds.n_users, items=ds.n_items)
    t0 = time.perf_counter()
    train, test = split(inter, "ms-stratified", seed=seed, source=str(data))
    out["split_s"] = time.perf_counter() - t0
    users = test[USER].unique()
    rng = np.random.default_rng(seed)
    sample = rng.choice(users, min(eval_users, len(users)), replace=False)
    test = test[test[USER].isin(set(sample))]
    del inter, ds
    cfg = RecommenderConfig(seed=seed, threads=threads, engine="spark" if engine == "spark" else "implicit")
    if engine == "spark":
        from apps.recommender.model import spark_session

        t0 = time.perf_counter()
        spark_session(threads=threads)
        out["jvm_start_s"] = time.perf_counter() - t0
    out["rss_before_fit_bytes"] = rss_bytes()
    if model == "ease":
        n = train["item"].nunique()
        out["ease_estimate_bytes"] = EASE.memory_bytes(n)
    t0 = time.perf_counter()
    try:
        bundle = fit_bundle(train, model, {**extra, **(params or {})}, cfg=cfg)
    except DataError as exc:
        out["refused"] = str(exc)
        out["peak_rss_self_bytes"] = peak_rss_self_bytes()
        return out
    out["train_s"] = time.perf_counter() - t0
    out["fit_s"] = bundle.model.fit_seconds
    out["peak_rss_self_bytes"] = peak_rss_self_bytes()
    m = evaluate_bundle(bundle, test, (10,))
    out.update({k: m[k] for k in ("ndcg@10", "precision@10", "recall@10", "coverage")})
    out["eval_users"] = m["users"]
    out["predict_s"] = m["predict_s"]
    return out


# ------------------------------------------------------------------ the parent: data, children, fits, plot


def dataset_for(size: int, data_dir: Path, seed: int) -> Path:
    """The synthetic data set of ``size`` interactions (written once, then reused while its spec matches)."""
    from dataclasses import asdict

    from apps.recommender.synth import SynthSpec, default_items, write_synthetic

    spec = SynthSpec(interactions=size, users=max(1, size // 50), items=default_items(size), seed=seed)
    out = data_dir / f"synth-{size}"
    meta = out / "synth.json"
    if meta.exists() and json.loads(meta.read_text()).get("spec") == asdict(spec):
        return out / "interactions.parquet"
    log.info("generating %d interactions into %s", size, out)
    write_synthetic(spec, out)
    return out / "interactions.parquet"


def run_child(
    engine: str, data: Path, *, eval_users: int, threads: int, seed: int, timeout_s: float, params: dict | None = None
) -> dict:
    """Run :func:`run_one` in a fresh interpreter, measured by :func:`common.scaling.run_measured`."""
    args = ["--child", engine, "--data", str(data), "--eval-users", str(eval_users), "--threads", str(threads)]
    args += ["--seed", str(seed)] + (["--params", json.dumps(params)] if params else [])
    return {"engine": engine, **run_measured(python_child("apps.recommender.scale", *args), timeout_s=timeout_s)}


def summarize(results: list[dict]) -> dict[str, dict]:
    """Per engine: the fitted exponents of fit time and peak memory over the sizes where it ran."""
    ok = [r for r in results if "fit_s" in r or "refused" in r or "timed_out" in r or "failed" in r]
    return exponents(ok, series="engine", x="size", metrics=("train_s", "peak_rss_bytes"))


def ease_guard_check(results: list[dict]) -> list[dict]:
    """EASE's estimate (what its guard refuses on) beside the measured growth of resident memory during the fit
    (peak at the end of the fit minus the resident memory before it)."""
    rows = []
    for r in results:
        if r["engine"] != "ease" or "ease_estimate_bytes" not in r:
            continue
        # the child's own peak right after the fit (EASE starts no process), before evaluation allocates
        grown = r.get("peak_rss_self_bytes", 0) - r.get("rss_before_fit_bytes", 0)
        rows.append(
            {
                "size": r["size"],
                "items": r.get("items"),
                "estimate_gib": round(r["ease_estimate_bytes"] / 2**30, 3),
                "measured_fit_growth_gib": round(grown / 2**30, 3) if "fit_s" in r else None,
                "measured_peak_gib": round(r.get("peak_rss_bytes", 0) / 2**30, 3),
                "estimate_over_growth": round(r["ease_estimate_bytes"] / grown, 2) if "fit_s" in r and grown else None,
                "estimate_covers_growth": grown <= r["ease_estimate_bytes"] if "fit_s" in r else None,
                "refused": r.get("refused"),
            }
        )
    return rows


def plot(results: list[dict], path: Path) -> Path:
    """Fit time and peak memory against interactions, log-log, one line per engine (refusals marked)."""
    panels = [
        ("train_s", "fit seconds (incl. matrix build)", 1.0),
        ("peak_rss_bytes", "peak RSS GiB (process tree)", 2**30),
    ]
    title = "Recommender scaling on synthetic clustered data"
    return plot_curves(results, path, series="engine", x="size", x_label="interactions", panels=panels, title=title)


def run_scale(
    sizes: list[int],
    engines: list[str],
    *,
    output: Path = DEFAULT_OUTPUT,
    data_dir: Path,
    eval_users: int = 5000,
    threads: int = 2,
    seed: int = 42,
    timeout_s: float = 3600.0,
    ease_max_items: int | None = None,
) -> dict:
    """Every engine at every size (see the module docstring); writes ``output`` and its PNG; returns the doc."""
    from common.reports.files import write_json

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    results = []
    for size in sizes:
        data = dataset_for(size, data_dir, seed)
        for engine in engines:
            params = {"max_items": ease_max_items} if engine == "ease" and ease_max_items else None
            log.info("size %d: %s ...", size, engine)
            r = run_child(
                engine, data, eval_users=eval_users, threads=threads, seed=seed, timeout_s=timeout_s, params=params
            )
            r["size"] = size
            results.append(r)
            log.info("size %d: %s", size, {k: r.get(k) for k in ("train_s", "ndcg@10", "peak_rss_bytes", "refused")})
    doc = {
        "what": "recommender cost vs data size: fit time, peak RSS of the process tree, nDCG@10 (MS-stratified "
        "75/25 split, test users sampled) per engine on synthetic clustered implicit feedback",
        "sizes": sizes,
        "engines": engines,
        "threads": threads,
        "eval_users": eval_users,
        "results": results,
        "summary": summarize(results),
        "ease_guard": ease_guard_check(results),
        "conditions": conditions(t0, load_start),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, doc)
    plot(results, output.with_suffix(".png"))
    return doc


def _sizes(text: str) -> list[int]:
    try:
        return parse_sizes(text, minimum=1000, what="interactions")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _engines(text: str) -> list[str]:
    engines = [e.strip() for e in text.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        raise argparse.ArgumentTypeError(f"--engines: unknown {unknown}; choose from {', '.join(ENGINES)}")
    return engines


def main(argv: list[str] | None = None) -> int:
    """``python -m apps.recommender.scale``: exit 0 done, 2 bad arguments (argparse) or a refused child run."""
    p = argparse.ArgumentParser(prog="python -m apps.recommender.scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes, default=_sizes("1e5,1e6,1e7"), help="interactions, e.g. 1e6,1e7,5e7")
    p.add_argument("--engines", type=_engines, default=list(ENGINES), help=",".join(ENGINES))
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--data-dir", type=Path, default=None, help="where the synthetic sets are cached")
    p.add_argument("--eval-users", type=int, default=5000, help="test users sampled for nDCG@10")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per engine and size")
    p.add_argument("--ease-max-items", type=int, default=None, help="EASE's guard (default: params.ease.max_items)")
    p.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--params", type=json.loads, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.child:
        r = run_one(a.child, a.data, eval_users=a.eval_users, threads=a.threads, seed=a.seed, params=a.params)
        print(json.dumps(r))
        return REFUSED_EXIT if "refused" in r else 0
    from common.workspace import Workspace

    data_dir = a.data_dir or Workspace.from_env().data_dir / "recommender-scale"
    doc = run_scale(
        a.sizes,
        a.engines,
        output=a.output,
        data_dir=data_dir,
        eval_users=a.eval_users,
        threads=a.threads,
        seed=a.seed,
        timeout_s=a.timeout,
        ease_max_items=a.ease_max_items,
    )
    print(json.dumps({"output": str(a.output), "summary": doc["summary"], "ease_guard": doc["ease_guard"]}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

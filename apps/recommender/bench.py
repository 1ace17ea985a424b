"""Benchmark: every model and baseline on MovieLens 100K under the Microsoft Recommenders protocol.

``python -m apps.recommender bench`` -> ``bench/results/recommender.json`` (the reference result, ML-100K); any
other dataset -> ``bench/results/recommender-<dataset name>.json``, so a run on your own file never overwrites the
reference. Needs ``ml-100k`` in ``MLREF_DATA_DIR`` (or network to download it). One run, ``threads`` cores (2 by
default); tuning is bounded by ``tune_budget_s`` seconds per model. Published anchors are the Microsoft Recommenders
benchmark table for MovieLens 100K (k=10), copied here for the side-by-side.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from apps.recommender.config import APP, DEFAULT_PARAMS
from apps.recommender.evaluate import leave_last_out, stratified_split
from apps.recommender.train import compare_models, tune
from common import cli
from common.config import machine_info
from common.reports import write_json
from common.workspace import Workspace

log = logging.getLogger(__name__)

# Microsoft Recommenders, benchmarks/movielens.ipynb results (MovieLens 100K, stratified 75/25, k=10).
# Their "MAP" is the metric named map@10 here (same definition).
ANCHORS = {
    "MS BiVAE": {"map@10": 0.146, "ndcg@10": 0.475},
    "MS BPR (cornac)": {"map@10": 0.132, "ndcg@10": 0.442},
    "MS LightGCN": {"map@10": 0.089, "ndcg@10": 0.420},
    "MS SAR": {"map@10": 0.111, "ndcg@10": 0.382},
}
METRICS = [
    "precision@10",
    "recall@10",
    "map@10",
    "ndcg@10",
    "hit_rate@10",
    "coverage",
    "gini",
    "mean_popularity_percentile",
]
BENCH_MODELS = ("als", "ease", "bpr", "itemknn", "popular", "random")
REFERENCE_DATASET = "ml-100k"
REPEAT_EASE_MAX_ITEMS = 8000  # above this, the split-seed and leave-last-out repeats skip EASE (minutes per fit)


def run_bench(
    dataset: str = REFERENCE_DATASET,
    *,
    tune_trials: int = 0,
    tune_models: tuple[str, ...] = ("als", "ease", "itemknn"),
    tune_budget_s: float | None = None,
    output: Path | None = None,
    write: bool = True,
    threads: int = 2,
    seed: int = 42,
    robustness_seeds: tuple[int, ...] = (1, 2, 3, 4, 5),
    ws: Workspace | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns (and, with ``write``, writes) the JSON document.

    ``output`` defaults to :func:`common.cli.bench_output`: ``bench/results/recommender.json`` for ML-100K (the
    reference result), ``bench/results/recommender-<dataset>.json`` for any other dataset, never overwriting the
    reference.

    Besides the MS split (seed 42), ``robustness_seeds`` re-split the data to show how much nDCG@10 moves with
    the split alone (default-parameter EASE, ALS and most-popular; EASE only up to
    :data:`REPEAT_EASE_MAX_ITEMS` items). Tuning: at most ``tune_trials`` trials and ``tune_budget_s`` seconds
    (default ``RecommenderConfig.tune_budget``) per model in ``tune_models``. The config and the data come from
    the app's pipeline (:data:`apps.recommender.pipeline.APP_IMPL`), in the workspace ``ws`` (default: the
    environment's).
    """
    from apps.recommender.pipeline import APP_IMPL

    ws = ws or Workspace.from_env()
    cfg = APP_IMPL.config(values={"seed": seed, "threads": threads})
    if tune_budget_s is not None:
        cfg.tune_budget = float(tune_budget_s)
    ds = APP_IMPL.load_data(ws, dataset, cfg)
    train, test = stratified_split(ds.interactions, 0.75, seed=42)  # the MS split, seed 42 as in their notebook
    models: dict[str, tuple[str, dict[str, Any]]] = {m: (m, dict(DEFAULT_PARAMS[m])) for m in BENCH_MODELS}
    tuned: dict[str, Any] = {}
    for m in tune_models if tune_trials else ():
        t0 = time.perf_counter()
        best, trials = tune(train, m, tune_trials, cfg=cfg)  # validation split inside train; test untouched
        models[f"{m}-tuned"] = (m, best)
        tuned[m] = {
            "trials": len(trials),
            "max_trials": tune_trials,
            "budget_s": cfg.tune_budget,
            "params": best,
            "tune_s": round(time.perf_counter() - t0, 2),
        }
    table, _, _ = compare_models(train, test, models, cfg, curve_ks=None, item_meta=ds.items)
    repeat = ("ease", "als", "popular") if ds.n_items <= REPEAT_EASE_MAX_ITEMS else ("als", "popular")
    spread: dict[str, Any] = {}
    if robustness_seeds:
        per_seed = []
        for s in robustness_seeds:
            tr_s, te_s = stratified_split(ds.interactions, 0.75, seed=s)
            t, _, _ = compare_models(tr_s, te_s, {m: models[m] for m in repeat}, cfg, curve_ks=None)
            per_seed.append(t["ndcg@10"])
        frame = pd.concat(per_seed, axis=1)
        spread = {
            "seeds": list(robustness_seeds),
            "metric": "ndcg@10",
            **{
                m: {"mean": round(float(frame.loc[m].mean()), 4), "std": round(float(frame.loc[m].std()), 4)}
                for m in frame.index
            },
        }
    # protocol (2), what production sees: predict each user's latest interaction from everything before it
    llo_train, llo_test = leave_last_out(ds.interactions)
    llo, _, _ = compare_models(llo_train, llo_test, {m: models[m] for m in repeat}, cfg, curve_ks=None)
    leave_last = {
        m: {k: round(float(llo.loc[m, k]), 4) for k in ("hit_rate@10", "ndcg@10", "mrr@10")} for m in llo.index
    }
    doc: dict[str, Any] = {
        "app": APP,
        "dataset": str(dataset),
        "protocol": "MS Recommenders: per-user random 75/25, k=10, seen items removed",
        "protocol_details": {
            "name": "ms-stratified",
            "split": "per-user random 75/25 (python_stratified_split, seed 42, reproduced exactly)",
            "k": 10,
            "seen_items_removed": True,
            "relevance": "every held-out interaction (all ratings)",
            "metrics": "Microsoft Recommenders definitions; 'map@10' is their MAP (normalised by all relevant "
            "items), as in their benchmark table",
            "train_interactions": len(train),
            "test_interactions": len(test),
        },
        "models": {
            label: {
                "model": models[label][0],
                "params": models[label][1],
                "metrics": {k: round(float(table.loc[label, k]), 4) for k in METRICS},
                "train_s": round(float(table.loc[label, "train_s"]), 3),
                "predict_s": round(float(table.loc[label, "predict_s"]), 3),
            }
            for label in table.index
        },
        "tuning": tuned,
        "split_seed_spread": spread,
        "leave_last_out": {
            "protocol": "each user's latest interaction (by timestamp) held out; k=10",
            "models": leave_last,
        },
        "published": ANCHORS,
        "published_source": "Microsoft Recommenders benchmarks/movielens.ipynb (ML-100K, k=10)",
        "machine": {**machine_info(), "threads": threads},
    }
    best = max(doc["models"], key=lambda m: doc["models"][m]["metrics"]["ndcg@10"])
    doc["summary"] = {
        "best_model": best,
        "best_ndcg@10": doc["models"][best]["metrics"]["ndcg@10"],
        "als_ndcg@10": doc["models"]["als"]["metrics"]["ndcg@10"],
        "popular_ndcg@10": doc["models"]["popular"]["metrics"]["ndcg@10"],
        "best_anchor_ndcg@10": max(a["ndcg@10"] for a in ANCHORS.values()),
    }
    if write:
        output = cli.bench_output(APP, str(dataset), REFERENCE_DATASET, output)
        write_json(output, doc)
        doc["output"] = str(output)
        log.info("wrote %s", output)
    return doc


def format_table(doc: dict[str, Any]) -> str:
    """A markdown table of a bench document (for the README)."""
    lines = [
        "| model | precision@10 | recall@10 | MAP | nDCG@10 | coverage | train s | predict s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in sorted(doc["models"].items(), key=lambda kv: -kv[1]["metrics"]["ndcg@10"]):
        x = m["metrics"]
        lines.append(
            f"| {name} | {x['precision@10']:.3f} | {x['recall@10']:.3f} | {x['map@10']:.3f} | "
            f"{x['ndcg@10']:.3f} | {x['coverage']:.3f} | {m['train_s']:.2f} | {m['predict_s']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run_bench()["summary"], indent=2))

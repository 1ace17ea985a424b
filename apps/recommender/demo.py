"""The whole lifecycle on the embedded synthetic data, offline: ``python -m apps.recommender demo``.

1. generate interactions; evaluate ALS against the baselines (MS-stratified and leave-last-out); write the report
2. train the champion on all data and register it (hash-verified directory, reference profile inside)
3. serve it in-process and call every route, good and bad requests
4. batch: top-k for every user to parquet
5. a month later: new users, new trending items -> monitor raises alerts
6. retrain on old + new interactions; challenger vs champion on the latest week; promote or keep
7. the service swaps to the new champion without a restart
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from apps.recommender.config import APP, RecommenderConfig
from apps.recommender.data import synthetic, synthetic_next_period
from apps.recommender.evaluate import leave_last_out, stratified_split, write_evaluation_report
from apps.recommender.lifecycle import batch_recommend, load_version, monitor, register_bundle, retrain
from apps.recommender.service import build_app
from apps.recommender.train import compare_models, train_dataset
from common import registry
from common.config import get_settings, seed_everything
from common.reports import markdown_table, new_report_dir

log = logging.getLogger(__name__)

TINY = {"n_users": 300, "n_items": 150, "n_clusters": 5, "mean_activity": 20.0}


def run_demo(*, tiny: bool = False, seed: int = 42) -> dict[str, Any]:
    """Run every stage; returns a summary (also what the end-to-end test checks)."""
    from fastapi.testclient import TestClient

    seed_everything(seed)
    t_start = time.perf_counter()
    sizes = TINY if tiny else {}
    cfg = RecommenderConfig(seed=seed)
    home = get_settings().home
    out: dict[str, Any] = {}

    # 1. data + evaluation against baselines -------------------------------------------------------------
    ds = synthetic(**sizes, seed=seed)
    log.info("data: %s", ds.summary())
    train, test = stratified_split(ds.interactions, 1 - cfg.test_ratio, seed)
    labels = ["als", "ease", "itemknn", "popular", "random"] + ([] if tiny else ["bpr"])
    models = {m: (m, None) for m in labels}
    table, bundles, curves = compare_models(train, test, models, cfg, item_meta=ds.items)
    llo_train, llo_test = leave_last_out(ds.interactions)
    llo, _, _ = compare_models(
        llo_train, llo_test, {m: (m, None) for m in ("als", "ease", "popular")}, cfg, curve_ks=None
    )
    report_dir = new_report_dir(APP, ds.name, "evaluation")
    cols = [
        "precision@10",
        "recall@10",
        "map@10",
        "ndcg@10",
        "coverage",
        "mean_popularity_percentile",
        "train_s",
        "predict_s",
    ]
    llo_md = markdown_table(llo[["hit_rate@10", "ndcg@10", "mrr@10"]])
    write_evaluation_report(
        report_dir,
        table[cols],
        curves,
        {m: bundles[m] for m in ("als", "ease", "popular")},
        {m: test for m in ("als", "ease", "popular")},
        title="Recommender (synthetic demo data)",
        sections={
            "Protocol": "MS-stratified 75/25 per user, k=10, seen removed.",
            "Leave-last-out (next interaction)": llo_md,
        },
        model_info={"model": "als", "params": cfg.model_params("als")},
        data=ds.summary(),
        dataset=ds.name,
        champion="als",
    )
    out["evaluation"] = table[["ndcg@10", "precision@10", "map@10", "coverage"]].round(4).to_dict(orient="index")
    out["leave_last_out"] = llo[["hit_rate@10", "ndcg@10"]].round(4).to_dict(orient="index")
    out["report"] = str(report_dir / "report.md")

    # 2. champion on all data -------------------------------------------------------------------------------
    champion = train_dataset(ds, cfg)
    mv1 = register_bundle(
        champion, ds.interactions, metrics=dict(table.loc["als", ["ndcg@10", "map@10"]]), alias=registry.CHAMPION
    )
    out["champion_version"] = mv1.version

    # 3. serve in-process -------------------------------------------------------------------------------------
    app = build_app(refresh_interval_s=None)
    with TestClient(app) as client:
        user = champion.users.ids[0]
        item = champion.items.ids[0]
        history = list(champion.items.ids[[1, 2, 3]])
        calls = {
            "known_user": client.get(f"/v1/users/{user}/recommendations", params={"k": 5}),
            "unknown_user": client.get("/v1/users/nobody/recommendations", params={"k": 5}),
            "history": client.post("/v1/recommendations", json={"items": [*history, "not-an-item"], "k": 5}),
            "empty_history": client.post("/v1/recommendations", json={"items": [], "k": 5}),
            "similar": client.get(f"/v1/items/{item}/similar", params={"k": 5}),
            "bad_k": client.get(f"/v1/users/{user}/recommendations", params={"k": 0}),
            "unknown_item": client.get("/v1/items/nope/similar"),
        }
        out["api"] = {
            name: {
                "status": r.status_code,
                "strategy": r.json().get("strategy") if r.is_success else None,
                "message": (r.json().get("message") or r.json().get("detail")) if not r.is_success else None,
            }
            for name, r in calls.items()
        }
        out["api_example"] = calls["known_user"].json()["items"][:3]
        metrics_text = client.get("/metrics").text
        out["metrics_has_latency"] = "mlref_request_latency_seconds_bucket" in metrics_text

        # 4. batch --------------------------------------------------------------------------------------------
        res = batch_recommend(champion, home / "work" / "recommendations.parquet", k=cfg.k, progress=False)
        out["batch"] = {"rows": res.rows, "users": len(champion.users), "output": str(res.output)}

        # 5. a month later: monitor -------------------------------------------------------------------------------
        new = synthetic_next_period(**sizes, seed=seed)
        monitor_dir = new_report_dir(APP, new.name, "monitor")
        mon = monitor(
            champion,
            registry.fetch_model_dir(mv1),
            new.interactions,
            out_dir=monitor_dir,
            model_version=str(mv1.version),
        )
        out["monitor"] = {"alerts": mon.alerts, **{k: round(v, 4) for k, v in mon.stats.items()}}

        # 6. retrain on old + new, compare on the latest week ----------------------------------------------------
        items = pd.concat([ds.items, new.items[~new.items.index.isin(ds.items.index)]])
        combined = pd.concat([ds.interactions, new.interactions], ignore_index=True)
        decision = retrain(combined, cfg, window_days=7, margin=0.0, item_meta=items)
        out["retrain"] = {
            k: decision.to_dict()[k]
            for k in (
                "champion_version",
                "challenger_version",
                "champion_score",
                "challenger_score",
                "promoted",
                "reason",
            )
        }

        # 7. hot swap ------------------------------------------------------------------------------------------
        reload = client.post("/admin/reload").json()
        served = client.get("/v1/model").json()["version"]
        out["served_version_after"] = served
        out["reload"] = reload
        if decision.promoted:
            _, mv = load_version(registry.CHAMPION)
            assert served == mv.version, f"service serves {served}, champion is {mv.version}"
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    return out

"""A tiny registry for the console's tests and screenshots: small models of four apps registered in one
MLREF_HOME (the recommender twice, so that promote and roll back have something to do), built in seconds."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def recommender(home: Path) -> None:
    from apps.recommender.config import RecommenderConfig
    from apps.recommender.data import synthetic
    from apps.recommender.lifecycle import register_bundle
    from apps.recommender.train import fit_bundle
    from common import registry

    small = synthetic(n_users=300, n_items=120, n_clusters=5, mean_activity=20.0, seed=7)
    cfg = RecommenderConfig(seed=7, threads=1)
    for i, kind in enumerate(("ease", "ease")):
        bundle = fit_bundle(small.interactions, kind, cfg=cfg, item_meta=small.items)
        register_bundle(
            bundle,
            small.interactions,
            metrics={"ndcg_at_10": 0.1 + i / 100},
            alias=registry.CHAMPION if i == 0 else registry.CHALLENGER,
            dataset="tiny synthetic",
        )


def fraud(home: Path) -> None:
    from apps.fraud.config import TINY_SIMULATION, FraudConfig
    from apps.fraud.data import simulate
    from apps.fraud.lifecycle import register_model
    from apps.fraud.train import prepare, train_model
    from common import registry

    cfg = FraudConfig()
    prepared = prepare(simulate(TINY_SIMULATION), cfg.features)
    model = train_model(prepared, cfg, params={**cfg.xgb.params(), "n_estimators": 40})
    register_model(model, prepared, metrics={"average_precision": 0.5}, alias=registry.CHAMPION, dataset="tiny")


def maintenance(home: Path) -> None:
    from apps.maintenance.config import Config
    from apps.maintenance.data import simulate
    from apps.maintenance.lifecycle import register
    from apps.maintenance.train import train
    from common import registry

    fleet = simulate(12, 4, seed=3)
    cfg = Config(window=10, boost_trees=60, n_seeds=1, max_train_s=60, window_units=4, seed=0)
    model = train(fleet.train, cfg)
    register(model, fleet.train, metrics={"test_rmse": 30.0}, dataset="tiny simulated", alias=registry.CHAMPION)


def vision(home: Path) -> None:
    from apps.vision.data import load, train_val_test
    from apps.vision.evaluate import calibrate
    from apps.vision.lifecycle import register
    from apps.vision.train import train
    from common import registry
    from tests.vision.conftest import make_folder, tiny_config

    folder = make_folder(home / "tmp-images" / "shapes", per_class=24)
    cfg = tiny_config(epochs=4)
    tr, va, _ = train_val_test(load(folder, image_size=cfg.image_size, progress=False), 0.2, 0.2, cfg.seed)
    model, _ = train(tr, va, cfg, progress=False)
    calibrate(model, va)
    register(model, tr, metrics={"test_accuracy": 0.9}, dataset="tiny shapes", alias=registry.CHAMPION)
    shutil.rmtree(home / "tmp-images", ignore_errors=True)


BUILDERS = {"recommender": recommender, "fraud": fraud, "maintenance": maintenance, "vision": vision}


def build(home: Path, apps: tuple[str, ...] = tuple(BUILDERS)) -> Path:
    """Register the tiny models of ``apps`` in ``home`` (which must hold a migrated mlflow.db or be empty)."""
    from common.config import override

    home.mkdir(parents=True, exist_ok=True)
    with override(home=home, tracking_uri=None):
        for app in apps:
            BUILDERS[app](home)
    return home

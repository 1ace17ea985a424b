"""The recommender pipeline: every stage the CLI, the demo and the benchmark run, in one place.

``data (interactions + item metadata) -> features + model (train.py: held-out split, optional tuning, fit on all)
-> evaluate (models against the popular/random baselines on one protocol) -> register -> serve / batch -> monitor
(new users/items, popularity drift, coverage) -> retrain (challenger on newer data, compared on the latest window)``.
:class:`RecommenderApp` implements :class:`common.app.App`; ``__main__.py`` builds the command line from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from apps.recommender.config import APP, REGISTRY_NAME, RecommenderConfig
from apps.recommender.data import TIMESTAMP, TINY, Dataset, load_dataset
from apps.recommender.model import RecommenderBundle
from common import registry
from common.app import App, Evaluation, Fitted, Monitoring, Option, Tiny
from common.data import SECONDS_PER_DAY, DataError
from common.workspace import Workspace

log = logging.getLogger(__name__)

TIMING_METRICS = ("predict_s",)  # held-out figures that are timings: printed, never registered as metrics


class RecommenderApp(App[RecommenderConfig, Dataset, RecommenderBundle]):
    """Implicit-feedback top-k recommendations, served and retrained."""

    name = APP
    registry_name = REGISTRY_NAME
    config_type = RecommenderConfig
    default_dataset = "synthetic"
    dataset_help = "synthetic | ml-100k | ml-1m | path to a CSV/parquet (default: synthetic)"
    recent_help = "recent interactions file (same format as train's), or 'synthetic-next'"
    flags = {
        "train": (
            "model",
            "engine",
            "factors",
            "regularization",
            "alpha",
            "iterations",
            "lambda_",
            "weighting",
            "tune_budget",
        ),
        "evaluate": ("protocol", "models", "k", "engine"),
        "retrain": ("new", "window_days"),
        "demo": ("tiny",),
    }
    options = {
        "batch": (Option("k", int, 10, "number of items per user", min=1, max=100),),
        "monitor": (Option("days", float | None, None, "only the last N days of the file (default: all)", min=0),),
    }
    batch_chunk = (5000, "users per chunk")
    batch_input = (None, "file with a 'user' column (default: every known user)")
    batch_output = (Path("recommendations.parquet"), ".parquet or .csv")

    def _dataset(self, ws: Workspace, spec: str | Path | None, cfg: RecommenderConfig | None = None) -> Dataset:
        """A dataset by name or path; the built-in synthetic data at the config's size (``tiny``)."""
        sizes = TINY if cfg is not None and cfg.tiny else {}
        return load_dataset(spec or self.default_dataset, data_dir=ws.data_dir, **sizes)

    def load_data(self, ws: Workspace, dataset: str | None, cfg: RecommenderConfig) -> Dataset | Any:
        """The dataset in memory; with ``--engine spark`` and parquet (a file, directory, glob or s3a:// / hdfs://
        URI), a validated Spark frame instead (:class:`~apps.recommender.spark_native.SparkInteractions`): the
        Spark-native path, whose interactions never come to the driver."""
        if cfg.engine == "spark":
            from apps.recommender.spark_native import is_parquet_source, load_spark_interactions

            if is_parquet_source(dataset):
                data = load_spark_interactions(str(dataset), cfg)
                log.info("dataset %s: %d rows read in Spark from %s", data.name, data.rows, data.source)
                return data
        ds = self._dataset(ws, dataset, cfg)
        log.info("dataset %s: %s", ds.name, ds.summary())
        return ds

    def _in_memory(self, ws: Workspace, data: Dataset | Any) -> Dataset:
        """``data`` as an in-memory :class:`Dataset` (commands other than ``train`` compare models in memory)."""
        from apps.recommender.spark_native import SparkInteractions

        return self._dataset(ws, data.source) if isinstance(data, SparkInteractions) else data

    def fit(self, ws: Workspace, data: Dataset, cfg: RecommenderConfig, *, tune: int = 0) -> Fitted[RecommenderBundle]:
        """MS-stratified split, optional tuning on a validation split inside training, held-out metrics at
        ``cfg.k``, then the same recipe fitted on all the data (the registered model)."""
        from apps.recommender.spark_native import SparkInteractions, train_spark_native
        from apps.recommender.train import train_model
        from common import tracking

        if isinstance(data, SparkInteractions):
            result = train_spark_native(data, cfg, tune=tune)
        else:
            result = train_model(data, cfg, tune_trials=tune)
        if result.tuning:
            tracking.log_dict(result.tuning, "tuning.json")
        held_out = {k: float(v) for k, v in result.held_out.items() if isinstance(v, int | float)}
        return Fitted(
            result.bundle,
            metrics={k: v for k, v in held_out.items() if k not in TIMING_METRICS},
            params=result.params,
            summary={
                "model": cfg.model,
                "params": result.params,
                "tuning": result.tuning,
                "held_out": {k: round(v, 4) for k, v in result.held_out.items() if isinstance(v, float)},
            },
        )

    def register(
        self,
        ws: Workspace,
        fitted: Fitted[RecommenderBundle],
        data: Dataset,
        cfg: RecommenderConfig,
        *,
        dataset: str,
        alias: str | None,
    ) -> registry.ModelVersion:
        from apps.recommender.lifecycle import register_bundle
        from apps.recommender.spark_native import SparkInteractions, fingerprint, reference_sample

        if isinstance(data, SparkInteractions):  # a sample for the monitoring profile; the rest computed in Spark
            digest, newest = fingerprint(data)
            return register_bundle(
                fitted.model,
                reference_sample(data, cfg.seed),
                metrics=fitted.metrics,
                alias=alias,
                k=cfg.k,
                dataset=data.name,
                data_fingerprint=digest,
                last_timestamp=newest,
            )
        return register_bundle(
            fitted.model, data.interactions, metrics=fitted.metrics, alias=alias, k=cfg.k, dataset=data.name
        )

    def load_model(
        self, ws: Workspace, ref: str = registry.CHAMPION
    ) -> tuple[RecommenderBundle, registry.ModelVersion]:
        from apps.recommender.lifecycle import load_version

        return load_version(ref)

    def evaluate(
        self,
        ws: Workspace,
        data: Dataset,
        cfg: RecommenderConfig,
        out: Path,
        *,
        fitted: Fitted[RecommenderBundle] | None = None,
    ) -> Evaluation:
        """Every model of ``cfg.models`` fitted on the protocol's training split and measured on its test split
        (one tracking run each in ``recommender-evaluation``); the report with bootstrap intervals, metric-vs-k
        and popularity bias, and a leave-last-out section for ``cfg.leave_last_out_models``. A ``fitted`` model
        saw the test split (it is fitted on all data): its recipe (hyper-parameters) is evaluated instead."""
        from apps.recommender.evaluate import split, write_evaluation_report
        from apps.recommender.train import compare_models
        from common import tracking
        from common.reports import markdown_table

        data = self._in_memory(ws, data)
        names = cfg.model_names()
        recipe = (fitted.model.model.name, fitted.params) if fitted is not None else None
        models = {m: (m, recipe[1] if recipe and recipe[0] == m else None) for m in names}
        train, test = split(data.interactions, cfg.protocol, ratio=1 - cfg.test_ratio, seed=cfg.seed, source=data.name)
        table, bundles, curves = compare_models(train, test, models, cfg, ks=(cfg.k,), item_meta=data.items)
        sections, extra = {"Protocol": cfg.protocol}, {}
        if cfg.leave_last_out_models:
            llo_train, llo_test = split(data.interactions, "leave-last-out", source=data.name)
            llo_models = {m: (m, None) for m in cfg.leave_last_out_models}
            llo, _, _ = compare_models(llo_train, llo_test, llo_models, cfg, ks=(cfg.k,), curve_ks=None)
            cols = [f"hit_rate@{cfg.k}", f"ndcg@{cfg.k}", f"mrr@{cfg.k}"]
            sections["Leave-last-out (next interaction)"] = markdown_table(llo[cols])
            extra["leave_last_out"] = llo[cols].round(4).to_dict(orient="index")
        path = write_evaluation_report(
            out,
            table,
            curves,
            bundles,
            {m: test for m in names},
            title=f"Recommender on {data.name} ({cfg.protocol})",
            sections=sections,
            model_info={"models": names, "config": cfg.to_dict()},
            k=cfg.k,
            data=data.summary(),
            dataset=data.name,
            champion=cfg.model if cfg.model in names else None,
        )
        for name, row in table.iterrows():  # one tracking run per model, like training runs
            params = {"model": name, "protocol": cfg.protocol, "k": cfg.k, "report": str(path)}
            tags = {"dataset": data.name}
            with tracking.start_run(f"{APP}-evaluation", run_name=str(name), tags=tags, params=params):
                tracking.log_metrics(row.to_dict())
        return Evaluation(metrics=table.round(4).to_dict(orient="index"), report=path, extra=extra)

    def service(self, ws: Workspace) -> Any:
        from apps.recommender.service import build_app

        return build_app(ws=ws)

    def batch(
        self,
        ws: Workspace,
        model: RecommenderBundle,
        source: Path | None,
        output: Path,
        *,
        chunksize: int,
        k: int = 10,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Top-k for every user of ``source`` (a file with a ``user`` column; None: every known user)."""
        from apps.recommender.lifecycle import batch_recommend

        res = batch_recommend(model, output, k=k, users_file=source, chunksize=chunksize, progress=progress)
        return {"rows": res.rows, "seconds": round(res.seconds, 2), "output": str(res.output)}

    def monitor(
        self,
        ws: Workspace,
        model: RecommenderBundle,
        version: registry.ModelVersion,
        recent: Path,
        out: Path,
        *,
        days: float | None = None,
    ) -> Monitoring:
        """New-user and new-item rates, popularity and prediction drift, coverage: recent vs training (only the
        last ``days`` of ``recent`` when given)."""
        from apps.recommender.lifecycle import monitor

        frame = self._dataset(ws, recent).interactions
        if days is not None:
            if TIMESTAMP not in frame.columns:
                raise DataError(f"--days needs a '{TIMESTAMP}' column in {recent}")
            frame = frame[frame[TIMESTAMP] > frame[TIMESTAMP].max() - days * SECONDS_PER_DAY]
        verdict = monitor(
            model, registry.fetch_model_dir(version), frame, out_dir=out, model_version=str(version.version)
        )
        return Monitoring(alerts=list(verdict.alerts), stats=verdict.stats, report=out / "drift.md")

    def retrain(self, ws: Workspace, dataset: str | None, cfg: RecommenderConfig, *, margin: float) -> dict[str, Any]:
        """Old + new (``cfg.new``) interactions: a challenger of the champion's recipe on everything before the
        last ``cfg.window_days``, promoted (as its refit on all data) only if it beats the champion there."""
        from apps.recommender.lifecycle import retrain

        base = self._in_memory(ws, self.load_data(ws, dataset, cfg))
        frames, items = [base.interactions], base.items
        if cfg.new is not None:
            extra = self._dataset(ws, cfg.new, cfg)
            frames.append(extra.interactions)
            items = pd.concat([items, extra.items[~extra.items.index.isin(items.index)]])
        decision = retrain(
            pd.concat(frames, ignore_index=True), cfg, window_days=cfg.window_days, margin=margin, item_meta=items
        )
        return decision.to_dict()

    def demo_config(self, seed: int) -> RecommenderConfig:
        """ALS against every baseline (BPR left out with ``--tiny``), and leave-last-out for ALS, EASE, popular."""
        return RecommenderConfig(
            seed=seed, models="als,ease,popular,itemknn,random,bpr", leave_last_out_models=("als", "ease", "popular")
        )

    def demo(self, ws: Workspace, cfg: RecommenderConfig) -> dict[str, Any]:
        from apps.recommender.demo import run_demo

        return run_demo(self, ws, cfg)

    def tiny(self) -> Tiny:
        def recent(directory: Path) -> Path:
            path = directory / "recent.csv"
            load_dataset("synthetic-next", **TINY).interactions.to_csv(path, index=False)
            return path

        values = {"tiny": True, "models": "als,popular,random", "threads": 1, "seed": 0}
        return Tiny(None, values, recent)


APP_IMPL = RecommenderApp()

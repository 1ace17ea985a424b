"""The fraud pipeline: every stage the CLI, the demo and the benchmark run, in one place.

``data (simulated world or your transactions) -> features (train.prepare) -> model (train.fit_production:
validation folds, then the latest labelled week; Dask optional) -> evaluate (handbook prequential protocol, xgboost
vs baselines) -> register (with the monitoring reference and the online history) -> serve / batch -> monitor
(feature and score drift of the latest days) -> retrain (weekly challenger, compared on a week neither model saw)``.
:class:`FraudApp` implements :class:`common.app.App`; ``__main__.py`` builds the command line from it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from apps.fraud.config import APP, MODEL_NAME, TINY_SIMULATION, FraudConfig, load_config
from apps.fraud.data import DAY, LABEL, TIMESTAMP, TX_ID, Transactions, load
from apps.fraud.model import FraudModel
from common import cli, registry
from common.app import App, Evaluation, Fitted, Monitoring, Option, Tiny
from common.data import DataError
from common.errors import ConfigError
from common.workspace import Workspace

log = logging.getLogger(__name__)

TIMINGS = ("train_s", "predict_s")
SIMULATED = "simulated"  # --dataset left out (or given as this name): the simulated world of the config


class FraudApp(App[FraudConfig, Transactions, FraudModel]):
    """Real-time card fraud scoring with delayed labels."""

    name = APP
    registry_name = MODEL_NAME
    config_type = FraudConfig
    default_dataset = SIMULATED
    dataset_help = "your transactions file (CSV/parquet); default: simulated (--sim-size)"
    recent_help = "recent transactions (CSV/parquet, sorted by timestamp; default: simulated); the latest --days count"
    flags = {
        "train": (
            "sim_size",
            "model",
            "xgb.n_estimators",
            "xgb.max_depth",
            "xgb.learning_rate",
            "train_days",
            "protocol.n_folds",
            "serving.alerts_per_day",
            "scheduler",
            "engine",
        ),
        "evaluate": ("sim_size", "tune", "models", "protocol.n_folds"),
        "retrain": ("sim_size", "seed"),
        "demo": ("sim_size", "tune", "demo.dataset"),
    }
    options = {
        "serve": (
            Option(
                "dataset",
                Path | None,
                None,
                "past transactions that warm the online state (default: the champion's own)",
                short="-d",
            ),
            Option("log_level", str, "info", "uvicorn log level"),
            Option("refresh_interval", float, 5.0, "seconds between registry polls for a new champion", min=0.0),
            Option(
                "workers",
                int,
                1,
                "uvicorn worker processes; more than 1 needs the shared state (MLREF_REDIS_URL)",
                min=1,
            ),
        ),
        "batch": (
            Option(
                "history",
                Path | None,
                None,
                "earlier transactions (with labels) for the features; default: the ones recorded with the version",
            ),
            Option("reasons", bool, False, "add the top reasons"),
            Option("n_reasons", int, 3, "features listed per alert with --reasons", min=1),
            Option(
                "scheduler",
                str | None,
                None,
                "score a time-sorted parquet --input's row groups on Dask: ADDRESS (tcp://host:8786) or 'local'",
            ),
        ),
        "monitor": (
            Option("sim_size", str | None, None, "simulated world: reference, demo or tiny"),
            Option("days", int, 7, "the most recent N days are compared with the reference", min=1),
            Option("seed", int | None, None, "seed of the simulated world (default: the simulation section's, 0)"),
        ),
    }
    recent_required = False  # monitor without --dataset: the simulated world
    batch_chunk = (100_000, "rows per chunk")
    batch_input = (..., "transactions to score (CSV/parquet, time-sorted)")

    # --- configuration ------------------------------------------------------------------------------------------
    def config(self, path: Path | None = None, values: Any = None) -> FraudConfig:
        """Sections are frozen: the fraud config has its own loader (:func:`apps.fraud.config.load_config`)."""
        return load_config(path, values)

    def demo_config(self, seed: int) -> FraudConfig:
        """The demo's world (``sim_size`` demo: ~1/10 of the reference) drawn with ``seed``."""
        return load_config(values={"sim_size": "demo", "seed": seed})

    # --- data ---------------------------------------------------------------------------------------------------
    def transactions(
        self, ws: Workspace, dataset: str | Path | None, cfg: FraudConfig, *, require_label: bool = True
    ) -> pd.DataFrame:
        """The raw transactions: ``dataset`` (a file) or the simulated world of ``cfg`` (cached in the
        workspace)."""
        from apps.fraud.outofcore import check_fits, expected_rows, rows_in

        path = None if dataset is None or str(dataset) == SIMULATED else dataset
        if path is not None and Path(path).exists():  # a missing file: load's own message
            check_fits(rows_in(path), what=str(path))
        elif path is None:
            check_fits(expected_rows(cfg.world()), what="the simulated world")
        return load(path, sim=cfg.world(), require_label=require_label, cache_dir=self.cache_dir(ws))

    def cache_dir(self, ws: Workspace) -> Path:
        """Where simulated worlds are cached: ``home/cache/fraud``."""
        path = ws.home / "cache" / APP
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_data(self, ws: Workspace, dataset: str | None, cfg: FraudConfig) -> Transactions:
        from apps.fraud.train import prepare

        if cfg.engine == "dask":
            return self.load_out_of_core(ws, dataset, cfg)
        return Transactions(prepare(self.transactions(ws, dataset, cfg), cfg.features), self.dataset_name(dataset))

    def load_out_of_core(self, ws: Workspace, dataset: str | None, cfg: FraudConfig) -> Transactions:
        """``--engine dask``: the features of every transaction of a parquet ``dataset`` (default: the simulated
        world streamed to parquet by :mod:`apps.fraud.synth`) computed over its partitions on the Dask cluster
        into the workspace's cache; in memory only the latest days that training and registration read."""
        import hashlib

        from apps.fraud.outofcore import features_dask, load_features
        from apps.fraud.synth import write_synthetic
        from apps.fraud.train import dask_client

        if dataset is None or str(dataset) == SIMULATED:
            world = cfg.world()
            key = hashlib.sha256(repr(world.asdict()).encode()).hexdigest()[:12]
            source = self.cache_dir(ws) / f"synth-{key}" / "transactions.parquet"
            if not source.exists():
                write_synthetic(world, source.parent)
        else:
            source = Path(dataset)
            if not source.is_file():
                raise DataError(f"{source}: file not found")
        st = source.stat()
        key = hashlib.sha256(f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}:{cfg.features}".encode()).hexdigest()
        features_dir = self.cache_dir(ws) / f"features-{key[:12]}"
        if not features_dir.exists():
            try:
                with dask_client(cfg.scheduler) as client:
                    features_dask(source, features_dir, cfg.features, client=client)
            except ConnectionError as exc:
                raise cli.fail(str(exc)) from None
        last = int(pd.read_parquet(features_dir, columns=[DAY])[DAY].max())
        keep = max(cfg.features.history_days, cfg.features.delay_days + cfg.train_days) + 1
        recent = load_features(features_dir, since_day=last - keep)
        log.info("out of core: features of %s in %s; %d recent rows in memory", source, features_dir, len(recent))
        return Transactions(recent, self.dataset_name(dataset), features_dir=features_dir)

    # --- training -----------------------------------------------------------------------------------------------
    def fit(self, ws: Workspace, data: Transactions, cfg: FraudConfig, *, tune: int = 0) -> Fitted[FraudModel]:
        """Validation folds of the protocol (after ``tune`` Optuna trials there for XGBoost), then the model on the
        latest labelled ``train_days`` (on the Dask cluster of ``scheduler`` when given)."""
        from apps.fraud.train import fit_production

        if data.features_dir is not None:
            return self.fit_out_of_core(data, cfg)
        try:
            prod = fit_production(data.frame, cfg, tune=tune or cfg.tune)
        except ConnectionError as exc:  # an unreachable Dask scheduler: one line, exit 2
            raise cli.fail(str(exc)) from None
        model = prod.model
        summary: dict[str, Any] = {"params": prod.params, "threshold": model.threshold, "validation": prod.validation}
        if "distributed" in model.info:
            summary["distributed"] = model.info["distributed"] | {"fit_seconds": model.info["fit_seconds"]}
        # the model's numbers, not the machine's: fit and predict seconds stay in the summary
        metrics = {f"validation_{k}": v for k, v in prod.validation.items() if k not in TIMINGS}
        return Fitted(model, metrics=metrics, params=prod.params, summary=summary)

    def fit_out_of_core(self, data: Transactions, cfg: FraudConfig) -> Fitted[FraudModel]:
        """``--engine dask``: one held-out fold at the end of the data (:func:`apps.fraud.outofcore.
        holdout_from_features`: the prequential folds need the history in memory; ``evaluate`` runs them on a file
        that fits), then the final model from the feature parts (xgboost.dask)."""
        from apps.fraud.outofcore import holdout_from_features, train_from_features
        from apps.fraud.train import dask_client

        assert data.features_dir is not None
        params = cfg.xgb.params()
        try:
            with dask_client(cfg.scheduler) as client:
                try:
                    holdout = holdout_from_features(data.features_dir, cfg, client=client, params=params)
                    log.info("engine dask: held-out fold %s: %s", holdout["test_days"], holdout["metrics"])
                except DataError as exc:  # too few days or labels for a fold: the final model may still train
                    holdout = {"skipped": str(exc)}
                    log.warning("engine dask: no held-out fold (%s)", exc)
                model = train_from_features(data.features_dir, cfg, client=client, params=params)
        except ConnectionError as exc:
            raise cli.fail(str(exc)) from None
        summary = {"params": params, "threshold": model.threshold, "engine": "dask", "holdout": holdout}
        summary["distributed"] = model.info["distributed"] | {"fit_seconds": model.info["fit_seconds"]}
        metrics = {f"holdout_{k}": v for k, v in holdout.get("metrics", {}).items()}
        return Fitted(model, metrics=metrics, params=params, summary=summary)

    def register(
        self,
        ws: Workspace,
        fitted: Fitted[FraudModel],
        data: Transactions,
        cfg: FraudConfig,
        *,
        dataset: str,
        alias: str | None,
    ) -> registry.ModelVersion:
        from apps.fraud.lifecycle import register_model

        return register_model(fitted.model, data.frame, metrics=fitted.metrics, alias=alias, dataset=dataset)

    def load_model(self, ws: Workspace, ref: str = registry.CHAMPION) -> tuple[FraudModel, registry.ModelVersion]:
        from apps.fraud.service import load_model

        return registry.load(MODEL_NAME, ref, load_model)  # a missing or tampered model: one line, exit 2

    # --- evaluation ---------------------------------------------------------------------------------------------
    def evaluate(
        self,
        ws: Workspace,
        data: Transactions,
        cfg: FraudConfig,
        out: Path,
        *,
        fitted: Fitted[FraudModel] | None = None,
    ) -> Evaluation:
        """Handbook protocol for each of ``cfg.models`` (validation selects, test reports), model card in ``out``.
        ``fitted``: its xgboost parameters are evaluated (not tuned again) and it is the report's champion."""
        from apps.fraud.lifecycle import log_selection, report_selection, results_table, select_models
        from apps.fraud.train import BASELINE_GRIDS, SMALL_GRIDS
        from common.reports import write_json

        if data.features_dir is not None or cfg.engine == "dask":
            raise ConfigError(
                "engine: evaluate runs the prequential protocol in memory; use --engine pandas on a file that fits "
                "(--engine dask covers train)"
            )
        prepared = data.frame
        n_days = int(prepared[DAY].max()) + 1
        protocol = cfg.protocol.fitted(n_days)
        if protocol.n_folds < cfg.protocol.n_folds:
            log.warning("only %d days of data: using %d prequential folds", n_days, protocol.n_folds)
        cfg = replace(cfg, protocol=protocol)
        champion = fitted.model if fitted is not None else None
        xgb_params = champion.params if champion is not None and champion.kind == "xgboost" else None
        cands = select_models(
            prepared,
            cfg,
            kinds=cfg.kinds(),
            tune_trials=cfg.tune if xgb_params is None else 0,
            grids=SMALL_GRIDS if cfg.grids == "small" else BASELINE_GRIDS,
            xgb_params=xgb_params,
        )
        path = report_selection(cands, cfg, out, dataset=data.name, champion=champion, data=prepared)
        log_selection(cands, data.name)
        table = results_table(cands)
        write_json(out / "evaluation.json", table)
        return Evaluation(metrics=table, report=path)

    # --- serving ------------------------------------------------------------------------------------------------
    def service(self, ws: Workspace, *, dataset: Path | None = None, refresh_interval: float = 5.0) -> Any:
        """The service of the champion; its online state starts from the champion's recorded history (or the
        past transactions of ``dataset``). The journal and logs lie in the activated workspace."""
        from apps.fraud.service import build_app, history_for

        history = load(dataset, require_label=False) if dataset is not None else history_for()
        return build_app(history, refresh_interval_s=refresh_interval or None)

    def serve(
        self,
        ws: Workspace,
        host: str | None,
        port: int | None,
        *,
        dataset: Path | None = None,
        log_level: str = "info",
        refresh_interval: float = 5.0,
        workers: int = 1,
    ) -> None:
        """One process (the online state journaled in the workspace) or ``workers`` uvicorn processes on the
        shared Redis state (``MLREF_REDIS_URL``)."""
        from apps.fraud.service import serve_workers
        from common.serving import serve as run_server

        if workers > 1:
            serve_workers(
                workers, dataset=dataset, host=host, port=port, log_level=log_level, refresh_interval_s=refresh_interval
            )
            return
        service = self.service(ws, dataset=dataset, refresh_interval=refresh_interval)
        run_server(service, host=host, port=port, log_level=log_level)

    def batch(
        self,
        ws: Workspace,
        model: FraudModel,
        source: Path,
        output: Path,
        *,
        chunksize: int,
        history: Path | None = None,
        reasons: bool = False,
        n_reasons: int = 3,
        scheduler: str | None = None,
    ) -> dict[str, Any]:
        """:meth:`score_file`; with ``scheduler`` the partitions (row groups) of a time-sorted parquet ``source``
        are scored on that Dask cluster (:func:`apps.fraud.outofcore.score_dask`: the same rows and scores)."""
        if scheduler:
            return self.score_file_dask(ws, model, source, output, scheduler=scheduler, history=history)
        return self.score_file(
            ws, model, source, output, chunksize=chunksize, history=history, reasons=reasons, n_reasons=n_reasons
        )

    def score_file(
        self,
        ws: Workspace,
        model: FraudModel,
        source: Path,
        output: Path,
        *,
        chunksize: int,
        history: Path | pd.DataFrame | None = None,
        reasons: bool = False,
        n_reasons: int = 3,
        progress: bool = True,
    ) -> dict[str, Any]:
        """``batch``: a time-sorted file scored chunk by chunk, its features preceded by ``history`` (a file or
        frame of earlier transactions; default: the ones recorded with the model's version); ``reasons``: the
        ``n_reasons`` features that raised each alert most."""
        from apps.fraud.service import BatchScorer
        from common import batch as common_batch

        if history is None:
            hist = recorded_history(model)
        elif isinstance(history, pd.DataFrame):
            hist = history
        else:
            hist = load(history, require_label=False)
        scorer = BatchScorer(model, FraudConfig().features, hist, reasons=reasons, n_reasons=n_reasons)
        res = common_batch.score_file(source, output, scorer, chunksize=chunksize, progress=progress)
        return {"rows": res.rows, "chunks": res.chunks, "seconds": round(res.seconds, 2), "output": str(res.output)}

    def score_file_dask(
        self,
        ws: Workspace,
        model: FraudModel,
        source: Path,
        output: Path,
        *,
        scheduler: str,
        history: Path | None = None,
    ) -> dict[str, Any]:
        """``batch --scheduler``: :func:`apps.fraud.outofcore.score_dask` into a parquet ``output``."""
        from apps.fraud.outofcore import score_dask
        from apps.fraud.train import dask_client, feature_config_of

        if Path(output).suffix.lower() not in (".parquet", ".pq"):
            raise DataError(f"{output}: batch --scheduler writes parquet; name the output .parquet")
        hist = recorded_history(model) if history is None else load(history, require_label=False)
        try:
            with dask_client(scheduler) as client:
                res = score_dask(source, output, model, client=client, cfg=feature_config_of(model), history=hist)
        except ConnectionError as exc:
            raise cli.fail(str(exc)) from None
        return res | {"engine": "dask"}

    # --- monitoring ---------------------------------------------------------------------------------------------
    def monitor(
        self,
        ws: Workspace,
        model: FraudModel,
        version: registry.ModelVersion,
        recent: Path | None,
        out: Path,
        *,
        sim_size: str | None = None,
        days: int = 7,
        seed: int | None = None,
    ) -> Monitoring:
        """The latest ``days`` of ``recent`` (None: the simulated world of ``sim_size`` and ``seed``) against the
        model's training window."""
        from apps.fraud.train import prepare

        cfg = self.config(None, {"sim_size": sim_size, "seed": seed, "monitor_days": days})
        prepared = prepare(self.transactions(ws, recent, cfg, require_label=False), cfg.features)
        return self.monitor_rows(ws, model, version, prepared, out, days=cfg.monitor_days)

    def monitor_rows(
        self,
        ws: Workspace,
        model: FraudModel,
        version: registry.ModelVersion,
        prepared: pd.DataFrame,
        out: Path,
        *,
        days: int = 7,
    ) -> Monitoring:
        """Feature and score drift of the latest ``days`` of ``prepared``; daily performance where labels are in;
        the alert precision of the version's served predictions (the service's logs in ``ws``)."""
        from apps.fraud.lifecycle import alert_precision_from_logs
        from apps.fraud.lifecycle import monitor as run_monitor

        recent = prepared[prepared[DAY] > prepared[DAY].max() - days]
        verdict = run_monitor(model, registry.fetch_model_dir(version), recent, out, model_version=str(version.version))
        perf = verdict.performance
        stats = {
            "drift": verdict.drift,
            "drifted_features": verdict.drifted_features,
            "prediction_drift": verdict.prediction_drift,
            "daily_performance": perf.to_dict(orient="records") if len(perf) else [],
            "served_alert_precision": alert_precision_from_logs(version=str(version.version), ws=ws),
        }
        return Monitoring(alerts=list(verdict.alerts), stats=stats, report=out / "drift.md")

    # --- retraining ---------------------------------------------------------------------------------------------
    def retrain(self, ws: Workspace, dataset: str | None, cfg: FraudConfig, *, margin: float) -> dict[str, Any]:
        """Weekly challenger on the latest labelled weeks (the champion's kind and parameters); promoted only if it
        beats the champion by ``margin`` on the most recent labelled week, which neither model saw."""
        from apps.fraud.lifecycle import retrain

        cfg = replace(cfg, retrain=replace(cfg.retrain, margin=margin))
        return retrain(self.load_data(ws, dataset, cfg).frame, cfg).to_dict()

    # --- demo and the contract test -----------------------------------------------------------------------------
    def demo(self, ws: Workspace, cfg: FraudConfig) -> dict[str, Any]:
        from apps.fraud.demo import run_demo

        return run_demo(self, ws, cfg)

    def tiny(self) -> Tiny:
        def recent(directory: Path) -> Path:
            """The tiny world's last 10 days, moved 2 weeks later (new ids): transactions after the training
            data, as a new file would bring them."""
            from apps.fraud.data import simulated

            raw = simulated(TINY_SIMULATION)
            last = raw[raw[TIMESTAMP] > raw[TIMESTAMP].max() - pd.Timedelta(days=10)].drop(columns=[LABEL])
            last = last.assign(timestamp=last[TIMESTAMP] + pd.Timedelta(days=14), tx_id="R" + last[TX_ID].astype(str))
            path = directory / "recent.csv"
            last.to_csv(path, index=False)
            return path

        values = {
            "sim_size": "tiny",
            "xgb.n_estimators": 30,
            "protocol.n_folds": 1,
            "models": "xgboost,logreg",
            "grids": "small",
        }
        return Tiny(None, values, recent)


def recorded_history(model: FraudModel) -> pd.DataFrame:
    """The transactions recorded with a registered model at registration (``history.parquet`` beside it)."""
    from apps.fraud.train import HISTORY_FILE

    path = model.source / HISTORY_FILE if model.source is not None else None
    if path is None or not path.exists():
        raise DataError(
            "the model has no recorded transaction history (it was registered before versions kept one): pass "
            "--history FILE with the transactions its features should start from, or train a new version"
        )
    return pd.read_parquet(path)


APP_IMPL = FraudApp()

"""The maintenance pipeline: every stage the CLI, the demo and the benchmark run, in one place.

``data (fleet of run-to-failure histories) -> features + model (train.py) -> evaluate (last cycle of truncated test
units, against the baselines) -> register -> serve / batch -> monitor (age-matched drift) -> retrain``.
:class:`MaintenanceApp` implements :class:`common.app.App`; ``__main__.py`` builds the command line from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from apps.maintenance.config import APP, REGISTRY_NAME, Config
from apps.maintenance.data import Fleet, failed_units, load, read_fleet, simulate
from apps.maintenance.evaluate import PROTOCOLS, alert_tradeoff, evaluate_last_cycle, write_evaluation
from apps.maintenance.model import RULModel
from common import registry
from common.app import App, Evaluation, Fitted, Monitoring, Tiny
from common.data import DataError
from common.workspace import Workspace

log = logging.getLogger(__name__)


def _info(model: RULModel) -> dict[str, Any]:
    return {k: v for k, v in model.info.items() if k not in ("sensors", "members")}


def _protocol(name: str) -> str:
    if name.upper().startswith("FD") or name.startswith("train_FD"):
        return "cmapss"
    return "simulated" if name == "simulated" else "table"


def _is_builtin(dataset: str | None) -> bool:
    return dataset is None or str(dataset) == "simulated" or str(dataset).upper().startswith("FD")


class MaintenanceApp(App[Config, Fleet, RULModel]):
    """Remaining useful life of a fleet, with intervals and maintenance alerts."""

    name = APP
    registry_name = REGISTRY_NAME
    config_type = Config
    default_dataset = "simulated"
    dataset_help = "FD001..FD004 (C-MAPSS), a train_FD00x.txt path, or your CSV/parquet long table (default: simulated)"
    recent_help = "recent readings (long table; failed=1 marks observed failures)"
    flags = {
        "train": ("model", "epochs", "n_seeds", "unit_column", "cycle_column", "sensors", "setting_columns"),
        "evaluate": ("model", "epochs", "n_seeds", "unit_column", "cycle_column", "sensors", "setting_columns"),
        "retrain": ("unit_column", "cycle_column", "sensors", "setting_columns"),
        "demo": ("model", "epochs"),
    }
    report_after_training = True  # train writes the evaluation report of the model it registered
    no_tuning = "the recipes are fixed (measured on C-MAPSS FD001); change boost_*, epochs, lr or window with --config"
    batch_chunk = (1000, "units per prediction chunk")

    def load_data(self, ws: Workspace, dataset: str | None, cfg: Config) -> Fleet:
        return load(dataset, seed=cfg.seed, columns=cfg)

    def fit(self, ws: Workspace, data: Fleet, cfg: Config, *, tune: int = 0) -> Fitted[RULModel]:
        """Train on the run-to-failure histories (held-out units for early stopping and intervals); measure on the
        test units' last cycles when the dataset has them."""
        from apps.maintenance.train import train

        model = train(data.train, cfg)
        held_out: dict[str, float] = {}
        if data.test is not None and data.test_rul is not None:
            held_out, _ = evaluate_last_cycle(model, data.test, data.test_rul, cfg.rul_cap)
        return Fitted(
            model,
            metrics={f"test_{k}": v for k, v in held_out.items()},
            summary={"test": held_out, "info": _info(model)},
        )

    def register(
        self, ws: Workspace, fitted: Fitted[RULModel], data: Fleet, cfg: Config, *, dataset: str, alias: str | None
    ) -> registry.ModelVersion:
        from apps.maintenance.lifecycle import register

        return register(fitted.model, data.train, metrics=fitted.metrics, dataset=dataset, alias=alias)

    def load_model(self, ws: Workspace, ref: str = registry.CHAMPION) -> tuple[RULModel, registry.ModelVersion]:
        from apps.maintenance.lifecycle import load_version

        return load_version(ref)

    def evaluate(
        self, ws: Workspace, data: Fleet, cfg: Config, out: Path, *, fitted: Fitted[RULModel] | None = None
    ) -> Evaluation:
        """The model and the baselines (mean, linear, summary) on the test units' last cycles; report with figures
        and the alert trade-off. On a user's table the test units are cut from the user's own histories."""
        from apps.maintenance.train import fit_baselines, prepare, train

        if data.test is None or data.test_rul is None:
            raise DataError(f"{data.name}: no test units with known RUL to evaluate on (a table of running units only)")
        prepared = prepare(data.train, cfg)
        model = fitted.model if fitted is not None else train(data.train, cfg, data=prepared)
        table: dict[str, dict[str, float]] = {}
        table[cfg.model], per_unit = evaluate_last_cycle(model, data.test, data.test_rul, cfg.rul_cap)
        for name, reg in fit_baselines(prepared, cfg, kinds=tuple(cfg.baselines)).items():
            table[name], _ = evaluate_last_cycle(reg, data.test, data.test_rul, cfg.rul_cap)
        curve = alert_tradeoff(per_unit, cfg.horizon)
        path = write_evaluation(
            out,
            table,
            dataset=data.name,
            model=model,
            test=data.test,
            truth=data.test_rul,
            per_unit=per_unit,
            curve=curve,
            info=_info(model) | ({"epochs": cfg.epochs} if cfg.model == "dcnn" else {}),
            protocol=PROTOCOLS[_protocol(data.name)],
        )
        return Evaluation(metrics=table, report=path)

    def service(self, ws: Workspace) -> Any:
        from apps.maintenance.service import build_app

        return build_app(ws=ws)

    def serve(self, ws: Workspace, host: str | None, port: int | None) -> None:
        """One server per workspace: the fleet store's lock is held for the server's life (exit 2 if taken)."""
        from apps.maintenance.service import StoreLocked
        from common import cli, serving

        service = self.service(ws)
        try:
            service.state.fleet.acquire()  # the kernel drops it when the process ends
        except StoreLocked as exc:
            raise cli.fail(str(exc)) from None
        serving.serve(service, host=host, port=port)

    def batch(self, ws: Workspace, model: RULModel, source: Path, output: Path, *, chunksize: int) -> dict[str, Any]:
        from apps.maintenance.lifecycle import batch_score

        return batch_score(model, source, output, chunk_units=chunksize)

    def monitor(
        self, ws: Workspace, model: RULModel, version: registry.ModelVersion, recent: Path, out: Path
    ) -> Monitoring:
        """Sensor drift per operating condition against the training readings at the same ages, and error and
        coverage on observed failures."""
        from apps.maintenance.lifecycle import monitor

        verdict = monitor(model, registry.fetch_model_dir(version), read_fleet(recent, columns=model.cfg), out)
        return Monitoring(alerts=list(verdict.alerts), stats=verdict.stats, report=out / "drift.md")

    def retrain(self, ws: Workspace, dataset: str | None, cfg: Config, *, margin: float) -> dict[str, Any]:
        """A challenger on the units that failed before the latest ``window_units`` failures; promoted only if its
        RMSE on those recent failures beats the champion's by more than ``margin`` cycles."""
        from apps.maintenance.lifecycle import retrain, summary

        if _is_builtin(dataset):
            histories = load(dataset, seed=cfg.seed).train
        else:
            histories = failed_units(read_fleet(dataset, columns=cfg))
        return summary(retrain(histories, cfg, dataset=self.dataset_name(dataset), margin=margin))

    def demo_config(self, seed: int) -> Config:
        """The default model (boosted trees, seconds); ``--model dcnn`` gets a short schedule (25 epochs: the
        simulated sensors are easier than C-MAPSS)."""
        return Config(epochs=25, n_seeds=1, max_train_s=300, window=30, window_units=10, seed=seed).check()

    def demo(self, ws: Workspace, cfg: Config) -> dict[str, Any]:
        from apps.maintenance.demo import run_demo

        return run_demo(self, ws, cfg)

    def tiny(self) -> Tiny:
        def recent(directory: Path) -> Path:
            fleet = simulate(6, 4, seed=7)
            assert fleet.test is not None
            path = directory / "running.csv"
            fleet.test.to_csv(path, index=False)
            return path

        values = {"window": 10, "boost_trees": 30, "calibration_folds": 0, "window_units": 4, "seed": 0}
        values["baselines"] = ["mean", "linear"]
        return Tiny("simulated", values, recent)


APP_IMPL = MaintenanceApp()

"""The app interface: what an app implements, and the standard commands ``common`` builds from it.

An app is a subclass of :class:`App` in the app's ``pipeline.py``: its stages are methods with typed inputs and
outputs (data in, model out, report directory in, metrics out), each a few lines that call the app's own modules
(``data -> features -> model -> train -> evaluate -> service``). :func:`build_cli` turns one implementation into
the standard commands, so option names, exit codes, report directories, tracking runs, registration, promotion and
the demo's private workspace are the same code for every app; the CLI, the demo and the benchmark call the same
stage methods. The app's ``__main__.py`` declares the app, adds the commands whose arguments are its own
(``predict``, ``bench``, ``export`` ...) and nothing else.

| command | what ``common`` does around the app's stage(s) |
|---|---|
| ``train`` | config (``--config`` + flags) -> ``load_data`` -> tracking run ``<app>-training`` around ``fit`` -> |
|  | ``register`` (champion if asked or none yet) -> JSON + which version is served |
| ``evaluate`` | fresh directory ``reports/<app>/<dataset>/evaluation/<time>`` -> ``evaluate`` -> ``latest``, index |
| ``serve`` | ``serve`` (default: ``service`` on 127.0.0.1 with API key, body limit, hot swap) |
| ``batch`` | ``load_model`` -> ``batch`` (chunked, written atomically) |
| ``monitor`` | directory ``reports/<app>/<recent data>/monitor/<time>`` -> ``monitor``; exit 1 on an alert |
| ``retrain`` | ``retrain`` (a challenger compared on rows neither model saw, or refused) |
| ``demo`` | a private workspace ``$MLREF_HOME/demo/<app>`` -> ``demo`` |
| ``models`` | list / show / promote / rollback (:mod:`common.models`) |

Config flags: ``App.flags`` names the config fields each command exposes (``{"train": ("epochs", "xgb.max_depth")}``
gives ``--epochs`` and ``--max-depth``), generated from the config dataclass's types like Hugging Face's
``HfArgumentParser``: a flag left out keeps the value of ``--config`` or the default.

``tests/common/test_app_contract.py`` checks every app against this interface on its tiny dataset (:meth:`App.tiny`).
"""

from __future__ import annotations

import inspect
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import typer

from common import cli
from common.config import from_json_file, seed_everything
from common.flags import (
    Option,
    add_command,
    field_type,
    flag_parameter,
    has_field,
    keyword_param,
    loggable_params,
    parse_flag,
    set_field,
)
from common.workspace import Workspace

__all__ = [
    "App",
    "Evaluation",
    "Fitted",
    "Monitoring",
    "Option",
    "Tiny",
    "Trained",
    "build_cli",
    "demo_pipeline",
    "evaluate_pipeline",
    "field_type",
    "has_field",
    "monitor_pipeline",
    "set_field",
    "train_pipeline",
]

log = logging.getLogger(__name__)

C = TypeVar("C")  # the app's config dataclass
D = TypeVar("D")  # what load_data returns (a table, a fleet, image folders...)
M = TypeVar("M")  # the fitted model


@dataclass
class Fitted(Generic[M]):
    """What :meth:`App.fit` returns: the model, its held-out metrics (logged to the tracking run and the registry)
    and what ``train`` prints besides the version (``summary``)."""

    model: M
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trained(Generic[M]):
    """What :func:`train_pipeline` returns: the registered version and the fitted model."""

    version: str
    alias: str
    aliases: list[str]
    dataset: str
    fitted: Fitted[M]

    def to_dict(self) -> dict[str, Any]:
        """The ``train`` command's JSON."""
        base = {"version": self.version, "alias": self.alias, "aliases": self.aliases, "dataset": self.dataset}
        return base | self.fitted.summary


@dataclass
class Evaluation:
    """What :meth:`App.evaluate` returns: metrics per model and baseline, the report page, anything else to print."""

    metrics: dict[str, Any]
    report: Path
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Monitoring:
    """What :meth:`App.monitor` returns; ``alerts`` non-empty makes ``monitor`` exit 1."""

    alerts: list[str]
    stats: dict[str, Any]
    report: Path
    extra: dict[str, Any] = field(default_factory=dict)  # more of the app's own, printed beside alerts and stats


@dataclass
class Tiny:
    """A dataset and config on which the app trains in seconds: the contract test and the demo/CLI parity test.

    ``dataset`` is what ``--dataset`` takes (None: the built-in data); ``values`` are config fields (dotted names
    reach nested dataclasses) given as a ``--config`` file; ``recent(dir)`` writes a file of recent data for
    ``monitor`` and ``batch`` into ``dir`` and returns its path."""

    dataset: str | None
    values: dict[str, Any]
    recent: Callable[[Path], Path]

    def config_json(self) -> dict[str, Any]:
        """``values`` as the nested JSON object a ``--config`` file holds."""
        out: dict[str, Any] = {}
        for dotted, value in self.values.items():
            *parents, last = dotted.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return out


class App(ABC, Generic[C, D, M]):
    """One ML system: implement the stages, :func:`build_cli` makes the commands."""

    name: ClassVar[str]  # the package under apps/ and the CLI's name
    registry_name: ClassVar[str]  # the model's name in the registry
    config_type: ClassVar[type]  # a dataclass; every field settable from --config
    doc: ClassVar[str] = ""
    default_dataset: ClassVar[str] = "default"  # how reports and tags name the built-in data (no --dataset)
    dataset_help: ClassVar[str] = "dataset name or file (default: the built-in data)"
    recent_help: ClassVar[str] = "recent data to compare with the model's training data (a file)"
    flags: ClassVar[Mapping[str, tuple[str, ...]]] = {}  # command -> config fields as flags ("field" or "field:flag")
    options: ClassVar[Mapping[str, tuple[Option, ...]]] = {}  # command -> the app's own options (keyword arguments)
    recent_required: ClassVar[bool] = True  # monitor --dataset required (False: the stage gets None without one)
    no_tuning: ClassVar[str | None] = None  # why ``--tune`` is refused (None: the app tunes)
    report_after_training: ClassVar[bool] = False  # train also evaluates the registered model into a report
    batch_chunk: ClassVar[tuple[int, str]] = (100_000, "rows per chunk")  # batch's --chunksize default and help
    # batch's --input and --output: default (``...``: required) and help
    batch_input: ClassVar[tuple[Any, str]] = (..., "input file (CSV/parquet)")
    batch_output: ClassVar[tuple[Any, str]] = (..., "output file (.parquet or .csv); written atomically")

    # --- configuration ------------------------------------------------------------------------------------------
    def config(self, path: Path | None = None, values: Mapping[str, Any] | None = None) -> C:
        """The config: defaults, then the JSON file, then ``values`` (dotted names reach nested dataclasses);
        checked by the config's own ``check()`` when it has one."""
        cfg: Any = from_json_file(self.config_type, path)
        for dotted, value in (values or {}).items():
            set_field(cfg, dotted, value)
        check = getattr(cfg, "check", None)
        checked = check() if callable(check) else None
        return checked if checked is not None else cfg

    def dataset_name(self, dataset: str | Path | None) -> str:
        return str(dataset) if dataset is not None else self.default_dataset

    # --- the stages ---------------------------------------------------------------------------------------------
    @abstractmethod
    def load_data(self, ws: Workspace, dataset: str | None, cfg: C) -> D:
        """Read and validate the dataset (None: the built-in data); raise :class:`~common.errors.DataError`."""

    @abstractmethod
    def fit(self, ws: Workspace, data: D, cfg: C, *, tune: int = 0) -> Fitted[M]:
        """Train (tuning ``tune`` trials on validation data when the app supports it) and measure on held-out data."""

    @abstractmethod
    def register(self, ws: Workspace, fitted: Fitted[M], data: D, cfg: C, *, dataset: str, alias: str | None) -> Any:
        """Save the model with its monitoring reference and register it; returns the registry's ModelVersion."""

    @abstractmethod
    def load_model(self, ws: Workspace, ref: str = "champion") -> tuple[M, Any]:
        """The model of an alias or version number, hash-verified: ``(model, ModelVersion)``."""

    @abstractmethod
    def evaluate(self, ws: Workspace, data: D, cfg: C, out: Path, *, fitted: Fitted[M] | None = None) -> Evaluation:
        """Models vs baselines on the app's protocol; write the report into ``out`` (a fresh directory). ``fitted``:
        evaluate this model instead of fitting the config's (a demo that has just trained one)."""

    @abstractmethod
    def service(self, ws: Workspace) -> Any:
        """The FastAPI application serving the champion (built with :func:`common.serving.create_app`)."""

    @abstractmethod
    def batch(
        self, ws: Workspace, model: M, source: Path | None, output: Path, *, chunksize: int, **options: Any
    ) -> dict[str, Any]:
        """Score a file into another (chunked, written atomically); returns counts and timings. ``source`` is None
        only when the app's ``batch_input`` default is None (e.g. every known user). ``options``: the
        values of ``App.options["batch"]``."""

    @abstractmethod
    def monitor(
        self, ws: Workspace, model: M, version: Any, recent: Path | None, out: Path, **options: Any
    ) -> Monitoring:
        """Recent data vs the model's training reference; the report goes into ``out``. ``recent`` is None only
        when ``recent_required`` is False and no ``--dataset`` was given."""

    @abstractmethod
    def retrain(self, ws: Workspace, dataset: str | None, cfg: C, *, margin: float) -> dict[str, Any]:
        """A challenger on newer data, promoted only if it wins on rows neither model saw (or a refusal)."""

    @abstractmethod
    def demo(self, ws: Workspace, cfg: C) -> dict[str, Any]:
        """Every stage on the built-in data in ``ws`` (a private demo workspace); returns a summary."""

    @abstractmethod
    def tiny(self) -> Tiny:
        """A dataset and config that train in seconds (the contract test)."""

    # --- defaults an app may override -----------------------------------------------------------------------------
    def demo_config(self, seed: int) -> C:
        """The demo's config (default: the app's defaults with ``seed``)."""
        return self.config(values={"seed": seed} if has_field(self.config_type, "seed") else {})

    def serve(self, ws: Workspace, host: str | None, port: int | None, **options: Any) -> None:  # noqa: ARG002
        """Serve :meth:`service` until interrupted (127.0.0.1 unless told otherwise); an app with
        ``options["serve"]`` overrides this to use them."""
        from common import serving

        serving.serve(self.service(ws), host=host, port=port)


# ------------------------------------------------------------------ the standard commands


def build_cli(app: App[Any, Any, Any]) -> typer.Typer:
    """The app's command line: the standard commands around the app's stages, plus ``models``."""
    t = cli.create_app(app.name, app.registry_name, app.doc)
    dataset_opt = typer.Option(None, "--dataset", "-d", help=app.dataset_help)

    def flags_of(command: str) -> list[inspect.Parameter]:
        own = [o.parameter() for o in app.options.get(command, ())]
        return [flag_parameter(app.config_type, f) for f in app.flags.get(command, ())] + own

    def make_config(config: Path | None, flags: dict[str, Any], seed: int | None) -> Any:
        if seed is not None and has_field(app.config_type, "seed"):
            flags = {**flags, "seed": seed}
        return app.config(config, {k: parse_flag(app.config_type, k, v) for k, v in flags.items()})

    def train(
        dataset: str | None, config: Path | None, seed: int | None, tune: int, promote: bool | None, flags: dict
    ) -> None:
        if tune and app.no_tuning:
            raise cli.fail(f"--tune is not supported by the {app.name} app: {app.no_tuning}")
        ws = Workspace.from_env()
        cfg = make_config(config, flags, seed)
        with ws.activate():
            trained = train_pipeline(app, ws, dataset, cfg, tune=tune, promote=promote)
            cli.echo_json(trained.to_dict())
            typer.echo(cli.train_summary(app.registry_name, app.name, trained.version), err=True)

    add_command(
        t,
        "train",
        train,
        [
            keyword_param("dataset", str | None, dataset_opt),
            keyword_param("config", Path | None, cli.CONFIG),
            keyword_param("seed", int | None, cli.SEED),
            keyword_param("tune", int, cli.TUNE),
            keyword_param("promote", bool | None, cli.PROMOTE),
            *flags_of("train"),
        ],
        "Train, measure on held-out data, log a tracking run and register a version (champion if none yet).",
    )

    def evaluate(dataset: str | None, config: Path | None, seed: int | None, flags: dict) -> None:
        ws = Workspace.from_env()
        cfg = make_config(config, flags, seed)
        with ws.activate():
            ev = evaluate_pipeline(app, ws, dataset, cfg)
        cli.echo_json({"report": str(ev.report), "metrics": ev.metrics, **ev.extra})

    add_command(
        t,
        "evaluate",
        evaluate,
        [
            keyword_param("dataset", str | None, dataset_opt),
            keyword_param("config", Path | None, cli.CONFIG),
            keyword_param("seed", int | None, cli.SEED),
            *flags_of("evaluate"),
        ],
        "The model against the baselines on the app's protocol: metrics JSON + a report in a fresh directory.",
    )

    def serve(host: str | None, port: int | None, options: dict) -> None:
        ws = Workspace.from_env()
        with ws.activate():
            app.serve(ws, host, port, **options)

    add_command(
        t,
        "serve",
        serve,
        [keyword_param("host", str | None, cli.HOST), keyword_param("port", int | None, cli.PORT), *flags_of("serve")],
        "Serve the champion over HTTP on 127.0.0.1 (hot-swaps when the champion moves).",
    )

    chunk_opt = typer.Option(app.batch_chunk[0], "--chunksize", min=1, help=app.batch_chunk[1])
    output_opt = typer.Option(app.batch_output[0], "--output", "-o", help=app.batch_output[1])

    def batch(input_path: Path | None, output: Path, ref: str, chunksize: int, options: dict) -> None:
        ws = Workspace.from_env()
        with ws.activate():
            model, mv = app.load_model(ws, ref)
            res = app.batch(ws, model, input_path, output, chunksize=chunksize, **options)
        cli.echo_json({"version": mv.version, **res})

    add_command(
        t,
        "batch",
        batch,
        [
            keyword_param(
                "input_path",
                Path if app.batch_input[0] is ... else Path | None,
                typer.Option(app.batch_input[0], "--input", "-i", help=app.batch_input[1]),
            ),
            keyword_param("output", Path, output_opt),
            keyword_param("ref", str, cli.REF),
            keyword_param("chunksize", int, chunk_opt),
            *flags_of("batch"),
        ],
        "Score a file into another, chunked, written atomically.",
    )

    def monitor(dataset: Path | None, ref: str, options: dict) -> None:
        ws = Workspace.from_env()
        with ws.activate():
            result, version = monitor_pipeline(app, ws, dataset, ref, **options)
        cli.echo_json(
            {"version": version, "alerts": result.alerts, "stats": result.stats, "report": str(result.report)}
            | result.extra
        )
        cli.exit_monitor(bool(result.alerts))

    add_command(
        t,
        "monitor",
        monitor,
        [
            keyword_param(
                "dataset",
                Path if app.recent_required else Path | None,
                typer.Option(... if app.recent_required else None, "--dataset", "-d", help=app.recent_help),
            ),
            keyword_param("ref", str, cli.REF),
            *flags_of("monitor"),
        ],
        "Recent data against the model's training reference; exit 1 on any alert, 0 otherwise.",
    )

    def retrain(dataset: str | None, config: Path | None, margin: float, flags: dict) -> None:
        ws = Workspace.from_env()
        cfg = make_config(config, flags, None)
        with ws.activate():
            cli.echo_json(app.retrain(ws, dataset, cfg, margin=margin))

    add_command(
        t,
        "retrain",
        retrain,
        [
            keyword_param("dataset", str | None, dataset_opt),
            keyword_param("config", Path | None, cli.CONFIG),
            keyword_param("margin", float, cli.MARGIN),
            *flags_of("retrain"),
        ],
        "A challenger on newer data, promoted only if it beats the champion on rows neither model saw.",
    )

    def demo(seed: int, flags: dict) -> None:
        ws = Workspace.from_env()
        summary = demo_pipeline(app, ws, seed=seed, values=flags)
        cli.echo_json(summary)
        typer.echo(
            f"demo home: {ws.home / 'demo' / app.name} (your own registry is untouched). "
            f"Open next: {summary.get('report', ws.home / 'demo' / app.name / 'reports' / 'index.html')}",
            err=True,
        )

    add_command(
        t,
        "demo",
        demo,
        [keyword_param("seed", int, typer.Option(42, "--seed", help="seed of the whole demo")), *flags_of("demo")],
        f"The whole lifecycle on the built-in data, offline, in $MLREF_HOME/demo/{app.name} (your registry untouched).",
    )
    return t


# ------------------------------------------------------------------ the pipelines the commands, demos and benches share


def train_pipeline(
    app: App[Any, Any, Any],
    ws: Workspace,
    dataset: str | None,
    cfg: Any,
    *,
    tune: int = 0,
    promote: bool | None = None,
    data: Any = None,
    report: bool = True,
) -> Trained[Any]:
    """load -> fit inside a tracking run ``<app>-training`` -> register; ``.to_dict()`` is the ``train`` JSON.

    ``data`` skips loading (a demo that already holds it). The alias is champion when ``promote`` or when there is
    no champion yet (``promote=None``), else challenger. Apps with ``report_after_training`` then evaluate the
    registered model into a report directory (``report=False``: not now, e.g. a demo that evaluates it itself)."""
    from common import tracking

    seed_everything(getattr(cfg, "seed", ws.seed))
    name = app.dataset_name(dataset)
    t0 = time.perf_counter()
    data = app.load_data(ws, dataset, cfg) if data is None else data
    log.info("%s: data %s loaded in %.1f s", app.name, name, time.perf_counter() - t0)
    params = loggable_params(cfg)
    with tracking.start_run(f"{app.name}-training", run_name=f"train-{name}", params=params, tags={"dataset": name}):
        t0 = time.perf_counter()
        fitted = app.fit(ws, data, cfg, tune=tune)
        log.info("%s: fitted in %.1f s", app.name, time.perf_counter() - t0)
        if fitted.metrics:
            tracking.log_metrics(fitted.metrics)
        alias = cli.choose_alias(app.registry_name, promote)
        t0 = time.perf_counter()
        mv = app.register(ws, fitted, data, cfg, dataset=name, alias=alias)
        log.info("%s: registered version %s (%s) in %.1f s", app.name, mv.version, alias, time.perf_counter() - t0)
    trained = Trained(str(mv.version), alias, list(mv.aliases), name, fitted)
    if app.report_after_training and report:
        t0 = time.perf_counter()
        ev = evaluate_pipeline(app, ws, dataset, cfg, data=data, fitted=fitted)
        fitted.summary = {**fitted.summary, "report": str(ev.report)}
        seconds = time.perf_counter() - t0
        log.info("%s: report of version %s written in %.1f s: %s", app.name, mv.version, seconds, ev.report)
    return trained


def evaluate_pipeline(
    app: App[Any, Any, Any],
    ws: Workspace,
    dataset: str | None,
    cfg: Any,
    *,
    data: Any = None,
    fitted: Fitted[Any] | None = None,
) -> Evaluation:
    """load -> a fresh report directory -> the app's evaluation -> ``latest`` link and index row."""
    from common.reports import new_report_dir, publish

    seed_everything(getattr(cfg, "seed", ws.seed))
    name = app.dataset_name(dataset)
    data = app.load_data(ws, dataset, cfg) if data is None else data
    out = new_report_dir(app.name, name, "evaluation", root=ws.reports)
    ev = app.evaluate(ws, data, cfg, out, fitted=fitted)
    publish(out)
    return ev


def monitor_pipeline(
    app: App[Any, Any, Any], ws: Workspace, recent: Path | None, ref: str = "champion", **options: Any
) -> tuple[Monitoring, str]:
    """The model of ``ref`` against ``recent`` -> a report directory ``<app>/<recent>/monitor/<time>``; ``options``
    go to the app's ``monitor`` (``App.options["monitor"]``)."""
    from common.reports import new_report_dir, publish

    model, mv = app.load_model(ws, ref)
    out = new_report_dir(app.name, recent if recent is not None else app.default_dataset, "monitor", root=ws.reports)
    result = app.monitor(ws, model, mv, Path(recent) if recent is not None else None, out, **options)
    publish(out)
    return result, str(mv.version)


def demo_pipeline(
    app: App[Any, Any, Any], ws: Workspace, *, seed: int = 42, values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The demo in the private workspace ``ws.for_demo(app)``, with its config (``values`` on top)."""
    demo_ws = ws.for_demo(app.name)
    cfg = app.demo_config(seed)
    for dotted, value in (values or {}).items():
        set_field(cfg, dotted, parse_flag(app.config_type, dotted, value))
    seed_everything(seed)
    with demo_ws.activate():
        t0 = time.perf_counter()
        summary = app.demo(demo_ws, cfg)
        summary.setdefault("seconds", round(time.perf_counter() - t0, 1))
    return summary

"""Every app implements :class:`common.app.App`: checked on behaviour, on the app's own tiny dataset.

For each app that has a ``pipeline.py``: the CLI built from it trains, evaluates, batch-scores and monitors on the
tiny data; reports land in the shared report directories (``latest`` link, index row with dataset and kind); a
tracking run is recorded; and the pipeline functions a demo calls register the same artefacts as the CLI.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from common import registry
from common.app import App, Tiny, build_cli, field_type, train_pipeline
from common.flags import split_alias
from common.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
PIPELINE_APPS = sorted(p.parent.name for p in (REPO / "apps").glob("*/pipeline.py"))
# apps whose tiny training is too slow for the fast tier (Rasa): their contract runs in the e2e tier
SLOW = {"chatbot"}
runner = CliRunner()


def _app(name: str) -> App[Any, Any, Any]:
    return importlib.import_module(f"apps.{name}.pipeline").APP_IMPL


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.e2e] if name in SLOW else []


@pytest.mark.parametrize("name", PIPELINE_APPS)
def test_app_declares_the_interface(name: str) -> None:
    app = _app(name)
    assert isinstance(app, App) and app.name == name and app.registry_name
    assert dataclasses.is_dataclass(app.config_type)
    for command, fields in app.flags.items():
        assert command in {"train", "evaluate", "retrain", "demo"}, f"{name}: flags for unknown command {command}"
        for spec in fields:
            field_type(app.config_type, split_alias(spec)[0])  # raises on a name the config does not have
    tiny = app.tiny()
    assert isinstance(tiny, Tiny)
    app.config(None, tiny.values)  # the tiny values are valid config values
    main = importlib.import_module(f"apps.{name}.__main__")
    commands = {c.name or c.callback.__name__ for c in main.app.registered_commands}
    assert {"train", "evaluate", "serve", "batch", "monitor", "retrain", "demo", "predict", "bench"} <= commands


def _train_cli(app: App[Any, Any, Any], tiny: Tiny, tmp: Path) -> dict[str, Any]:
    (tmp / "tiny.json").write_text(json.dumps(tiny.config_json()))
    args = ["train", "--config", str(tmp / "tiny.json"), *_ds(tiny)]
    r = runner.invoke(build_cli(app), args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in PIPELINE_APPS])
def test_cli_from_the_interface_trains_evaluates_scores_and_monitors(name: str, tmp_path: Path) -> None:
    app = _app(name)
    tiny = app.tiny()
    ws = Workspace.from_env()
    out = _train_cli(app, tiny, tmp_path)
    assert (
        out["version"] == "1" and out["alias"] == registry.CHAMPION and out["dataset"] == app.dataset_name(tiny.dataset)
    )
    mv = registry.get(app.registry_name, "1")
    assert mv.training_run_id, "the version points at its training run"
    from common import tracking

    runs = tracking.client().search_runs([tracking.experiment_id(f"{app.name}-training")])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"

    # evaluate: a fresh report directory with a `latest` link and an index row naming app, dataset and kind
    r = runner.invoke(build_cli(app), ["evaluate", "--config", str(tmp_path / "tiny.json"), *_ds(tiny)])
    assert r.exit_code == 0, r.output
    report = Path(json.loads(r.stdout)["report"])
    kind_dir = report.parent.parent
    assert kind_dir.name == "evaluation" and kind_dir.parent.parent == ws.reports / name
    assert (kind_dir / "latest").resolve() == report.parent.resolve()
    index = (ws.reports / "index.md").read_text().replace("`", "")
    assert f"| {name} | {kind_dir.parent.name} | evaluation |" in index

    # batch and monitor on recent data
    recent = tiny.recent(tmp_path)
    r = runner.invoke(build_cli(app), ["batch", "-i", str(recent), "-o", str(tmp_path / "scored.csv")])
    assert r.exit_code == 0 and (tmp_path / "scored.csv").stat().st_size > 0, r.output
    r = runner.invoke(build_cli(app), ["monitor", "--dataset", str(recent)])
    assert r.exit_code in (0, 1), r.output
    monitored = json.loads(r.stdout)
    assert (r.exit_code == 1) == bool(monitored["alerts"])
    assert Path(monitored["report"]).parent.parent.name == "monitor"


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in PIPELINE_APPS])
def test_demo_and_cli_register_the_same_artefacts(name: str, tmp_path: Path) -> None:
    """The demo calls train_pipeline; the CLI's train calls it too: on the same data and config both register a
    model directory with the same files and the same held-out metrics."""
    app = _app(name)
    tiny = app.tiny()
    by_cli = _train_cli(app, tiny, tmp_path)
    cli_dir = registry.fetch_model_dir(registry.get(app.registry_name, by_cli["version"]))

    other = Workspace.at(tmp_path / "demo-like")
    with other.activate():
        trained = train_pipeline(app, other, tiny.dataset, app.config(None, tiny.values), promote=True)
        demo_dir = registry.fetch_model_dir(registry.get(app.registry_name, trained.version))
        demo_metrics = registry.get(app.registry_name, trained.version).metrics
    files = sorted(p.relative_to(cli_dir).as_posix() for p in cli_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(demo_dir).as_posix() for p in demo_dir.rglob("*") if p.is_file())
    cli_metrics = registry.get(app.registry_name, by_cli["version"]).metrics
    assert set(cli_metrics) == set(demo_metrics) and all(
        cli_metrics[k] == pytest.approx(demo_metrics[k], rel=1e-6, abs=1e-9) for k in cli_metrics
    )


def _ds(tiny: Tiny) -> list[str]:
    return ["--dataset", tiny.dataset] if tiny.dataset else []

"""The command-line contract of common/cli.py, checked on every app under apps/ (present and future)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from common import cli, registry

REPO = Path(__file__).resolve().parents[2]
APPS = sorted(p.parent.name for p in (REPO / "apps").glob("*/__main__.py"))
# option names every app uses for the same job (a command that exists must have them)
STANDARD_OPTIONS = {
    "train": {"--dataset", "--seed", "--tune", "--promote"},
    "evaluate": {"--dataset", "--seed"},
    "serve": {"--host", "--port"},
    "predict": {"--ref"},
    "batch": {"--input", "--output", "--ref"},
    "monitor": {"--dataset", "--ref"},
    "retrain": {"--dataset", "--margin"},
    "bench": {"--dataset", "--output"},
}
runner = CliRunner()


def _command(app_name: str) -> click.Group:
    module = importlib.import_module(f"apps.{app_name}.__main__")
    return get_command(module.app)


@pytest.mark.parametrize("app_name", APPS)
def test_every_app_has_the_standard_commands_and_option_names(app_name: str) -> None:
    group = _command(app_name)
    assert set(cli.STANDARD_COMMANDS) <= set(group.commands), f"{app_name} lacks commands"
    for name, expected in STANDARD_OPTIONS.items():
        opts = {o for p in group.commands[name].params for o in p.opts}
        assert expected <= opts, f"apps.{app_name} {name}: missing {sorted(expected - opts)}"
    assert set(group.commands["models"].commands) == {"list", "show", "promote", "rollback"}


def test_exit_codes_user_error_bug_and_alert(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    app = cli.create_app("toy", "toy", "a toy")

    @app.command()
    def go(what: str) -> None:
        if what == "alert":
            cli.exit_monitor(True)
        if what == "quiet":
            cli.exit_monitor(False)
        if what == "registry":
            registry.get("nothing-registered")
        raise RuntimeError("a bug")

    codes = {}
    for what in ("alert", "quiet", "registry", "bug"):
        monkeypatch.setattr("sys.argv", ["toy", "go", what])
        with pytest.raises(SystemExit) as exit_:
            cli.run(app)
        codes[what] = exit_.value.code
    assert codes == {"alert": 1, "quiet": 0, "registry": 2, "bug": 3}
    err = capsys.readouterr().err
    assert "error: model 'nothing-registered' has no version or alias 'champion'" in err
    assert "internal error (a bug" in err and "RuntimeError: a bug" in err


def test_a_crash_in_a_real_command_is_not_exit_1(tmp_path: Path) -> None:
    """`monitor` exits 1 for an alert only: a missing champion is 2 (user error), never 1."""
    r = subprocess.run(
        [sys.executable, "-m", "apps.recommender", "monitor", "--dataset", "synthetic-next"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: model 'recommender' has no version")


def _register(tmp_path: Path, name: str, n: int, alias: str | None = None) -> registry.ModelVersion:
    d = tmp_path / f"m{n}"
    d.mkdir()
    (d / "weights.json").write_text(json.dumps({"w": n}))
    (d / "model_card.md").write_text(f"# toy model {n}\n")
    return registry.register(name, d, metrics={"ndcg_10": n / 10}, tags={"dataset": "toy.csv"}, alias=alias)


def test_models_list_show_promote_rollback(tmp_path: Path) -> None:
    from apps.recommender.__main__ import app

    for n in (1, 2, 3):
        _register(tmp_path, "recommender", n, alias=registry.CHAMPION if n < 3 else registry.CHALLENGER)
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["version", "aliases", "dataset"]
    assert lines[1].split()[:3] == ["3", "challenger", "toy.csv"] and lines[2].split()[:2] == ["2", "champion"]
    assert "ndcg_10=0.2" in lines[2]

    r = runner.invoke(app, ["models", "show", "2"])
    shown = json.loads(r.stdout)
    assert shown["model_card"] == "# toy model 2\n" and shown["metrics"] == {"ndcg_10": 0.2}

    r = runner.invoke(app, ["models", "promote", "3"])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"champion": "3", "previous": "2", "changed": True}
    assert registry.version_of("recommender") == "3"
    r = runner.invoke(app, ["models", "rollback"])
    assert json.loads(r.stdout)["champion"] == "2" and registry.version_of("recommender") == "2"
    r = runner.invoke(app, ["models", "rollback"])
    assert registry.version_of("recommender") == "1", r.output
    r = runner.invoke(app, ["models", "rollback"])  # nothing before v1
    assert r.exit_code != 0 and "no earlier champion" in str(r.exception)
    assert registry.version_of("recommender") == "1"

    r = runner.invoke(app, ["models", "promote", "9"])
    assert isinstance(r.exception, registry.NotFoundError) and "'9'" in str(r.exception)


def test_promote_refuses_a_tampered_version(tmp_path: Path) -> None:
    from apps.recommender.__main__ import app

    _register(tmp_path, "recommender", 1, alias=registry.CHAMPION)
    mv = _register(tmp_path, "recommender", 2)
    local = registry.fetch_model_dir(mv)
    (local / "weights.json").write_text('{"w": 666}')
    r = runner.invoke(app, ["models", "promote", "2"])
    assert isinstance(r.exception, registry.IntegrityError)
    assert registry.version_of("recommender") == "1"


def test_demo_home_leaves_the_users_registry_alone(tmp_path: Path, mlref_home: Path) -> None:
    _register(tmp_path, "toy", 1, alias=registry.CHAMPION)
    with cli.demo_home("toy") as home:
        assert home == mlref_home / "demo" / "toy"
        assert registry.find("toy") is None  # an empty registry of its own
        d = tmp_path / "demo-model"
        d.mkdir()
        (d / "w").write_text("x")
        registry.register("toy", d, alias=registry.CHAMPION)
        assert registry.version_of("toy") == "1"
    assert (home / "mlflow.db").exists()
    assert [v.version for v in registry.list_versions("toy")] == ["1"]
    assert registry.get("toy").metrics == {"ndcg_10": 0.1}  # the user's own v1, not the demo's


def test_train_summary_says_what_is_served(tmp_path: Path) -> None:
    _register(tmp_path, "toy", 1, alias=registry.CHAMPION)
    mv = _register(tmp_path, "toy", 2, alias=cli.choose_alias("toy", None))
    assert mv.aliases == (registry.CHALLENGER,)
    line = cli.train_summary("toy", "toy", mv.version)
    assert "version 1 is still the champion" in line and "models promote 2" in line
    mv3 = _register(tmp_path, "toy", 3, alias=cli.choose_alias("toy", True))
    assert "version 3 is now the champion" in cli.train_summary("toy", "toy", mv3.version)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (None, "bench/results/x.json"),
        ("ml-100k", "bench/results/x.json"),
        ("ml-1m", "bench/results/x-ml-1m.json"),
        ("/home/me/My Shop.csv", "bench/results/x-my-shop.json"),
    ],
)
def test_bench_output_never_overwrites_the_reference(dataset: str | None, expected: str) -> None:
    assert cli.bench_output("x", dataset, "ml-100k") == Path(expected)


def test_typer_bad_parameter_is_exit_2() -> None:
    app = cli.create_app("toy", "toy", "a toy")

    @app.command()
    def go(k: int = typer.Option(1, min=1)) -> None:
        pass

    assert runner.invoke(app, ["go", "--k", "0"]).exit_code == 2


def test_config_files_unknown_keys_and_lists(tmp_path: Path) -> None:
    from dataclasses import dataclass

    from common.config import from_json_file
    from common.data import DataError

    @dataclass
    class Toy:
        lr: float = 0.1
        widths: tuple[int, ...] = (8, 16)

    assert from_json_file(Toy, None) == Toy()
    good = tmp_path / "good.json"
    good.write_text('{"lr": 0.5, "widths": [4, 4]}')
    assert from_json_file(Toy, good) == Toy(lr=0.5, widths=(4, 4))
    bad = tmp_path / "bad.json"
    bad.write_text('{"lr": 0.5, "wdiths": [4]}')
    with pytest.raises(DataError, match=r"unknown: \['wdiths'\]"):
        from_json_file(Toy, bad)
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"config .*bad\.json"):
        from_json_file(Toy, bad)

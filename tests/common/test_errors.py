"""One hierarchy of user errors (exit code 2) that every layer can raise without importing a higher one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from common import cli, errors


def test_every_user_error_maps_to_exit_2_and_keeps_its_builtin_base() -> None:
    from common import registry, tracking
    from common.data import DataError, DownloadError

    assert DataError is errors.DataError and DownloadError is errors.DownloadError  # re-exported by common.data
    assert issubclass(errors.ConfigError, errors.DataError)  # `except DataError` around configs still catches it
    assert issubclass(errors.DataError, ValueError) and issubclass(errors.DownloadError, RuntimeError)
    for exc_type in (
        errors.UserError,
        errors.DataError,
        errors.ConfigError,
        errors.DownloadError,
        registry.IntegrityError,
        registry.NotFoundError,
        registry.NoRegistryError,
        registry.LockTimeoutError,
        tracking.DamagedStoreError,
    ):
        assert isinstance(exc_type("x"), cli.user_error_types()), exc_type
    assert not isinstance(RuntimeError("x"), cli.user_error_types())


@dataclass
class Toy:
    lr: float = 0.1


@pytest.mark.parametrize("exc", [errors.ConfigError("config c.json: unknown key"), errors.UserError("no champion")])
def test_cli_prints_one_line_and_exits_2_for_any_user_error(
    exc: Exception, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        raise exc

    @app.command()
    def other() -> None:  # two commands, so typer expects the command's name
        pass

    monkeypatch.setattr("sys.argv", ["prog", "boom"])
    with pytest.raises(SystemExit) as ended:
        cli.run(app)
    assert ended.value.code == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err.strip() == f"error: {exc}"


def test_config_file_errors_are_config_errors(tmp_path: Path) -> None:
    from common.config import from_json_file

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"lr": 0.5, "nope": 1}))
    with pytest.raises(errors.ConfigError, match=r"unknown: \['nope'\]"):
        from_json_file(Toy, bad)

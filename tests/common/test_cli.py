"""common.cli: a user's mistake is one line on stderr with exit code 2; a bug exits 3 with its traceback."""

import pytest
import typer

from common import cli, registry
from common.data import DataError

app = typer.Typer()


@app.command()
def go(what: str) -> None:
    if what == "data":
        raise DataError("my.csv: column 'amount' is below the minimum 0 in 1 row(s): row 3: -12.5")
    if what == "registry":
        registry.get("nothing-registered")
    raise RuntimeError("a bug")


def run(monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr("sys.argv", ["prog", *args])
    cli.run(app)


def test_data_error_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(monkeypatch, "data")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: my.csv: column 'amount' is below the minimum 0 in 1 row(s): row 3: -12.5\n"


def test_missing_champion_is_a_user_error(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(monkeypatch, "registry")
    assert exit_.value.code == 2 and "no version or alias 'champion'" in capsys.readouterr().err


def test_bugs_exit_3_with_the_traceback(monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run(monkeypatch, "bug")
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "internal error (a bug" in err

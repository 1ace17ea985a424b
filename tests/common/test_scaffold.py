"""`make new-app NAME=x` / `python -m common.scaffold x`: a new app whose commands, demo and tests work at once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.scaffold import check_name, scaffold

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["Churn", "x", "1abc", "class", "json", "common", "my-app", "a" * 40])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="app name"):
        check_name(name, tmp_path)


def test_the_templates_live_outside_the_import_package_and_are_found() -> None:
    from common import scaffold as module

    assert module.TEMPLATE == REPO / "templates" / "app"
    assert (module.TEMPLATE / "app" / "__main__.py.tmpl").is_file()
    assert not (REPO / "common" / "scaffold_template").exists()


def test_missing_templates_are_an_error_not_an_empty_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from common import scaffold as module

    monkeypatch.setattr(module, "TEMPLATE", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no templates"):
        scaffold("churn", tmp_path)
    assert not (tmp_path / "apps").exists()


def test_an_existing_app_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "apps" / "churn").mkdir(parents=True)
    (tmp_path / "apps" / "churn" / "model.py").write_text("# mine\n")
    with pytest.raises(ValueError, match="exists already"):
        scaffold("churn", tmp_path)
    assert (tmp_path / "apps" / "churn" / "model.py").read_text() == "# mine\n"


def _project_copy(root: Path) -> None:
    """The parts of the repository a scaffolded app needs: common/, the templates, the pytest config, the shared
    fixtures."""
    shutil.copytree(REPO / "common", root / "common", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "templates", root / "templates")
    shutil.copy(REPO / "pyproject.toml", root)
    for pkg in ("apps", "tests"):
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text("")
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests")
    (root / "tests" / "common").mkdir()
    (root / "tests" / "common" / "__init__.py").write_text("")
    shutil.copy(REPO / "tests" / "common" / "test_cli_contract.py", root / "tests" / "common")


@pytest.mark.e2e
def test_scaffolded_app_passes_its_tests_lint_and_the_cli_contract(tmp_path: Path) -> None:
    _project_copy(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "common.scaffold", "churn"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "apps" / "churn" / "__main__.py").exists() and (tmp_path / "tests" / "churn").is_dir()
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.exists():
        lint = subprocess.run(
            [str(ruff), "check", "apps", "tests/churn"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert lint.returncode == 0, lint.stdout
    # its own unit tests and its demo (the e2e test), plus the contract test, which now sees only this app
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/churn",
            "tests/common/test_cli_contract.py::test_every_app_has_the_standard_commands_and_option_names",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "6 passed" in r.stdout
    # the same command a user types twice refuses the second time (exit 2), leaving the app as it was
    again = subprocess.run(
        [sys.executable, "-m", "common.scaffold", "churn"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "exists already" in again.stderr

"""The ``mlref`` console script dispatches to the apps, and says what exists when asked for one that does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from common.launcher import available_apps

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, exe: list[str] | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    cmd = (exe or [sys.executable, "-m", "common.launcher"]) + list(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"MLREF_HOME": str(home)} if home else {})}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)


def test_every_app_is_found() -> None:
    assert set(available_apps()) >= {"chatbot", "fraud", "maintenance", "recommender", "vision"}


def test_dispatches_to_the_app_with_its_own_exit_codes(tmp_path: Path) -> None:
    r = _run("fraud", "--help")
    assert r.returncode == 0 and "fraud" in r.stdout and "train" in r.stdout and "retrain" in r.stdout
    r = _run("recommender", "models", "show", "999", home=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: there is no registry yet")


def test_unknown_app_and_no_app_are_user_errors() -> None:
    r = _run("frod", "train")
    assert r.returncode == 2 and "unknown app 'frod'" in r.stderr and "fraud" in r.stderr
    r = _run()
    assert r.returncode == 2 and "usage: mlref <app> <command>" in r.stdout


def test_installed_console_script() -> None:
    exe = str(Path(sys.executable).parent / "mlref")
    assert shutil.which(exe), "mlref is not installed in this environment: make setup-main (pip install -e .)"
    r = _run("vision", "--help", exe=[exe])
    assert r.returncode == 0 and "Usage: mlref vision" in r.stdout

"""Settings: a relative MLREF_HOME is fixed to the directory it was read in."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import get_settings, override


def test_relative_home_and_data_dir_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLREF_HOME", ".mlref")
    monkeypatch.setenv("MLREF_DATA_DIR", "datasets")
    settings = get_settings()
    assert settings.home == tmp_path / ".mlref" and settings.data_path == tmp_path / "datasets"
    work = settings.path("work", "chatbot", "x")
    assert work.is_absolute() and work.parent.is_dir()
    # a subprocess started in another directory (Rasa, a server) must still find what these paths name
    monkeypatch.chdir(tmp_path / ".mlref")
    assert work.parent.is_dir()
    with override(home=settings.home / "demo" / "chatbot"):
        assert get_settings().path("registry").parent == tmp_path / ".mlref" / "demo" / "chatbot"

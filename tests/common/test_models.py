"""common.models: ``models list`` and ``models show`` agree, and a version is the champion or the challenger."""

from __future__ import annotations

import json
from pathlib import Path

from common import models, registry

NAME = "toy"


def _register(tmp_path: Path, n: int, alias: str | None = None) -> registry.ModelVersion:
    d = tmp_path / f"m{n}"
    d.mkdir()
    (d / "weights.json").write_text(json.dumps({"w": n}))
    return registry.register(NAME, d, metrics={"auc": n / 10}, tags={"dataset": "toy.csv"}, alias=alias)


def test_show_reports_the_same_creation_time_and_aliases_as_list(tmp_path: Path) -> None:
    _register(tmp_path, 1, alias=registry.CHAMPION)
    _register(tmp_path, 2, alias=registry.CHALLENGER)
    rows = {r["version"]: r for r in models.list_versions(NAME)}
    for version in ("1", "2"):
        shown = models.show(NAME, version)
        assert shown["created"] is not None
        assert shown["created"] == rows[version]["created"]
        assert shown["aliases"] == rows[version]["aliases"]
    assert rows["1"]["aliases"] == ["champion"] and rows["2"]["aliases"] == ["challenger"]


def test_promoting_the_challenger_moves_champion_and_drops_its_challenger_alias(tmp_path: Path) -> None:
    _register(tmp_path, 1, alias=registry.CHAMPION)
    _register(tmp_path, 2, alias=registry.CHALLENGER)
    models.promote(NAME, "2")
    rows = {r["version"]: r["aliases"] for r in models.list_versions(NAME)}
    assert rows == {"2": ["champion"], "1": []}
    assert models.show(NAME, "2")["aliases"] == ["champion"]
    assert registry.version_of(NAME, registry.CHALLENGER) is None

    models.rollback(NAME)
    rows = {r["version"]: r["aliases"] for r in models.list_versions(NAME)}
    assert rows == {"1": ["champion"], "2": []}  # the rolled-back version does not come back as challenger


def test_promoting_another_version_leaves_the_challenger_alone(tmp_path: Path) -> None:
    _register(tmp_path, 1, alias=registry.CHAMPION)
    _register(tmp_path, 2)
    _register(tmp_path, 3, alias=registry.CHALLENGER)
    models.promote(NAME, "2")
    rows = {r["version"]: r["aliases"] for r in models.list_versions(NAME)}
    assert rows == {"3": ["challenger"], "2": ["champion"], "1": []}


def test_rollback_to_a_version_that_became_challenger_again_serves_it_only_as_champion(tmp_path: Path) -> None:
    _register(tmp_path, 1, alias=registry.CHAMPION)
    _register(tmp_path, 2)
    models.promote(NAME, "2")
    registry.set_alias(NAME, registry.CHALLENGER, "1")  # e.g. re-evaluated and queued again
    models.rollback(NAME)
    rows = {r["version"]: r["aliases"] for r in models.list_versions(NAME)}
    assert rows == {"2": [], "1": ["champion"]}

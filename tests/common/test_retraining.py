"""common.retraining: the promotion rule, champion vs challenger, and the decision record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import registry, retraining


def test_decide_rule() -> None:
    assert retraining.decide(0.80, 0.81, margin=0.005)[0] is True
    assert retraining.decide(0.80, 0.804, margin=0.005)[0] is False  # better, but not by the margin
    assert retraining.decide(0.80, 0.79)[0] is False
    assert retraining.decide(20.0, 18.0, higher_is_better=False)[0] is True  # e.g. RMSE
    assert retraining.decide(None, 0.5)[0] is True
    assert retraining.decide(0.8, float("nan"))[0] is False


def _register(tmp_path: Path, score: float, alias: str | None = None) -> registry.ModelVersion:
    d = tmp_path / f"m{score}"
    d.mkdir()
    (d / "score.json").write_text(json.dumps(score))
    return registry.register("toy", d, alias=alias)


def _evaluate(mv: registry.ModelVersion) -> float:
    model, _ = registry.load("toy", mv.version, lambda p: json.loads((p / "score.json").read_text()))
    return model


def test_challenger_that_wins_is_promoted_and_recorded(tmp_path: Path, mlref_home: Path) -> None:
    champ = _register(tmp_path, 0.70, alias="champion")
    chall = _register(tmp_path, 0.75)
    d = retraining.champion_vs_challenger("toy", chall, _evaluate, metric="ap", margin=0.01)
    assert d.promoted and d.champion_version == champ.version and d.challenger_score == pytest.approx(0.75)
    assert registry.get("toy").version == chall.version
    logged = [json.loads(x) for x in (mlref_home / "decisions" / "toy.jsonl").read_text().splitlines()]
    assert logged[-1]["promoted"] is True and logged[-1]["champion_score"] == pytest.approx(0.70)
    runs = retraining.tracking.client().search_runs(
        [retraining.tracking.experiment_id("toy-retraining")])
    assert runs[0].data.metrics["promoted"] == 1.0


def test_challenger_that_loses_is_kept_as_challenger(tmp_path: Path) -> None:
    champ = _register(tmp_path, 0.70, alias="champion")
    chall = _register(tmp_path, 0.705)
    d = retraining.champion_vs_challenger("toy", chall, _evaluate, metric="ap", margin=0.01)
    assert not d.promoted and "does not exceed margin" in d.reason
    assert registry.get("toy").version == champ.version
    assert registry.get("toy", "challenger").version == chall.version
    assert [x.promoted for x in retraining.history("toy")] == [False]


def test_first_model_becomes_champion(tmp_path: Path) -> None:
    first = _register(tmp_path, 0.5)
    assert retraining.champion_vs_challenger("toy", first, _evaluate, metric="ap").promoted
    assert registry.get("toy").version == first.version
    with pytest.raises(ValueError, match="already the champion"):
        retraining.champion_vs_challenger("toy", first, _evaluate, metric="ap")

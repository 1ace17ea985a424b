"""The retrain gate: newly labelled messages -> challenger; promoted only if every test story passes and its held-out
NLU accuracy is at least the champion's. Training is replaced by a fake here (the real one is tested in
test_project.py); registration, the decision record and promotion are real."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from apps.chatbot import lifecycle
from apps.chatbot.config import Config
from common import registry, retraining
from common.data import DataError

HOLDOUT = {"per_intent": {"greet": {"f1": 1.0, "support": 3}}, "macro_f1": 0.9, "n": 58}


def fake_trained(tmp: Path, *, accuracy: float, stories_ok: bool = True) -> lifecycle.Trained:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yml").write_text("pipeline: []\n")
    (tmp / "model.tar.gz").write_bytes(f"archive {accuracy} {stories_ok}".encode())
    stories = {
        "total": 12,
        "passed": 12 if stories_ok else 11,
        "failed": [] if stories_ok else ["happy path"],
        "all_passed": stories_ok,
    }
    return lifecycle.Trained(
        model=tmp / "model.tar.gz",
        workdir=tmp,
        train_s=1.0,
        stories=stories,
        holdout={**HOLDOUT, "accuracy": accuracy},
        data=pd.DataFrame({"text": ["hi", "where is my order"], "intent": ["greet", "order_status"]}),
    )


@pytest.fixture
def champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> registry.ModelVersion:
    mv = lifecycle.register(
        fake_trained(tmp_path / "champ", accuracy=0.95), Config(quick=True), dataset="project", alias=registry.CHAMPION
    )
    monkeypatch.setattr(lifecycle, "_holdout_accuracy", lambda model, cfg, ws=None: 0.95)  # the champion, re-evaluated
    return mv


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    path = tmp_path / "labelled.csv"
    path.write_text("text,intent\nparcel gone missing?,order_status\nhey hey,greet\n")  # "hey hey" is held out
    return path


@pytest.mark.parametrize(
    ("accuracy", "stories_ok", "promoted"),
    [
        (0.95, True, True),  # at least as good: promoted
        (0.97, True, True),
        (0.93, True, False),  # worse on held-out NLU
        (0.99, False, False),  # better, but a test story fails
    ],
)
def test_retrain_gate(
    champion: registry.ModelVersion,
    labelled: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    accuracy: float,
    stories_ok: bool,
    promoted: bool,
) -> None:
    seen: list[pd.DataFrame] = []

    def build(cfg: Config, *, extra: pd.DataFrame | None = None, **kwargs: object) -> lifecycle.Trained:
        seen.append(extra)
        return fake_trained(tmp_path / "challenger", accuracy=accuracy, stories_ok=stories_ok)

    monkeypatch.setattr(lifecycle, "build", build)
    result = lifecycle.retrain(labelled, Config(quick=True))
    assert seen[0]["text"].tolist() == ["parcel gone missing?"]  # the held-out message was not trained on
    assert result["added_messages"] == 1 and result["promoted"] is promoted
    assert registry.version_of("chatbot") == (result["challenger_version"] if promoted else champion.version)
    if not stories_ok:
        assert result["reason"] == "test stories failed: ['happy path']"
    assert retraining.history("chatbot")[-1].promoted is promoted  # every decision is recorded


def test_retrain_refuses_intents_outside_the_domain(champion: registry.ModelVersion, tmp_path: Path) -> None:
    path = tmp_path / "labelled.csv"
    path.write_text("text,intent\nbook a table,restaurant_booking\n")
    with pytest.raises(DataError, match=r"intents not in the assistant's domain: \['restaurant_booking'\]"):
        lifecycle.retrain(path, Config(quick=True))

"""The chatbot behind :class:`common.app.App` (issue 18), without Rasa: the gateway is the app's service (starting it
starts Rasa and the action server, stopping it stops them), monitor and batch take a file of messages, evaluate
writes a shared report directory, config flags. Rasa is replaced by fakes here; the same paths with real Rasa run
in test_e2e.py and the contract test (tests/common/test_app_contract.py, e2e tier)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from apps.chatbot import nlu, rasa_env, service
from apps.chatbot.__main__ import app
from apps.chatbot.config import Config
from apps.chatbot.pipeline import APP_IMPL, NO_MODEL_YET
from common.data import DataError
from common.errors import ConfigError, UserError
from common.workspace import Workspace
from tests.chatbot.test_hardening import RASA_TOKEN, SECRET, FakeRasa, token
from tests.chatbot.test_monitor import TRAINING_MIX, register_reference

runner = CliRunner()
GUESSES = {"hi": ("greet", 0.95), "where is my order": ("order_status", 0.9), "zzz": ("nlu_fallback", 0.2)}
REJECTED = {"book a flight"}  # the classifier's out-of-scope threshold rejects it (parse.py's out_of_scope verdict)


class FakeParser:
    """``nlu.Parser`` without Rasa: intents from :data:`GUESSES` (anything else: faq at 0.5)."""

    def __init__(self, model: Path, cfg: Any = None, **kwargs: Any) -> None:
        assert Path(model).name == "model.tar.gz"

    def __enter__(self) -> FakeParser:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def parse(self, texts: list[str]) -> list[dict[str, Any]]:
        out = []
        for text in texts:
            intent, conf = GUESSES.get(text, ("faq", 0.5))
            top, top_conf = ("greet", 0.3) if intent == "nlu_fallback" else (intent, conf)
            verdict = {"rejected": text in REJECTED, "score": 0.3}
            out.append(
                {
                    "intent": intent,
                    "confidence": conf,
                    "top_intent": top,
                    "top_confidence": top_conf,
                    "out_of_scope": verdict,
                }
            )
        return out


@pytest.fixture
def fake_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlu, "Parser", FakeParser)


@pytest.fixture
def rasa() -> Iterator[FakeRasa]:
    fake = FakeRasa()
    yield fake
    fake.close()


def test_the_service_is_the_gateway_and_starts_and_stops_rasa_with_it(
    tmp_path: Path, rasa: FakeRasa, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`App.service(ws)` used to be missing (issue 18: no service contract): the gateway alone could not serve."""
    register_reference(tmp_path, ["greet"])
    events: list[str] = []
    seen: dict[str, Any] = {}

    @contextmanager
    def fake_servers(model, run_dir, cfg, **kwargs):
        seen.update(kwargs, model=model)
        events.append("start")
        try:
            yield rasa_env.Servers(
                url=rasa.url, actions_url="http://127.0.0.1:9", load_s=0, logs=run_dir, token=RASA_TOKEN
            )
        finally:
            events.append("stop")

    monkeypatch.setattr(rasa_env, "servers", fake_servers)
    ws = Workspace.from_env()
    gateway = APP_IMPL.service(ws, Config(refresh_s=0), secret=SECRET)
    assert TestClient(gateway).get("/readyz").status_code == 503 and events == []  # nothing runs until it starts
    with TestClient(gateway) as client:
        assert events == ["start"] and client.get("/readyz").json() == {
            "ready": True,
            "model": "chatbot",
            "version": "1",
        }
        r = client.post("/v1/messages", json={"sender": "web-1", "text": "hello"}, headers=token("alice"))
        assert r.status_code == 200 and r.json()["messages"][0]["text"] == "echo: hello", r.text
        assert r.json()["model_version"] == "1"
    assert events == ["start", "stop"]
    assert seen["model"].name == "model.tar.gz" and seen["tracker_db"] == ws.home / "chatbot" / "tracker.db"
    assert seen["handoff_log"] == ws.home / "chatbot" / "handoffs.jsonl"


def test_the_service_before_any_training_says_to_train_first() -> None:
    with pytest.raises(UserError, match="no chatbot model is registered yet") as err:
        APP_IMPL.service(Workspace.from_env())
    assert str(err.value) == NO_MODEL_YET


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn exits its thread
def test_a_gateway_whose_rasa_cannot_start_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A background gateway used to report only 'server did not start' for Rasa's own error."""

    @contextmanager
    def fake_servers(model, run_dir, cfg, **kwargs):
        raise DataError("port 5005 on 127.0.0.1 is already in use")
        yield

    monkeypatch.setattr(rasa_env, "servers", fake_servers)
    model = tmp_path / "model.tar.gz"
    run = service.running(model, tmp_path / "run", Config(), tracker_db=tmp_path / "t.db", secret=SECRET)
    with pytest.raises(DataError, match="already in use"), run:
        pass


def test_monitor_classifies_a_file_of_recent_messages(tmp_path: Path, fake_parser: None) -> None:
    register_reference(tmp_path, TRAINING_MIX)
    csv = tmp_path / "recent.csv"
    texts = ["hi", "where is my order", "zzz", "hi", "how long is delivery", "/greet", "book a flight"]
    pd.DataFrame({"sender_id": ["a", "a", "b", "c", "c", "c", "d"], "text": texts}).to_csv(csv, index=False)
    r = runner.invoke(app, ["monitor", "--dataset", str(csv)])
    assert r.exit_code == 1, r.output  # a fallback and a rejection in 6 messages: over the 15% limit
    out = json.loads(r.stdout)
    assert out["messages"] == 6 and out["conversations"] == 4  # a button payload is not language
    assert out["handoff_rate"] is None  # a file of messages records no handoffs
    assert out["fallback_rate"] == pytest.approx(2 / 6) and "fallback rate 33.3% > 15%" in out["alerts"]
    low = pd.read_csv(out["low_confidence_csv"])
    assert set(low["text"]) == {"zzz", "how long is delivery", "book a flight"} and list(low.columns[:2]) == [
        "text",
        "intent",
    ]
    assert Path(out["report"]).parent.parent.name == "monitor"
    (tmp_path / "notext.csv").write_text("message\nhi\n")
    r = runner.invoke(app, ["monitor", "--dataset", str(tmp_path / "notext.csv")])
    assert isinstance(r.exception, DataError) and "no 'text' column" in str(r.exception)


def test_batch_and_evaluate_through_the_standard_commands(tmp_path: Path, fake_parser: None) -> None:
    register_reference(tmp_path, TRAINING_MIX)
    csv = tmp_path / "messages.csv"
    pd.DataFrame({"text": ["hi", "zzz"]}).to_csv(csv, index=False)
    r = runner.invoke(app, ["batch", "-i", str(csv), "-o", str(tmp_path / "intents.csv")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == 2
    scored = pd.read_csv(tmp_path / "intents.csv")
    assert scored["intent"].tolist() == ["greet", "nlu_fallback"] and list(scored.columns) == [
        "text",
        "intent",
        "confidence",
    ]
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("message,label\nhi,greet\nwhere is my order,order_status\nhow long is delivery,faq/delivery\n")
    args = ["evaluate", "-d", str(labelled), "--text-column", "message", "--intent-column", "label", "--ref", "1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["version"] == "1" and out["metrics"]["model"]["accuracy"] == 1.0  # faq/delivery scored as faq
    assert 0 <= out["metrics"]["majority"]["accuracy"] < 1.0
    report = Path(out["report"])
    assert report.parent.parent.name == "evaluation" and (report.parent.parent / "latest").exists()
    assert (report.parent / "predictions.csv").is_file()


def test_config_flags_and_checks(tmp_path: Path) -> None:
    quick = APP_IMPL.config(None, {"quick": True})
    assert (quick.response_selector_epochs, quick.ted_epochs, quick.cv_folds) == (15, 5, 0)
    assert Config(quick=True).cv_folds == 0 and Config().cv_folds == 3
    with pytest.raises(ConfigError, match="ted_epochs"):
        Config(ted_epochs=-1)
    with pytest.raises(ConfigError, match="fallback_threshold"):
        APP_IMPL.config(None, {"fallback_threshold": 1.5})
    r = runner.invoke(app, ["train", "--tune", "3"])
    assert r.exit_code == 2 and "--tune is not supported by the chatbot app" in r.output
    r = runner.invoke(app, ["retrain"])
    assert isinstance(r.exception, UserError) and "retrain needs --dataset" in str(r.exception)
    tiny = APP_IMPL.tiny()
    recent = pd.read_csv(tiny.recent(tmp_path))
    assert len(recent) > 0 and "text" in recent.columns

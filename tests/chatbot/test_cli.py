"""The chatbot's command line: user errors are one line and exit 2, before any Rasa process starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apps.chatbot.__main__ import app
from apps.chatbot.config import REPO

runner = CliRunner()


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "apps.chatbot", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env={**os.environ, **env},
    )


def test_a_missing_rasa_environment_says_how_to_build_it(tmp_path: Path) -> None:
    r = _run("train", "--quick", MLREF_CHATBOT_VENV=str(tmp_path / "nowhere"))
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the chatbot's Rasa environment is missing") and "make setup-chatbot" in last


def test_no_champion_is_a_user_error() -> None:
    r = runner.invoke(app, ["predict", "where is my order?"])
    assert r.exit_code != 0 and "has no version or alias 'champion'" in str(r.exception)


def test_serve_binds_only_the_gateway_to_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--host/--port are the gateway's (it warns beyond loopback without an API key, like every service); Rasa and
    the action server are always on 127.0.0.1 (tests/chatbot/test_e2e.py checks the sockets)."""
    from contextlib import contextmanager

    from apps.chatbot import rasa_env
    from common import serving
    from tests.chatbot.test_monitor import register_reference

    register_reference(tmp_path, ["greet"])
    served: dict = {}

    @contextmanager
    def fake_servers(model, run_dir, cfg, **kwargs):
        yield rasa_env.Servers(url="http://127.0.0.1:9", actions_url="http://127.0.0.1:9", load_s=0, logs=run_dir)

    monkeypatch.setattr(rasa_env, "servers", fake_servers)
    monkeypatch.setattr(serving, "serve", lambda app, host, port, **kw: served.update(host=host, port=port, app=app))
    port = rasa_env.free_port()
    r = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--port", str(port), "--refresh-s", "0"])
    assert r.exit_code == 0, r.output
    assert (served["host"], served["port"]) == ("0.0.0.0", port)
    assert served["app"].title == "mlref chatbot gateway"


def test_bad_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"epochs": 3}')
    r = runner.invoke(app, ["train", "--config", str(cfg)])
    assert r.exit_code != 0 and "expected an object with keys from" in str(r.exception)


def test_config_values_reach_the_rasa_pipeline() -> None:
    from apps.chatbot.config import Config
    from apps.chatbot.rasa_env import pipeline_config

    cfg = Config(classifier_c=0.5, response_selector_epochs=7, ted_epochs=3, fallback_threshold=0.55)
    doc = pipeline_config(cfg)
    by_name = {c["name"].rsplit(".", 1)[-1]: c for c in doc["pipeline"]}
    assert by_name["SentenceLogRegClassifier"]["C"] == 0.5 and by_name["ResponseSelector"]["epochs"] == 7
    assert by_name["FallbackClassifier"]["threshold"] == 0.55
    assert next(p for p in doc["policies"] if p["name"] == "TEDPolicy")["epochs"] == 3
    assert pipeline_config(Config())["pipeline"][5]["C"] == "auto"  # picked by cross-validation
    bench = pipeline_config(cfg, nlu_only=True)  # what nlu-bench trains: the intent pipeline alone
    names = [c["name"] for c in bench["pipeline"]]
    assert "ResponseSelector" not in names and "FallbackClassifier" not in names and "policies" not in bench
    assert "components.featurizer.MiniLMFeaturizer" in names

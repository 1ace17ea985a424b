"""The assistant's conversations on Redis (MLREF_REDIS_URL): Rasa's tracker store and lock store there instead of
SQLite, so two Rasa processes serve one conversation consistently - a conversation split across them keeps its
form and slots. A real redis-server (tests/redis_server.py), no mock."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from apps.chatbot import rasa_env
from apps.chatbot.config import Config
from common.data import DataError
from common.serving import free_port

CHANNEL = "/webhooks/gateway/webhook"  # project/gateway_channel.py; the token header below


def test_endpoints_sqlite_by_default_redis_when_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLREF_REDIS_URL", raising=False)
    default = yaml.safe_load(
        rasa_env.write_endpoints(tmp_path / "a.yml", actions_port=1, tracker_db=tmp_path / "t.db").read_text()
    )
    assert default["tracker_store"]["type"] == "SQL" and "lock_store" not in default
    monkeypatch.setenv("MLREF_REDIS_URL", "redis://:s3cret@127.0.0.1:6390/3")
    path = rasa_env.write_endpoints(tmp_path / "b.yml", actions_port=1, tracker_db=tmp_path / "t.db")
    both = yaml.safe_load(path.read_text())
    for store in ("tracker_store", "lock_store"):
        assert both[store] | {"password": None} == {
            "type": "redis",
            "url": "127.0.0.1",
            "port": 6390,
            "db": 3,
            "key_prefix": "mlrefchatbot",
            "password": None,
        }
        assert both[store]["password"] == "${MLREF_REDIS_PASSWORD}"  # the secret is not in the file
    assert "s3cret" not in path.read_text()
    monkeypatch.setenv("MLREF_REDIS_URL", "http://127.0.0.1:6379")
    with pytest.raises(DataError, match="MLREF_REDIS_URL"):
        rasa_env.write_endpoints(tmp_path / "c.yml", actions_port=1, tracker_db=tmp_path / "t.db")


def _say(server: rasa_env.Servers, sender: str, text: str) -> str:
    r = httpx.post(
        server.url + CHANNEL,
        json={"sender": sender, "message": text},
        headers={"X-Rasa-Token": server.token},
        timeout=60,
    )
    r.raise_for_status()
    return " ".join(m.get("text") or "" for m in r.json())


@pytest.mark.e2e
def test_two_rasa_processes_share_one_conversation(trained, redis_url: str, tmp_path: Path, monkeypatch) -> None:
    """Turn 1 on process A opens the order form; turn 2 on process B fills its slot and answers (B read A's
    tracker from Redis); both processes then hold the whole conversation, in Redis, not in the SQLite file."""
    monkeypatch.setenv("MLREF_REDIS_URL", redis_url)
    cfg, db = Config(quick=True), tmp_path / "tracker.db"
    ports = [free_port() for _ in range(4)]
    with (
        rasa_env.servers(
            trained.model, tmp_path / "a", cfg, tracker_db=db, rasa_port=ports[0], actions_port=ports[1]
        ) as a,
        rasa_env.servers(
            trained.model, tmp_path / "b", cfg, tracker_db=db, rasa_port=ports[2], actions_port=ports[3]
        ) as b,
    ):
        assert "order number" in _say(a, "bob:split", "where is my order?")
        assert "Order SH61234 (yoga mat) is waiting for payment" in _say(b, "bob:split", "SH61234")
        for server in (a, b):
            tracker = httpx.get(
                f"{server.url}/conversations/bob:split/tracker", params={"token": server.token}, timeout=30
            ).json()
            texts = [e.get("text") for e in tracker["events"] if e["event"] == "user"]
            assert texts == ["where is my order?", "SH61234"], texts
            slots = [(e["name"], e["value"]) for e in tracker["events"] if e["event"] == "slot"]
            assert ("order_id", "SH61234") in slots, slots  # filled on B in the form A opened
            bot = " ".join(e.get("text") or "" for e in tracker["events"] if e["event"] == "bot")
            assert "order number" in bot and "SH61234 (yoga mat)" in bot  # both turns, whichever answered
    import redis

    with redis.Redis.from_url(redis_url) as client:
        assert any(b"bob:split" in k for k in client.keys("mlrefchatbot*"))
    assert not db.exists()

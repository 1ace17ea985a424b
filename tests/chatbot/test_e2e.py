"""The demo end to end on the session's model: both servers and the gateway started, the scripted conversation
through the gateway (order form, custom actions, other apps down), stopped cleanly; the tracker store then
monitored, and the CLI client used. `serve` is checked from outside: only the gateway answers users, Rasa's admin
API, its channels and the action server refuse calls without their per-run tokens."""

from __future__ import annotations

import subprocess
import sys

import pytest

from apps.chatbot import demo, lifecycle, rasa_env
from apps.chatbot.config import REPO
from apps.chatbot.pipeline import APP_IMPL
from common import registry
from common.app import demo_pipeline
from common.workspace import Workspace


@pytest.mark.e2e
def test_demo_conversation_over_rest_then_clean_stop_and_monitor(
    trained: lifecycle.Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo through the pipeline functions (train_pipeline, evaluate_pipeline, app.service, app.batch,
    monitor_pipeline); its Rasa training is the session's model (the pipeline's fit runs on it)."""
    monkeypatch.setattr(lifecycle, "build", lambda cfg, **kwargs: trained)
    ws = Workspace.from_env()
    summary = demo_pipeline(APP_IMPL, ws)
    turns = {t["user"]: " ".join(t["bot"]) for t in summary["conversation"]}
    assert all(t["ok"] for t in summary["conversation"]), summary["conversation"]
    assert "Order SH12345 (running shoes, sports socks) is out for delivery" in turns["it's SH12345"]
    assert "doesn't look like an order number" in turns["SH123"]  # validated by the action server
    assert "can't fetch recommendations right now" in turns["can you recommend something for me?"]
    assert summary["model_load_s"] > 0
    mon = summary["monitor"]
    # outside the assistant's intents (the calibrated threshold): what it can do and a handoff offer, not a guess
    oos = turns["blorp fizzle wug"]
    assert "can't help with that here" in oos and "check an order" in oos and "pass you to a colleague" in oos
    assert "Did you want to" not in oos
    handoff = turns["talk to a human"]
    assert "passing you to a colleague" in handoff and "(reference H-" in handoff
    assert all(b for t in summary["conversation"] for b in t["bot"])  # no empty message: payloads stay internal
    assert "welcome" in turns["thanks"]  # after the handoff the conversation goes on
    assert mon["messages"] == len(demo.SCRIPT) and mon["conversations"] == 1
    assert mon["handoff_rate"] == 1.0 and mon["fallback_rate"] == 1 / len(demo.SCRIPT)  # the rejected message
    # the gateway and both servers are gone: their ports are free again
    assert set(summary["urls"]) == {"gateway", "rasa", "actions"}
    for url in summary["urls"].values():
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert not rasa_env.port_open("127.0.0.1", port)
    assert summary["test_stories"]["all_passed"] and summary["evaluation"]["model"]["accuracy"] > 0.8
    assert summary["batch"]["rows"] == len(demo.SCRIPT) and "/evaluation/" in summary["report"]
    with ws.for_demo("chatbot", fresh=False).activate():  # the demo's own registry, not the user's
        assert registry.version_of("chatbot") == summary["version"]
    assert registry.version_of("chatbot") is None


@pytest.mark.e2e
def test_chat_client_says_when_no_server_answers() -> None:
    port = rasa_env.free_port()
    r = subprocess.run(
        [sys.executable, "-m", "apps.chatbot", "chat", "--url", f"http://127.0.0.1:{port}"],
        input="hello\n/quit\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "no answer from" in r.stderr and "is `python -m apps.chatbot serve` running?" in r.stderr


@pytest.mark.e2e
def test_serve_answers_through_the_gateway_only_and_stops_everything_on_sigterm(
    trained: lifecycle.Trained, mlref_home
) -> None:
    """`python -m apps.chatbot serve` (what `make serve-chatbot` runs) on the registered champion."""
    import json
    import os
    import signal
    import sqlite3
    import time

    import httpx

    from apps.chatbot import identity, service
    from apps.chatbot.bench import webhook_latency
    from apps.chatbot.config import Config
    from tests.chatbot.test_hardening import _listen_addresses

    lifecycle.register(trained, Config(quick=True), dataset="project", alias=registry.CHAMPION)
    port, rasa_port, actions_port = rasa_env.free_port(), rasa_env.free_port(), rasa_env.free_port()
    secret = "e2e-secret-0123456789abcdef"
    handoffs = mlref_home / "my-handoffs.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.chatbot",
            "serve",
            "--port",
            str(port),
            "--rasa-port",
            str(rasa_port),
            "--actions-port",
            str(actions_port),
            "--refresh-s",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLREF_CHATBOT_SECRET": secret, "MLREF_HANDOFF_LOG": str(handoffs)},
    )
    gw = f"http://127.0.0.1:{port}"
    bob = identity.mint_token("bob", secret.encode())
    try:
        deadline = time.monotonic() + 900
        while not rasa_env.port_open("127.0.0.1", port) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(1)
        assert httpx.get(gw + "/readyz").json()["ready"] is True
        answer = service.say(gw, "chat-1", "where is order SH30112?", token=bob)
        assert "Order SH30112 (desk lamp) is delivered" in " ".join(m.get("text") or "" for m in answer)
        # cancelling says what it needs and looks the order up (was a silent handoff)
        said = " ".join(m.get("text") or "" for m in service.say(gw, "chat-2", "cancel my order SH30112", token=bob))
        assert "can't cancel orders myself" in said and "Order SH30112 (desk lamp) is delivered" in said

        # a FAQ inside the order form is answered, the form asks once more for the id, then goes on
        def said(conversation: str, text: str) -> str:
            return " ".join(m.get("text") or "" for m in service.say(gw, conversation, text, token=bob))

        assert "order number" in said("chat-3", "where is my order?")
        faq = said("chat-3", "how long does delivery take?")
        assert "working days" in faq and faq.count("What's your order number?") == 1
        assert "Order SH61234 (yoga mat) is waiting for payment" in said("chat-3", "SH61234")
        # out of scope (the classifier's calibrated threshold): an honest answer with what it can do and a handoff
        # offer (was "Did you want to stop what we're doing?"); inside the order form, the form then asks on
        shoes = "do you have running shoes in size 44?"
        answer = service.say(gw, "chat-4", shoes, token=bob)
        assert "can't help with that here" in answer[0]["text"] and "recommend products" in answer[0]["text"]
        assert {"title": "Talk to a person", "payload": "/human_handoff"} in answer[0]["buttons"]
        assert "Did you want to" not in said("chat-5", "blorp fizzle wug")
        assert "passing you to a colleague" in said("chat-5", "talk to a human")
        assert "order number" in said("chat-6", "where is my order?")
        inside = said("chat-6", shoes)
        assert "can't help with that here" in inside and inside.count("What's your order number?") == 1
        assert "Order SH30112 (desk lamp) is delivered" in said("chat-6", "SH30112")
        # bob cannot read alice's order, whatever he calls his conversation
        answer = " ".join(m.get("text") or "" for m in service.say(gw, "alice", "where is order SH40018?", token=bob))
        assert "DHL" not in answer and "winter jacket" not in answer
        # the bench's code path, on a tiny run: through the gateway
        assert webhook_latency(gw, 2, warmup=1, token=bob)["requests"] == 2
        # Rasa and the action server: loopback only, and nothing without their tokens
        assert _listen_addresses(rasa_port) == {"0100007F"} and _listen_addresses(actions_port) == {"0100007F"}
        rasa = f"http://127.0.0.1:{rasa_port}"
        assert httpx.delete(rasa + "/model").status_code == 401
        assert httpx.get(rasa + "/conversations/bob:chat-1/tracker").status_code == 401
        assert httpx.post(rasa + "/webhooks/rest/webhook", json={"sender": "bob", "message": "hi"}).status_code == 404
        channel = httpx.post(rasa + "/webhooks/gateway/webhook", json={"sender": "bob:x", "message": "SH30112"})
        assert channel.status_code == 401
        assert httpx.get(rasa + "/no/such/path").status_code == 404
        direct = httpx.post(
            f"http://127.0.0.1:{actions_port}/webhook",
            json={"next_action": "action_check_charge", "sender_id": "alice:x", "tracker": {}, "version": "3.6.2"},
        )
        assert direct.status_code == 401 and "219.99" not in direct.text
        assert httpx.get(f"http://127.0.0.1:{actions_port}/no/such/path").status_code in (401, 404)
        assert httpx.get(rasa + "/status").status_code == 401  # still up: the refusals changed nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopping the servers" in err
    for p in (port, rasa_port, actions_port):
        assert not rasa_env.port_open("127.0.0.1", p)
    with sqlite3.connect(lifecycle.tracker_db()) as con:  # the conversation is in the SQLite tracker store
        rows = con.execute("SELECT sender_id, data FROM events WHERE type_name='user'").fetchall()
    assert (rows[0][0], json.loads(rows[0][1]).get("text")) == ("bob:chat-1", "where is order SH30112?")
    assert {sender.split(":")[0] for sender, _ in rows} == {"bob"}

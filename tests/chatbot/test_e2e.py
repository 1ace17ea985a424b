"""The demo end to end on the session's model: both servers started, the scripted REST conversation (order form,
custom actions, other apps down), stopped cleanly; the tracker store then monitored, and the CLI client used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from apps.chatbot import demo, lifecycle, rasa_env
from apps.chatbot.config import REPO
from common import registry


@pytest.mark.e2e
def test_demo_conversation_over_rest_then_clean_stop_and_monitor(trained: lifecycle.Trained) -> None:
    summary = demo.run_demo(trained=trained)
    turns = {t["user"]: " ".join(t["bot"]) for t in summary["conversation"]}
    assert all(t["ok"] for t in summary["conversation"]), summary["conversation"]
    assert "Order SH12345 (running shoes, sports socks) is out for delivery" in turns["it's SH12345"]
    assert "doesn't look like an order number" in turns["SH123"]  # validated by the action server
    assert "can't fetch recommendations right now" in turns["can you recommend something for me?"]
    assert summary["model_load_s"] > 0
    mon = summary["monitor"]
    assert "Did you want to" in turns["blorp fizzle wug"]  # two-stage fallback, in words
    handoff = turns["zxqv plimf grunk"]
    assert "passing you to a colleague" in handoff and "blorp fizzle wug; zxqv plimf grunk" in handoff
    assert "welcome" in turns["thanks"]  # after the handoff the conversation goes on
    assert mon["messages"] == len(demo.SCRIPT) and mon["conversations"] == 1
    assert mon["handoff_rate"] == 1.0 and mon["fallback_rate"] == 2 / len(demo.SCRIPT)
    # both servers are gone: their ports are free again
    for url in (summary["urls"]["rasa"], summary["urls"]["actions"]):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert not rasa_env.port_open("127.0.0.1", port)
    assert registry.version_of("chatbot") == summary["version"]


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
def test_serve_answers_over_rest_and_stops_both_servers_on_sigterm(trained: lifecycle.Trained, mlref_home) -> None:
    """`python -m apps.chatbot serve` (what `make serve-chatbot` runs) on the registered champion."""
    import json
    import os
    import signal
    import sqlite3
    import time

    from apps.chatbot.config import Config

    lifecycle.register(trained, Config.quick(), dataset="project", alias=registry.CHAMPION)
    port, actions_port = rasa_env.free_port(), rasa_env.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.chatbot",
            "serve",
            "--port",
            str(port),
            "--actions-port",
            str(actions_port),
            "--refresh-s",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 900
        while not rasa_env._rasa_ready(f"http://127.0.0.1:{port}") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(1)
        answer = rasa_env.say(f"http://127.0.0.1:{port}", "bob", "where is order SH30112?")
        assert "Order SH30112 (desk lamp) is delivered" in " ".join(m.get("text", "") for m in answer)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopping the servers" in err
    assert not rasa_env.port_open("127.0.0.1", port) and not rasa_env.port_open("127.0.0.1", actions_port)
    with sqlite3.connect(lifecycle.tracker_db()) as con:  # the conversation is in the SQLite tracker store
        texts = [json.loads(d).get("text") for (d,) in con.execute("SELECT data FROM events WHERE type_name='user'")]
    assert texts == ["where is order SH30112?"]

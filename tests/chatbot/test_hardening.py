"""The chatbot's hardening (issue #17): the gateway is the only public listener, Rasa and the action server answer
only their per-run tokens on loopback, messages are capped and normalised, the customer comes from a signed
token, answers of other apps are checked, and monitor survives odd stored text. Each test failed on the code
before the gateway. Gateway tests run against a fake Rasa on loopback; the action-server tests start the real
rasa_sdk server (.venv-chatbot); the whole path with real Rasa is in test_e2e.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from apps.chatbot import rasa_env
from apps.chatbot.config import PROJECT, REPO, Config
from common import registry
from common.data import DataError
from tests.chatbot.conftest import FakeService, require_rasa
from tests.chatbot.test_monitor import make_tracker, register_reference

SECRET = b"test-secret-0123456789abcdef"
RASA_TOKEN = "rasa-run-token"
CHANNEL = "/webhooks/gateway/webhook"


class FakeRasa:
    """Rasa's gateway channel and model API, as the gateway uses them: answers ``echo: <text>`` with a button,
    refuses calls without the token, accepts ``PUT /model``."""

    def __init__(self) -> None:
        self.reply: tuple[int, Any, float] | None = None  # set to override the channel's answer

        def handler(method: str, path: str, body: Any) -> tuple[int, Any, float]:
            headers = self.service.headers[-1]
            if path.startswith("/model") and method == "PUT":
                return (204, "", 0.0) if f"token={RASA_TOKEN}" in path else (401, {"message": "no token"}, 0.0)
            if path == CHANNEL and method == "POST":
                if headers.get("X-Rasa-Token") != RASA_TOKEN:
                    return 401, {"message": "missing or wrong X-Rasa-Token"}, 0.0
                if self.reply is not None:
                    return self.reply
                return (
                    200,
                    [
                        {
                            "recipient_id": body["sender"],
                            "text": f"echo: {body['message']}",
                            "buttons": [{"title": "Talk to a person", "payload": "/human_handoff"}],
                        },
                        {"recipient_id": body["sender"], "custom": {"handoff": {"turns": 1}}},
                        "not a message",
                    ],
                    0.0,
                )
            return 404, {"message": "not found"}, 0.0

        self.service = FakeService(handler)
        self.url = self.service.url

    def messages(self) -> list[dict[str, Any]]:
        """The bodies the channel received."""
        return [b for (m, p, b) in self.service.calls if p == CHANNEL and m == "POST"]

    def close(self) -> None:
        self.service.close()


@pytest.fixture
def rasa() -> Iterator[FakeRasa]:
    fake = FakeRasa()
    yield fake
    fake.close()


def gateway(rasa: FakeRasa, *, secret: bytes | None = SECRET, version=None, refresh_interval_s=None):
    from apps.chatbot.service import Upstream, build_app

    return build_app(
        Upstream(rasa.url, RASA_TOKEN, timeout_s=2.0), version, refresh_interval_s=refresh_interval_s, secret=secret
    )


def token(customer: str, *, secret: bytes = SECRET, ttl_s: float = 60.0) -> dict[str, str]:
    from apps.chatbot import identity

    return {"X-Customer-Token": identity.mint_token(customer, secret, ttl_s=ttl_s)}


# ------------------------------------------------------------------------------------------------------ gateway
def test_gateway_is_a_common_serving_service(rasa: FakeRasa) -> None:
    with TestClient(gateway(rasa)) as client:
        r = client.post("/v1/messages", json={"sender": "web-1", "text": "hello"}, headers=token("alice"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["customer"] == "alice" and body["sender"] == "web-1"
        assert body["messages"][0] == {
            "text": "echo: hello",
            "buttons": [{"title": "Talk to a person", "payload": "/human_handoff"}],
            "image": None,
        }
        assert len(body["messages"]) == 1  # the custom payload (a handoff summary) is internal: dropped
        assert '"turns"' not in r.text and '"custom"' not in r.text
        assert "custom" not in json.dumps(client.get("/openapi.json").json()["components"]["schemas"]["BotMessage"])
        assert "recipient_id" not in json.dumps(body)  # Rasa's internal conversation id is not echoed
        assert rasa.service.headers[-1]["X-Rasa-Token"] == RASA_TOKEN  # Rasa's channel is called with the token
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["ready"] is True
        assert 'route="/v1/messages"' in client.get("/metrics").text
        assert client.get("/docs").status_code == 200
        assert "/v1/messages" in client.get("/openapi.json").json()["paths"]
        assert client.get("/webhooks/rest/webhook").status_code == 404  # unknown paths are 404, not 500
        assert client.delete("/model").status_code in (404, 405)


def test_chat_shows_customers_only_text(rasa: FakeRasa) -> None:
    """`chat` printed a message without text as JSON: the handoff payload reached the customer's screen."""
    from apps.chatbot.__main__ import app

    old_gateway = FakeService(
        lambda method, path, body: (
            200,
            {
                "sender": "terminal",
                "customer": None,
                "model_version": "1",
                "messages": [
                    {"text": "I'm passing you to a colleague (reference H-ABC234).", "custom": None},
                    {"text": None, "custom": {"handoff": {"turns": 1, "last_messages": ["secret"]}}},
                    {
                        "text": "Did you want to check an order?",
                        "buttons": [{"title": "Yes", "payload": "/order_status"}],
                    },
                ],
            },
            0.0,
        )
    )
    try:
        r = CliRunner().invoke(app, ["chat", "--url", old_gateway.url], input="I want a human\n/quit\n")
    finally:
        old_gateway.close()
    assert r.exit_code == 0, r.output
    shown = [line[line.index("bot> ") :] for line in r.stdout.splitlines() if "bot> " in line]  # after "you> "
    assert shown == [
        "bot> I'm passing you to a colleague (reference H-ABC234).",
        "bot> Did you want to check an order? [Yes]",
    ]
    assert "handoff" not in r.stdout and "secret" not in r.stdout


def test_gateway_api_key_and_body_limit(rasa: FakeRasa, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLREF_API_KEY", "k3y")
    monkeypatch.setenv("MLREF_MAX_BODY_BYTES", "65536")
    with TestClient(gateway(rasa)) as client:
        good = {"sender": "web-1", "text": "hi"}
        r = client.post("/v1/messages", json=good)
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert client.post("/v1/messages", json=good, headers={"X-API-Key": "k3y"}).status_code == 200
        big = client.post("/v1/messages", json={**good, "text": "x" * 70_000}, headers={"X-API-Key": "k3y"})
        assert big.status_code == 413 and "MLREF_MAX_BODY_BYTES" in big.json()["detail"]
        assert client.get("/healthz").status_code == 200  # health checks need no key
    assert len(rasa.messages()) == 1  # only the good, authorised message reached Rasa


def test_long_messages_are_refused_before_rasa_sees_them(rasa: FakeRasa) -> None:
    with TestClient(gateway(rasa)) as client:
        r = client.post("/v1/messages", json={"sender": "web-1", "text": "a" * 2001})
        assert r.status_code == 422 and "body.text" in r.json()["message"]
        assert client.post("/v1/messages", json={"sender": "web-1", "text": "a" * 2000}).status_code == 200
        huge = client.post("/v1/messages", json={"sender": "web-1", "text": "a" * 2_000_000})
        assert huge.status_code == 413  # a 2 MB message is not even read
    assert [len(m["message"]) for m in rasa.messages()] == [2000]


def test_messages_are_normalised_so_they_can_always_be_stored_and_printed(rasa: FakeRasa) -> None:
    json_headers = {"content-type": "application/json"}
    with TestClient(gateway(rasa)) as client:
        lone = '{"sender": "web-1", "text": "\\ud800\\udc00\\ud800 hi"}'  # a pair, then an unpaired surrogate
        r = client.post("/v1/messages", content=lone, headers=json_headers)
        assert r.status_code == 422 and "body.text" in r.json()["message"]  # refused: no file could store it
        pair = '{"sender": "web-1", "text": "\\ud800\\udc00 hi\\u0000 there\\n\\u202e"}'
        r = client.post("/v1/messages", content=pair, headers=json_headers)
        assert r.status_code == 200, r.text
        sent = rasa.messages()[-1]["message"]
        assert sent == "\U00010000 hi there \u202e" and sent.encode("utf-8")  # controls -> space, runs collapsed
        for text, why in [("\u0000\u0001 \n", "empty"), ('/inform_order_id{"order_id": "SH40018"}', "payload")]:
            r = client.post("/v1/messages", json={"sender": "web-1", "text": text})
            assert r.status_code == 422 and "body.text" in r.json()["message"], why
        assert client.post("/v1/messages", json={"sender": "web-1", "text": "/human_handoff"}).status_code == 200
        bad_sender = client.post("/v1/messages", json={"sender": "alice:evil", "text": "hi"})
        assert bad_sender.status_code == 422 and "body.sender" in bad_sender.json()["message"]
    assert len(rasa.messages()) == 2


def test_normalise_message_replaces_what_json_parsers_let_through() -> None:
    from apps.chatbot.text import normalise_message, printable

    assert normalise_message("\U00010000\ud800 hi\x00\t there\u2028") == "\U00010000\ufffd hi there"
    assert normalise_message("e\u0301") == "\u00e9"  # NFC
    assert printable("\udcff\x1b[0m") == "\ufffd [0m" and printable(None) == ""


def test_the_customer_comes_from_a_signed_token_never_from_sender(rasa: FakeRasa) -> None:
    with TestClient(gateway(rasa)) as client:
        r = client.post("/v1/messages", json={"sender": "alice", "text": "where is SH40018?"})
        assert r.status_code == 200 and r.json()["customer"] is None  # a free-text sender is just a conversation
        assert rasa.messages()[-1]["sender"] == ":alice"  # anonymous in Rasa: no customer part
        r = client.post("/v1/messages", json={"sender": "alice", "text": "hi"}, headers=token("bob"))
        assert r.json()["customer"] == "bob" and rasa.messages()[-1]["sender"] == "bob:alice"
        refused = [
            token("alice", secret=b"another-secret-0123456789"),  # forged
            token("alice", ttl_s=1e-3),  # expired by the time it is used
            {"X-Customer-Token": "not-a-token"},
        ]
        time.sleep(0.01)
        for headers in refused:
            r = client.post("/v1/messages", json={"sender": "web-1", "text": "hi"}, headers=headers)
            assert r.status_code == 401 and "X-Customer-Token" in r.json()["detail"], headers
    with TestClient(gateway(rasa, secret=None)) as client:  # no secret on the server: no token can be checked
        r = client.post("/v1/messages", json={"sender": "web-1", "text": "hi"}, headers=token("alice"))
        assert r.status_code == 401
    assert len(rasa.messages()) == 2


def test_rasa_down_or_answering_nonsense_gets_503(rasa: FakeRasa) -> None:
    with TestClient(gateway(rasa)) as client:
        for reply in [(500, {"boom": 1}, 0.0), (200, {"not": "a list"}, 0.0), (200, "not json", 0.0)]:
            rasa.reply = reply
            r = client.post("/v1/messages", json={"sender": "web-1", "text": "hi"})
            assert r.status_code == 503 and "not available" in r.json()["detail"], reply
        rasa.close()
        r = client.post("/v1/messages", json={"sender": "web-1", "text": "hi"})
        assert r.status_code == 503


def test_hot_swap_sends_rasa_its_token(rasa: FakeRasa, tmp_path: Path) -> None:
    d = tmp_path / "v1"
    d.mkdir()
    (d / "model.tar.gz").write_bytes(b"model one")
    v1 = registry.register("chatbot", d, alias=registry.CHAMPION)
    (d / "model.tar.gz").write_bytes(b"model two")
    app = gateway(rasa, version=v1, refresh_interval_s=None)
    registry.register("chatbot", d, alias=registry.CHAMPION)
    with TestClient(app) as client:
        r = client.post("/admin/reload")
        assert r.status_code == 200 and r.json() == {"swapped": True, "version": "2"}, r.text
        assert client.get("/readyz").json()["version"] == "2"
    method, path, body = rasa.service.calls[-1]
    assert method == "PUT" and path == f"/model?token={RASA_TOKEN}" and body["model_file"].endswith("model.tar.gz")


def test_the_bench_measures_replies_through_the_gateway(rasa: FakeRasa) -> None:
    from apps.chatbot.bench import webhook_latency
    from common import serving

    with serving.BackgroundServer(gateway(rasa)) as gw:
        res = webhook_latency(gw.url, 3, warmup=1, token=token("alice")["X-Customer-Token"])
    assert res["requests"] == 3 and res["p95_ms"] >= res["p50_ms"] > 0
    assert [m["sender"] for m in rasa.messages()] == ["alice:bench-0"] * 4  # all through the gateway's channel


def test_the_bench_times_the_gateway_and_rasa_directly_side_by_side(rasa: FakeRasa) -> None:
    from types import SimpleNamespace

    from apps.chatbot.bench import gateway_vs_direct
    from apps.chatbot.service import Assistant
    from common import serving

    with serving.BackgroundServer(gateway(rasa)) as gw:
        assistant = Assistant(url=gw.url, servers=SimpleNamespace(url=rasa.url, token=RASA_TOKEN), app=None)
        res = gateway_vs_direct(assistant, 4, warmup=2, secret=SECRET)
    assert res["gateway"]["requests"] == res["direct_to_rasa"]["requests"] == 4
    assert res["p95_ratio"] == pytest.approx(res["gateway"]["p95_ms"] / res["direct_to_rasa"]["p95_ms"], rel=1e-2)
    senders = [m["sender"] for m in rasa.messages()]
    assert senders.count("alice:bench-0") == 6 and senders.count("alice:direct-bench-0") == 6  # both paths, alike


# -------------------------------------------------------------------------------------------------------- serve
def test_serve_before_any_training_says_to_train_first() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "apps.chatbot", "serve"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env={**os.environ, "MLREF_CHATBOT_VENV": str(REPO / ".venv-chatbot")},
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no chatbot model is registered yet"), r.stderr
    assert "python -m apps.chatbot train" in lines[0] and "demo" in lines[0]


def test_serve_keeps_a_user_set_handoff_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` hands the user's MLREF_HANDOFF_LOG to the action server (it used to overwrite it)."""
    from contextlib import contextmanager

    from apps.chatbot.__main__ import app

    register_reference(tmp_path, ["greet"])
    seen: dict[str, Any] = {}

    @contextmanager
    def fake_servers(model, run_dir, cfg, **kwargs):
        seen.update(kwargs)
        raise DataError("stopped by the test before any server starts")
        yield  # a generator, as the real one

    monkeypatch.setattr(rasa_env, "servers", fake_servers)
    mine = tmp_path / "my-handoffs.jsonl"
    monkeypatch.setenv("MLREF_HANDOFF_LOG", str(mine))
    r = CliRunner().invoke(app, ["serve", "--port", str(rasa_env.free_port()), "--refresh-s", "0"])
    assert isinstance(r.exception, DataError), r.output
    assert seen["handoff_log"] == mine


# ------------------------------------------------------------------------------------------------ action server
@pytest.fixture(scope="module")
def action_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real action server (rasa_sdk) with its token, and a fake fraud + recommender app we control."""
    require_rasa()
    replies: dict[str, tuple[int, Any, float]] = {"fraud": (500, {}, 0.0), "recommender": (500, {}, 0.0)}
    fraud = FakeService(lambda m, p, b: replies["fraud"])
    rec = FakeService(lambda m, p, b: replies["recommender"])
    port, action_token = rasa_env.free_port(), "action-token-for-tests"
    log = tmp_path_factory.mktemp("actions") / "actions.log"
    proc = rasa_env.spawn_actions(
        Config(http_timeout_s=1.0),
        port,
        action_token,
        log,
        MLREF_FRAUD_URL=fraud.url,
        MLREF_RECOMMENDER_URL=rec.url,
    )
    try:
        rasa_env.wait_for_port(port, proc, what="the action server", timeout_s=300, log_path=log)
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "token": action_token, "replies": replies}
    finally:
        rasa_env._stop(proc)
        fraud.close()
        rec.close()


def act(server: dict[str, Any], action: str, sender: str, *, text: str = "", slots: dict | None = None, **kw: Any):
    from tests.chatbot.test_actions import DOMAIN

    user = {"event": "user", "text": text, "parse_data": {"intent": {"name": "greet"}, "entities": [], "text": text}}
    tracker = {
        "sender_id": sender,
        "slots": slots or {},
        "latest_message": user["parse_data"],
        "events": [user, *kw.get("events", [])],
        "active_loop": {"name": kw["active_loop"]} if kw.get("active_loop") else {},
        "latest_action_name": "action_listen",
    }
    body = {"next_action": action, "sender_id": sender, "tracker": tracker, "domain": DOMAIN, "version": "3.6.2"}
    headers = kw.get("headers", {"X-Action-Token": server["token"]})
    return httpx.post(server["url"] + "/webhook", json=body, headers=headers, timeout=30)


def said(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return " ".join(m.get("text") or "" for m in r.json()["responses"])


def _listen_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (Linux /proc/net/tcp*, hex): 0100007F is 127.0.0.1."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(addr)
    return found


def test_action_server_answers_only_rasa_on_loopback(action_server: dict[str, Any]) -> None:
    assert _listen_addresses(action_server["port"]) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0
    for headers in ({}, {"X-Action-Token": "guess"}):
        r = act(action_server, "action_check_charge", "alice:c1", headers=headers)
        assert r.status_code == 401, r.text
        assert "219.99" not in r.text
    assert act(action_server, "action_check_charge", "alice:c1").status_code == 200
    unknown = httpx.get(action_server["url"] + "/no/such/path", headers={"X-Action-Token": action_server["token"]})
    assert unknown.status_code == 404
    assert httpx.get(action_server["url"] + "/health").status_code == 200


def test_an_order_is_only_found_for_its_customer(action_server: dict[str, Any]) -> None:
    answer = said(act(action_server, "action_order_status", "bob:c1", slots={"order_id": "SH40018"}))
    assert "DHL" not in answer and "winter jacket" not in answer and "couldn't look that order up" in answer
    validated = act(
        action_server,
        "validate_order_status_form",
        "bob:c1",
        text="SH40018",
        slots={"order_id": "SH40018", "requested_slot": "order_id"},
        active_loop="order_status_form",
        events=[{"event": "slot", "name": "order_id", "value": "SH40018"}],
    )
    assert "I can't find an order SH40018" in said(validated)
    assert "winter jacket" in said(act(action_server, "action_order_status", "alice:c1", slots={"order_id": "SH40018"}))
    # an anonymous conversation, or one named after a customer without the gateway's prefix, gets no orders
    for sender in (":alice", "alice"):
        assert "DHL" not in said(act(action_server, "action_order_status", sender, slots={"order_id": "SH40018"}))


@pytest.mark.parametrize(
    "verdict",
    [
        {"score": 0.9, "decision": "alert", "reasons": 5},
        {"score": 0.9, "decision": "alert", "reasons": [{"feature": None, "contribution": 1.0}]},
        {"score": 0.9, "decision": "alert", "reasons": ["amount"]},
        {"score": True, "decision": "pass", "reasons": []},
        {"score": float("nan"), "decision": "pass", "reasons": []},
    ],
)
def test_a_malformed_fraud_answer_gets_the_polite_reply(action_server: dict[str, Any], verdict: dict) -> None:
    action_server["replies"]["fraud"] = (200, json.dumps(verdict), 0.0)
    answer = said(act(action_server, "action_check_charge", "alice:c1", text="I don't recognise this charge"))
    assert "fraud check isn't available right now" in answer and "None" not in answer


@pytest.mark.parametrize("items", [[{"score": 1.0}], [{"item": None, "title": None}], [{"item": True}]])
def test_a_malformed_recommender_answer_gets_the_polite_reply(action_server: dict[str, Any], items: list) -> None:
    action_server["replies"]["recommender"] = (200, {"items": items}, 0.0)
    answer = said(act(action_server, "action_recommend_products", "alice:c1"))
    assert "can't fetch recommendations right now" in answer and "None" not in answer


def test_rasa_is_started_on_loopback_behind_tokens(tmp_path: Path) -> None:
    """What `serve` gives Rasa: the gateway channel only (no open REST channel), the action endpoint with the token
    header, and `--auth-token` from the environment through the launcher (not visible in the process list)."""
    endpoints = rasa_env.write_endpoints(tmp_path / "endpoints.yml", actions_port=5055, tracker_db=tmp_path / "t.db")
    credentials = rasa_env.write_credentials(tmp_path / "credentials.yml")
    assert "X-Action-Token: ${MLREF_ACTION_TOKEN}" in endpoints.read_text()
    assert credentials.read_text().splitlines() == ["gateway_channel.GatewayInput:", "  token: ${MLREF_RASA_TOKEN}"]
    assert "rest" not in credentials.read_text()
    launcher = (PROJECT / "scripts" / "rasa_run.py").read_text()
    assert "--auth-token=" in launcher and "MLREF_RASA_TOKEN" in launcher


# ------------------------------------------------------------------------------------------------------ monitor
def test_monitor_survives_text_no_utf8_file_can_hold(tmp_path: Path) -> None:
    """A message stored before the gateway normalised text (an unpaired surrogate) used to make every later
    `monitor` exit 3 with UnicodeEncodeError."""
    from apps.chatbot.__main__ import app

    register_reference(tmp_path, ["greet"] * 5 + ["faq"] * 5)
    db = make_tracker(
        tmp_path / "tracker.db",
        [[("user", "\ud800\udc00\ud800 hi", "nlu_fallback", 0.2), ("user", "hello\x00\x1b[31m", "greet", 0.3)]],
    )
    con = sqlite3.connect(db)
    con.execute(  # an event whose data is not JSON at all
        "INSERT INTO events (sender_id, type_name, timestamp, data) VALUES ('user-9', 'user', ?, 'not json')",
        (time.time(),),
    )
    con.commit()
    con.close()
    r = CliRunner().invoke(app, ["monitor", "--dataset", str(db)])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)  # no crash (exit 3)
    assert r.exit_code in (0, 1), r.output
    out = json.loads(r.stdout)
    csv = Path(out["low_confidence_csv"]).read_text(encoding="utf-8")
    assert "\U00010000\ufffd hi" in csv and "\x00" not in csv and "\x1b" not in csv

"""The custom actions, run by the real rasa_sdk action server (.venv-chatbot) and called over its /webhook, with the
recommender and fraud apps faked at the HTTP level: answers, slow answers, errors, and no server at all."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.chatbot import rasa_env
from apps.chatbot.config import Config
from tests.chatbot.conftest import FakeService, require_rasa

TIMEOUT_S = 1.0  # the actions' HTTP timeout in these tests
ACTION_TOKEN = "test-action-token"  # what Rasa sends (endpoints.yml); the server refuses calls without it
AUTH = {"X-Action-Token": ACTION_TOKEN}
ALICE = "alice:chat-1"  # Rasa's conversation id for the signed-in customer alice (apps/chatbot/identity.py)
DOMAIN = {
    "forms": {"order_status_form": {"required_slots": ["order_id"]}},
    "slots": {
        "order_id": {
            "type": "text",
            "influence_conversation": False,
            "mappings": [{"type": "from_entity", "entity": "order_id"}],
        },
        "requested_slot": {"type": "any"},
    },
    "intents": [],
    "entities": ["order_id"],
    "responses": {},
    "actions": [],
}


class Router:
    """A fake app whose behaviour each test sets: ``router.reply = (status, body, delay_s)``."""

    def __init__(self) -> None:
        self.reply: tuple[int, Any, float] = (200, {}, 0.0)
        self.service = FakeService(lambda method, path, body: self.reply)

    @property
    def calls(self) -> list[tuple[str, str, Any]]:
        return self.service.calls


def _start_actions(env_extra: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = rasa_env.free_port()
    proc = rasa_env.spawn_actions(Config(http_timeout_s=TIMEOUT_S), port, ACTION_TOKEN, log, **env_extra)
    try:
        rasa_env.wait_for_port(port, proc, what="action server", timeout_s=300, log_path=log)
    except BaseException:
        rasa_env._stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}/webhook"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two action servers: one whose other apps are fakes we control, one whose other apps are down."""
    require_rasa()
    rec, fraud = Router(), Router()
    tmp = tmp_path_factory.mktemp("actions")
    handoffs = tmp / "handoffs.jsonl"
    up, up_url = _start_actions(
        {
            "MLREF_RECOMMENDER_URL": rec.service.url,
            "MLREF_FRAUD_URL": fraud.service.url,
            "MLREF_HANDOFF_LOG": str(handoffs),
        },
        tmp / "up.log",
    )
    closed = [f"http://127.0.0.1:{rasa_env.free_port()}" for _ in range(2)]
    try:
        down, down_url = _start_actions(
            {"MLREF_RECOMMENDER_URL": closed[0], "MLREF_FRAUD_URL": closed[1]}, tmp / "down.log"
        )
    except Exception:
        rasa_env._stop(up)
        raise
    yield {"up": up_url, "down": down_url, "recommender": rec, "fraud": fraud, "handoffs": handoffs}
    for p in (up, down):
        rasa_env._stop(p)
    rec.service.close()
    fraud.service.close()


def call(
    url: str,
    action: str,
    *,
    sender: str = ALICE,
    text: str = "",
    intent: str = "greet",
    events: list[dict[str, Any]] | None = None,
    slots: dict[str, Any] | None = None,
    active_loop: str | None = None,
) -> dict[str, Any]:
    user = {
        "event": "user",
        "text": text,
        "parse_data": {"intent": {"name": intent, "confidence": 0.9}, "entities": [], "text": text},
    }
    tracker = {
        "sender_id": sender,
        "slots": slots or {},
        "latest_message": user["parse_data"],
        "events": events if events is not None else [user],
        "paused": False,
        "followup_action": None,
        "latest_event_time": time.time(),
        "active_loop": {"name": active_loop} if active_loop else {},
        "latest_action_name": "action_listen",
    }
    r = httpx.post(
        url,
        json={"next_action": action, "sender_id": sender, "tracker": tracker, "domain": DOMAIN, "version": "3.6.2"},
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def texts(result: dict[str, Any]) -> str:
    return " ".join(m.get("text") or "" for m in result["responses"])


# --------------------------------------------------------------------------------------------- recommendations
def test_recommendations_from_the_recommender_api(services: dict[str, Any]) -> None:
    rec = services["recommender"]
    rec.reply = (
        200,
        {
            "k": 3,
            "strategy": "personalized",
            "known_user": True,
            "model_version": "1",
            "items": [
                {"item": "i1", "score": 0.9, "rank": 1, "title": "Trail runner"},
                {"item": "i2", "score": 0.8, "rank": 2, "title": None},
                {"item": "i3", "score": 0.7, "rank": 3, "title": "Rain jacket"},
            ],
        },
        0.0,
    )
    result = call(services["up"], "action_recommend_products", text="recommend something")
    assert texts(result) == "Picked for you from what you've bought: Trail runner; i2; Rain jacket."
    method, path, _ = rec.calls[-1]
    assert method == "GET" and path == "/v1/users/u00017/recommendations?k=3"  # alice is recommender user u00017


def test_popular_items_are_not_presented_as_personal(services: dict[str, Any]) -> None:
    rec = services["recommender"]
    popular = {"k": 3, "strategy": "popular", "known_user": False, "model_version": "1"}
    rec.reply = (200, {**popular, "items": [{"item": "i9", "score": 1.0, "rank": 1, "title": "Mug"}]}, 0.0)
    said = texts(call(services["up"], "action_recommend_products", sender=":web-1", text="suggest something"))
    assert said == "I don't know your taste yet, so these are our popular items, not personal picks: Mug."
    assert rec.calls[-1][1] == "/v1/users/anonymous/recommendations?k=3"


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ((503, {"detail": "no champion"}, 0.0), "HTTP error"),
        ((200, {"unexpected": True}, 0.0), "malformed answer"),
        ((200, "not json", 0.0), "not JSON"),
        ((200, {"items": []}, TIMEOUT_S + 1.0), "slower than the timeout"),
    ],
)
def test_recommender_failures_get_a_polite_answer(services: dict[str, Any], reply: tuple, why: str) -> None:
    services["recommender"].reply = reply
    t0 = time.perf_counter()
    result = call(services["up"], "action_recommend_products")
    assert "can't fetch recommendations right now" in texts(result), why
    assert result["events"] == []  # nothing changes in the conversation; it goes on
    assert time.perf_counter() - t0 < TIMEOUT_S + 5


def test_recommender_down_gets_a_polite_answer(services: dict[str, Any]) -> None:
    result = call(services["down"], "action_recommend_products")
    assert "can't fetch recommendations right now" in texts(result)
    assert "Anything else" in texts(result)


# ----------------------------------------------------------------------------------------------- card charges
def test_an_alert_is_explained_with_its_reasons(services: dict[str, Any]) -> None:
    fraud = services["fraud"]
    fraud.reply = (
        200,
        {
            "tx_id": "chatbot-alice-2",
            "score": 0.91,
            "decision": "alert",
            "threshold": 0.5,
            "reasons": [
                {"feature": "terminal_risk_7d", "value": 0.4, "contribution": 2.1},
                {"feature": "amount", "value": 219.99, "contribution": 1.2},
                {"feature": "customer_nb_tx_1d", "value": 0, "contribution": -0.3},
            ],
            "model_version": "3",
            "latency_ms": 2.0,
        },
        0.0,
    )
    result = call(services["up"], "action_check_charge", text="I don't recognise this charge")
    said = texts(result)
    assert "flags the charge of 219.99 EUR on " in said and "risk score 0.91" in said
    assert "recent fraud at that card terminal (7 days) (raises the risk)" in said
    assert "the amount of the charge (raises the risk)" in said
    assert "lowers" not in said  # an alert is explained by what raised the risk only
    method, path, body = fraud.calls[-1]
    assert (method, path) == ("POST", "/v1/transactions/score?explain=true")
    assert {k: v for k, v in body.items() if k != "timestamp"} == {
        "tx_id": "chatbot-alice-2",
        "customer_id": "17",
        "terminal_id": "877",
        "amount": 219.99,
    }


def test_the_charge_is_dated_inside_the_fraud_services_window(services: dict[str, Any]) -> None:
    """The store's charges were dated 2018: a fraud service whose state is newer refused them as too late."""
    from apps.fraud.config import ServingConfig

    services["fraud"].reply = (200, {"score": 0.1, "decision": "pass", "reasons": []}, 0.0)
    window = ServingConfig()
    for sender in (ALICE, "bob:chat-1"):
        before = time.time()
        said = texts(call(services["up"], "action_check_charge", sender=sender, text="I don't recognise this charge"))
        after = time.time()
        body = services["fraud"].calls[-1][2]
        t = datetime.fromisoformat(body["timestamp"]).replace(tzinfo=UTC).timestamp()
        # what apps/fraud/service.py accepts: not after its clock (+ skew); not older than max_late_days before the
        # newest transaction in its state, which is at most its clock (here: a state fed up to now)
        assert t <= after + window.future_skew_s
        assert t >= before - window.max_late_days * 86400
        assert f"on {body['timestamp'][:10]}" in said


def test_a_pass_is_explained_by_what_lowered_the_risk_in_the_apis_words(services: dict[str, Any]) -> None:
    fraud = services["fraud"]
    label = "the share of confirmed fraud at this terminal over a recent 7-day period"
    fraud.reply = (
        200,
        {
            "tx_id": "chatbot-alice-2",
            "score": 0.03,
            "decision": "pass",
            "threshold": 0.12,
            "reasons": [
                {
                    "feature": "terminal_risk_7d",
                    "label": label,
                    "value": 0.0,
                    "contribution": -0.44,
                    "direction": "lowers",
                },
                {"feature": "amount", "value": 219.99, "contribution": 0.2},  # an older API's top-3 by value
            ],
            "model_version": "3",
            "latency_ms": 2.0,
        },
        0.0,
    )
    said = texts(call(services["up"], "action_check_charge", text="I don't recognise this charge"))
    assert "consistent with your usual payments (risk score 0.03)" in said
    assert f"What kept the risk low: {label} (lowers the risk)." in said
    assert "raises" not in said and "terminal_risk_7d" not in said


def test_the_charge_the_user_names_by_amount_is_checked(services: dict[str, Any]) -> None:
    fraud = services["fraud"]
    fraud.reply = (
        200,
        {
            "tx_id": "chatbot-alice-1",
            "score": 0.02,
            "decision": "pass",
            "threshold": 0.5,
            "reasons": [],
            "model_version": "3",
            "latency_ms": 2.0,
        },
        0.0,
    )
    result = call(services["up"], "action_check_charge", text="what is this 42.50 charge?")
    assert fraud.calls[-1][2]["tx_id"] == "chatbot-alice-1"
    assert "consistent with your usual payments (risk score 0.02)" in texts(result)


def test_fraud_service_down_or_failing_gets_a_polite_answer(services: dict[str, Any]) -> None:
    services["fraud"].reply = (500, {"detail": "boom"}, 0.0)
    for url in (services["up"], services["down"]):
        said = texts(call(url, "action_check_charge", text="I don't recognise this charge"))
        assert "our fraud check isn't available right now" in said and "219.99 EUR" in said


def test_a_customer_without_card_payments(services: dict[str, Any]) -> None:
    said = texts(call(services["up"], "action_check_charge", sender="stranger:chat-1"))
    assert "can't find card payments for your account" in said


# ------------------------------------------------------------------------------------------------- order form
def _validate(url: str, value: str) -> dict[str, Any]:
    events = [
        {
            "event": "user",
            "text": value,
            "parse_data": {"intent": {"name": "inform_order_id"}, "entities": [], "text": value},
        },
        {"event": "slot", "name": "order_id", "value": value},
    ]
    return call(
        url,
        "validate_order_status_form",
        events=events,
        slots={"order_id": value, "requested_slot": "order_id"},
        active_loop="order_status_form",
        text=value,
    )


@pytest.mark.parametrize(
    ("value", "expected_slot", "message"),
    [
        ("sh-12345", "SH12345", ""),
        ("SH 40018", "SH40018", ""),
        ("SH123", None, "doesn't look like an order number. Order numbers are SH followed by 5 digits"),
        ("SH99999", None, "I can't find an order SH99999"),
    ],
)
def test_order_id_validation(services: dict[str, Any], value: str, expected_slot: str | None, message: str) -> None:
    result = _validate(services["up"], value)
    slots = {e["name"]: e["value"] for e in result["events"] if e["event"] == "slot"}
    assert slots["order_id"] == expected_slot
    assert message in texts(result)


def test_order_status_reads_the_local_store(services: dict[str, Any]) -> None:
    result = call(services["up"], "action_order_status", slots={"order_id": "SH40018"})
    assert texts(result) == (
        "Order SH40018 (winter jacket) is shipped. Expected delivery: in 2 working days. "
        "Tracking number: DHL 7713 0042 1197."
    )
    assert {"event": "slot", "timestamp": None, "name": "order_id", "value": None} in result["events"]


# ---------------------------------------------------------------------------------------------------- handoff
def test_handoff_sends_a_summary(services: dict[str, Any]) -> None:
    events = [
        {"event": "user", "text": t, "parse_data": {"intent": {"name": i, "confidence": 0.9}}}
        for t, i in [("hi", "greet"), ("where is my order", "order_status"), ("I want a human", "human_handoff")]
    ]
    result = call(services["up"], "action_handoff", events=events, text="I want a human", intent="human_handoff")
    said = texts(result)
    logged = [json.loads(line) for line in services["handoffs"].read_text().splitlines()]
    summary = logged[-1]
    assert said.startswith(
        f"I'm passing you to a colleague, who will reply here shortly (reference {summary['reference']})"
    )
    assert summary["last_messages"] == ["hi", "where is my order", "I want a human"]
    assert summary["intents"] == ["greet", "order_status", "human_handoff"]
    assert summary["reason"] == "asked for a human"
    assert summary["sender_id"] == ALICE and summary["customer"] == "alice" and summary["turns"] == 3


def test_the_handoff_payload_never_reaches_the_customer(services: dict[str, Any]) -> None:
    """Customers got ``{"custom": {"handoff": {...}}}`` beside the sentence (an empty message in the demo)."""
    result = call(services["up"], "action_handoff", text="I want a human", intent="human_handoff")
    assert len(result["responses"]) == 1  # one message: the sentence, no payload
    message = result["responses"][0]
    assert not message.get("custom") and not message.get("json_message")
    assert message["text"].startswith("I'm passing you to a colleague")
    assert "hi" not in message["text"].split() and "sender_id" not in message["text"]


def test_the_handoff_summary_does_not_repeat_messages(services: dict[str, Any]) -> None:
    """The two-stage fallback takes the user's answer back (``rewind``) and re-adds it as a clarified copy: the
    summary counted and listed it twice."""

    def user(text: str, intent: str) -> dict[str, Any]:
        return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent, "confidence": 0.9}}}

    events = [
        user("parcel thing?", "nlu_fallback"),
        {"event": "action", "name": "action_two_stage_fallback"},
        {"event": "action", "name": "action_listen"},
        user("/order_status", "order_status"),  # "Yes" to "Did you want to check an order?"
        {"event": "rewind"},
        {"event": "action", "name": "action_listen"},
        user("/order_status", "order_status"),  # Rasa's clarified copy of the same message
        {"event": "action", "name": "order_status_form"},
        {"event": "action", "name": "action_listen"},
        user("a person please", "human_handoff"),
    ]
    call(services["up"], "action_handoff", events=events, text="a person please", intent="human_handoff")
    summary = json.loads(services["handoffs"].read_text().splitlines()[-1])
    assert summary["last_messages"] == ["parcel thing?", "/order_status", "a person please"]
    assert summary["intents"] == ["nlu_fallback", "order_status", "human_handoff"] and summary["turns"] == 3


def test_default_fallback_hands_off(services: dict[str, Any]) -> None:
    result = call(services["up"], "action_default_fallback", text="blorp", intent="nlu_fallback")
    summary = json.loads(services["handoffs"].read_text().splitlines()[-1])
    assert summary["reason"] == "not understood (two-stage fallback)"
    assert f"reference {summary['reference']}" in texts(result)
    assert not any(m.get("custom") for m in result["responses"])
    assert [e["event"] for e in result["events"]] == ["rewind"]  # reverted: no fallback loop afterwards


def test_the_two_stage_fallback_asks_in_words(services: dict[str, Any]) -> None:
    ranking = [
        {"name": "nlu_fallback", "confidence": 0.4},
        {"name": "order_status", "confidence": 0.3},
        {"name": "faq", "confidence": 0.2},
    ]
    user = {
        "event": "user",
        "text": "parcel thing?",
        "parse_data": {"intent": ranking[0], "intent_ranking": ranking, "entities": [], "text": "parcel thing?"},
    }
    r = httpx.post(
        services["up"],
        json={
            "next_action": "action_default_ask_affirmation",
            "sender_id": ALICE,
            "tracker": {
                "sender_id": ALICE,
                "slots": {},
                "events": [user],
                "latest_message": user["parse_data"],
                "active_loop": {},
            },
            "domain": DOMAIN,
            "version": "3.6.2",
        },
        headers=AUTH,
        timeout=30,
    )
    message = r.json()["responses"][0]
    assert message["text"] == "Sorry, I'm not sure I understood. Did you want to check an order?"
    assert [b["payload"] for b in message["buttons"]] == ["/order_status", "/out_of_scope"]

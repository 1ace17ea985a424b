"""Reliability probes of the chatbot gateway (mlref_testing.probe): property-based fuzzing of its OpenAPI in front of a
fake Rasa on loopback, and hostile requests (size, API key, bad identity, malformed input). A refused request must
never reach Rasa. Rows go to the probe table (``make probe``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mlref_testing import probe
from mlref_testing.probe import fuzz
from tests.chatbot.test_hardening import SECRET, FakeRasa, gateway, token

pytestmark = pytest.mark.reliability
APP = "chatbot"
# schema-valid messages the gateway refuses by a documented rule JSON Schema cannot express: empty once control
# characters are removed, a '/' that is not a button payload (422 body.text), and a customer token that is not
# signed with the server's secret (401)
RULES = {"POST /v1/messages": {422: "body.text", 401: "X-Customer-Token"}}


def test_fuzzing_the_gateway_finds_no_5xx_and_refusals_never_reach_rasa() -> None:
    rasa = FakeRasa()
    try:
        app = gateway(rasa)

        def snapshot() -> int:
            return len(rasa.messages())

        report = fuzz.fuzz_app(
            app, snapshot=snapshot, max_examples=50, time_budget_s=75, name=APP, rule_rejections=RULES
        )
    finally:
        rasa.close()
    probe.record(
        [
            probe.Probe(
                APP,
                "OpenAPI fuzzing (schemathesis)",
                f"{report.cases} cases, {len(report.operations)} operations, valid + invalid",
                "0 5xx, answers as documented, 4xx never reach Rasa",
                f"{report.server_errors} 5xx, {len(report.failures)} failures ({report.rule_rejections} refused by a "
                "documented rule)",
                report.ok,
            )
        ]
    )
    assert "POST /v1/messages" in report.operations and report.cases >= 80, report.summary()
    assert report.server_errors == 0, report.summary()
    assert report.ok, report.summary()
    assert snapshot() > 0  # accepted messages did reach Rasa


def test_hostile_requests_are_refused_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLREF_API_KEY", probe.PROBE_API_KEY)
    rasa = FakeRasa()
    rows: list[probe.Probe] = []
    auth = {"X-API-Key": probe.PROBE_API_KEY}
    good = {"sender": "web-1", "text": "where is my order?"}

    def check(name: str, tried: str, expected: int, response, must_say: str = "") -> None:
        before = len(rasa.messages())
        detail = str(response.json())
        ok = response.status_code == expected and must_say.lower() in detail.lower()
        rows.append(probe.Probe(APP, name, tried, str(expected), f"{response.status_code}", ok))
        assert len(rasa.messages()) == before or expected == 200

    try:
        with TestClient(gateway(rasa)) as client:
            post = client.post
            check("good request", "POST /v1/messages", 200, post("/v1/messages", json=good, headers=auth))
            check(
                "oversized body",
                "2 MB message",
                413,
                post("/v1/messages", json={**good, "text": "x" * 2_000_000}, headers=auth),
                "MLREF_MAX_BODY_BYTES",
            )
            check(
                "message too long",
                "2,001 characters",
                422,
                post("/v1/messages", json={**good, "text": "x" * 2001}, headers=auth),
                "body.text",
            )
            check("no API key", "without X-API-Key", 401, post("/v1/messages", json=good), "X-API-Key")
            check(
                "forged customer token",
                "token signed with another secret",
                401,
                post("/v1/messages", json=good, headers={**auth, **token("alice", secret=SECRET[::-1])}),
                "X-Customer-Token",
            )
            check(
                "unpaired surrogate",
                '"\\ud800 hi"',
                422,
                post(
                    "/v1/messages",
                    content='{"sender": "web-1", "text": "\\ud800 hi"}',
                    headers={**auth, "content-type": "application/json"},
                ),
                "body.text",
            )
            check(
                "entity injection",
                '/inform_order_id{"order_id": "SH40018"}',
                422,
                post("/v1/messages", json={**good, "text": '/inform_order_id{"order_id":"SH40018"}'}, headers=auth),
                "body.text",
            )
            check(
                "malformed JSON",
                "a truncated body",
                422,
                post(
                    "/v1/messages",
                    content='{"sender": "web-1", "te',
                    headers={**auth, "content-type": "application/json"},
                ),
            )
            check("unknown path", "DELETE /model", 404, client.delete("/model", headers=auth))
    finally:
        rasa.close()
    probe.record(rows)
    assert all(r.ok for r in rows), probe.failed(rows)

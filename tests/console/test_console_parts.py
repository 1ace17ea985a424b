"""The console's parts without a browser: readable errors of the HTTP client, the launcher's choice of model home
(the user's champion, else the demo's with a banner), and the tabs' own computations."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from common import serving
from console import launcher
from console.client import ServiceClient, ServiceError, error_message
from console.tabs import fraud, maintenance, recommender


def test_error_message_prefers_the_services_one_line() -> None:
    assert error_message({"detail": [{"loc": ["body", "k"]}], "message": "body.k: must be <= 100"}) == (
        "body.k: must be <= 100"
    )
    assert error_message({"detail": "unknown item 'x'"}) == "unknown item 'x'"
    assert error_message({"detail": [{"loc": ["path", "unit"], "msg": "no readings"}]}) == "path.unit: no readings"
    assert error_message("<html>") == "<html>"
    assert error_message(None) == "no details"


def test_client_names_the_service_when_it_is_down(free_port: int) -> None:
    c = ServiceClient("fraud", f"http://127.0.0.1:{free_port}", timeout_s=2)
    with pytest.raises(ServiceError, match=r"the fraud service at http://127\.0\.0\.1:\d+ is not reachable") as e:
        c.get("/v1/model")
    assert e.value.status is None
    assert "python -m apps.fraud serve" in str(e.value)


def test_client_sends_the_key_and_explains_a_401() -> None:
    app = FastAPI()
    seen: list[str | None] = []

    @app.get("/v1/model")
    def model(request: Request) -> JSONResponse:
        seen.append(request.headers.get("x-api-key"))
        return JSONResponse({"detail": "missing or wrong API key"}, status_code=401)

    with serving.BackgroundServer(app) as srv:
        c = ServiceClient("vision", srv.url, api_key="k-123")
        with pytest.raises(ServiceError, match=r"answered HTTP 401: missing or wrong API key .*MLREF_API_KEY") as e:
            c.model()
    assert e.value.status == 401
    assert seen == ["k-123"]


def test_launcher_serves_the_users_champion_else_the_demos_with_a_banner(tmp_path: Path, mlref_home: Path) -> None:
    from tests.console import world

    empty = launcher.choose("recommender", tmp_path / "nothing")
    assert empty.home is None and "make demo" in empty.banner
    assert not (tmp_path / "nothing" / "mlflow.db").exists()  # looking did not create a store

    demo = mlref_home / "demo" / "recommender"
    demo.mkdir(parents=True)
    shutil.copyfile(mlref_home / "mlflow.db", demo / "mlflow.db")
    world.build(demo, ("recommender",))
    svc = launcher.choose("recommender", mlref_home)
    assert svc.home == demo and svc.demo
    assert "serving the demo's model" in svc.banner and "python -m apps.recommender train" in svc.banner

    world.build(mlref_home, ("recommender",))
    own = launcher.choose("recommender", mlref_home)
    assert own.home == mlref_home and not own.demo and own.banner is None


def test_card_precision_counts_the_riskiest_cards_labelled_fraud() -> None:
    day = "2026-12-03"

    def tx(card: str, score: float, label: int | None) -> dict:
        return {"customer_id": card, "score": score, "label": label, "timestamp": f"{day}T10:00:00"}

    scored = [tx("a", 0.9, 1), tx("a", 0.1, None), tx("b", 0.8, 0), tx("c", 0.2, 1), tx("d", 0.3, None)]
    cp = fraud.card_precision(scored, day, k=2)
    assert cp == {"day": day, "k": 2, "hits": 1, "precision": 0.5, "labelled": 3}
    assert fraud.card_precision(scored, "2026-12-04")["precision"] is None


def test_simulated_stream_is_recent_unique_and_in_order() -> None:
    now = time.time()
    a, b = fraud.simulated_stream(50, 0, now), fraud.simulated_stream(50, 0, now)
    assert len(a) == 50 and a["timestamp"].is_monotonic_increasing
    assert not set(a["tx_id"]) & set(b["tx_id"])  # the same world streamed twice (two pages): no id reused
    last = a["timestamp"].iloc[-1].timestamp()
    assert now - 120 <= last <= now


def test_reading_and_item_parsers_name_the_field() -> None:
    assert recommender.parse_items(" i1, i2 ,\ni3,, ") == ["i1", "i2", "i3"]
    assert maintenance.parse_readings('{"readings": [{"cycle": 1}]}') == [{"cycle": 1}]
    assert maintenance.parse_readings('{"cycle": 2}') == [{"cycle": 2}]
    with pytest.raises(ValueError, match="readings: not valid JSON"):
        maintenance.parse_readings("{")
    with pytest.raises(ValueError, match="readings: expected"):
        maintenance.parse_readings("[1, 2]")

"""common.serving hardening (issue #8): body cap, client-safe errors, reload messages, load backoff, exposure
warning, GC freeze once, restartable polling, an OpenAPI that documents every answer."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from common import registry, serving
from tests.common.test_serving import GOOD, load_pair, make_app, register_value


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def count_fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every download-and-hash of a model directory."""
    calls: list[str] = []
    real = registry.fetch_model_dir

    def fetch(mv: registry.ModelVersion) -> Path:
        calls.append(mv.version)
        return real(mv)

    monkeypatch.setattr(registry, "fetch_model_dir", fetch)
    return calls


def tamper_local_copy(mv: registry.ModelVersion) -> Path:
    """Corrupt the verified local copy of ``mv`` (the error message then names its absolute path)."""
    path = registry.fetch_model_dir(mv) / "w.json"
    path.write_text(json.dumps({"value": 666.0}))
    return path


# ----------------------------------------------------------------------------- body size cap
def test_oversized_body_gets_413_json_and_never_reaches_the_route(tmp_path: Path) -> None:
    register_value(tmp_path, 1.0)
    with TestClient(make_app(refresh_interval_s=None, max_body_bytes=1000)) as client:
        big = json.dumps({**GOOD, "pad": "x" * 5000})
        r = client.post("/v1/score", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["detail"] == (
            f"request body too large: {len(big)} bytes > limit 1000 bytes (MLREF_MAX_BODY_BYTES)"
        )

        def chunks():  # no Content-Length: counted while read, cut off at the limit
            for _ in range(10):
                yield b" " * 500

        r = client.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "MLREF_MAX_BODY_BYTES" in r.json()["detail"]
        assert client.post("/v1/score", json=GOOD).status_code == 200  # a normal body still passes
        text = client.get("/metrics").text
    assert 'route="/v1/score",status="200"} 1.0' in text


def test_announced_oversized_body_is_refused_before_reading_it() -> None:
    app = make_app(refresh_interval_s=None, max_body_bytes=1000)
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/score",
        "raw_path": b"/v1/score",
        "query_string": b"",
        "headers": [(b"content-length", str(10**9).encode()), (b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("t", 80),
        "client": ("c", 1),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert b"1000000000 bytes > limit 1000" in sent[1]["body"]


def test_body_cap_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_value(tmp_path, 1.0)
    monkeypatch.setenv("MLREF_MAX_BODY_BYTES", "40")
    with TestClient(make_app(refresh_interval_s=None)) as client:
        assert client.post("/v1/score", json={**GOOD, "note": "x" * 40}).status_code == 413
        assert client.post("/v1/score", json=GOOD).status_code == 200
    assert serving.get_settings().max_body_bytes == 40


# ----------------------------------------------------------------------------- client-safe errors and reload
def test_readyz_does_not_show_absolute_paths(tmp_path: Path, mlref_home: Path) -> None:
    mv = register_value(tmp_path, 1.0)
    tamper_local_copy(mv)
    with TestClient(make_app(refresh_interval_s=None)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    error = r.json()["error"]
    assert "IntegrityError" in error and "$MLREF_HOME/models/toy/1" in error
    assert str(mlref_home) not in error and str(tmp_path) not in error
    assert not re.search(r"(?<![\w$])/(tmp|home|root|work|var)/", error)


def test_public_error_redacts_home_and_other_absolute_paths(mlref_home: Path) -> None:
    msg = f"local copy {mlref_home}/models/x/2 differs; see /var/lib/thing/file.txt or 'a/b' and /v1"
    assert serving.public_error(msg) == ("local copy $MLREF_HOME/models/x/2 differs; see <path> or 'a/b' and /v1")


def test_admin_reload_with_no_model_loaded_is_503_and_says_so(tmp_path: Path) -> None:
    with TestClient(make_app(refresh_interval_s=None)) as client:  # empty registry
        r = client.post("/admin/reload")
        assert r.status_code == 503 and "no model is loaded" in r.json()["detail"]
        mv = register_value(tmp_path, 1.0)
        tamper_local_copy(mv)
        r = client.post("/admin/reload")
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert "no model is loaded" in detail and "IntegrityError" in detail
    assert "still serving" not in detail and str(tmp_path) not in detail


def test_admin_reload_failure_while_serving_names_the_served_version(tmp_path: Path) -> None:
    v1 = register_value(tmp_path, 1.0)
    v2 = register_value(tmp_path, 2.0, alias=None)
    tamper_local_copy(v2)
    with TestClient(make_app(refresh_interval_s=None)) as client:
        registry.promote("toy", v2.version)
        r = client.post("/admin/reload")
        assert r.status_code == 500
        assert r.json()["detail"].startswith(f"reload failed, still serving version {v1.version}: ")
        assert client.post("/v1/score", json=GOOD).json()["version"] == v1.version


# ----------------------------------------------------------------------------- backoff
def test_failed_load_backs_off_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = register_value(tmp_path, 1.0)
    tamper_local_copy(v1)
    fetches = count_fetches(monkeypatch)
    clock = Clock()
    holder = serving.ModelHolder("toy", load_pair, clock=clock)
    caplog.set_level(logging.DEBUG, logger="common.serving")
    with pytest.raises(registry.IntegrityError, match="sha256"):
        holder.refresh()
    for _ in range(9):  # nine more polls within the first backoff delay: nothing fetched, nothing raised
        assert holder.refresh() is False
    assert "IntegrityError" in holder.last_error
    assert fetches == [v1.version]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "next try in 5 s" in errors[0].getMessage()
    clock.t += 5.1  # backoff over: one more try, then 10 s
    with pytest.raises(registry.IntegrityError, match="sha256"):
        holder.refresh()
    assert fetches == [v1.version] * 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1  # same failure: not again
    clock.t += 6.0
    assert holder.refresh() is False and len(fetches) == 2  # still within 10 s
    with pytest.raises(registry.IntegrityError, match="sha256"):
        holder.refresh(force=True)  # an operator's /admin/reload does not wait
    v2 = register_value(tmp_path, 2.0)  # the alias moves: tried at once
    assert holder.refresh() is True and holder.current().version_id == v2.version
    assert holder.last_error is None


def test_poller_does_not_refetch_a_broken_model_on_every_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = register_value(tmp_path, 1.0)
    tamper_local_copy(v1)
    fetches = count_fetches(monkeypatch)
    caplog.set_level(logging.INFO, logger="common.serving")
    with TestClient(make_app(refresh_interval_s=0.02)) as client:
        time.sleep(1.0)  # ~50 polls
        assert client.get("/readyz").status_code == 503
    assert len(fetches) == 1
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


# ----------------------------------------------------------------------------- restart, exposure, GC
def test_restarted_app_polls_the_registry_again(tmp_path: Path) -> None:
    v1 = register_value(tmp_path, 1.0)
    v2 = register_value(tmp_path, 2.0, alias=None)
    app = make_app(refresh_interval_s=0.05)
    with TestClient(app) as client:
        assert client.post("/v1/score", json=GOOD).json()["version"] == v1.version
    with TestClient(app) as client:  # the same app started a second time
        registry.promote("toy", v2.version)
        deadline = time.monotonic() + 15
        version = None
        while version != v2.version and time.monotonic() < deadline:
            time.sleep(0.05)
            version = client.post("/v1/score", json=GOOD).json()["version"]
    assert version == v2.version


@pytest.mark.parametrize(
    ("host", "key", "warns"),
    [
        ("0.0.0.0", None, True),
        ("192.168.1.7", None, True),
        ("::", None, True),
        ("127.0.0.1", None, False),
        ("localhost", None, False),
        ("::1", None, False),
        ("0.0.0.0", "k", False),
    ],
)
def test_serving_without_api_key_beyond_loopback_warns(
    host: str, key: str | None, warns: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    ran: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.append(kw))
    monkeypatch.setattr(serving.server, "_gc_frozen", True)  # keep the test process's GC as it is
    app = make_app(refresh_interval_s=None, api_key=key)
    with caplog.at_level(logging.WARNING, logger="common.serving"):
        serving.serve(app, host=host, port=8123)
    assert ran == [{"host": host, "port": 8123}]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "WITHOUT AN API KEY" in r.getMessage()]
    assert len(warnings) == int(warns)


def test_gc_freeze_once_per_process_at_serve_time_not_per_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    freezes: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(1))
    monkeypatch.setattr(serving.server, "_gc_frozen", False)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    apps = [make_app(refresh_interval_s=None) for _ in range(3)]
    assert freezes == []
    for app in apps:
        serving.serve(app)
    assert freezes == [1]


# ----------------------------------------------------------------------------- OpenAPI
def test_openapi_documents_every_status_and_content_type() -> None:
    with TestClient(make_app(refresh_interval_s=None)) as client:
        spec = client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["ErrorResponse"]["required"] == ["detail"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            want = {"400", "413", "422", "503"} | (set() if path in serving.OPEN_PATHS else {"401"})
            assert want <= set(op["responses"]), (method, path, sorted(op["responses"]))
            for status in want - ({"503"} if path == "/readyz" else set()):
                schema = op["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    ready_503 = spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert ready_503 == {"$ref": "#/components/schemas/Readiness"}
    assert "500" in spec["paths"]["/admin/reload"]["post"]["responses"]


class QtyBody(BaseModel):
    qty: serving.JsonInt = Field(ge=0, le=1000)


qty_router = APIRouter()


@qty_router.post("/v1/qty")
def echo_qty(body: QtyBody) -> dict:
    return {"qty": body.qty, "type": type(body.qty).__name__}


@pytest.mark.parametrize(
    ("raw", "status", "qty"),
    [
        ("55", 200, 55),
        ("55.0", 200, 55),
        ("true", 422, None),
        ('"55"', 422, None),
        ("55.5", 422, None),
        ("1e400", 422, None),
    ],
)
def test_json_int_takes_json_schema_integers_and_never_booleans(raw: str, status: int, qty: int | None) -> None:
    app = serving.create_app(
        "toy", serving.ModelHolder("toy", load_pair), [qty_router], refresh_interval_s=None, load_on_startup=False
    )
    with TestClient(app) as client:
        r = client.post("/v1/qty", content=f'{{"qty": {raw}}}', headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if qty is None:
        assert r.json()["message"].startswith("body.qty: ")
    else:
        assert r.json() == {"qty": qty, "type": "int"}

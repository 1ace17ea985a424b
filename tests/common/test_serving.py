"""common.serving: ops endpoints, 422 naming the field, API key, metrics, hot swap under concurrent load."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from common import registry, serving


class Pair:
    """A model made of two halves that must always agree: a half-swapped model would show a != b."""

    def __init__(self, value: float) -> None:
        self.a = value
        time.sleep(0.05)  # loading takes time: a swap must not expose this object before it is complete
        self.b = value


def load_pair(path: Path) -> Pair:
    return Pair(json.loads((path / "w.json").read_text())["value"])


def register_value(tmp_path: Path, value: float, alias: str | None = "champion") -> registry.ModelVersion:
    d = tmp_path / f"v{value}"
    d.mkdir()
    (d / "w.json").write_text(json.dumps({"value": value}))
    return registry.register("toy", d, alias=alias)


class Req(BaseModel):
    amount: float = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)


router = APIRouter()


@router.post("/v1/score")
def score(req: Req, loaded: serving.Loaded = Depends(serving.get_loaded)) -> dict:
    m = loaded.model
    a = m.a
    time.sleep(0.001)  # widen the window in which a non-atomic swap would be visible
    return {"a": a, "b": m.b, "version": loaded.version_id}


def make_app(**kw) -> serving.FastAPI:
    holder = serving.ModelHolder("toy", load_pair)
    return serving.create_app("toy", holder, [router], **kw)


GOOD = {"amount": 10.0, "currency": "EUR"}


def test_not_ready_until_a_model_is_loaded() -> None:
    with TestClient(make_app(refresh_interval_s=None)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = client.post("/v1/score", json=GOOD)
        assert r.status_code == 503 and "no 'toy' model loaded" in r.json()["detail"]


def test_good_and_bad_requests(tmp_path: Path) -> None:
    mv = register_value(tmp_path, 1.0)
    with TestClient(make_app(refresh_interval_s=None)) as client:
        assert client.get("/readyz").json() == {"ready": True, "model": "toy", "version": mv.version}
        r = client.post("/v1/score", json=GOOD)
        assert r.status_code == 200 and r.json() == {"a": 1.0, "b": 1.0, "version": mv.version}
        r = client.post("/v1/score", json={"amount": -5, "currency": "EUR"})
        assert r.status_code == 422
        assert r.json()["message"].startswith("body.amount: Input should be greater than 0")
        r = client.post("/v1/score", json={"amount": 5})
        assert r.status_code == 422 and "body.currency: Field required" in r.json()["message"]
        r = client.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422
        info = client.get("/v1/model").json()
        assert info["sha256"] == mv.sha256 and "champion" in info["aliases"]


def test_metrics_endpoint_counts_requests_and_latency(tmp_path: Path) -> None:
    register_value(tmp_path, 1.0)
    with TestClient(make_app(refresh_interval_s=None)) as client:
        for _ in range(3):
            client.post("/v1/score", json=GOOD)
        client.post("/v1/score", json={})
        text = client.get("/metrics").text
    assert 'mlref_requests_total{app="toy",method="POST",route="/v1/score",status="200"} 3.0' in text
    assert 'mlref_requests_total{app="toy",method="POST",route="/v1/score",status="422"} 1.0' in text
    assert 'mlref_request_latency_seconds_count{app="toy",route="/v1/score"} 4.0' in text
    assert 'mlref_model_version{app="toy"} 1.0' in text


def test_api_key_required_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_value(tmp_path, 1.0)
    monkeypatch.setenv("MLREF_API_KEY", "s3cret")
    with TestClient(make_app(refresh_interval_s=None)) as client:
        assert client.get("/healthz").status_code == 200  # probes stay open
        r = client.post("/v1/score", json=GOOD)
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert client.post("/v1/score", json=GOOD, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/v1/score", json=GOOD, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/metrics").status_code == 401


def test_hot_swap_under_concurrent_requests_is_old_or_new_never_mixed(tmp_path: Path) -> None:
    v1 = register_value(tmp_path, 1.0)
    v2 = register_value(tmp_path, 2.0, alias=None)
    seen: list[tuple] = []
    stop = threading.Event()
    with TestClient(make_app(refresh_interval_s=0.05)) as client:

        def hammer() -> None:
            while not stop.is_set():
                r = client.post("/v1/score", json=GOOD)
                assert r.status_code == 200, r.text
                body = r.json()
                seen.append((body["a"], body["b"], body["version"]))

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(hammer) for _ in range(4)]
            time.sleep(0.3)
            registry.promote("toy", v2.version)  # the poller notices and swaps
            deadline = time.monotonic() + 20
            while not any(s[2] == v2.version for s in seen[-20:]) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            stop.set()
            for f in futures:
                f.result()
    assert {s for s in seen} <= {(1.0, 1.0, v1.version), (2.0, 2.0, v2.version)}
    versions = [s[2] for s in seen]
    assert versions[0] == v1.version and versions[-1] == v2.version
    first_new = versions.index(v2.version)
    assert len(versions) > 20 and first_new > 0


def test_failed_reload_keeps_serving_the_old_model(tmp_path: Path, mlref_home: Path) -> None:
    v1 = register_value(tmp_path, 1.0)
    v2 = register_value(tmp_path, 2.0, alias=None)
    with TestClient(make_app(refresh_interval_s=None)) as client:
        stored = next(p for p in (mlref_home / "artifacts").rglob("w.json") if '"value": 2.0' in p.read_text())
        stored.write_text(json.dumps({"value": 666.0}))  # v2 tampered with in the store
        registry.promote("toy", v2.version)
        r = client.post("/admin/reload")
        assert r.status_code == 500 and "IntegrityError" in r.json()["detail"]
        assert client.post("/v1/score", json=GOOD).json()["version"] == v1.version
        assert 'mlref_model_reloads_total{app="toy",result="failed"} 1.0' in client.get("/metrics").text


def test_prediction_log_samples(tmp_path: Path) -> None:
    plog = serving.PredictionLog(tmp_path / "p.jsonl", sample_rate=0.3, seed=1)
    kept = sum(plog.log({"i": i, "prediction": 0.5}) for i in range(2000))
    assert 450 < kept < 750
    df = plog.read()
    assert len(df) == kept and {"logged_at", "i", "prediction"} <= set(df.columns)
    with pytest.raises(ValueError, match=r"sample_rate must be in \[0, 1\]"):
        serving.PredictionLog(tmp_path / "q.jsonl", sample_rate=1.5)

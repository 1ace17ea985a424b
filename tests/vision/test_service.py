"""POST /v1/images:classify: good uploads in every format, bad ones rejected with a message, the service keeps
serving, and fuzzing of the OpenAPI finds no 5xx."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from apps.vision.service import build_app
from common import serving
from tests.vision.conftest import bomb_png, colour_image, png_bytes, tiny_config
from tests.vision.helpers import register_copy

URL = "/v1/images:classify"


@pytest.fixture
def client(tiny_trained):
    """The service around the session's tiny model (set directly: no registry round trip per test)."""
    model = tiny_trained[0]
    cfg = replace(
        tiny_config(), max_upload_bytes=20_000, max_batch_images=4, max_request_bytes=200_000, max_pixels=1_000_000
    )
    app = build_app(refresh_interval_s=None, cfg=cfg)
    app.state.holder.set(serving.Loaded(model, None))
    with TestClient(app) as c:
        c.model, c.version = model, None
        yield c


def _img(label: int = 0, seed: int = 0) -> bytes:
    return png_bytes(colour_image(label, np.random.default_rng(seed)))


def test_good_uploads(client: TestClient) -> None:
    one = client.post(URL, files={"file": ("a.png", _img(), "image/png")})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model_version"] == client.version and len(body["predictions"]) == 1
    labels = body["predictions"][0]["labels"]
    assert body["predictions"][0]["name"] == "a.png" and len(labels) == 3
    assert abs(sum(lab["probability"] for lab in labels) - 1) < 1e-4
    assert labels[0]["probability"] >= labels[1]["probability"]
    many = client.post(URL + "?k=2", files=[("files", (f"{i}.png", _img(i % 3, i), "image/png")) for i in range(3)])
    assert many.status_code == 200 and [len(p["labels"]) for p in many.json()["predictions"]] == [2, 2, 2]
    as_json = client.post(URL, json={"images": [{"name": "b", "data": base64.b64encode(_img()).decode()}]})
    assert as_json.status_code == 200 and as_json.json()["predictions"][0]["labels"] == labels
    raw = client.post(URL, content=_img(), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["predictions"][0]["labels"] == labels
    jpeg = io.BytesIO()
    Image.fromarray(colour_image(1, np.random.default_rng(3))).convert("L").save(jpeg, format="JPEG")
    assert client.post(URL, files={"file": ("g.jpg", jpeg.getvalue(), "image/jpeg")}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'route="/v1/images:classify",status="200"' in metrics


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": {"file": ("n.txt", b"hello", "text/plain")}}, 400, "image 0 (n.txt): not an image"),
        ({"files": {"file": ("e.png", b"", "image/png")}}, 400, "empty file"),
        ({"files": {"file": ("t.png", _img()[:60], "image/png")}}, 400, "unreadable image"),
        ({"files": {"file": ("bomb.png", bomb_png(2000, 2000), "image/png")}}, 400, "4000000 pixels > limit 1000000"),
        ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * 30_000, "image/png")}}, 413, "larger than the limit"),
        ({"files": [("f", (f"{i}.png", b"x", "image/png")) for i in range(5)]}, 400, "Too many files"),
        (
            {"content": b"hello", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported content type 'text/plain'",
        ),
        ({"content": b"hello"}, 415, "unsupported content type"),
        ({"json": {"images": [{"data": "!!not base64!!"}]}}, 422, "not valid base64"),
        ({"json": {"images": []}}, 422, "send 1 to 4"),
        ({"json": {"images": [{"data": "A" * 40_000}]}}, 422, "longer than the base64 of 20000 bytes"),
        ({"json": {"pictures": []}}, 422, 'expected {"images"'),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, 422, "not valid JSON"),
        ({"files": [("field", (None, "value"))]}, 400, "no file fields"),
        ({"data": {"field": "value"}}, 415, "application/x-www-form-urlencoded"),
        ({"content": b"x" * 300_000, "headers": {"content-type": "image/png"}}, 413, "request body too large"),
    ],
)
def test_bad_uploads_get_4xx_with_a_message_and_the_service_keeps_serving(
    client: TestClient, kwargs, status, message
) -> None:
    r = client.post(URL, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"], r.json()
    assert client.post(URL, files={"file": ("a.png", _img(), "image/png")}).status_code == 200


def test_no_model_is_503(mlref_home: Path) -> None:
    with TestClient(build_app(refresh_interval_s=None)) as c:
        r = c.post(URL, files={"file": ("a.png", _img(), "image/png")})
    assert r.status_code == 503


def test_serves_the_registered_champion_through_onnx(tiny_trained) -> None:
    model, mv = register_copy(tiny_trained)
    with TestClient(build_app(refresh_interval_s=None, backend="onnx")) as c:
        r = c.post(URL, files={"file": ("a.png", _img(), "image/png")})
    assert r.status_code == 200 and r.json()["model_version"] == mv.version
    import torch

    expected = model.predict_proba(torch.from_numpy(colour_image(0, np.random.default_rng(0)).transpose(2, 0, 1))[None])
    assert abs(r.json()["predictions"][0]["labels"][0]["probability"] - float(expected.max())) < 1e-4


@pytest.mark.reliability
def test_fuzzing_finds_no_server_error(client: TestClient) -> None:
    from mlref_testing import probe
    from mlref_testing.probe.fuzz import fuzz_app

    report = fuzz_app(
        client.app,
        max_examples=15,
        time_budget_s=60,
        name="vision",
        # random bytes are schema-valid uploads that no schema can tell from images: their 400 is the documented
        # answer (checked for its message and for changing nothing), counted apart
        rule_rejections={"POST /v1/images:classify": {400: "image", 413: "limit"}},
    )
    probe.record(
        [
            probe.Probe(
                "vision",
                "OpenAPI fuzzing (schemathesis)",
                f"{report.cases} cases, {len(report.operations)} operations, valid + invalid",
                "0 5xx, answers as documented, 4xx change nothing",
                f"{report.server_errors} 5xx, {len(report.failures)} failures ({report.rule_rejections} uploads "
                "refused as not an image or over a limit)",
                report.ok,
            )
        ]
    )
    assert report.server_errors == 0 and len(report.operations) >= 4, report.summary()
    assert report.ok, report.summary()

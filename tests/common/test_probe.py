"""The probe kit itself: the fuzzer finds what it must (5xx, undocumented answers, state changed by a rejected
request), the load client measures from the schedule and refuses non-loopback targets, the HTTP probes and the
table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi import APIRouter, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from common import serving
from mlref_testing import probe
from mlref_testing.probe import fuzz, load

pytestmark = pytest.mark.reliability


class Item(BaseModel):
    qty: serving.JsonInt = Field(ge=0, le=1000)
    price: float = Field(ge=0, le=1e6, allow_inf_nan=False, strict=True)  # strict: no true/false


def shop(*, bugs: bool, **kw) -> serving.FastAPI:
    """A tiny service; with ``bugs``: a 500 for qty > 700, an undocumented 418 for qty in 400..700, and an odd
    qty below 400 written to the state before it is refused (409)."""
    state: list[int] = []
    router = APIRouter()

    @router.post("/v1/buy", responses={409: {"description": "odd quantities are refused"}})
    def buy(item: Item) -> dict:
        if bugs and item.qty > 700:
            raise RuntimeError("boom")
        if bugs and item.qty >= 400:
            raise HTTPException(418, detail="teapot")
        if item.price > 5e5:  # a rule the schema cannot express (think: a limit that changes daily)
            raise HTTPException(422, detail="body.price: above today's limit")
        if item.qty % 2:
            if bugs:
                state.append(item.qty)  # mutates, then refuses
            raise HTTPException(409, detail="odd quantity")
        state.append(item.qty)
        return {"total": item.qty * item.price, "n": len(state)}

    holder = serving.ModelHolder("shop", lambda p: None)
    holder.set(serving.Loaded(object()))
    app = serving.create_app("shop", holder, [router], refresh_interval_s=None, load_on_startup=False, **kw)
    app.state.items = state
    return app


RULE = {"POST /v1/buy": {422: "body.price"}}


def test_fuzzer_passes_a_correct_service() -> None:
    app = shop(bugs=False)
    report = fuzz.fuzz_app(
        app, snapshot=lambda: list(app.state.items), max_examples=30, name="shop", rule_rejections=RULE
    )
    assert report.ok, report.summary()
    assert report.cases > 40 and report.statuses[200] > 0 and report.statuses[422] > 0
    assert report.server_errors == 0 and report.rule_rejections > 0
    # without the declared rule, the same refusals are schema-valid requests rejected
    strict = fuzz.fuzz_app(app, max_examples=30, name="shop", only=["POST /v1/buy"])
    assert [f.kind for f in strict.failures] == ["Schema-valid request rejected"], strict.summary()
    assert "above today's limit" in strict.failures[0].response


def test_fuzzer_reports_5xx_undocumented_status_and_state_changed_by_rejection() -> None:
    app = shop(bugs=True)
    report = fuzz.fuzz_app(
        app, snapshot=lambda: list(app.state.items), max_examples=80, name="shop", only=["POST /v1/buy"]
    )
    kinds = {f.kind for f in report.failures}
    assert report.server_errors > 0
    assert fuzz.CALL_FAILED in kinds or fuzz.SERVER_ERROR in kinds, report.summary()
    assert fuzz.STATE_CHANGED in kinds, report.summary()
    assert any("status code" in f.kind.lower() and f.status == 418 for f in report.failures), report.summary()
    assert report.operations == ["POST /v1/buy"]
    text = report.summary()
    assert "curl -X POST" in text and "/v1/buy" in text  # the request is there to replay


def test_load_client_measures_from_the_schedule_and_reports_the_machine_load() -> None:
    router = APIRouter()

    @router.get("/v1/slow")
    def slow() -> dict:
        time.sleep(0.05)  # capacity of one worker: 20/s; asked for 40/s -> a growing queue
        return {"ok": True}

    holder = serving.ModelHolder("slow", lambda p: None)
    app = serving.create_app("slow", holder, [router], refresh_interval_s=None, load_on_startup=False)
    with serving.BackgroundServer(app) as srv:
        fast = load.run_load(srv.url, "/healthz", method="GET", rate=50, n=50, clients=2)
        queued = load.run_load(srv.url, "/v1/slow", method="GET", rate=40, n=40, clients=1)
    assert fast.errors == 0 and fast.statuses == {"200": 50} and 0 < fast.p50_ms <= fast.p99_ms <= fast.max_ms
    assert len(fast.loadavg_before) == 3 and fast.cpu_count
    # one client, 50 ms per answer, one due every 25 ms: the 40th waited ~1 s in the queue. A closed-loop
    # client (timing from the actual send) would report ~50 ms.
    assert queued.errors == 0 and queued.max_ms > 700 and queued.p50_ms > 300
    assert queued.achieved_rate_per_s < 30


@pytest.mark.parametrize(
    ("url", "kw", "match"),
    [
        ("http://10.0.0.1:8000", {}, "loopback"),
        ("https://127.0.0.1:8000", {}, "loopback"),
        ("http://127.0.0.1:8000", {"n": 10**6}, "n must be"),
        ("http://127.0.0.1:8000", {"n": 1000, "rate": 1}, "n / rate"),
        ("http://127.0.0.1:8000", {"clients": 0}, "clients"),
    ],
)
def test_load_refuses_unbounded_or_remote_targets(url: str, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load.run_load(url, "/healthz", **kw)


def test_http_probes_pass_on_a_correct_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLREF_API_KEY", probe.PROBE_API_KEY)
    monkeypatch.setenv("MLREF_MAX_BODY_BYTES", "2000")
    app = shop(bugs=False)
    with TestClient(app) as client:
        rows = probe.http_probes(
            "shop",
            client,
            path="/v1/buy",
            body={"qty": 2, "price": 3.5},
            number_field="price",
            snapshot=lambda: list(app.state.items),
        )
    assert {r.probe for r in rows} >= {
        "oversized body",
        "no API key",
        "wrong API key",
        "malformed JSON",
        "non-finite number (NaN)",
        "non-finite number (1e999)",
        "wrong type",
    }
    assert all(r.ok for r in rows), probe.failed(rows)
    assert app.state.items == [2]  # only the good request got through


def test_http_probes_flag_a_service_without_limits() -> None:
    app = shop(bugs=False, max_body_bytes=None, api_key=None)
    with TestClient(app) as client:
        rows = {
            r.probe: r
            for r in probe.http_probes(
                "shop", client, path="/v1/buy", body={"qty": 2, "price": 3.5}, number_field="price", max_body_bytes=2000
            )
        }
    assert not rows["oversized body"].ok and rows["oversized body"].observed.startswith("200")
    assert not rows["no API key"].ok


def test_table_record_and_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "probe.jsonl"
    monkeypatch.setenv(probe.PROBE_OUT_ENV, str(out))
    probe.record([probe.Probe("b-app", "fuzz", "10 cases", "0 5xx", "0 5xx", True)])
    probe.record(
        [
            probe.Probe("a-app", "load", "100 at 10/s", "0 errors", "3 errors", False),
            probe.Probe("b-app", "fuzz", "20 cases", "0 5xx", "0 5xx", True),
        ]
    )  # a rerun replaces a row
    assert len(out.read_text().splitlines()) == 3
    assert probe.main([str(out)]) == 1  # a failed probe
    printed = capsys.readouterr().out
    assert printed.index("**a-app**") < printed.index("**b-app**") and "20 cases" in printed
    assert "10 cases" not in printed and "**FAILED**" in printed
    assert json.loads(out.read_text().splitlines()[0])["app"] == "b-app"
    assert (tmp_path / "probe.md").read_text().startswith("# Probe results")
    assert probe.main([str(tmp_path / "missing.jsonl")]) == 2


BATCH_JOB = """
import sys, time
from pathlib import Path
import pandas as pd
from common import batch

src, dst, marker = map(Path, sys.argv[1:4])
seen = []

def score(chunk):
    seen.append(len(chunk))
    if len(seen) == 3:
        marker.write_text("mid-batch")  # three chunks written to the temp file: kill me now
    time.sleep(0.2)
    return chunk.assign(score=chunk["x"] * 2.0)

batch.score_file(src, dst, score, chunksize=100, progress=False)
"""


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_kill_9_during_batch_leaves_no_partial_output(tmp_path: Path, suffix: str) -> None:
    """Every app's batch command writes through common.batch.score_file: a SIGKILL mid-run leaves the previous
    output byte-for-byte intact and no partial file under the output's name."""
    import pandas as pd

    from mlref_testing.probe import faults

    src = tmp_path / "in.csv"
    pd.DataFrame({"x": range(2000)}).to_csv(src, index=False)
    dst = tmp_path / f"scored{suffix}"
    old = pd.DataFrame({"x": [1], "score": [2.0]})
    old.to_csv(dst, index=False) if suffix == ".csv" else old.to_parquet(dst)
    before = dst.read_bytes()
    marker = tmp_path / "marker"
    done = faults.run_and_kill(
        [*faults.script_cmd(tmp_path, BATCH_JOB), src, dst, marker], when_path_exists=marker, environ=faults.env()
    )
    intact = dst.read_bytes() == before
    others = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("scored") and p != dst)
    row = probe.Probe(
        "common (batch, every app)",
        f"kill -9 during batch ({suffix[1:]})",
        "SIGKILL after 3 of 20 chunks",
        "previous output intact, no partial output",
        f"{'killed' if done.killed else done.returncode}, previous output {'intact' if intact else 'CHANGED'}",
        done.killed and intact,
    )
    probe.record([row])
    assert done.killed and intact, row
    assert others == []  # a killed run leaves at most a hidden temp file (removed by the next run)

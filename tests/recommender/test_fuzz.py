"""Reliability probes of the recommender's HTTP API (mlref_testing.probe): property-based fuzzing of its OpenAPI,
hostile requests (size, API key, non-finite numbers), and an open-loop load test. Rows go to the probe table
(``make probe``)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from apps.recommender.service import build_app
from apps.recommender.train import fit_bundle
from common import serving
from mlref_testing import probe
from mlref_testing.probe import fuzz, load

pytestmark = pytest.mark.reliability
APP = "recommender"


@pytest.fixture(scope="module")
def bundle(small):
    from apps.recommender.config import RecommenderConfig

    return fit_bundle(
        small.interactions, "als", {"iterations": 3}, cfg=RecommenderConfig(seed=7, threads=1), item_meta=small.items
    )


def snapshot_of(app) -> callable:
    """What a request may change: the prediction log, and which model is served."""
    plog = app.state.prediction_log

    def snapshot() -> tuple:
        loaded = app.state.holder.loaded
        return (plog.path.stat().st_size if plog.path.exists() else 0), id(loaded.model), loaded.version_id

    return snapshot


def test_fuzzing_the_api_finds_no_5xx_and_no_state_change_on_rejection(bundle) -> None:
    app = build_app(bundle=bundle, refresh_interval_s=None)
    snapshot = snapshot_of(app)
    report = fuzz.fuzz_app(app, snapshot=snapshot, max_examples=25, time_budget_s=75, name=APP)
    probe.record(
        [
            probe.Probe(
                APP,
                "OpenAPI fuzzing (schemathesis)",
                f"{report.cases} cases, {len(report.operations)} operations, valid + invalid",
                "0 5xx, answers as documented, 4xx change nothing",
                f"{report.server_errors} 5xx, {len(report.failures)} failures",
                report.ok,
            )
        ]
    )
    assert report.cases >= 100 and len(report.operations) >= 8, report.summary()
    assert report.server_errors == 0, report.summary()
    assert report.ok, report.summary()
    assert snapshot()[0] > 0  # accepted requests were logged: the snapshot watches state that does change


def test_hostile_requests_are_refused_cleanly(bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLREF_API_KEY", probe.PROBE_API_KEY)
    app = build_app(bundle=bundle, refresh_interval_s=None)
    items = [str(i) for i in bundle.items.ids[:3]]
    with TestClient(app) as client:
        rows = probe.http_probes(
            APP,
            client,
            path="/v1/recommendations",
            body={"items": items, "k": 5},
            number_field="k",
            snapshot=snapshot_of(app),
        )
    probe.record(rows)
    assert all(r.ok for r in rows), probe.failed(rows)


def test_open_loop_load(bundle) -> None:
    app = build_app(bundle=bundle, refresh_interval_s=None)
    user = str(bundle.users.ids[0])
    with serving.BackgroundServer(app) as srv:
        res = load.run_load(srv.url, f"/v1/users/{user}/recommendations?k=10", method="GET", rate=100, n=300, clients=4)
    probe.record(
        [
            probe.Probe(
                APP,
                "load (open loop, separate process)",
                f"{res.requests} GET recommendations at {res.target_rate_per_s:g}/s",
                "0 errors; p99 < 30 ms on a quiet machine",
                f"p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms, {res.errors} errors, "
                f"{res.achieved_rate_per_s:.0f}/s, load avg {res.loadavg_before[0] if res.loadavg_before else '?'} "
                f"on {res.cpu_count} CPUs",
                res.errors == 0,
            )
        ]
    )
    assert res.errors == 0, res.summary()
    assert res.statuses == {"200": 300}

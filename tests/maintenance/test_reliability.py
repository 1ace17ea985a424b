"""Reliability probes of the maintenance service: schemathesis fuzzing of its OpenAPI (no 5xx, rejected requests
change nothing) and fleet state that survives ``kill -9`` of the server process."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time

import httpx
import pytest

from apps.maintenance.lifecycle import register
from apps.maintenance.service import build_app
from common import registry
from mlref_testing import probe
from mlref_testing.probe import faults, fuzz
from tests.maintenance.test_service import readings

pytestmark = pytest.mark.reliability
APP = "maintenance"


def all_checks() -> list:
    """Every check schemathesis registers (its ``--checks all``), not only the probe kit's default set."""
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    return list(CHECKS.get_all())


# The served model's settings and sensors are required properties in the OpenAPI, but a unit's first reading fixes
# its fields for the later ones, which no JSON schema can say: those 422s ("readings[i].sensor_x: not among the
# unit's fields ...", "field required (the unit's earlier readings have it)") are the declared rule rejections.
FIXED_FIELDS = {"POST /v1/units/{unit}/readings": {422: "the unit's"}}


def test_fuzzing_the_api_finds_no_5xx(fleet, tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    app = build_app(model=tiny_model)

    def snapshot():
        return {u: tuple(d["cycles"]) for u, d in app.state.fleet.units.items()}

    monkeypatch.setattr(fuzz, "_checks", all_checks)
    report = fuzz.fuzz_app(
        app, snapshot=snapshot, max_examples=25, time_budget_s=90, name="maintenance", rule_rejections=FIXED_FIELDS
    )
    probe.record(
        [
            probe.Probe(
                APP,
                "OpenAPI fuzzing (schemathesis, every check)",
                f"{report.cases} cases, {len(report.operations)} operations, valid + invalid, "
                f"{len(all_checks())} checks",
                "0 5xx, answers as documented, 4xx change nothing",
                f"{report.server_errors} 5xx, {len(report.failures)} failures ({report.rule_rejections} refused by the "
                "unit's fixed fields)",
                report.ok,
            )
        ]
    )
    assert report.cases >= 100 and len(report.operations) >= 8, report.summary()
    assert report.server_errors == 0, report.summary()
    assert report.ok, report.summary()
    assert report.statuses[200] > 0 and app.state.fleet.units  # valid readings reached the store


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not become ready")


def other_port(taken: int) -> int:
    """A free port other than ``taken``."""
    from common.serving import free_port

    port = free_port()
    return port if port != taken else free_port()


def test_fleet_state_survives_a_killed_server(fleet, tiny_model, mlref_home, free_port) -> None:
    register(tiny_model, fleet.train, metrics={}, dataset="t", alias=registry.CHAMPION)
    unit = str(fleet.test["unit"].iloc[1])
    recs = readings(fleet, unit)
    url = f"http://127.0.0.1:{free_port}"
    cmd = faults.app_cmd("maintenance", "serve", "--port", free_port)
    env = faults.env(MLREF_HOME=str(mlref_home))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(url, proc)
        assert (
            httpx.post(f"{url}/v1/units/{unit}/readings", json={"readings": recs[:-1]}, timeout=30).status_code == 200
        )
        # a second server on the same home is refused before it serves anything (it would overwrite the first's)
        second = subprocess.run(
            faults.app_cmd("maintenance", "serve", "--port", other_port(free_port)),
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 2 and "another server holds the fleet store" in second.stderr, second.stderr[-2000:]
        before = httpx.get(f"{url}/v1/units/{unit}/rul", timeout=30).json()
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown hook runs
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(url, proc)
        after = httpx.get(f"{url}/v1/units/{unit}/rul", timeout=30).json()
        assert after == before and after["cycle"] == recs[-2]["cycle"]
        dup = httpx.post(f"{url}/v1/units/{unit}/readings", json={"readings": [recs[-2]]}, timeout=30)
        assert dup.status_code == 409  # the restarted server knows the last cycle
        ok = httpx.post(f"{url}/v1/units/{unit}/readings", json={"readings": [recs[-1]]}, timeout=30)
        assert ok.status_code == 200 and ok.json()["stored_cycles"] == len(recs)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    probe.record(
        [
            probe.Probe(
                APP,
                "kill -9 of the server",
                "SIGKILL after readings were acknowledged, restart",
                "every acknowledged cycle still there, same RUL",
                f"RUL {after['rul']} == {before['rul']}, last cycle {after['cycle']}",
                True,
            ),
            probe.Probe(
                APP,
                "second server on the same home",
                "serve while another serve holds MLREF_HOME",
                "refused: exit 2 naming the holder; the first's readings kept",
                f"exit {second.returncode}, 'another server holds the fleet store ...'",
                True,
            ),
        ]
    )
    assert not math.isnan(after["rul"])

"""The HTTP service: readings in, RUL out, good and bad requests with their codes and messages, the fleet view by
urgency, unreadable state moved aside (fuzzing and a killed server: test_reliability.py)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from apps.maintenance.data import sensors_of, settings_of
from apps.maintenance.service import build_app
from mlref_testing.probe import faults


def readings(fleet, unit: str, start: int = 0, stop: int | None = None) -> list[dict]:
    rows = fleet.test[fleet.test["unit"] == unit].iloc[start:stop]
    cols = settings_of(fleet.test) + sensors_of(fleet.test)
    return [{"cycle": int(r["cycle"]), **{c: float(r[c]) for c in cols}} for _, r in rows.iterrows()]


def state_files(app) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(app.state.fleet.root.glob("*.json"))}


def test_readings_rul_and_fleet(fleet, tiny_model) -> None:
    units = list(dict.fromkeys(fleet.test["unit"]))[:3]
    app = build_app(model=tiny_model)
    with TestClient(app) as client:
        for u in units:
            recs = readings(fleet, u)
            first = client.post(f"/v1/units/{u}/readings", json={"readings": recs[:5]})
            assert first.status_code == 200 and first.json()["last_cycle"] == recs[4]["cycle"]
            rest = client.post(f"/v1/units/{u}/readings", json={"readings": recs[5:]})
            assert rest.status_code == 200 and rest.json()["stored_cycles"] == len(recs)
        r = client.get(f"/v1/units/{units[0]}/rul")
        assert r.status_code == 200
        body = r.json()
        expected = tiny_model.predict(fleet.test[fleet.test["unit"] == units[0]].reset_index(drop=True)).iloc[0]
        assert body["cycle"] == int(expected["cycle"]) and body["rul"] == pytest.approx(expected["rul"], abs=0.01)
        assert body["lower"] <= body["rul"] <= body["upper"] and body["alert"] == (body["lower"] <= 30)
        view = client.get("/v1/fleet").json()
        assert view["total"] == 3 and [u["unit"] for u in view["units"]] == [
            u["unit"] for u in sorted(view["units"], key=lambda x: (x["lower"], x["rul"]))
        ]
        assert client.get("/v1/fleet", params={"limit": 1}).json()["units"] == view["units"][:1]
        assert "mlref_requests_total" in client.get("/metrics").text or client.get("/metrics").status_code == 200


def test_bad_readings_are_refused_with_the_field_named_and_change_nothing(fleet, tiny_model) -> None:
    unit = str(fleet.test["unit"].iloc[0])
    recs = readings(fleet, unit, 0, 6)
    sensor = sensors_of(fleet.test)[0]
    app = build_app(model=tiny_model)
    with TestClient(app) as client:
        assert client.post(f"/v1/units/{unit}/readings", json={"readings": recs[:3]}).status_code == 200
        before = state_files(app)
        nxt = recs[3]
        cases = [
            ({"readings": [recs[2]]}, 409, "readings[0].cycle: cycle 3 repeats"),  # duplicate of a stored cycle
            ({"readings": [recs[1]]}, 409, "readings[0].cycle"),  # before the last stored cycle
            ({"readings": [recs[4], nxt]}, 409, "readings[1].cycle: cycle 4 comes before"),  # out of order in request
            ({"readings": [nxt, nxt]}, 409, "readings[1].cycle"),  # duplicate within the request
            ({"readings": [{k: v for k, v in nxt.items() if k != sensor}]}, 422, f"readings[0].{sensor}: field"),
            ({"readings": [{**nxt, sensor: "12.5"}]}, 422, f"readings[0].{sensor}: must be a finite number"),
            ({"readings": [{**nxt, sensor: True}]}, 422, f"readings[0].{sensor}"),
            ({"readings": [{**nxt, "sensor_99": 1.0}]}, 422, "readings[0].sensor_99: not among the unit's fields"),
            ({"readings": [{**nxt, "colour": 1.0}]}, 422, "readings[0].colour: unknown field"),
            ({"readings": [{**nxt, "cycle": 0}]}, 422, "cycle"),
            ({"readings": []}, 422, "readings"),
            ({}, 422, "readings"),
        ]
        for body, status, fragment in cases:
            r = client.post(f"/v1/units/{unit}/readings", json=body)
            assert r.status_code == status and fragment in r.json()["message"], (body, r.json())
        # non-finite numbers: JSON has no NaN/Infinity, but Python clients send them as bare tokens
        for token in ("NaN", "Infinity", "-Infinity"):
            raw = json.dumps({"readings": [nxt]}).replace(str(nxt[sensor]), token, 1)
            r = client.post(f"/v1/units/{unit}/readings", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422 and sensor in r.json()["message"], (token, r.json())
        assert client.post("/v1/units/bad%20unit!/readings", json={"readings": [nxt]}).status_code == 422
        assert state_files(app) == before  # a rejected request changes nothing
        missing = client.get("/v1/units/never-seen/rul")
        assert missing.status_code == 404 and "never-seen" in missing.json()["message"]
        assert client.post(f"/v1/units/{unit}/readings", json={"readings": [nxt]}).status_code == 200


def test_unreadable_state_is_moved_aside(fleet, tiny_model, mlref_home) -> None:
    app = build_app(model=tiny_model)
    unit = str(fleet.test["unit"].iloc[0])
    with TestClient(app) as client:
        client.post(f"/v1/units/{unit}/readings", json={"readings": readings(fleet, unit, 0, 3)})
    path = app.state.fleet.root / f"{unit}.json"
    faults.truncate(path, 0.5)
    again = build_app(model=tiny_model)
    assert unit not in again.state.fleet.units and path.with_suffix(".corrupt").exists()


def test_a_unit_keeps_its_baseline_when_its_history_is_trimmed(fleet, tiny_model, mlref_home) -> None:
    # the health features compare recent readings (30 cycles) with the unit's first cycles; a service that kept only the
    # recent ones would answer differently from the model on the unit's whole history
    unit = fleet.test.groupby("unit").size().idxmax()
    recs = readings(fleet, unit)
    app = build_app(model=tiny_model)
    app.state.fleet.history_cycles = 31
    with TestClient(app) as client:
        for i in range(0, len(recs), 7):
            assert client.post(f"/v1/units/{unit}/readings", json={"readings": recs[i : i + 7]}).status_code == 200
        body = client.get(f"/v1/units/{unit}/rul").json()
    doc = json.loads((app.state.fleet.root / f"{unit}.json").read_text())
    assert len(doc["cycles"]) == 31 and doc["head_cycles"] == [r["cycle"] for r in recs[:50]]
    expected = tiny_model.predict(fleet.test[fleet.test["unit"] == unit].reset_index(drop=True)).iloc[0]
    assert body["cycle"] == recs[-1]["cycle"] and body["rul"] == pytest.approx(expected["rul"], abs=0.01)
    again = build_app(model=tiny_model)  # and after a restart, from the state files
    again.state.fleet.history_cycles = 31
    with TestClient(again) as client:
        assert client.get(f"/v1/units/{unit}/rul").json()["rul"] == body["rul"]

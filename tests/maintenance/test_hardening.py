"""Hostile and heavy use of the maintenance service (issue #17): absurd numbers, a second server on the same home, a
fleet of thousands of units, the OpenAPI example, a writer killed in the middle of a write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from apps.maintenance.data import UNIT, sensors_of, settings_of
from apps.maintenance.service import FleetStore, StoreLocked, UnitError, build_app
from common import serving
from tests.maintenance.test_service import readings, state_files

REPO = Path(__file__).resolve().parents[2]


def _post_raw(client: TestClient, unit: str, text: str):
    return client.post(f"/v1/units/{unit}/readings", content=text, headers={"content-type": "application/json"})


def test_huge_absurd_and_out_of_range_numbers_are_422s_naming_the_field(fleet, tiny_model) -> None:
    """A reading of 1 followed by 400 zeros (a JSON integer) made ``float(v)`` raise: a plain-text 500."""
    unit = str(fleet.test["unit"].iloc[0])
    recs = readings(fleet, unit, 0, 4)
    sensor = tiny_model.pre.sensors[-1]
    app = build_app(model=tiny_model)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post(f"/v1/units/{unit}/readings", json={"readings": recs[:2]}).status_code == 200
        before = state_files(app)
        nxt = recs[2]
        for token in ("1" + "0" * 400, "-" + "9" * 400, "1e300", "-1e200", "1e999", "12345678901234567890"):
            text = json.dumps({"readings": [{**nxt, sensor: 0.125}]}).replace("0.125", token)
            r = _post_raw(client, unit, text)
            assert r.status_code == 422, (token, r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/json")
            assert f"readings[0].{sensor}" in r.json()["message"], (token, r.json())
        for token in ("1" + "0" * 400, "1e300", "1e999", "-5", "1.5"):
            text = json.dumps({"readings": [{**nxt, "cycle": 77}]}).replace(": 77", ": " + token)
            r = _post_raw(client, unit, text)
            assert r.status_code == 422 and "cycle" in r.json()["message"], (token, r.status_code, r.text[:200])
        # an integer too long for Python's JSON parser (4,300 digits): a client error, not a 5xx
        r = _post_raw(client, unit, json.dumps({"readings": [{**nxt, sensor: 0.125}]}).replace("0.125", "7" * 5000))
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
        # a new unit's first reading fixes its fields: an absurd value in a field the model does not use is refused too
        spare = next((c for c in settings_of(fleet.test) + sensors_of(fleet.test) if c not in nxt), "sensor_99")
        text = json.dumps({"readings": [{**nxt, spare: 0.125}]}).replace("0.125", "1" + "0" * 400)
        r = _post_raw(client, "fresh-unit", text)
        assert r.status_code == 422 and f"readings[0].{spare}" in r.json()["message"], r.text[:200]
        assert state_files(app) == before
        assert client.post(f"/v1/units/{unit}/readings", json={"readings": [nxt]}).status_code == 200


def test_a_second_server_on_the_same_home_is_refused(fleet, tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers on one MLREF_HOME: A acknowledged cycles 1-30 of a unit, B cycles 1-5, the file kept 5."""
    unit = str(fleet.test.groupby(UNIT).size().idxmax())
    recs = readings(fleet, unit, 0, 30)
    a = build_app(model=tiny_model)
    with TestClient(a) as client_a:
        assert client_a.post(f"/v1/units/{unit}/readings", json={"readings": recs}).status_code == 200
        # the CLI refuses to start: exit 2 and a message naming the store, before uvicorn runs
        started: list[Any] = []
        monkeypatch.setattr(serving, "serve", lambda app, **kw: started.append(app))
        from apps.maintenance.__main__ import app as cli_app

        res = CliRunner().invoke(cli_app, ["serve", "--port", "8123"])
        assert res.exit_code == 2 and not started, (res.exit_code, res.output)
        assert "another server holds" in res.output and "units" in res.output
        # an app started in-process is refused at start-up, and one never started cannot write
        b = build_app(model=tiny_model)
        with pytest.raises(StoreLocked, match="another server holds"), TestClient(b):
            pass
    # after A stopped (its lock released by the kernel), the state on disk is A's: all 30 cycles
    doc = json.loads((a.state.fleet.root / f"{unit}.json").read_text())
    assert doc["cycles"] == [r["cycle"] for r in recs]


def test_a_store_without_the_lock_never_writes(fleet, tiny_model, mlref_home) -> None:
    unit = str(fleet.test.groupby(UNIT).size().idxmax())
    recs = readings(fleet, unit, 0, 30)
    a = build_app(model=tiny_model)
    b = build_app(model=tiny_model)  # built, never started: the state it read is already stale
    with TestClient(a) as client_a:
        assert client_a.post(f"/v1/units/{unit}/readings", json={"readings": recs}).status_code == 200
        client_b = TestClient(b)  # no lifespan: requests only
        r = client_b.post(f"/v1/units/{unit}/readings", json={"readings": recs[:5]})
        assert r.status_code == 503 and "another server holds" in r.json()["message"], r.text
        store = FleetStore(a.state.fleet.root)
        with pytest.raises(StoreLocked):
            store.acquire()
        with pytest.raises(UnitError, match="another server holds"):
            store.append(unit, [], [])
    doc = json.loads((a.state.fleet.root / f"{unit}.json").read_text())
    assert doc["cycles"] == [r["cycle"] for r in recs]
    # once A is gone, B takes over and first re-reads the state A left: nothing acknowledged is lost
    with TestClient(b) as client_b:
        r = client_b.post(f"/v1/units/{unit}/readings", json={"readings": recs[:5]})
        assert r.status_code == 409 and "repeats" in r.json()["message"]
        assert client_b.get(f"/v1/units/{unit}/rul").json()["cycle"] == recs[-1]["cycle"]


class CountingModel:
    """The tiny model, counting the units each ``predict`` call scores."""

    def __init__(self, model: Any) -> None:
        self.model, self.calls = model, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        self.calls.append(int(df[UNIT].nunique()))
        return self.model.predict(df)

    def scored(self) -> int:
        n, self.calls = sum(self.calls), []
        return n


def write_fleet_state(root: Path, fleet, n_units: int, cycles: int = 12) -> list[str]:
    """``n_units`` unit files in the service's state format (copies of the test units' first ``cycles`` cycles)."""
    root.mkdir(parents=True, exist_ok=True)
    cols = settings_of(fleet.test) + sensors_of(fleet.test)
    sources = []
    for _, g in fleet.test.groupby(UNIT):
        g = g.head(cycles)
        sources.append((g["cycle"].astype(int).tolist(), g[cols].to_numpy(float).tolist()))
    names = []
    for i in range(n_units):
        cyc, vals = sources[i % len(sources)]
        name = f"u{i:05d}"
        doc = {"format": 1, "unit": name, "fields": cols, "cycles": cyc, "values": vals}
        doc |= {"head_cycles": cyc[:50], "head_values": vals[:50]}
        (root / f"{name}.json").write_text(json.dumps(doc))
        names.append(name)
    return names


def test_the_fleet_view_does_not_rescore_units_off_the_page(fleet, tiny_model, mlref_home) -> None:
    """``GET /v1/fleet?limit=1`` re-predicted all 2,017 units of a fleet on every call (15.5 s)."""
    root = mlref_home / "state" / "maintenance" / "units"
    names = write_fleet_state(root, fleet, 2000)
    model = CountingModel(tiny_model)
    app = build_app(model=model, state_dir=root)
    with TestClient(app) as client:
        first = client.get("/v1/fleet", params={"limit": 1}).json()
        assert first["total"] == 2000 and len(first["units"]) == 1
        assert model.scored() == 2000  # the first view after start-up scores the fleet once
        for params in ({"limit": 1}, {"limit": 10, "offset": 1990}, {}):
            page = client.get("/v1/fleet", params=params)
            assert page.status_code == 200 and model.scored() == 0, params
        # pages tile the fleet in urgency order
        seen = []
        for offset in range(0, 2000, 1000):
            body = client.get("/v1/fleet", params={"limit": 1000, "offset": offset}).json()
            seen += body["units"]
            assert body["next_offset"] == (offset + 1000 if offset + 1000 < 2000 else None)
        assert sorted(u["unit"] for u in seen) == names and model.scored() == 0
        keys = [(u["lower"], u["rul"], u["unit"]) for u in seen]
        assert keys == sorted(keys)
        assert client.get("/v1/fleet", params={"limit": 1001}).status_code == 422  # bounded page
        # a new reading re-scores that unit only, and the view shows it at once
        unit = seen[-1]["unit"]
        doc = json.loads((root / f"{unit}.json").read_text())
        reading = {"cycle": doc["cycles"][-1] + 1, **dict(zip(doc["fields"], doc["values"][-1], strict=True))}
        assert client.post(f"/v1/units/{unit}/readings", json={"readings": [reading]}).status_code == 200
        assert model.scored() == 1
        view = client.get("/v1/fleet", params={"limit": 1000, "offset": 1000}).json()["units"]
        view += client.get("/v1/fleet", params={"limit": 1000}).json()["units"]
        assert model.scored() == 0
        [mine] = [u for u in view if u["unit"] == unit]
        rul = client.get(f"/v1/units/{unit}/rul").json()
        assert mine["cycle"] == reading["cycle"] == rul["cycle"] and mine["rul"] == pytest.approx(rul["rul"], abs=0.05)
        # a new champion (hot swap) re-scores the fleet once, then pages are free again
        model.scored()
        app.state.holder.set(serving.Loaded(model))
        assert client.get("/v1/fleet", params={"limit": 5}).status_code == 200 and model.scored() == 2000
        assert client.get("/v1/fleet", params={"limit": 5}).status_code == 200 and model.scored() == 0


def test_the_openapi_example_is_a_reading_the_served_model_accepts(fleet, tiny_model) -> None:
    """The documented example lacked sensors the model needs: a 422 for the request the docs suggest (ST202)."""
    app = build_app(model=tiny_model)
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
        reading = spec["components"]["schemas"]["Reading"]
        example = reading["example"]
        for field in tiny_model.pre.settings + tiny_model.pre.sensors:
            assert field in example and field in reading["required"], field
        body = spec["components"]["schemas"]["ReadingsRequest"]["example"]
        assert body == {"readings": [example]}
        r = client.post("/v1/units/docs-example/readings", json=body)
        assert r.status_code == 200, r.text
        assert client.get("/v1/units/docs-example/rul").status_code == 200


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from apps.maintenance.service import FleetStore, Reading

    store = FleetStore(Path(sys.argv[1]))
    store.acquire()
    fields = {f"sensor_{i}": float(i) for i in range(1, 30)}
    for cycle in range(1, 100_000):
        store.append("u1", [Reading(cycle=cycle, **fields)], [])
        print(cycle, flush=True)
    """
)


def test_a_writer_killed_mid_write_keeps_the_last_acknowledged_state(mlref_home) -> None:
    """kill -9 at a random point of a stream of writes: every file is whole and holds each acknowledged cycle."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for delay in (0.0, 0.137):
        root = mlref_home / f"units-{delay}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        acked = 0
        try:
            while acked < 50:
                line = proc.stdout.readline()
                assert line, "writer died"
                acked = int(line)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            acked = max([acked, *(int(x) for x in proc.stdout.read().split())])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        store = FleetStore(root)  # the killed writer's lock went with it
        store.acquire()
        try:
            assert not list(root.glob("*.corrupt"))
            last = store.units["u1"]["cycles"][-1]
            assert acked <= last <= acked + 1  # the cycle in flight may or may not have landed, nothing before it
        finally:
            store.release()

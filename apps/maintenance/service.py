"""HTTP service: a fleet streams readings, the champion answers RUL, interval and alert per unit.

- ``POST /v1/units/{unit}/readings``: append one or more cycles (``{"readings": [{"cycle": 1, "setting_1": ..,
  "sensor_2": .., ...}, ...]}``). Cycles must increase and follow the unit's last stored cycle (409 otherwise);
  every setting and sensor the champion uses must be present and finite (422 naming the field). A rejected
  request changes nothing.
- ``GET /v1/units/{unit}/rul``: RUL at the latest cycle, the conformal interval and the alert state.
- ``GET /v1/fleet``: every unit, most urgent first (lowest interval lower bound).

Fleet state lives in ``$MLREF_HOME/state/maintenance/units/<unit>.json``, one file per unit, each written
atomically (temporary file, fsync, rename) before the request is answered, and read back at start-up: a killed
server loses nothing it acknowledged. Besides common's ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/model`` and
``/admin/reload``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from apps.maintenance.config import MAX_BASELINE_CYCLES, REGISTRY_NAME, Config
from apps.maintenance.data import CYCLE, MAX_CYCLE, SENSOR_PREFIX, SETTING_PREFIX, UNIT
from apps.maintenance.model import RULModel
from common import serving
from common.config import get_settings

log = logging.getLogger(__name__)
CFG = Config()
UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
FIELD_PATTERN = re.compile(r"^(setting|sensor)_[A-Za-z0-9]{1,16}$")
MAX_FIELDS = 64
STATE_FORMAT = 1


class Reading(BaseModel):
    """One operating cycle: ``cycle`` plus ``setting_*`` / ``sensor_*`` numbers (the champion's columns at least)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "patternProperties": {FIELD_PATTERN.pattern: {"type": "number"}},
            "additionalProperties": False,
            "description": (
                "cycle plus setting_*/sensor_* numbers. Which ones are required depends on the served "
                "model (its settings and sensors, GET /v1/model) and on the unit's first reading (its "
                "fields stay fixed): a missing one is a 422 naming it."
            ),
            "example": {
                "cycle": 1,
                "setting_1": -0.0007,
                "setting_2": -0.0004,
                "setting_3": 100.0,
                "sensor_2": 641.82,
                "sensor_3": 1589.7,
            },
        },
    )

    cycle: serving.JsonInt = Field(ge=1, le=MAX_CYCLE)


class ReadingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    readings: list[Reading] = Field(min_length=1, max_length=CFG.max_readings)


class ReadingsResponse(BaseModel):
    unit: str
    accepted: int
    last_cycle: int
    stored_cycles: int


class RULResponse(BaseModel):
    unit: str
    cycle: int = Field(description="the unit's latest cycle")
    rul: float = Field(description="predicted remaining useful life, cycles (capped at the training cap)")
    lower: float | None = Field(description="interval lower bound (cycles)")
    upper: float | None = Field(description="interval upper bound (cycles)")
    alert: bool | None = Field(description="lower bound <= the maintenance horizon")
    horizon: float
    coverage: float | None = Field(description="nominal coverage of the interval")
    model_version: str | None


class FleetResponse(BaseModel):
    units: list[RULResponse] = Field(description="most urgent first: lowest lower bound, then lowest RUL")
    total: int
    alerts: int


def _error(status: int, message: str, loc: list[Any] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc or [], "msg": message}], "message": message}, status_code=status)


class UnitError(Exception):
    def __init__(self, status: int, message: str, loc: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.loc = status, message, loc


class FleetStore:
    """Per-unit reading histories (the last ``history_cycles`` cycles and the first ``MAX_BASELINE_CYCLES``, the
    unit's own baseline for the health features), one JSON file per unit.

    A unit's fields are fixed by its first reading; a file that cannot be read at start-up is renamed
    ``*.corrupt`` and logged, never half-used.
    """

    def __init__(self, root: Path, *, history_cycles: int = CFG.history_cycles, max_units: int = CFG.max_units):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.history_cycles, self.max_units = history_cycles, max_units
        self.lock = threading.Lock()
        self.units: dict[str, dict[str, Any]] = {}
        for path in sorted(self.root.glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                if doc.get("format") != STATE_FORMAT or not re.match(UNIT_PATTERN, doc["unit"]):
                    raise ValueError("unknown format")
                head = doc.setdefault("head_cycles", doc["cycles"][:MAX_BASELINE_CYCLES])
                doc.setdefault("head_values", doc["values"][: len(head)])
                if (
                    len(doc["cycles"]) != len(doc["values"])
                    or len(doc["head_cycles"]) != len(doc["head_values"])
                    or any(len(v) != len(doc["fields"]) for v in doc["values"] + doc["head_values"])
                ):
                    raise ValueError("inconsistent lengths")
                self.units[doc["unit"]] = doc
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("fleet state %s unreadable (%s): moved aside as .corrupt", path, exc)
                os.replace(path, path.with_suffix(".corrupt"))
        log.info("fleet state: %d unit(s) from %s", len(self.units), self.root)

    def _write(self, doc: dict[str, Any]) -> None:
        path = self.root / f"{doc['unit']}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "w") as fh:
                json.dump(doc, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def append(self, unit: str, readings: list[Reading], required: list[str]) -> dict[str, Any]:
        """Validate every reading, then store them all (or nothing). Raises UnitError(status, message, loc)."""
        rows = [r.model_dump() for r in readings]
        with self.lock:
            doc = self.units.get(unit)
            if doc is None and len(self.units) >= self.max_units:
                raise UnitError(409, f"the fleet already tracks {self.max_units} units (max_units)")
            fields = doc["fields"] if doc else sorted((k for k in rows[0] if k != CYCLE), key=_field_key)
            values: list[list[float]] = []
            last = doc["cycles"][-1] if doc and doc["cycles"] else 0
            for i, row in enumerate(rows):
                extra = [k for k in row if k != CYCLE]
                if len(extra) > MAX_FIELDS:
                    raise UnitError(
                        422, f"readings[{i}]: {len(extra)} fields; at most {MAX_FIELDS}", ["body", "readings", i]
                    )
                for k in extra:
                    if not FIELD_PATTERN.match(k):
                        raise UnitError(
                            422,
                            f"readings[{i}].{k[:40]}: unknown field; expected cycle, setting_* or sensor_*",
                            ["body", "readings", i, k[:40]],
                        )
                for k in sorted(set(required) | set(fields), key=_field_key):
                    if k not in row:
                        raise UnitError(
                            422,
                            f"readings[{i}].{k}: field required"
                            + (" (the unit's earlier readings have it)" if k in fields else " (the model uses it)"),
                            ["body", "readings", i, k],
                        )
                    v = row[k]
                    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                        raise UnitError(
                            422,
                            f"readings[{i}].{k}: must be a finite number, got {str(v)[:40]!r}",
                            ["body", "readings", i, k],
                        )
                new = [k for k in extra if k not in fields]
                if new:
                    raise UnitError(
                        422,
                        f"readings[{i}].{new[0]}: not among the unit's fields {fields}",
                        ["body", "readings", i, new[0]],
                    )
                c = row[CYCLE]
                if c <= last:
                    what = (
                        "repeats"
                        if (doc and c in doc["cycles"]) or any(r[CYCLE] == c for r in rows[:i])
                        else "comes before"
                    )
                    raise UnitError(
                        409,
                        f"readings[{i}].cycle: cycle {c} {what} the unit's last cycle {last}; cycles must increase",
                        ["body", "readings", i, CYCLE],
                    )
                last = c
                values.append([float(row[k]) for k in fields])
            new_doc = {
                "format": STATE_FORMAT,
                "unit": unit,
                "fields": fields,
                "cycles": ((doc["cycles"] if doc else []) + [r[CYCLE] for r in rows])[-self.history_cycles :],
                "values": ((doc["values"] if doc else []) + values)[-self.history_cycles :],
                "head_cycles": ((doc["head_cycles"] if doc else []) + [r[CYCLE] for r in rows])[:MAX_BASELINE_CYCLES],
                "head_values": ((doc["head_values"] if doc else []) + values)[:MAX_BASELINE_CYCLES],
            }
            self._write(new_doc)
            self.units[unit] = new_doc
            return new_doc

    def frame(self, units: list[str]) -> pd.DataFrame:
        """The stored readings of ``units`` as a long table sorted by unit and cycle."""
        with self.lock:
            docs = [self.units[u] for u in units]
        parts = []
        for d in docs:
            # the first readings (the unit's baseline) that fell out of the recent history, then the recent ones
            first = d["cycles"][0] if d["cycles"] else math.inf
            k = sum(1 for c in d["head_cycles"] if c < first)
            part = pd.DataFrame(d["head_values"][:k] + d["values"], columns=d["fields"])
            part.insert(0, CYCLE, d["head_cycles"][:k] + d["cycles"])
            part.insert(0, UNIT, d["unit"])
            parts.append(part)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[UNIT, CYCLE])


def _field_key(name: str) -> tuple[int, int, str]:
    prefix, _, tail = name.partition("_")
    return (
        0 if prefix + "_" == SETTING_PREFIX else 1 if prefix + "_" == SENSOR_PREFIX else 2,
        int(tail) if tail.isdigit() else 1 << 30,
        tail,
    )


def required_fields(model: RULModel) -> list[str]:
    return list(model.pre.settings) + list(model.pre.sensors)


router = APIRouter()
UNIT_PARAM = PathParam(..., pattern=UNIT_PATTERN, description="unit id: letters, digits, _ . : - (max 64)")


def _responses(model: RULModel, version: str | None, table: pd.DataFrame) -> list[RULResponse]:
    missing = [c for c in required_fields(model) if c not in table.columns or table[c].isna().any()]
    if missing:
        raise UnitError(
            409, f"stored readings lack {missing[:5]}, which model v{version} needs; post readings with these fields"
        )
    pred = model.predict(table)
    coverage = 1 - model.conformal.alpha if model.conformal is not None else None
    return [
        RULResponse(
            unit=str(r[UNIT]),
            cycle=int(r[CYCLE]),
            rul=round(float(r["rul"]), 2),
            lower=round(float(r["lower"]), 2) if "lower" in r else None,
            upper=round(float(r["upper"]), 2) if "upper" in r else None,
            alert=bool(r["alert"]) if "alert" in r else None,
            horizon=float(model.cfg["horizon"]),
            coverage=coverage,
            model_version=version,
        )
        for r in pred.to_dict("records")
    ]


@router.post(
    "/v1/units/{unit}/readings",
    response_model=ReadingsResponse,
    responses={409: {"description": "cycle out of order or repeated, or the fleet is full"}},
)
def post_readings(
    req: ReadingsRequest, request: Request, unit: str = UNIT_PARAM, loaded: serving.Loaded = Depends(serving.get_loaded)
) -> Any:
    store: FleetStore = request.app.state.fleet
    try:
        doc = store.append(unit, req.readings, required_fields(loaded.model))
    except UnitError as exc:
        return _error(exc.status, exc.message, exc.loc)
    return ReadingsResponse(
        unit=unit, accepted=len(req.readings), last_cycle=doc["cycles"][-1], stored_cycles=len(doc["cycles"])
    )


@router.get(
    "/v1/units/{unit}/rul",
    response_model=RULResponse,
    responses={404: {"description": "unknown unit"}, 409: {"description": "readings lack a model field"}},
)
def get_rul(request: Request, unit: str = UNIT_PARAM, loaded: serving.Loaded = Depends(serving.get_loaded)) -> Any:
    store: FleetStore = request.app.state.fleet
    if unit not in store.units:
        return _error(404, f"unit {unit!r} has no readings; POST /v1/units/{unit}/readings first", ["path", "unit"])
    try:
        [out] = _responses(loaded.model, loaded.version_id, store.frame([unit]))
    except UnitError as exc:
        return _error(exc.status, exc.message, exc.loc)
    request.app.state.metrics.observe_prediction(out.rul)
    plog = request.app.state.prediction_log
    if plog is not None:
        plog.log(
            {
                "unit": unit,
                "cycle": out.cycle,
                "rul": out.rul,
                "lower": out.lower,
                "alert": out.alert,
                "version": loaded.version_id,
            }
        )
    return out


@router.get("/v1/fleet", response_model=FleetResponse)
def get_fleet(
    request: Request,
    limit: int = Query(100, ge=1, le=CFG.max_units, description="units to return"),
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> Any:
    store: FleetStore = request.app.state.fleet
    units = sorted(store.units)
    if not units:
        return FleetResponse(units=[], total=0, alerts=0)
    table = store.frame(units)
    usable = [
        u
        for u, g in table.groupby(UNIT, sort=False)
        if all(c in g.columns and g[c].notna().all() for c in required_fields(loaded.model))
    ]
    try:
        out = _responses(loaded.model, loaded.version_id, table[table[UNIT].isin(usable)].reset_index(drop=True))
    except UnitError as exc:
        return _error(exc.status, exc.message, exc.loc)
    out.sort(key=lambda r: (r.lower if r.lower is not None else r.rul, r.rul, r.unit))
    return FleetResponse(units=out[:limit], total=len(out), alerts=sum(bool(r.alert) for r in out))


def build_app(*, refresh_interval_s: float | None = 5.0, state_dir: Path | None = None, model: RULModel | None = None):
    """The FastAPI app serving the registry's champion (hot-swapped when the alias moves) over the fleet state in
    ``state_dir`` (default ``$MLREF_HOME/state/maintenance/units``). ``model``: serve this one instead (tests)."""
    holder = serving.ModelHolder(REGISTRY_NAME, RULModel.load)
    if model is not None:
        holder.set(serving.Loaded(model))
        refresh_interval_s = None
    plog = serving.PredictionLog(get_settings().path("predictions", f"{REGISTRY_NAME}.jsonl"), sample_rate=0.1)
    app = serving.create_app(
        f"mlref {REGISTRY_NAME}",
        holder,
        [router],
        refresh_interval_s=refresh_interval_s,
        prediction_log=plog,
        prediction_buckets=(5, 10, 20, 30, 50, 75, 100, 125, 150),
        load_on_startup=model is None,
    )
    app.state.fleet = FleetStore(state_dir or get_settings().path("state", REGISTRY_NAME, "units", "x").parent)
    return app

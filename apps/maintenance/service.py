"""HTTP service: a fleet streams readings, the champion answers RUL, interval and alert per unit.

- ``POST /v1/units/{unit}/readings``: append one or more cycles (``{"readings": [{"cycle": 1, "setting_1": ..,
  "sensor_2": .., ...}, ...]}``). Cycles must increase and follow the unit's last stored cycle (409 otherwise);
  every setting and sensor the champion uses must be present and a number within +-1e9 (422 naming the field;
  the OpenAPI lists the served model's fields and an example it accepts). A rejected request changes nothing.
- ``GET /v1/units/{unit}/rul``: RUL at the latest cycle, the conformal interval and the alert state.
- ``GET /v1/fleet?limit=100&offset=0``: one page of the fleet, most urgent first (lowest interval lower bound).
  Each unit's latest prediction is kept, ranked, and refreshed when its readings arrive, so a page costs the
  page, not the fleet; the fleet is scored once after start-up and after each champion swap.

Fleet state lives in ``$MLREF_HOME/state/maintenance/units/<unit>.json``, one file per unit, each written
atomically (temporary file, fsync, rename, directory fsync) before the request is answered, and read back at
start-up: a killed server loses nothing it acknowledged. One writer per store: a server holds an OS lock
(``fcntl.flock`` on ``units.lock`` beside the directory) for its life, and a second one on the same home is
refused at start (``serve`` exits 2 naming the holder). Besides common's ``/healthz``, ``/readyz``, ``/metrics``,
``/v1/model`` and ``/admin/reload``.
"""

from __future__ import annotations

import bisect
import copy
import fcntl
import json
import logging
import math
import os
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from apps.maintenance.config import MAX_BASELINE_CYCLES, REGISTRY_NAME, Config
from apps.maintenance.data import CYCLE, MAX_CYCLE, SENSOR_PREFIX, SETTING_PREFIX, UNIT
from apps.maintenance.model import RULModel
from common import serving
from common.workspace import Workspace

log = logging.getLogger(__name__)
CFG = Config()
UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
FIELD_PATTERN = re.compile(r"^(setting|sensor)_[A-Za-z0-9]{1,16}$")
MAX_FIELDS = 64
STATE_FORMAT = 1
MAX_ABS_READING = 1e9  # a setting or sensor beyond +-1e9 is a broken sensor or a unit mix-up, not a reading
MAX_PAGE = 1000  # units per page of GET /v1/fleet
SCORE_CHUNK = 500  # units per model call when the whole fleet is (re)scored
EXAMPLE = {
    "cycle": 1,
    "setting_1": -0.0007,
    "setting_2": -0.0004,
    "setting_3": 100.0,
    "sensor_2": 641.82,
    "sensor_3": 1589.7,
}


class Reading(BaseModel):
    """One operating cycle: ``cycle`` plus ``setting_*`` / ``sensor_*`` numbers (the champion's columns at least)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "patternProperties": {
                FIELD_PATTERN.pattern: {"type": "number", "minimum": -MAX_ABS_READING, "maximum": MAX_ABS_READING}
            },
            "additionalProperties": False,
            "description": (
                "cycle plus setting_*/sensor_* numbers within +-1e9. The served model's settings and sensors "
                "are required (listed here while a model is loaded); a unit's first reading fixes its fields "
                "for later ones: a missing or extra one is a 422 naming it."
            ),
            "example": EXAMPLE,
        },
    )

    cycle: serving.JsonInt = Field(ge=1, le=MAX_CYCLE)


class ReadingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"readings": [EXAMPLE]}})

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
    total: int = Field(description="units ranked (readings with every field the model needs)")
    alerts: int = Field(description="ranked units in alert")
    offset: int = 0
    next_offset: int | None = Field(None, description="offset of the next page; null on the last one")
    unscored: int = Field(0, description="units whose readings lack a field the served model needs")


def _error(status: int, message: str, loc: list[Any] | None = None) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": loc or [], "msg": message}], "message": message}, status_code=status)


class UnitError(Exception):
    def __init__(self, status: int, message: str, loc: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.loc = status, message, loc


class StoreLocked(RuntimeError):
    """Another process (or another store in this one) is the fleet store's writer."""


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number within +-MAX_ABS_READING, else None (true/false, strings,
    NaN/Infinity, integers too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return x if math.isfinite(x) and abs(x) <= MAX_ABS_READING else None


class FleetStore:
    """Per-unit reading histories (the last ``history_cycles`` cycles and the first ``MAX_BASELINE_CYCLES``, the
    unit's own baseline for the health features), one JSON file per unit.

    A unit's fields are fixed by its first reading; a file that cannot be read at start-up is renamed
    ``*.corrupt`` and logged, never half-used. One writer per directory: :meth:`acquire` takes an exclusive
    ``fcntl.flock`` on ``<root>.lock`` (held until :meth:`release` or the process ends; the kernel drops it when
    the process is killed) and re-reads the directory if it changed since it was read; :meth:`append` acquires
    it first and refuses when another store holds it.
    """

    def __init__(self, root: Path, *, history_cycles: int = CFG.history_cycles, max_units: int = CFG.max_units):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.root.with_name(self.root.name + ".lock")
        self.history_cycles, self.max_units = history_cycles, max_units
        self.lock = threading.Lock()
        self.units: dict[str, dict[str, Any]] = {}
        self._lock_fd: int | None = None
        self._read_signature: tuple = ()
        self.generation = 0  # bumped each time the state is (re)read from disk
        self._load()

    def _signature(self) -> tuple:
        """What the directory holds, cheaply: (name, size, mtime) of every unit file."""
        out = []
        for path in self.root.glob("*.json"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append((path.name, st.st_size, st.st_mtime_ns))
        return tuple(sorted(out))

    def _load(self) -> None:
        units: dict[str, dict[str, Any]] = {}
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
                units[doc["unit"]] = doc
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("fleet state %s unreadable (%s): moved aside as .corrupt", path, exc)
                os.replace(path, path.with_suffix(".corrupt"))
        self.units = units
        self.generation += 1
        self._read_signature = self._signature()
        log.info("fleet state: %d unit(s) from %s", len(self.units), self.root)

    def acquire(self) -> None:
        """Become the store's only writer (no-op when already). Raises :class:`StoreLocked` naming the holder."""
        with self.lock:
            if self._lock_fd is not None:
                return
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise StoreLocked(
                    f"another server holds the fleet store {self.root} (pid {holder}, lock "
                    f"{self.lock_path.name}); stop it, or give this one another MLREF_HOME"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._lock_fd = fd
            if self._signature() != self._read_signature:  # someone wrote since we read: start from their state
                log.info("fleet state changed on disk since it was read: reading it again")
                self._load()

    def release(self) -> None:
        """Give up the writer lock (a later write takes it again)."""
        with self.lock:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None

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
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)

    def append(self, unit: str, readings: list[Reading], required: list[str]) -> dict[str, Any]:
        """Validate every reading, then store them all (or nothing). Raises UnitError(status, message, loc)."""
        if self._lock_fd is None:
            try:
                self.acquire()
            except StoreLocked as exc:
                raise UnitError(503, serving.public_error(str(exc))) from None
        rows = [r.model_dump() for r in readings]
        if not rows:
            raise UnitError(422, "readings: at least one reading", ["body", "readings"])
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
                numbers: dict[str, float] = {}
                for k in sorted(set(required) | set(fields), key=_field_key):
                    if k not in row:
                        raise UnitError(
                            422,
                            f"readings[{i}].{k}: field required"
                            + (" (the unit's earlier readings have it)" if k in fields else " (the model uses it)"),
                            ["body", "readings", i, k],
                        )
                    x = _number(row[k])
                    if x is None:
                        v = row[k]
                        shown = f"an integer of {len(str(abs(v)))} digits" if type(v) is int else repr(str(v)[:40])
                        raise UnitError(
                            422,
                            f"readings[{i}].{k}: must be a finite number within +-{MAX_ABS_READING:g}, got {shown}",
                            ["body", "readings", i, k],
                        )
                    numbers[k] = x
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
                values.append([numbers[k] for k in fields])
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

    def frame(self, units: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        """The stored readings of ``units`` as a long table sorted by unit and cycle (in the order given); only
        ``columns`` (which every one of them must have) when given, built in one piece."""
        with self.lock:
            docs = [self.units[u] for u in units]
        if columns is not None:
            return self._matrix(docs, columns)
        parts = []
        for d in docs:
            rows, cycles = _history(d)
            part = pd.DataFrame(rows, columns=d["fields"])
            part.insert(0, CYCLE, cycles)
            part.insert(0, UNIT, d["unit"])
            parts.append(part)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[UNIT, CYCLE])

    @staticmethod
    def _matrix(docs: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
        blocks, cycles, names = [], [], []
        for d in docs:
            rows, cyc = _history(d)
            idx = [d["fields"].index(c) for c in columns]
            blocks.append(np.asarray(rows, dtype=float).reshape(len(rows), -1)[:, idx])
            cycles += cyc
            names += [d["unit"]] * len(cyc)
        values = np.vstack(blocks) if blocks else np.zeros((0, len(columns)))
        out = pd.DataFrame(values, columns=columns)
        out.insert(0, CYCLE, np.asarray(cycles, dtype=np.int64))
        out.insert(0, UNIT, np.asarray(names, dtype=object))
        return out


def _history(doc: dict[str, Any]) -> tuple[list[list[float]], list[int]]:
    """(values, cycles) of a unit: its first readings (its baseline) that fell out of the recent history, then the
    recent ones."""
    first = doc["cycles"][0] if doc["cycles"] else math.inf
    k = sum(1 for c in doc["head_cycles"] if c < first)
    return doc["head_values"][:k] + doc["values"], doc["head_cycles"][:k] + doc["cycles"]


def _field_key(name: str) -> tuple[int, int, str]:
    prefix, _, tail = name.partition("_")
    return (
        0 if prefix + "_" == SETTING_PREFIX else 1 if prefix + "_" == SENSOR_PREFIX else 2,
        int(tail) if tail.isdigit() else 1 << 30,
        tail,
    )


def required_fields(model: RULModel) -> list[str]:
    return list(model.pre.settings) + list(model.pre.sensors)


def _rank(r: RULResponse) -> tuple[float, float, str]:
    """Urgency order of the fleet view: lowest lower bound (or RUL without intervals), then lowest RUL."""
    return (r.lower if r.lower is not None else r.rul, r.rul, r.unit)


class FleetIndex:
    """The latest prediction of every unit by one served model, kept in urgency order.

    ``put`` costs a binary search and a list insertion; ``page`` costs the page. Units whose readings lack a
    field the model needs are counted apart (``unscored``).
    """

    def __init__(self, loaded: serving.Loaded, generation: int) -> None:
        self.loaded, self.generation = loaded, generation
        self.rows: dict[str, RULResponse] = {}
        self.order: list[tuple[float, float, str]] = []
        self.unscored: set[str] = set()
        self.alerts = 0

    def _drop(self, unit: str) -> None:
        self.unscored.discard(unit)
        old = self.rows.pop(unit, None)
        if old is not None:
            key = _rank(old)
            del self.order[bisect.bisect_left(self.order, key)]
            self.alerts -= bool(old.alert)

    def put(self, unit: str, row: RULResponse | None) -> None:
        """Record ``unit``'s latest prediction (None, or a non-finite one: not ranked, counted as unscored)."""
        self._drop(unit)
        if row is None or not all(math.isfinite(x) for x in (row.rul, row.lower or 0.0, row.upper or 0.0)):
            self.unscored.add(unit)
            return
        self.rows[unit] = row
        bisect.insort(self.order, _rank(row))
        self.alerts += bool(row.alert)

    def page(self, offset: int, limit: int) -> list[RULResponse]:
        return [self.rows[key[2]] for key in self.order[offset : offset + limit]]


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


def _score(store: FleetStore, index: FleetIndex, units: list[str]) -> None:
    """Predict ``units`` (in chunks of SCORE_CHUNK, one model call each) and record them in ``index``."""
    model, version = index.loaded.model, index.loaded.version_id
    need = required_fields(model)
    with store.lock:
        usable = [u for u in units if u in store.units and set(need) <= set(store.units[u]["fields"])]
    for u in set(units) - set(usable):
        index.put(u, None)
    for i in range(0, len(usable), SCORE_CHUNK):
        chunk = usable[i : i + SCORE_CHUNK]
        for row in _responses(model, version, store.frame(chunk, need)):
            index.put(row.unit, row)


def _current(index: FleetIndex | None, store: FleetStore, loaded: serving.Loaded) -> bool:
    """``index`` ranks the store's units as last read, by the model ``loaded``."""
    return index is not None and index.loaded is loaded and index.generation == store.generation


def _fleet_index(app: Any, loaded: serving.Loaded) -> FleetIndex:
    """The served model's index of the fleet; built (the whole fleet scored) when the model changed. Call with
    ``app.state.fleet_lock`` held."""
    index: FleetIndex | None = app.state.fleet_index
    store: FleetStore = app.state.fleet
    if not _current(index, store, loaded):
        index = FleetIndex(loaded, store.generation)
        _score(store, index, sorted(store.units))
        app.state.fleet_index = index
        log.info("fleet view: %d unit(s) scored by model %s", len(store.units), loaded.version_id)
    return index


router = APIRouter()
UNIT_PARAM = PathParam(..., pattern=UNIT_PATTERN, description="unit id: letters, digits, _ . : - (max 64)")


@router.post(
    "/v1/units/{unit}/readings",
    response_model=ReadingsResponse,
    responses={
        409: {"description": "cycle out of order or repeated, or the fleet is full"},
        503: {"description": "another server holds the fleet store, or no model is loaded"},
    },
)
def post_readings(
    req: ReadingsRequest, request: Request, unit: str = UNIT_PARAM, loaded: serving.Loaded = Depends(serving.get_loaded)
) -> Any:
    store: FleetStore = request.app.state.fleet
    try:
        doc = store.append(unit, req.readings, required_fields(loaded.model))
    except UnitError as exc:
        return _error(exc.status, exc.message, exc.loc)
    # the unit's place in the fleet view follows its readings (the data is stored: a failure here is logged and
    # the view is rebuilt on its next use, never a failed acknowledgement)
    with request.app.state.fleet_lock:
        index: FleetIndex | None = request.app.state.fleet_index
        if _current(index, store, loaded):
            try:
                _score(store, index, [unit])
            except Exception:
                log.exception("fleet view: scoring unit %s failed; the view is rebuilt on its next use", unit)
                request.app.state.fleet_index = None
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
    limit: int = Query(100, ge=1, le=MAX_PAGE, description=f"units per page (at most {MAX_PAGE})"),
    offset: int = Query(0, ge=0, le=CFG.max_units, description="units to skip (the previous page's next_offset)"),
    loaded: serving.Loaded = Depends(serving.get_loaded),
) -> Any:
    with request.app.state.fleet_lock:
        index = _fleet_index(request.app, loaded)
        units = index.page(offset, limit)
        total, alerts, unscored = len(index.order), index.alerts, len(index.unscored)
    return FleetResponse(
        units=units,
        total=total,
        alerts=alerts,
        offset=offset,
        next_offset=offset + limit if offset + limit < total else None,
        unscored=unscored,
    )


def _example(model: RULModel) -> dict[str, float]:
    """A first reading the model accepts: its settings at the first operating condition's centre, its sensors at
    that condition's training mid-range."""
    pre = model.pre
    centre = pre.centres[0] if pre.centres else [0.0] * len(pre.settings)
    out: dict[str, float] = {CYCLE: 1}
    out |= {k: float(f"{c * s:.6g}") for k, c, s in zip(pre.settings, centre, pre.setting_scale, strict=True)}
    out |= {k: float(f"{v:.6g}") for k, v in zip(pre.sensors, pre.loc[0], strict=True)}
    return out


def _install_model_openapi(app: Any) -> None:
    """The OpenAPI describes the served model: its settings and sensors are required properties of a reading, and
    the examples are readings it accepts (without a model, the generic schema)."""
    base = app.openapi
    cache: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        spec = base()
        loaded = app.state.holder.loaded
        if loaded is None:
            return spec
        if cache.get("loaded") is not loaded:
            spec = copy.deepcopy(spec)
            schemas = spec["components"]["schemas"]
            reading, fields = schemas["Reading"], required_fields(loaded.model)
            number = {"type": "number", "minimum": -MAX_ABS_READING, "maximum": MAX_ABS_READING}
            reading["properties"] |= {f: {**number, "title": f} for f in fields}
            reading["required"] = [CYCLE, *fields]
            reading["example"] = _example(loaded.model)
            schemas["ReadingsRequest"]["example"] = {"readings": [reading["example"]]}
            cache.update(loaded=loaded, spec=spec)
        return cache["spec"]

    app.openapi = openapi


def build_app(
    *,
    refresh_interval_s: float | None = 5.0,
    state_dir: Path | None = None,
    model: RULModel | None = None,
    ws: Workspace | None = None,
):
    """The FastAPI app serving the registry's champion (hot-swapped when the alias moves) over the fleet state in
    ``state_dir`` (default ``<workspace>/state/maintenance/units``). ``model``: serve this one instead (tests).

    Starting the app (its lifespan) takes the fleet store's writer lock, or fails with :class:`StoreLocked` when
    another server holds it; stopping it releases the lock."""
    holder = serving.ModelHolder(REGISTRY_NAME, RULModel.load)
    if model is not None:
        holder.set(serving.Loaded(model))
        refresh_interval_s = None
    ws = ws or Workspace.from_env()
    plog = serving.PredictionLog(ws.path("predictions", f"{REGISTRY_NAME}.jsonl"), sample_rate=0.1)
    app = serving.create_app(
        f"mlref {REGISTRY_NAME}",
        holder,
        [router],
        refresh_interval_s=refresh_interval_s,
        prediction_log=plog,
        prediction_buckets=(5, 10, 20, 30, 50, 75, 100, 125, 150),
        load_on_startup=model is None,
    )
    store = FleetStore(state_dir or ws.path("state", REGISTRY_NAME, "units", "x").parent)
    app.state.fleet = store
    app.state.fleet_index = None
    app.state.fleet_lock = threading.Lock()
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        store.acquire()  # before the model loads: a second server fails fast
        try:
            async with inner(a) as state:
                yield state
        finally:
            store.release()

    app.router.lifespan_context = lifespan
    _install_model_openapi(app)
    return app

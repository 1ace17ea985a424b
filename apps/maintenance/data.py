"""The maintenance data: NASA C-MAPSS files, a user's long sensor table, and an embedded run-to-failure simulator.

Every source becomes the same long table, one row per unit and operating cycle::

    unit, cycle, setting_1..setting_k, sensor_1..sensor_m [, timestamp] [, failed]

sorted by unit then cycle. ``unit`` is an identifier (string), ``cycle`` an integer >= 1, settings and sensors
finite floats. In a run-to-failure history the last cycle is the failure. ``timestamp`` (unix seconds or dates,
optional) orders failures in time for retraining; ``failed`` (0/1 per unit, optional) says whether a unit's
history ended in a failure (1) or the unit is still running (0); without it every unit of a training table is
taken as failed.

- :func:`load_cmapss`: ``train_FD00x.txt`` / ``test_FD00x.txt`` / ``RUL_FD00x.txt`` (26 whitespace-separated
  columns) from ``$MLREF_DATA_DIR/cmapss/``, downloaded with a checksum where a network exists; offline, the
  error names the missing file and where to put it.
- :func:`read_fleet` validates a user's CSV/parquet table row by row; errors name unit, cycle and column.
- :func:`simulate_fleet`: units with different initial wear and manufacturing variation, several operating
  conditions, damage growing exponentially until it crosses a failure threshold, seen only through noisy
  sensors (some informative, some pure noise, some constant).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.columns import ColumnMap, split_names
from common.data import SECONDS_PER_DAY, Column, DataError, Schema, fetch, resolve_data_path

log = logging.getLogger(__name__)

UNIT, CYCLE, TIMESTAMP, FAILED, RUL = "unit", "cycle", "timestamp", "failed", "rul"
SETTING_PREFIX, SENSOR_PREFIX = "setting_", "sensor_"
CMAPSS_SETTINGS = [f"{SETTING_PREFIX}{i}" for i in range(1, 4)]
CMAPSS_SENSORS = [f"{SENSOR_PREFIX}{i}" for i in range(1, 22)]
CMAPSS_COLUMNS = [UNIT, CYCLE, *CMAPSS_SETTINGS, *CMAPSS_SENSORS]
SUBSETS = ("FD001", "FD002", "FD003", "FD004")
MAX_UNIT_LENGTH = 64
MAX_CYCLE = 1_000_000

# Byte-for-byte copies of the NASA release (Saxena et al. 2008) at a pinned commit of a public repository; the
# NASA site ships them inside a zip whose layout has changed over the years. sha256 recorded for FD001 (the
# development copy); FD002-FD004 are fetched from the same pinned commit without a recorded checksum.
CMAPSS_BASE_URL = (
    "https://raw.githubusercontent.com/alireza-javanmardi/conformal-RUL-intervals/"
    "37e450ac8b656229d44aed3ac39dcf85ea11b86c/data/CMAPSS/"
)
CMAPSS_SHA256 = {
    "train_FD001.txt": "963b5e22825b34d8b21c69e1aeb4af3e647050eb672ee8834ba4b5d91d2de0f8",
    "test_FD001.txt": "3cda7109ce17bafb5443f2ac926cfcf88154b941b8c4cf95eb55d1ddd6f52851",
    "RUL_FD001.txt": "a19c8ec94931949d0485bdc35118206e9c81c4547b422efb9cf86f4ceddbceca",
}
CMAPSS_DIR = "cmapss"  # under MLREF_DATA_DIR


@dataclass
class Fleet:
    """What a command needs: run-to-failure histories for training, and (optionally) running units with the true
    RUL at their last cycle (``test_rul``: Series indexed by unit) for evaluation."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame | None = None
    test_rul: pd.Series | None = None


def settings_of(df: pd.DataFrame) -> list[str]:
    """The table's ``setting_*`` columns, in numeric order."""
    return sorted((c for c in df.columns if str(c).startswith(SETTING_PREFIX)), key=_suffix)


def sensors_of(df: pd.DataFrame) -> list[str]:
    """The table's ``sensor_*`` columns, in numeric order."""
    return sorted((c for c in df.columns if str(c).startswith(SENSOR_PREFIX)), key=_suffix)


def _suffix(name: str) -> tuple[int, str]:
    tail = str(name).rsplit("_", 1)[-1]
    return (int(tail), "") if tail.isdigit() else (1 << 30, tail)


# ------------------------------------------------------------------ C-MAPSS


def read_cmapss_text(path: str | Path) -> pd.DataFrame:
    """One ``train_``/``test_FD00x.txt`` file as the long table (26 whitespace-separated columns per line)."""
    path = Path(path)
    rows: list[list[float]] = []
    with open(path, encoding="ascii", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(CMAPSS_COLUMNS):
                raise DataError(
                    f"{path}: line {lineno} has {len(parts)} fields, expected {len(CMAPSS_COLUMNS)} "
                    f"({', '.join(CMAPSS_COLUMNS[:3])}, ..., sensor_21)"
                )
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                bad = next(i for i, p in enumerate(parts) if not _is_float(p))
                raise DataError(
                    f"{path}: line {lineno}, column '{CMAPSS_COLUMNS[bad]}': {parts[bad]!r} is not a number"
                ) from None
    if not rows:
        raise DataError(f"{path}: no rows")
    arr = np.asarray(rows)
    df = pd.DataFrame(arr[:, 2:], columns=CMAPSS_COLUMNS[2:])
    df.insert(0, CYCLE, arr[:, 1].astype(np.int64))
    df.insert(0, UNIT, [str(int(u)) for u in arr[:, 0]])
    return validate_fleet(df, source=str(path))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_rul_text(path: str | Path, units: list[str]) -> pd.Series:
    """``RUL_FD00x.txt``: one true RUL per test unit, in unit order; returned indexed by unit."""
    path = Path(path)
    values = []
    for lineno, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            v = float(line.split()[0])
        except ValueError:
            raise DataError(f"{path}: line {lineno}: {line.strip()!r} is not a number") from None
        if not np.isfinite(v) or v < 0:
            raise DataError(f"{path}: line {lineno}: RUL {v} must be a finite number >= 0")
        values.append(v)
    if len(values) != len(units):
        raise DataError(f"{path}: {len(values)} RUL values for {len(units)} test units")
    return pd.Series(values, index=units, name=RUL)


def cmapss_file(name: str) -> Path:
    """Local path of a C-MAPSS file under ``$MLREF_DATA_DIR/cmapss``, downloading it (checksummed) if missing.

    Offline, raises :class:`common.data.DownloadError` naming the file and where to put it.
    """
    return fetch(CMAPSS_BASE_URL + name, CMAPSS_SHA256.get(name), f"{CMAPSS_DIR}/{name}")


def load_cmapss(subset: str = "FD001", directory: str | Path | None = None) -> Fleet:
    """Subset ``FD00x``: training histories, test units and their true RUL at the last cycle.

    ``directory``: read the three files from there instead of ``$MLREF_DATA_DIR/cmapss`` (no download).
    """
    subset = subset.upper()
    if subset not in SUBSETS:
        raise DataError(f"unknown C-MAPSS subset {subset!r}; expected one of {list(SUBSETS)}")
    names = [f"train_{subset}.txt", f"test_{subset}.txt", f"RUL_{subset}.txt"]
    if directory is not None:
        paths = [Path(directory) / n for n in names]
        for p in paths:
            if not p.exists():
                raise DataError(f"{p}: file not found (a C-MAPSS directory holds {', '.join(names)})")
    else:
        paths = [cmapss_file(n) for n in names]
    train, test = read_cmapss_text(paths[0]), read_cmapss_text(paths[1])
    test_units = sorted(dict.fromkeys(test[UNIT]), key=int)  # RUL_FD00x.txt is in numeric unit order (1, 2, ..., 10)
    return Fleet(subset, train, test, read_rul_text(paths[2], test_units))


def available_subsets(directory: str | Path | None = None) -> list[str]:
    """The C-MAPSS subsets whose three files are present (no download)."""
    root = Path(directory) if directory is not None else resolve_data_path(CMAPSS_DIR)
    return [s for s in SUBSETS if all((root / f"{k}_{s}.txt").exists() for k in ("train", "test", "RUL"))]


# ------------------------------------------------------------------ a user's table


_TIME_SCHEMA = Schema([Column(TIMESTAMP, "unixtime")])


def _show(v: object) -> str:
    """A cell as the user wrote it (``5``, not ``5.0``, when pandas read an integer column as float)."""
    if isinstance(v, float | np.floating) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _where(df: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)
    parts = [f"unit {_show(df[UNIT].iloc[r])} cycle {_show(df[CYCLE].iloc[r])} (row {r})" for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{len(rows)} row(s): " + ", ".join(parts) + more


def validate_fleet(df: pd.DataFrame, *, source: str = "data", min_units: int = 1) -> pd.DataFrame:
    """The long table checked and coerced, sorted by unit and cycle; raises DataError naming unit, cycle, column.

    Rules: columns ``unit``, ``cycle`` and at least one ``sensor_*``; ``unit`` a non-empty id of at most 64
    characters; ``cycle`` an integer in 1..1e6, unique per unit; every ``setting_*``/``sensor_*`` a finite number;
    ``timestamp`` unix seconds or a date; ``failed`` 0/1, the same on all rows of a unit.
    """
    missing = [c for c in (UNIT, CYCLE) if c not in df.columns]
    if missing or not sensors_of(df):
        raise DataError(
            f"{source}: expected columns unit, cycle, setting_* (optional), sensor_* (at least one) "
            f"[, timestamp][, failed]; missing {missing or ['sensor_*']}; found {list(df.columns)[:12]}"
        )
    if len(df) == 0:
        raise DataError(f"{source}: no rows")
    out = df.copy()
    problems: list[str] = []
    unit = out[UNIT]
    if pd.api.types.is_float_dtype(unit) and unit.dropna().mod(1).eq(0).all():
        unit = unit.astype("Int64")
    unit = unit.astype("string").str.strip()
    bad_unit = (unit.isna() | (unit == "") | (unit.str.len() > MAX_UNIT_LENGTH)).to_numpy(dtype=bool)
    out[UNIT] = unit.fillna("?").astype(object)
    cyc = pd.to_numeric(out[CYCLE], errors="coerce")
    bad_cycle = (cyc.isna() | (cyc % 1 != 0) | (cyc < 1) | (cyc > MAX_CYCLE)).to_numpy(dtype=bool)
    out[CYCLE] = cyc.where(~bad_cycle, -1).astype(np.int64)
    shown = out.assign(**{CYCLE: df[CYCLE]})  # messages show the cycle as written
    if bad_unit.any():
        problems.append(
            f"{source}: column 'unit' is empty or longer than {MAX_UNIT_LENGTH} characters in "
            + _where(shown, bad_unit)
        )
    if bad_cycle.any():
        problems.append(f"{source}: column 'cycle' is not an integer in 1..{MAX_CYCLE} in " + _where(shown, bad_cycle))
    for col in settings_of(df) + sensors_of(df):
        num = pd.to_numeric(out[col], errors="coerce").astype("float64")
        bad = ~np.isfinite(num.to_numpy(na_value=np.nan))
        if bad.any():
            problems.append(f"{source}: column '{col}' is missing or not a finite number in " + _where(shown, bad))
        out[col] = num
    if TIMESTAMP in out.columns:
        try:
            out[TIMESTAMP] = _TIME_SCHEMA.validate(out[[TIMESTAMP]], source=source)[TIMESTAMP]
        except DataError as exc:
            problems.append(str(exc))
    if FAILED in out.columns:
        _check_failed(out, shown, source, problems)
    if not problems:
        dup = out.duplicated([UNIT, CYCLE], keep="first").to_numpy()
        if dup.any():
            problems.append(f"{source}: column 'cycle' repeats a cycle of the same unit in " + _where(shown, dup))
    if problems:
        raise DataError("; ".join(problems))
    out = out.sort_values([UNIT, CYCLE], kind="stable").reset_index(drop=True)
    if out[UNIT].nunique() < min_units:
        raise DataError(f"{source}: {out[UNIT].nunique()} unit(s); at least {min_units} needed")
    return out


def _check_failed(out: pd.DataFrame, shown: pd.DataFrame, source: str, problems: list[str]) -> None:
    """``failed``: 0/1 and the same on every row of a unit (coerced in place)."""
    f = pd.to_numeric(out[FAILED], errors="coerce")
    bad = ~f.isin([0, 1]).to_numpy(dtype=bool)
    if bad.any():
        problems.append(f"{source}: column 'failed' is not 0 or 1 in " + _where(shown, bad))
        return
    out[FAILED] = f.astype(np.int64)
    mixed = out.groupby(UNIT)[FAILED].transform("nunique").to_numpy() > 1
    if mixed.any():
        problems.append(f"{source}: column 'failed' differs between rows of the same unit in " + _where(shown, mixed))


def column_map(cfg: Any) -> tuple[ColumnMap, tuple[str, ...]]:
    """The mapping of a user's table onto ``unit, cycle, setting_*, sensor_*`` from a :class:`Config` or the config
    dict stored with a model (``--unit-column engine_id --sensors T24,P30``), and the user's setting columns."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    settings = split_names(get("setting_columns", ""))
    return ColumnMap(
        roles={UNIT: get("unit_column", UNIT) or UNIT, CYCLE: get("cycle_column", CYCLE) or CYCLE},
        features=split_names(get("sensors", "")),
        feature_prefix=SENSOR_PREFIX,
        known=(TIMESTAMP, FAILED, *(SETTING_PREFIX + s for s in settings)),
        known_prefixes=(SETTING_PREFIX,),
    ), settings


def read_fleet(path: str | Path, *, min_units: int = 1, columns: Any = None) -> pd.DataFrame:
    """A user's CSV/parquet long table, validated (see :func:`validate_fleet`); ``columns``: a :class:`Config` or a
    model's config dict whose column mapping (:func:`column_map`) is applied first."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    name = path.name.lower()
    try:
        if name.endswith(".parquet") or name.endswith(".pq"):
            df = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            df = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
        else:
            raise DataError(f"{path}: unsupported file type; use .csv, .csv.gz, .tsv or .parquet")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: could not read: {exc}") from exc
    if columns is not None:
        cmap, settings = column_map(columns)
        if missing := [s for s in settings if s not in df.columns]:
            raise DataError(f"{path}: setting column(s) {missing} not found; the table has {list(df.columns)[:20]}")
        df = df.rename(columns={s: SETTING_PREFIX + s for s in settings if not s.startswith(SETTING_PREFIX)})
        df, _ = cmap.apply(df, source=str(path))
    return validate_fleet(df, source=str(path), min_units=min_units)


def failed_units(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of units whose history ended in a failure (all units when there is no ``failed`` column)."""
    if FAILED not in df.columns:
        return df
    return df[df[FAILED] == 1].reset_index(drop=True)


def running_units(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of units still running (``failed == 0``); empty without a ``failed`` column."""
    if FAILED not in df.columns:
        return df.iloc[0:0]
    return df[df[FAILED] == 0].reset_index(drop=True)


def failure_times(df: pd.DataFrame) -> pd.Series:
    """When each unit failed, indexed by unit: its last ``timestamp``; without timestamps, the order of the units
    in the table (0, 1, ...), the documented equivalent for data that has no clock."""
    if TIMESTAMP in df.columns:
        return df.groupby(UNIT, sort=False)[TIMESTAMP].max().astype(float)
    units = list(dict.fromkeys(df[UNIT]))
    return pd.Series(np.arange(len(units), dtype=float), index=units)


# ------------------------------------------------------------------ truncation (test units from histories)


def truncate(histories: pd.DataFrame, *, seed: int = 0, min_cycles: int = 31) -> tuple[pd.DataFrame, pd.Series]:
    """Cut each run-to-failure history at a random cycle, as C-MAPSS built its test set.

    Returns (the observed rows, true RUL at the last observed cycle indexed by unit). A unit keeps at least
    ``min_cycles`` cycles (or all of them when shorter) and at least one cycle before its failure.
    """
    rng = np.random.default_rng(seed)
    keep, truth = [], {}
    for unit, g in histories.groupby(UNIT, sort=False):
        n = len(g)
        lo = min(min_cycles, n - 1) if n > 1 else 1
        cut = int(rng.integers(max(lo, 1), n)) if n > 1 else n
        keep.append(g.iloc[:cut])
        truth[unit] = float(n - cut)
    return pd.concat(keep, ignore_index=True), pd.Series(truth, name=RUL)


# ------------------------------------------------------------------ simulator

SIM_SETTINGS = np.array([[0.0, 0.0, 100.0], [20.0, 0.7, 100.0], [35.0, 0.84, 60.0], [42.0, 0.84, 40.0]])
SIM_SENSORS = 12


def simulate_fleet(
    n_units: int = 60,
    *,
    seed: int = 0,
    n_conditions: int = 3,
    shift: float = 0.0,
    start: int = 1_704_067_200,
    unit_prefix: str = "u",
    cycle_seconds: int = 6 * 3600,
    start_spread_days: float = 200.0,
    family_seed: int = 0,
) -> pd.DataFrame:
    """Run-to-failure histories of ``n_units`` simulated machines (last cycle = failure).

    Damage: ``d(t) = w0 * exp(r t + 0.02 W(t))`` with initial wear ``w0 ~ U(0.02, 0.12)``, a unit-specific rate
    ``r ~ N(0.016, 0.002)`` (manufacturing variation) and a small random walk ``W``; the unit fails at the first
    cycle where ``d >= 1`` (lives of about 130-350 cycles). Each cycle runs in one of ``n_conditions`` operating
    conditions (``setting_1..3`` near fixed points), which moves every sensor's level. ``SIM_SENSORS`` sensors:
    8 respond to damage (gain per sensor and condition, plus a per-unit offset), 2 are pure noise and 2 constant.
    ``shift`` > 0 makes degradation faster and changes two sensors' response, a population change a retrained
    model must learn. Timestamps: units start uniformly over ``start_spread_days`` days; one cycle every
    ``cycle_seconds``. ``family_seed`` fixes the machine type (sensor levels and gains), ``seed`` the units.
    """
    machine = sim_machine(n_conditions, shift=shift, family_seed=family_seed)
    rng = np.random.default_rng(seed)
    noise = sim_noise(rng)
    starts = start + rng.uniform(0, start_spread_days * SECONDS_PER_DAY, n_units).astype(np.int64)
    frames = [
        sim_unit(rng, machine, noise, f"{unit_prefix}{i + 1}", int(starts[i]), cycle_seconds, shift)
        for i in range(n_units)
    ]
    return pd.DataFrame({c: np.concatenate([f[c] for f in frames]) for c in frames[0]})


@dataclass(frozen=True)
class SimMachine:
    """The machine type of the simulator (fixed by ``family_seed``): per condition ``base`` sensor levels and
    ``cond_gain`` response factors ``[k, SIM_SENSORS]``, each sensor's damage ``gain``, ``k`` conditions."""

    base: np.ndarray
    gain: np.ndarray
    cond_gain: np.ndarray
    k: int


def sim_machine(n_conditions: int = 3, *, shift: float = 0.0, family_seed: int = 0) -> SimMachine:
    """The machine type :func:`simulate_fleet` draws its units from."""
    fam = np.random.default_rng(family_seed)
    k = int(np.clip(n_conditions, 1, len(SIM_SETTINGS)))
    base = fam.normal(0, 1, (len(SIM_SETTINGS), SIM_SENSORS))[:k] * 5 + 50  # sensor levels per condition
    base[:, 10:] = 10.0 * (np.arange(2) + 1)  # the two constant sensors
    gain = np.r_[fam.uniform(2, 6, 8) * fam.choice([-1, 1], 8), np.zeros(4)]
    cond_gain = 1 + 0.3 * fam.normal(0, 1, (len(SIM_SETTINGS), SIM_SENSORS))[:k]
    if shift:
        gain[:2] *= 1 + shift  # two sensors respond more strongly in the new population
    return SimMachine(base, gain, cond_gain, k)


def sim_noise(rng: np.random.Generator) -> np.ndarray:
    """Sensor noise levels of a fleet ``[SIM_SENSORS]``: 8 informative sensors, 2 pure noise, 2 constant."""
    return np.r_[rng.uniform(0.5, 1.2, 8), np.ones(2), np.zeros(2)]


def sim_unit(
    rng: np.random.Generator,
    machine: SimMachine,
    noise: np.ndarray,
    name: str,
    start: int,
    cycle_seconds: int,
    shift: float = 0.0,
) -> dict[str, np.ndarray]:
    """One unit's run-to-failure history (columns of the long table) drawn from ``rng``; see :func:`simulate_fleet`."""
    w0 = rng.uniform(0.02, 0.12)
    r = max(rng.normal(0.016 * (1 + shift), 0.002), 0.006)
    t = np.arange(1, 2000)
    walk = np.cumsum(rng.normal(0, 0.02, t.size))
    damage = w0 * np.exp(r * t + walk)
    life = int(np.argmax(damage >= 1.0)) + 1 if (damage >= 1.0).any() else t.size
    t, damage = t[:life], damage[:life]
    cond = rng.integers(0, machine.k, life) if machine.k > 1 else np.zeros(life, int)
    offset = rng.normal(0, 0.5, SIM_SENSORS) * (noise > 0)
    sens = (
        machine.base[cond]
        + offset
        + (machine.gain * machine.cond_gain[cond]) * np.minimum(damage, 1.2)[:, None]
        + rng.normal(0, 1, (life, SIM_SENSORS)) * noise
    )
    sett = SIM_SETTINGS[cond] + rng.normal(0, 1, (life, 3)) * np.array([0.002, 0.0003, 0.0])
    cols: dict[str, np.ndarray] = {UNIT: np.full(life, name, dtype=object), CYCLE: t}
    cols.update({f"{SETTING_PREFIX}{j + 1}": np.round(sett[:, j], 4) for j in range(3)})
    cols.update({f"{SENSOR_PREFIX}{j + 1}": np.round(sens[:, j], 3) for j in range(SIM_SENSORS)})
    cols[TIMESTAMP] = start + t * cycle_seconds
    return cols


def simulate(n_train: int = 60, n_test: int = 30, *, seed: int = 0, n_conditions: int = 3, shift: float = 0.0) -> Fleet:
    """A simulated fleet: ``n_train`` run-to-failure histories and ``n_test`` units cut at random cycles."""
    train = simulate_fleet(n_train, seed=seed, n_conditions=n_conditions, shift=shift, unit_prefix="train-")
    full = simulate_fleet(n_test, seed=seed + 10_000, n_conditions=n_conditions, shift=shift, unit_prefix="test-")
    test, rul = truncate(full, seed=seed)
    return Fleet("simulated", validate_fleet(train), validate_fleet(test), rul)


# ------------------------------------------------------------------ dispatch


def load(dataset: str | Path | None = None, *, seed: int = 0, test_fraction: float = 0.2, columns: Any = None) -> Fleet:
    """``None``/``"simulated"``: the simulator; ``FD001``..``FD004``: C-MAPSS from the data dir (downloaded where
    a network exists); a ``train_FD00x.txt`` path: C-MAPSS from that directory; otherwise a CSV/parquet table.

    For a table, failed units are the training histories; a ``test_fraction`` of them (by unit) is cut at random
    cycles to evaluate on, like C-MAPSS's test set, unless the table also holds running units (``failed == 0``)
    with no known RUL, which are kept aside as ``test`` without truth.
    """
    if dataset is None or str(dataset) == "simulated":
        return simulate(seed=seed)
    text = str(dataset)
    if text.upper() in SUBSETS:
        return load_cmapss(text.upper())
    path = Path(text)
    if path.name.startswith("train_FD") and path.suffix == ".txt":
        return load_cmapss(path.name[6:11], path.parent)
    table = read_fleet(path, columns=columns)
    failed = failed_units(table)
    if failed[UNIT].nunique() < 2:
        raise DataError(
            f"{path}: {failed[UNIT].nunique()} failed unit(s); training needs run-to-failure "
            "histories of at least 2 units (rows of units with failed=1, or no failed column)"
        )
    running = running_units(table)
    units = np.array(list(dict.fromkeys(failed[UNIT])))
    rng = np.random.default_rng(seed)
    n_test = min(max(1, round(test_fraction * len(units))), len(units) - 1)
    test_units = set(rng.choice(units, n_test, replace=False))
    train = failed[~failed[UNIT].isin(test_units)].reset_index(drop=True)
    test, rul = truncate(failed[failed[UNIT].isin(test_units)].reset_index(drop=True), seed=seed)
    fleet = Fleet(path.name, train, test, rul)
    if len(running):
        log.info("%s: %d running unit(s) kept out of training", path, running[UNIT].nunique())
    return fleet

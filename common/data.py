"""Dataset cache and validated table I/O.

- :func:`fetch` downloads ``url`` into ``MLREF_DATA_DIR`` (resumable, verified by sha256, renamed into place only
  when complete) or uses the file already there; offline, the error says which file to put where.
- :class:`Schema` / :func:`read_table` read CSV or parquet and report bad rows: which rows, which column, why.
- :func:`atomic_path` / :func:`write_table`: a file is either the old one or the complete new one, never half.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from common.config import get_settings
from common.errors import DataError, DownloadError  # re-exported: `from common.data import DataError` works

log = logging.getLogger(__name__)

DType = Literal["int", "float", "str", "datetime", "bool", "any", "id", "unixtime"]


SECONDS_PER_DAY = 86_400  # unix-time arithmetic of every app (windows, day indices, simulators)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on error it is removed.

    Readers see the old file or the complete new one, never a partial write (``os.replace`` is atomic on POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it, which races
    with other threads creating files); falls back to set-and-restore where ``/proc`` is missing."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(ln.split()[1], 8) for ln in fh if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV or parquet (by suffix), atomically. Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if _is_parquet(path):
            df.to_parquet(tmp, index=False)
        elif _is_csv(path):
            df.to_csv(tmp, index=False)
        else:
            raise DataError(f"{path}: unsupported file type; use .csv, .csv.gz or .parquet")
    return path


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


def _is_csv(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".csv", ".csv.gz", ".tsv", ".txt"))


# ------------------------------------------------------------------ download cache


def resolve_data_path(dest: str | Path) -> Path:
    """``dest`` if absolute, else relative to ``MLREF_DATA_DIR``."""
    dest = Path(dest)
    return dest if dest.is_absolute() else get_settings().data_path / dest


def fetch(url: str, sha256: str | None, dest: str | Path, *, timeout: float = 60.0) -> Path:
    """Return the local path of ``dest`` (relative to ``MLREF_DATA_DIR``), downloading ``url`` if it is missing.

    The download goes to ``<dest>.part`` (resumed with an HTTP Range request when a partial file exists), is
    checked against ``sha256`` (hex; ``None`` skips the check) and only then renamed to ``dest``. An existing
    ``dest`` is verified too, so a corrupted cache is reported rather than used.

    Raises:
        DownloadError: offline, HTTP failure or checksum mismatch; the message names the URL and where to put
            the file by hand.
    """
    path = resolve_data_path(dest)
    if path.exists():
        if sha256 and (got := sha256_file(path)) != sha256:
            raise DownloadError(
                f"{path} exists but its sha256 is {got}, expected {sha256}. Delete it and download it again from {url}."
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    hint = f"Download {url} by hand and save it as {path} (set MLREF_DATA_DIR to use another data directory)."
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mlref"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    log.info("downloading %s -> %s", url, path)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            if offset and resp.status != 206:  # server ignored the range: start over
                offset = 0
            with open(part, "ab" if offset else "wb") as fh:
                while block := resp.read(1 << 20):
                    fh.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadError(f"could not download {url}: {exc}. {hint}") from exc
    if sha256 and (got := sha256_file(part)) != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(f"checksum mismatch for {url}: got {got}, expected {sha256}. {hint}")
    os.replace(part, path)
    return path


# ------------------------------------------------------------------ schemas

UNIX_TIME_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z in unix seconds: larger values are not seconds (ms? us?)


@dataclass
class Column:
    """One column of a :class:`Schema`.

    dtypes: ``int``, ``float`` (finite), ``str``, ``bool``, ``datetime`` (pandas timestamps), ``any``, and

    - ``id``: an identifier as a non-empty, stripped string; integral numbers read as ``12``, never ``12.0``
      (pandas reads an int column with gaps as float), so ``"42"`` in a request matches ``42`` in a CSV;
    - ``unixtime``: int64 unix seconds from numbers (seconds; fractions floored) or dates/ISO strings (naive =
      UTC), in ``0..UNIX_TIME_MAX`` (so milliseconds are reported, not read as the year 55000).

    ``min``/``max`` are inclusive bounds for numbers, ``gt`` a strict lower bound (``gt=0``: strictly
    positive); ``max_length`` bounds ``str``/``id`` lengths; ``allowed`` is a closed set of values.
    """

    name: str
    dtype: DType = "any"
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    max_length: int | None = None
    allowed: set[Any] | None = None


@dataclass
class Schema:
    """Columns a table must have; :meth:`validate` coerces types and reports every bad row it finds.

    ``min_rows``: fewer valid rows is an error (e.g. 1 for "an empty file is a mistake"). Errors are one line:
    ``<source>: column 'x' <why> in N row(s): row 3: 'abc', ...; column 'y' ...``.
    """

    columns: list[Column]
    unique: list[str] = field(default_factory=list)
    max_examples: int = 5
    min_rows: int = 0

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def header(self) -> str:
        """The expected header, optional columns in brackets: ``user,item[,weight][,timestamp]``."""
        return "".join(
            ("," if i else "") + c.name if c.required else f"[,{c.name}]" for i, c in enumerate(self.columns)
        ).lstrip(",")

    def validate(self, df: pd.DataFrame, *, source: str = "data") -> pd.DataFrame:
        """Return ``df`` with columns coerced to their dtypes, or raise :class:`DataError` listing the problems.

        Row numbers in messages are 0-based positions in the table (header excluded). Extra columns are kept
        unchanged.
        """
        missing = [c.name for c in self.columns if c.required and c.name not in df.columns]
        if missing:
            raise DataError(
                f"{source}: missing required column(s) {missing}; found {list(df.columns)}; "
                f"expected a header {self.header} (extra columns are allowed)"
            )
        if len(df) < self.min_rows:
            raise DataError(f"{source}: {len(df)} row(s); at least {self.min_rows} needed")
        problems: list[str] = []
        out = df.copy()
        for col in self.columns:
            if col.name in out.columns:
                out[col.name] = self._check_column(col, out[col.name], source, problems)
        for key in self.unique:
            if key in out.columns:
                # integers repeat exactly where their strings (ids) do, and hash much faster
                same = df[key].dtype.kind in "iu" and self._column(key).dtype in ("id", "int", "str", "any")
                dup = (df[key] if same else out[key]).duplicated(keep="first").to_numpy()
                if dup.any():
                    problems.append(self._describe(source, key, dup, "duplicates an earlier row", out[key]))
        if problems:
            raise DataError("; ".join(problems))
        return out

    def _column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def _check_column(self, col: Column, raw: pd.Series, source: str, problems: list[str]) -> pd.Series:
        """Coerce one column; append a message to ``problems`` per kind of bad value."""
        values, bad_type = _coerce(raw, col.dtype)
        null = raw.isna().to_numpy()
        integers = raw.dtype.kind in "iu"  # plain integers: never blank, printed in at most 20 characters
        if col.dtype == "id" and not integers:
            null = null | values.isna().to_numpy()  # blank strings are missing ids
        if not col.nullable and null.any():
            problems.append(self._describe(source, col.name, null, "is empty/null", raw))
        if bad_type.any():
            what = {"unixtime": f"unix time in seconds (0..{UNIX_TIME_MAX}) or a date"}.get(col.dtype, col.dtype)
            problems.append(self._describe(source, col.name, bad_type, f"is not a valid {what}", raw))
        ok = ~null & ~bad_type
        checks: list[tuple[np.ndarray, str]] = []
        if col.min is not None or col.max is not None or col.gt is not None:
            num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                if col.min is not None:
                    checks.append((ok & (num < col.min), f"is below the minimum {col.min}"))
                if col.gt is not None:
                    checks.append((ok & ~(num > col.gt), f"is not greater than {col.gt}"))
                if col.max is not None:
                    checks.append((ok & (num > col.max), f"is above the maximum {col.max}"))
        if col.max_length is not None and not (integers and col.max_length >= 20):
            if col.dtype == "id":  # ids repeat: measure each distinct one once
                codes, uniques = pd.factorize(values, use_na_sentinel=True)
                lengths = np.append(pd.Series(uniques).str.len().to_numpy(), 0)[codes]  # code -1 -> 0
            else:
                lengths = values.astype("string").str.len().fillna(0).to_numpy()
            checks.append((ok & (lengths > col.max_length), f"is longer than {col.max_length} characters"))
        if col.allowed is not None:
            allowed = sorted(map(str, col.allowed))
            checks.append((ok & ~values.isin(list(col.allowed)).to_numpy(), f"is not one of {allowed}"))
        problems.extend(self._describe(source, col.name, mask, why, raw) for mask, why in checks if mask.any())
        return values

    def _describe(self, source: str, column: str, mask: np.ndarray, why: str, raw: pd.Series) -> str:
        rows = np.flatnonzero(mask)
        examples = ", ".join(f"row {r}: {plain_value(raw.iloc[r])!r}" for r in rows[: self.max_examples])
        more = f" (and {len(rows) - self.max_examples} more)" if len(rows) > self.max_examples else ""
        return f"{source}: column '{column}' {why} in {len(rows)} row(s): {examples}{more}"


def plain_value(v: Any) -> Any:
    """numpy scalars as plain Python values, so messages read ``-12.5`` rather than ``np.float64(-12.5)``."""
    return v.item() if isinstance(v, np.generic) else v


def _coerce(s: pd.Series, dtype: DType) -> tuple[pd.Series, np.ndarray]:
    """Convert ``s`` to ``dtype``; returns (converted, mask of non-null values that failed to convert)."""
    null = s.isna().to_numpy()
    if dtype == "any":
        return s, np.zeros(len(s), bool)
    if dtype in ("int", "float"):
        num = pd.to_numeric(s, errors="coerce")
        bad = num.isna().to_numpy() & ~null
        if dtype == "int":
            frac = num.notna().to_numpy() & (num.fillna(0) % 1 != 0).to_numpy()
            bad |= frac
            if not bad.any() and not null.any():
                return num.astype("int64"), bad
            return num.astype("Int64") if not bad.any() else num, bad
        arr = num.astype("float64")
        bad |= ~np.isfinite(arr.fillna(0).to_numpy())
        return arr, bad
    if dtype == "datetime":
        if pd.api.types.is_datetime64_any_dtype(s):
            return s, np.zeros(len(s), bool)
        dt = pd.to_datetime(s, errors="coerce", format="mixed")
        return dt, dt.isna().to_numpy() & ~null
    if dtype == "unixtime":
        return _unix_seconds(s, null)
    if dtype == "id":
        return _ids(s), np.zeros(len(s), bool)
    if dtype == "bool":
        if pd.api.types.is_bool_dtype(s):
            return s, np.zeros(len(s), bool)
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        conv = s.map(lambda v: mapping.get(str(v).strip().lower()) if pd.notna(v) else None)
        return conv, conv.isna().to_numpy() & ~null
    if dtype == "str":
        return s.where(s.isna(), s.astype(str)), np.zeros(len(s), bool)
    raise ValueError(f"unknown dtype {dtype!r}")


def _ids(s: pd.Series) -> pd.Series:
    """Ids as stripped str (object dtype); integral floats as ``12``; blanks become missing (None).

    Each distinct id is converted once and the rows point at the same str object: 8 bytes per row plus the distinct
    ids, where a str per row costs ~60 (a 50M-row table of interactions: 0.4 GB instead of 3)."""
    if s.dtype.kind in "iu":  # plain integers: each distinct one printed once, by Arrow (pandas' astype is slow)
        codes, uniques = pd.factorize(s.to_numpy())
        text = pa.array(uniques).cast(pa.string()).to_numpy(zero_copy_only=False)
        return pd.Series(text[codes], index=s.index, name=s.name, dtype=object)
    if pd.api.types.is_float_dtype(s) and s.dropna().mod(1).eq(0).all() and s.dropna().abs().lt(2**63).all():
        s = s.astype("Int64")
    codes, uniques = pd.factorize(s, use_na_sentinel=True)  # missing values -> code -1
    as_str = pd.Series(uniques).astype("string").str.strip()
    distinct = as_str.astype(object).where(as_str.notna() & (as_str != ""), None).to_numpy()
    out = np.full(len(s), None, dtype=object)
    valid = codes >= 0
    out[valid] = distinct[codes[valid]]
    return pd.Series(out, index=s.index, name=s.name, dtype=object)


def _unix_seconds(s: pd.Series, null: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """int64 unix seconds per value (numbers as seconds, anything else parsed as a date); bad/out of range flagged."""
    if pd.api.types.is_datetime64_any_dtype(s):
        dt = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        secs = ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("float64")
    else:
        secs = pd.to_numeric(s, errors="coerce").astype("float64")
        text = secs.isna().to_numpy() & ~null
        if text.any():
            dt = pd.to_datetime(s[text], errors="coerce", utc=True, format="mixed")
            secs[text] = ((dt - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("float64")
    arr = secs.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~null & ~((arr >= 0) & (arr <= UNIX_TIME_MAX))  # NaN (unparsed) and inf fail too
    ok = ~null & ~bad
    out = np.zeros(len(s), np.int64)
    out[ok] = np.floor(arr[ok]).astype(np.int64)
    if null.any() or bad.any():
        return pd.Series(out, index=s.index).astype("Int64").mask(~ok), bad
    return pd.Series(out, index=s.index), bad


def read_table(path: str | Path, schema: Schema | None = None, **read_kwargs: Any) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.tsv``) or parquet file and validate it against ``schema``.

    Raises:
        DataError: the file is missing or unreadable, or rows break the schema (message lists them).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        if _is_parquet(path):
            df = pd.read_parquet(path, **read_kwargs)
        elif _is_csv(path):
            if path.name.lower().endswith(".tsv") and "sep" not in read_kwargs:
                read_kwargs["sep"] = "\t"
            df = pd.read_csv(path, **read_kwargs)
        else:
            raise DataError(f"{path}: unsupported file type; use .csv, .csv.gz, .tsv or .parquet")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: could not read: {exc}") from exc
    return schema.validate(df, source=str(path)) if schema is not None else df


def fingerprint(df: pd.DataFrame) -> str:
    """A stable sha256 of a frame's columns and values (row order matters)."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()

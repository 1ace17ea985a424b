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

from common.config import get_settings

log = logging.getLogger(__name__)

DType = Literal["int", "float", "str", "datetime", "bool", "any"]


class DataError(ValueError):
    """A dataset does not match what the code expects; the message says where and why."""


class DownloadError(RuntimeError):
    """A dataset could not be downloaded or verified; the message says how to place it by hand."""


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
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
                f"{path} exists but its sha256 is {got}, expected {sha256}. Delete it and download it again "
                f"from {url}."
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    hint = (
        f"Download {url} by hand and save it as {path} (set MLREF_DATA_DIR to use another data directory)."
    )
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


@dataclass
class Column:
    """One column of a :class:`Schema`.

    ``min``/``max`` are inclusive bounds for numbers; ``allowed`` a closed set of values.
    """

    name: str
    dtype: DType = "any"
    required: bool = True
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: set[Any] | None = None


@dataclass
class Schema:
    """Columns a table must have; :meth:`validate` coerces types and reports every bad row it finds."""

    columns: list[Column]
    unique: list[str] = field(default_factory=list)
    max_examples: int = 5

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def validate(self, df: pd.DataFrame, *, source: str = "data") -> pd.DataFrame:
        """Return ``df`` with columns coerced to their dtypes, or raise :class:`DataError` listing the problems.

        Row numbers in messages are 0-based positions in the table (header excluded).
        """
        problems: list[str] = []
        missing = [c.name for c in self.columns if c.required and c.name not in df.columns]
        if missing:
            raise DataError(
                f"{source}: missing required column(s) {missing}; found {list(df.columns)}; "
                f"expected {self.names}"
            )
        out = df.copy()
        for col in self.columns:
            if col.name not in out.columns:
                continue
            raw = out[col.name]
            values, bad_type = _coerce(raw, col.dtype)
            null = raw.isna().to_numpy()
            if not col.nullable and null.any():
                problems.append(self._describe(source, col.name, null, "is empty/null", raw))
            if bad_type.any():
                problems.append(self._describe(source, col.name, bad_type, f"is not a valid {col.dtype}", raw))
            ok = ~null & ~bad_type
            if col.min is not None or col.max is not None:
                num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                low = np.zeros(len(num), bool) if col.min is None else ok & (num < col.min)
                high = np.zeros(len(num), bool) if col.max is None else ok & (num > col.max)
                if low.any():
                    problems.append(self._describe(source, col.name, low, f"is below the minimum {col.min}", raw))
                if high.any():
                    problems.append(self._describe(source, col.name, high, f"is above the maximum {col.max}", raw))
            if col.allowed is not None:
                bad = ok & ~values.isin(list(col.allowed)).to_numpy()
                if bad.any():
                    allowed = sorted(map(str, col.allowed))
                    problems.append(self._describe(source, col.name, bad, f"is not one of {allowed}", raw))
            out[col.name] = values
        for key in self.unique:
            if key in out.columns:
                dup = out[key].duplicated(keep="first").to_numpy()
                if dup.any():
                    problems.append(self._describe(source, key, dup, "duplicates an earlier row", out[key]))
        if problems:
            raise DataError("\n".join(problems))
        return out

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
    if dtype == "bool":
        if pd.api.types.is_bool_dtype(s):
            return s, np.zeros(len(s), bool)
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        conv = s.map(lambda v: mapping.get(str(v).strip().lower()) if pd.notna(v) else None)
        return conv, conv.isna().to_numpy() & ~null
    if dtype == "str":
        return s.where(s.isna(), s.astype(str)), np.zeros(len(s), bool)
    raise ValueError(f"unknown dtype {dtype!r}")


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
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types; report them uniformly
        raise DataError(f"{path}: could not read: {exc}") from exc
    return schema.validate(df, source=str(path)) if schema is not None else df


def fingerprint(df: pd.DataFrame) -> str:
    """A stable sha256 of a frame's columns and values (row order matters)."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()

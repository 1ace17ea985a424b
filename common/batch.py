"""Chunked batch scoring of a table file into another, with pandas (one process) or on a Dask cluster.

Both paths read CSV (``.csv``, ``.csv.gz``, ``.tsv``) or parquet (``.parquet``, ``.pq``) by suffix, call
``score_fn(chunk) -> DataFrame`` on one chunk at a time (memory stays at a few chunks, whatever the file
size), and write the outputs, in input order, to ONE output file whose format also follows its suffix.

Atomicity: the output is written to a temporary file beside it (``.<name>.<pid>.<random>.batch-tmp``) and
renamed onto ``output_path`` only after the last chunk (``os.replace``: atomic on POSIX). So:

- a Python exception mid-file (including ``KeyboardInterrupt``) removes the temporary file and leaves any
  earlier output untouched;
- a hard kill (SIGKILL, OOM, power loss) leaves no file at ``output_path`` (or the earlier one intact), but
  the temporary file stays; the next run in that directory deletes temporary files whose process is gone.

Bad input is refused before anything is written, with one :class:`common.data.DataError` line naming the file: a
missing path, a directory, an unsupported suffix, an empty or header-only CSV, a truncated or corrupt parquet file,
``chunksize`` < 1, and an output that resolves to the input file. A file that turns out unreadable further in (a
malformed CSV row, a damaged parquet page) raises the same error mid-run, and the output is still never partial.

``score_fn`` must return a DataFrame (or a Series, turned into a one-column frame); it may add, drop or
reorder columns, and may drop rows. An input without rows is an error unless ``allow_empty=True``, which calls
it once on an empty frame that has the input's columns (so the output gets its header/schema). Column types must be
the same in every chunk for parquet output (they are cast to the first chunk's schema). For the Dask path it must be
picklable (cloudpickle: closures and lambdas work; functions from your own modules need that code importable on the
workers).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from common.data import DataError

log = logging.getLogger(__name__)

__all__ = ["BatchResult", "score_file", "score_file_dask"]

ScoreFn = Callable[[pd.DataFrame], pd.DataFrame]

_TMP_SUFFIX = ".batch-tmp"


@dataclass
class BatchResult:
    """Outcome of a batch run: rows written, input chunks (partitions) scored, wall seconds, output path."""

    rows: int
    chunks: int
    seconds: float
    output: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# ------------------------------------------------------------------ formats


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")):
        return "csv"
    raise DataError(f"{path}: unsupported file type; use .csv, .csv.gz, .tsv or .parquet")


# errors of the readers that mean "this file is not what its name says" (truncated, corrupt, not text ...)
_READ_ERRORS = (
    pa.ArrowException,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    UnicodeDecodeError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    OSError,
)


def _check_paths(src: Path, dst: Path, *, allow_empty: bool) -> None:
    """Refuse bad paths and unreadable or empty input up front (:class:`DataError`), before any output exists."""
    if dst.is_dir():
        raise DataError(f"output {dst} is a directory; give a file name (.csv or .parquet)")
    _kind(dst)  # an unsupported output type fails before reading anything
    if not src.exists():
        raise DataError(f"input file not found: {src}")
    if src.is_dir():
        raise DataError(f"{src} is a directory; give a file (.csv, .csv.gz, .tsv or .parquet)")
    kind = _kind(src)
    if src.resolve() == dst.resolve():
        raise DataError(
            f"input and output are the same file ({src}): the output would overwrite the input; "
            "choose another output path"
        )
    try:
        if kind == "parquet":
            rows = pq.ParquetFile(src).metadata.num_rows
            what = "no rows"
        else:
            rows = len(pd.read_csv(src, nrows=1, sep=_csv_sep(src)))
            what = "a header but no rows"
    except pd.errors.EmptyDataError:
        raise DataError(f"{src} is empty: no header and no rows") from None
    except _READ_ERRORS as exc:
        raise DataError(
            f"{src} is not a readable {kind} file (truncated or corrupt?): "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    if rows == 0 and not allow_empty:
        raise DataError(f"{src} has {what}: nothing to score")


@contextlib.contextmanager
def _reading(src: Path) -> Iterator[None]:
    """Reader errors while iterating -> one :class:`DataError` naming the file (score_fn errors pass through)."""
    try:
        yield
    except _READ_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{src} could not be read to the end (truncated or corrupt?): {first}; no output was written"
        ) from exc


def _csv_sep(path: Path) -> str:
    return "\t" if ".tsv" in path.name.lower() else ","


def _as_frame(out: Any, where: str) -> pd.DataFrame:
    if isinstance(out, pd.Series):
        return out.to_frame()
    if not isinstance(out, pd.DataFrame):
        raise TypeError(f"score_fn must return a pandas DataFrame, got {type(out).__name__} ({where})")
    return out


def _iter_chunks(path: Path, chunksize: int, read_kwargs: dict[str, Any]) -> Iterator[pd.DataFrame]:
    """Chunks of at most ``chunksize`` rows, in file order (index reset per chunk is not guaranteed)."""
    if _kind(path) == "parquet":
        with _reading(path):
            pf = pq.ParquetFile(path)
        columns = read_kwargs.get("columns")
        empty = True
        batches = pf.iter_batches(batch_size=chunksize, columns=columns)
        while True:
            with _reading(path):
                batch = next(batches, None)
            if batch is None:
                break
            empty = False
            yield batch.to_pandas()
        if empty:  # keep the schema so that score_fn sees the columns
            yield (pf.schema_arrow.empty_table().to_pandas() if columns is None else pd.DataFrame(columns=columns))
    else:
        kwargs = {"sep": _csv_sep(path), **read_kwargs}
        with _reading(path):
            reader = pd.read_csv(path, chunksize=chunksize, **kwargs)
        with reader:
            empty = True
            while True:
                with _reading(path):
                    chunk = next(reader, None)
                if chunk is None:
                    break
                empty = False
                yield chunk
        if empty:
            with _reading(path):
                header = pd.read_csv(path, nrows=0, **kwargs)
            yield header


def _count_rows(path: Path) -> int | None:
    """Rows in a parquet file (from its footer); None for CSV (would need a full pass)."""
    if _kind(path) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return None


class _TableWriter:
    """Appends DataFrames to one CSV or parquet file (at ``tmp``; the format follows ``target``'s suffix)."""

    def __init__(self, tmp: Path, target: Path, stack: ExitStack):
        self.tmp, self.target, self.kind = tmp, target, _kind(target)
        self.stack = stack
        self._pq: pq.ParquetWriter | None = None
        self._fh: IO[str] | None = None
        self.schema: pa.Schema | None = None
        self.columns: list[Any] = []
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        if self.kind == "parquet":
            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._pq is None:
                self.schema = table.schema.remove_metadata()
                # plain encoding: scored outputs are mostly unique ids and scores, for which dictionaries cost
                # time and size for nothing (the fraud bench's output: 2.6x faster to write, 17 % smaller)
                self._pq = pq.ParquetWriter(self.tmp, self.schema, use_dictionary=False)
            elif self.schema is not None and not table.schema.remove_metadata().equals(self.schema):
                try:
                    table = table.select(self.schema.names).cast(self.schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
                    raise ValueError(
                        f"score_fn output of a later chunk does not match the first chunk's columns/types "
                        f"({self.schema}) and cannot be cast: {exc}. Return the same dtypes in every chunk."
                    ) from exc
            self._pq.write_table(table.replace_schema_metadata(None))
        else:
            if self._fh is None:
                name = self.target.name.lower()
                if name.endswith(".gz"):
                    opened = gzip.open(self.tmp, "wt", newline="", encoding="utf-8")  # noqa: SIM115
                else:
                    opened = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
                self._fh = self.stack.enter_context(opened)  # closed by close() or the owner's ExitStack
                df.to_csv(self._fh, index=False, sep=_csv_sep(self.target))
                self.columns = list(df.columns)
            else:
                if list(df.columns) != self.columns:
                    if set(df.columns) != set(self.columns):
                        raise ValueError(
                            f"score_fn returned columns {list(df.columns)} for a later chunk, expected "
                            f"{self.columns} as in the first chunk"
                        )
                    df = df[self.columns]
                df.to_csv(self._fh, index=False, header=False, sep=_csv_sep(self.target))
        self.rows += len(df)

    def close(self) -> None:
        """Finish the file and flush it to disk (fsync) so that the rename publishes complete data."""
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        if not self.tmp.exists():  # nothing was written
            self.tmp.touch()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())


def _tmp_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(output: Path) -> None:
    """Delete temp files of earlier runs for ``output`` whose process no longer exists (a killed run)."""
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.(\d+)\.[0-9a-f]+{re.escape(_TMP_SUFFIX)}$")
    if not output.parent.is_dir():
        return
    for p in output.parent.iterdir():
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            log.warning("removing stale temporary file of an interrupted run: %s", p)
            p.unlink(missing_ok=True)


class _AtomicOutput:
    """Context manager: a :class:`_TableWriter` on a temp file, renamed onto ``output`` only on success."""

    def __init__(self, output: Path):
        self.output = output
        self.stack = ExitStack()

    def __enter__(self) -> _TableWriter:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.output)
        self.tmp = _tmp_path(self.output)
        self.writer = _TableWriter(self.tmp, self.output, self.stack)
        return self.writer

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.writer.close()
                os.replace(self.tmp, self.output)
        finally:
            self.stack.close()
            if self.tmp.exists():
                if self.writer._pq is not None and exc_type is not None:
                    with contextlib.suppress(Exception):  # best effort before deleting the temp file
                        self.writer._pq.close()
                self.tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ pandas path


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    score_fn: ScoreFn,
    *,
    chunksize: int = 50_000,
    progress: bool = True,
    read_kwargs: dict[str, Any] | None = None,
    allow_empty: bool = False,
) -> BatchResult:
    """Score ``input_path`` chunk by chunk with ``score_fn`` and write the results to ``output_path``.

    Args:
        input_path: CSV/TSV (optionally .gz) or parquet file.
        output_path: CSV/TSV (optionally .gz) or parquet; written atomically (see the module docstring).
        score_fn: ``DataFrame (chunk rows x input columns) -> DataFrame`` (rows x output columns).
        chunksize: rows per chunk (CSV chunks / parquet record batches).
        progress: show a tqdm bar (rows; total known for parquet).
        read_kwargs: extra arguments for ``pd.read_csv`` (e.g. ``dtype``, ``parse_dates``) or, for parquet,
            ``{"columns": [...]}``.
        allow_empty: score an input without rows into an output with just the header/schema (default: error).

    Returns:
        :class:`BatchResult` with the number of rows written (after ``score_fn``), chunks and seconds.

    Raises:
        DataError: bad paths or input (see the module docstring); nothing is written.
    """
    src, dst = Path(input_path), Path(output_path)
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise DataError(f"chunksize must be a whole number >= 1, got {chunksize!r}")
    _check_paths(src, dst, allow_empty=allow_empty)
    t0 = time.perf_counter()
    chunks = 0
    with (
        _AtomicOutput(dst) as writer,
        tqdm(
            total=_count_rows(src),
            unit="rows",
            unit_scale=True,
            desc=f"scoring {src.name}",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        for chunk in _iter_chunks(src, chunksize, dict(read_kwargs or {})):
            writer.write(_as_frame(score_fn(chunk), f"chunk {chunks}"))
            chunks += 1
            bar.update(len(chunk))
    seconds = time.perf_counter() - t0
    log.info("scored %s -> %s: %d rows in %d chunks, %.2fs", src, dst, writer.rows, chunks, seconds)
    return BatchResult(rows=writer.rows, chunks=chunks, seconds=seconds, output=dst)


# ------------------------------------------------------------------ Dask path


def _apply(score_fn: ScoreFn, part: pd.DataFrame) -> pd.DataFrame:
    return _as_frame(score_fn(part), "dask partition")


def score_file_dask(
    input_path: str | Path,
    output_path: str | Path,
    score_fn: ScoreFn,
    *,
    scheduler: str | None = None,
    n_workers: int = 2,
    blocksize: str | int | None = "64MB",
    progress: bool = True,
    max_in_flight: int | None = None,
    client: Any = None,
    read_kwargs: dict[str, Any] | None = None,
    allow_empty: bool = False,
) -> BatchResult:
    """Same contract as :func:`score_file`, with the chunks (Dask partitions) scored on a Dask cluster.

    Args:
        scheduler: address of a running scheduler (``tcp://host:8786``); ``None`` starts a local cluster of
            ``n_workers`` single-threaded worker processes for this call.
        blocksize: CSV bytes per partition (``dask.dataframe.read_csv``); parquet partitions follow files
            (pass ``read_kwargs={"split_row_groups": True}`` for one partition per row group).
        max_in_flight: partitions scored concurrently (default 2 x workers); bounds memory on the client,
            which receives the scored partitions in input order and writes the one output file.
        client: an existing ``distributed.Client`` (takes precedence over ``scheduler``).
        read_kwargs: extra arguments for ``dask.dataframe.read_csv`` / ``read_parquet``.

    The scorer is sent to the cluster once (scattered) rather than with every task, so a large model in its
    closure costs one transfer per worker. Output rows equal :func:`score_file`'s (same order).
    """
    import dask
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    src, dst = Path(input_path), Path(output_path)
    _check_paths(src, dst, allow_empty=allow_empty)
    read_kwargs = dict(read_kwargs or {})
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if client is None:
            if scheduler is None:
                cluster = stack.enter_context(
                    LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
                )
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(scheduler))
        if _kind(src) == "parquet":
            ddf = dd.read_parquet(str(src), **read_kwargs)
        else:
            ddf = dd.read_csv(str(src), blocksize=blocksize, sep=_csv_sep(src), **read_kwargs)
        parts = ddf.to_delayed()
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        window = max_in_flight or 2 * workers
        fn = client.scatter(score_fn, broadcast=True, hash=False)
        log.info(
            "dask scoring %s: %d partitions on %d workers (%s)",
            src,
            len(parts),
            workers,
            client.scheduler.address,
        )
        chunks = 0
        pending: deque = deque()
        with (
            _AtomicOutput(dst) as writer,
            tqdm(
                total=len(parts),
                unit="part",
                desc=f"scoring {src.name} (dask)",
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            nxt = 0
            try:
                while nxt < len(parts) or pending:
                    while nxt < len(parts) and len(pending) < window:
                        pending.append(client.compute(dask.delayed(_apply)(fn, parts[nxt])))
                        nxt += 1
                    fut = pending.popleft()
                    writer.write(fut.result())
                    fut.release()
                    chunks += 1
                    bar.update(1)
            except BaseException:
                client.cancel([*list(pending), fn])
                raise
    seconds = time.perf_counter() - t0
    log.info("scored %s -> %s on dask: %d rows in %d partitions, %.2fs", src, dst, writer.rows, chunks, seconds)
    return BatchResult(rows=writer.rows, chunks=chunks, seconds=seconds, output=dst)

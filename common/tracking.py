"""Experiment tracking on MLflow: a local sqlite store under ``MLREF_HOME`` by default, any server by URI.

Every function points MLflow at the current settings first, so changing ``MLREF_HOME`` or
``MLREF_TRACKING_URI`` between calls (as tests do) takes effect. Artifacts go to ``$MLREF_HOME/artifacts``
(never a stray ``./mlruns``).

A damaged local store is refused, never silently rebuilt: before MLflow touches the sqlite file,
:func:`check_store` rejects a 0-byte file and one that is not SQLite (:class:`DamagedStoreError`, "the registry at
PATH is damaged: ..."), and a read-only caller (``client(read_only=True)``) gets :class:`NoStoreError` instead of
a new empty store when the file is missing. Corruption found later by a query (a truncated or overwritten file:
"database disk image is malformed") is turned into the same :class:`DamagedStoreError` by :func:`guard`. A remote
tracking URI is not checked (its server owns its storage).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
from mlflow.tracking import MlflowClient

from common.config import get_settings
from common.errors import UserError

log = logging.getLogger(__name__)
for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


SQLITE_HEADER = b"SQLite format 3\x00"
# first lines of sqlite errors that mean the file itself is broken (not "database is locked", which is transient)
_DAMAGE_MARKERS = (
    "malformed",
    "not a database",
    "no such table",
    "file is encrypted",
    "disk i/o error",
    "unsupported file format",
    "database corrupt",
)


class StoreError(UserError, RuntimeError):
    """The tracking/registry store cannot be used as it is; the message names it and says what to do."""


class NoStoreError(StoreError, LookupError):
    """A read-only operation found no local store (nothing was ever registered in this ``MLREF_HOME``)."""


class DamagedStoreError(StoreError):
    """The local store's database file is empty, not SQLite, or corrupt."""


def store_path() -> Path | None:
    """The sqlite file of the tracking store (``$MLREF_HOME/mlflow.db`` by default); ``None`` for a remote URI."""
    uri = get_settings().tracking
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_store(*, create: bool = True) -> Path | None:
    """Refuse a missing (when ``create`` is false) or damaged sqlite store before MLflow opens it.

    Costs a ``stat``, a 16-byte read and a shared ``flock``: cheap enough for every call, including a server's
    registry poll. A missing store is created here (when ``create``), under an exclusive lock on
    ``mlflow.db.create.lock`` that readers wait for, so a store that another process is creating right now (0 bytes,
    tables half made) is never mistaken for a damaged one. Returns the store's path (``None`` for a remote URI,
    which is not checked).
    """
    path = store_path()
    if path is None:
        return None
    with _creation_lock(path, exclusive=False):  # wait for a concurrent creator to finish
        pass
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if create:
            _create_store(path)
            return path
        raise NoStoreError(
            f"there is no registry yet at {path}: train a model first "
            "(or point MLREF_HOME / MLREF_TRACKING_URI at the existing one)"
        ) from None
    if path.is_dir():
        raise DamagedStoreError(f"the registry at {path} is damaged: it is a directory, not an SQLite file")
    if size == 0:
        raise DamagedStoreError(
            f"the registry at {path} is damaged: the file is empty (0 bytes), so every version and run is gone "
            "from it; restore it from a backup, or delete it to start a new, empty registry"
        )
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise DamagedStoreError(
            f"the registry at {path} is damaged: it is not an SQLite database "
            f"({size} bytes starting {head[:8]!r}); restore it from a backup"
        )
    return path


@contextmanager
def _creation_lock(path: Path, *, exclusive: bool, timeout_s: float = 300.0) -> Iterator[None]:
    lock = path.with_name(path.name + ".create.lock")
    if not exclusive and not lock.exists():
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{lock} has been held for over {timeout_s:.0f} s while creating the store "
                        f"at {path}; is another process stuck?"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _create_store(path: Path) -> None:
    """Create and migrate a new sqlite store at ``path`` while holding the creation lock."""
    with _creation_lock(path, exclusive=True):
        if path.exists():  # another process created it while we waited
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
        log.info("creating a new tracking/registry store at %s", path)
        MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments(max_results=1)  # runs the migrations


def damage_reason(exc: BaseException) -> str | None:
    """The sqlite error behind ``exc`` (anywhere in its cause chain) when it says the file is broken, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        is_db_error = isinstance(cur, sqlite3.DatabaseError) or type(cur).__module__.startswith("sqlalchemy")
        first = str(cur).strip().splitlines()[0] if str(cur).strip() else ""
        if is_db_error or isinstance(cur, mlflow.exceptions.MlflowException):
            low = first.lower()
            if any(m in low for m in _DAMAGE_MARKERS):
                return first.split(") ", 1)[-1] if first.startswith("(") else first
        cur = cur.__cause__ or cur.__context__
    return None


@contextmanager
def guard() -> Iterator[None]:
    """Turn an MLflow/SQLAlchemy error caused by a broken store file into one :class:`DamagedStoreError`."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        why = damage_reason(exc)
        if why is None:
            raise
        where = store_path() or get_settings().tracking
        raise DamagedStoreError(f"the registry at {where} is damaged: {why}; restore it from a backup") from exc


def configure(*, read_only: bool = False) -> str:
    """Point MLflow's tracking and registry at the current settings; returns the tracking URI.

    The local store is checked first (:func:`check_store`); ``read_only`` refuses to create a missing one.
    """
    settings = get_settings()
    check_store(create=not read_only)
    if not read_only:
        settings.home.expanduser().mkdir(parents=True, exist_ok=True)
    uri = settings.tracking
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return uri


def client(*, read_only: bool = False) -> MlflowClient:
    """An MLflow client bound to the current settings (see :func:`configure` for ``read_only``)."""
    uri = configure(read_only=read_only)
    with guard():  # MLflow opens the store here in a fresh process: a corrupt file fails now
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(name: str) -> str:
    """Id of experiment ``name``, created (with artifacts under ``$MLREF_HOME/artifacts``) if it is missing."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    settings = get_settings()
    location = None
    if not settings.tracking_uri:  # local store: keep artifacts beside the database
        root = settings.home.expanduser().resolve() / "artifacts" / name
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another process
        existing = c.get_experiment_by_name(name)
        if existing is None:  # the create failed for another reason
            raise
        return existing.experiment_id


@contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run in ``experiment``; logs ``params`` and ``tags`` up front. Ends (FAILED on error)."""
    with guard():
        exp_id = experiment_id(experiment)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=dict(tags or {}), nested=nested) as run:
        if params:
            log_params(params)
        yield run


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters (values stringified, truncated by MLflow at 6000 chars)."""
    mlflow.log_params({k: _param(v) for k, v in params.items()})


def _param(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics; non-finite or non-numeric values are skipped with a warning."""
    clean = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            log.warning("metric %s=%r is not a number; not logged", k, v)
            continue
        if f != f or f in (float("inf"), float("-inf")):
            log.warning("metric %s=%r is not finite; not logged", k, v)
            continue
        clean[_metric_key(k)] = f
    if clean:
        mlflow.log_metrics(clean, step=step)


def _metric_key(k: str) -> str:
    """MLflow keys allow alphanumerics, ``_ - . / space``; map others (e.g. ``@``) to ``_``."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in k)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or a directory as artifact(s) of the active run."""
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_figure(fig: Any, name: str) -> None:
    """Log a matplotlib figure as ``name`` (e.g. ``figures/roc.png``)."""
    mlflow.log_figure(fig, name)


def log_dict(d: Mapping[str, Any], name: str) -> None:
    """Log a JSON-serialisable dict as artifact ``name`` (e.g. ``metrics.json``)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / Path(name).name
        p.write_text(json.dumps(d, indent=2, default=str))
        parent = str(Path(name).parent)
        log_artifact(p, None if parent == "." else parent)

"""Model registry on MLflow: versions, ``champion`` / ``challenger`` aliases, and integrity-checked loading.

A model is a **directory** written by the app's own save function (xgboost JSON, npz arrays, a torch
``state_dict`` ...). :func:`register` logs it as the artifact ``model`` of an MLflow run and creates a version
tagged with the directory's sha256, the training data's fingerprint and the git commit. :func:`fetch_model_dir`
copies it to ``$MLREF_HOME/models/<name>/<version>`` and re-hashes it on every load: a changed byte anywhere
raises :class:`IntegrityError` before any loader (some of which unpickle) touches the files.

Promotion is one alias update in the registry's database, so readers see either the old or the new champion.
Writers serialise on a file lock (:func:`promotion_lock`, ``$MLREF_HOME/locks/<name>.lock``, ``fcntl.flock``: the
kernel releases it when a holder dies, even by ``kill -9``), and :func:`compare_and_promote` moves the champion only
if it is still the version the caller compared against, so two concurrent retrains cannot both win. With a remote
tracking URI the lock only covers processes on this machine; the compare step still catches most races elsewhere.

Read-only functions (:func:`get`, :func:`find`, :func:`version_of`, :func:`list_versions`, :func:`load`) never
create a store: with no ``mlflow.db`` yet, :func:`get` raises :class:`NoRegistryError` ("there is no registry yet
at PATH") and :func:`find` returns ``None``; an empty, non-SQLite or corrupt file raises
:class:`DamagedRegistryError` ("the registry at PATH is damaged: ..."), a user error for the CLI (exit 2).

:func:`register_dir` stages a model directory in a temporary directory, registers it and removes it (what every app
needs); every version records the MLflow run that trained it (:attr:`ModelVersion.training_run_id`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from common import tracking
from common.config import get_settings, git_commit
from common.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")

CHAMPION = "champion"
CHALLENGER = "challenger"


class IntegrityError(UserError, RuntimeError):
    """A model artifact's bytes differ from the sha256 recorded when it was registered."""


class NotFoundError(UserError, LookupError):
    """No such registered model, version or alias."""


# The store's own errors (user errors for the CLI): RegistryError is the base of both below.
RegistryError = tracking.StoreError
DamagedRegistryError = tracking.DamagedStoreError


class NoRegistryError(NotFoundError, tracking.NoStoreError):
    """A read found no registry at all (no ``mlflow.db`` yet): :func:`find` treats it as "no such model"."""


class LockTimeoutError(RegistryError):
    """Another process held the registry's promotion lock for longer than the timeout."""


TRAINING_RUN_TAG = "training_run_id"
LAST_TRAINING_TIMESTAMP_TAG = "last_training_timestamp"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version; ``metrics``/``params`` are those of the run that registered it."""

    name: str
    version: str
    run_id: str | None
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_ms: int | None = None  # when the version was registered (Unix milliseconds, the registry's clock)

    @property
    def data_fingerprint(self) -> str | None:
        return self.tags.get("data_fingerprint")

    @property
    def training_run_id(self) -> str | None:
        """The MLflow run that trained this version (its own registration run when none was given)."""
        return self.tags.get(TRAINING_RUN_TAG) or self.run_id

    @property
    def last_training_timestamp(self) -> float | None:
        """Unix seconds of the newest row of its training data (tag ``last_training_timestamp``), if recorded."""
        raw = self.tags.get(LAST_TRAINING_TIMESTAMP_TAG)
        return float(raw) if raw not in (None, "") else None


def hash_dir(path: str | Path) -> str:
    """sha256 over a directory: every file's relative path (sorted, POSIX separators) and its bytes."""
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"{root} is not a directory")
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def register(
    name: str,
    model_dir: str | Path,
    *,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    data_fingerprint: str | None = None,
    tags: Mapping[str, str] | None = None,
    alias: str | None = None,
    training_run_id: str | None = None,
    last_training_timestamp: float | None = None,
) -> ModelVersion:
    """Log ``model_dir`` in a new run of experiment ``name`` and register it as the next version of ``name``.

    Args:
        alias: set this alias (e.g. ``"champion"``) on the new version once it is fully registered.
        training_run_id: the MLflow run that trained the model (tag ``training_run_id``). Default: the active run
            when there is one (the registration run is then nested in it), else the registration run itself,
            which carries ``params`` and ``metrics``.
        last_training_timestamp: unix seconds of the newest training row (tag ``last_training_timestamp``), which
            :mod:`common.retraining` uses to refuse comparisons on data a model was trained on.
    """
    model_dir = Path(model_dir)
    t0 = time.perf_counter()
    digest = hash_dir(model_dir)
    size_mb = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()) / 1e6
    log.info("%s: sha256 of the model directory (%.1f MB) in %.1f s", name, size_mb, time.perf_counter() - t0)
    active = mlflow.active_run()
    version_tags = {"sha256": digest, "git_commit": git_commit(), **dict(tags or {})}
    if data_fingerprint:
        version_tags["data_fingerprint"] = data_fingerprint
    if last_training_timestamp is not None:
        version_tags[LAST_TRAINING_TIMESTAMP_TAG] = repr(float(last_training_timestamp))
    training_run_id = training_run_id or (active.info.run_id if active is not None else None)
    if training_run_id:
        version_tags[TRAINING_RUN_TAG] = training_run_id
    with tracking.guard():
        c = tracking.client()
        with tracking.start_run(
            name, run_name=f"{name}-register", params=params, tags=version_tags, nested=active is not None
        ) as run:
            if metrics:
                tracking.log_metrics(metrics)
            t0 = time.perf_counter()
            tracking.log_artifact(model_dir, "model")
            log.info("%s: model directory stored as an MLflow artifact in %.1f s", name, time.perf_counter() - t0)
            run_id = run.info.run_id
            source = f"{run.info.artifact_uri.rstrip('/')}/model"
        version_tags.setdefault(TRAINING_RUN_TAG, run_id)
        try:
            c.get_registered_model(name)
        except MlflowException:
            with contextlib.suppress(MlflowException):  # a concurrent writer may have created it
                c.create_registered_model(name)
        mv = c.create_model_version(name, source, run_id=run_id, tags=version_tags)
    if alias:
        set_alias(name, alias, mv.version)
    log.info("registered %s version %s (sha256 %s)", name, mv.version, digest[:12])
    return get(name, str(mv.version))


def register_dir(name: str, build: Callable[[Path], Any], **kwargs: Any) -> ModelVersion:
    """Register a model directory that ``build(path)`` writes into a fresh, empty temporary directory.

    The directory lives under ``$MLREF_HOME/work/<name>/staging`` (same disk as the store) and is removed
    afterwards, whether registration succeeds or not: the registry keeps its own copy. ``kwargs`` go to
    :func:`register`.
    """
    staging = get_settings().path("work", name, "staging")
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="model-", dir=staging) as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        build(model_dir)
        return register(name, model_dir, **kwargs)


def _to_version(mv: Any) -> ModelVersion:
    c = tracking.client(read_only=True)
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    if mv.run_id:
        try:
            with tracking.guard():
                data = c.get_run(mv.run_id).data
            metrics, params = dict(data.metrics), dict(data.params)
        except MlflowException:
            log.warning("run %s of %s v%s is gone", mv.run_id, mv.name, mv.version)
    tags = dict(mv.tags or {})
    return ModelVersion(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        sha256=tags.get("sha256", ""),
        metrics=metrics,
        params=params,
        tags=tags,
        aliases=tuple(getattr(mv, "aliases", ()) or ()),
        created_ms=getattr(mv, "creation_timestamp", None),
    )


def get(name: str, ref: str = CHAMPION) -> ModelVersion:
    """The version of ``name`` that ``ref`` names: an alias (``champion``, ``challenger``) or a version number.

    Raises :class:`NotFoundError` (:class:`NoRegistryError` when there is no store yet) or
    :class:`DamagedRegistryError`; never creates a store.
    """
    c = _read_client()
    try:
        with tracking.guard():
            mv = c.get_model_version(name, ref) if str(ref).isdigit() else c.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        raise NotFoundError(f"model {name!r} has no version or alias {ref!r}") from exc
    return _to_version(mv)


def _read_client() -> Any:
    try:
        return tracking.client(read_only=True)
    except tracking.NoStoreError as exc:
        raise NoRegistryError(str(exc)) from None


def find(name: str, ref: str = CHAMPION) -> ModelVersion | None:
    """Like :func:`get`, but ``None`` when there is no such model/alias yet."""
    try:
        return get(name, ref)
    except NotFoundError:
        return None


def version_of(name: str, ref: str = CHAMPION) -> str | None:
    """Just the version number ``ref`` points at (one registry query), or ``None``. Cheap enough to poll."""
    if str(ref).isdigit():
        return str(ref)
    try:
        c = _read_client()
    except NoRegistryError:
        return None
    try:
        with tracking.guard():
            return str(c.get_model_version_by_alias(name, ref).version)
    except MlflowException:
        return None


def list_versions(name: str) -> list[ModelVersion]:
    """All versions of ``name``, oldest first (none when there is no registry yet: nothing is created)."""
    try:
        c = _read_client()
    except NoRegistryError:
        return []
    with tracking.guard():
        found = c.search_model_versions(f"name='{name}'")
        return sorted((_to_version(mv) for mv in found), key=lambda v: int(v.version))


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` at ``version`` (one registry update: atomic for readers).

    Moving the champion happens under :func:`promotion_lock`, appends to the champion history (see
    :func:`champion_history`) and removes the ``challenger`` alias from ``version``: a version is served or it
    waits, never both.
    """
    with contextlib.ExitStack() as stack:
        if alias == CHAMPION:
            stack.enter_context(promotion_lock(name))
        with tracking.guard():
            c = tracking.client()
            c.set_registered_model_alias(name, alias, str(version))
            if alias == CHAMPION:
                _drop_challenger(name, str(version))
                _record_champion(name, str(version))
    log.info("%s: alias %s -> version %s", name, alias, version)


def _drop_challenger(name: str, version: str) -> None:
    """Remove the ``challenger`` alias when it names ``version`` (which has just become the champion)."""
    if version_of(name, CHALLENGER) == version:
        tracking.client().delete_registered_model_alias(name, CHALLENGER)
        log.info("%s: version %s is the champion now, no longer the challenger", name, version)


def promote(name: str, version: str | int) -> None:
    """Make ``version`` the champion, whatever the champion is now (see :func:`compare_and_promote`)."""
    set_alias(name, CHAMPION, version)


def compare_and_promote(name: str, version: str | int, expected: str | None) -> bool:
    """Make ``version`` the champion only if the champion is still ``expected`` (``None``: there is none).

    The check and the alias update happen under :func:`promotion_lock`, so of two processes that compared against
    the same champion, exactly one promotes. Returns whether ``version`` was promoted.
    """
    with promotion_lock(name):
        current = version_of(name, CHAMPION)
        if current != (None if expected is None else str(expected)):
            log.warning(
                "%s: not promoting v%s: the champion is v%s now, not v%s as compared", name, version, current, expected
            )
            return False
        set_alias(name, CHAMPION, version)
        return True


_held = threading.local()
_remote_lock_warned = False


@contextmanager
def promotion_lock(name: str, *, timeout_s: float = 120.0) -> Iterator[None]:
    """Exclusive lock on ``name``'s champion, ``$MLREF_HOME/locks/<name>.lock`` (``fcntl.flock``).

    Re-entrant within a thread; other threads and processes wait (polling every 50 ms) up to ``timeout_s``, then
    :class:`LockTimeoutError`. The kernel drops the lock when its holder exits, so a killed process never leaves
    a stale lock. With a remote tracking URI it only serialises this machine's processes.
    """
    global _remote_lock_warned
    path = get_settings().path("locks", re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".lock").resolve()
    held: set[Path] = _held.__dict__.setdefault("paths", set())
    if path in held:
        yield
        return
    if tracking.store_path() is None and not _remote_lock_warned:
        _remote_lock_warned = True
        log.info("promotion lock %s is local to this machine (remote tracking store %s)", path, get_settings().tracking)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeoutError(
                        f"{name}: another process has held {path} for over {timeout_s:.0f} s; "
                        "try again when it has finished"
                    ) from None
                time.sleep(0.05)
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def fetch_model_dir(mv: ModelVersion) -> Path:
    """A verified local copy of ``mv``'s directory under ``$MLREF_HOME/models/<name>/<version>``.

    The copy is (re)hashed on every call; a mismatch with the registered sha256 raises :class:`IntegrityError`.
    """
    if not mv.sha256:
        raise IntegrityError(f"{mv.name} v{mv.version} has no sha256 tag; refusing to load it")
    dest = get_settings().path("models", mv.name, mv.version)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{mv.version}.", dir=dest.parent))
        try:
            tracking.configure(read_only=True)
            with tracking.guard():
                mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model", dst_path=str(tmp))
            got = hash_dir(tmp / "model")
            if got != mv.sha256:
                raise IntegrityError(
                    f"{mv.name} v{mv.version}: artifact sha256 {got} != registered {mv.sha256}; "
                    "the stored model was modified after registration"
                )
            try:
                os.replace(tmp / "model", dest)
            except OSError:  # another process placed it first
                if not dest.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    got = hash_dir(dest)
    if got != mv.sha256:
        raise IntegrityError(
            f"{mv.name} v{mv.version}: local copy {dest} has sha256 {got} != registered {mv.sha256}; "
            f"delete {dest} to fetch it again"
        )
    return dest


def load(name: str, ref: str, loader: Callable[[Path], T]) -> tuple[T, ModelVersion]:
    """Fetch and verify version ``ref`` of ``name``, then build the model with ``loader(model_dir)``."""
    mv = get(name, ref)
    return loader(fetch_model_dir(mv)), mv


# ------------------------------------------------------------------ champion history (for rollback)

HISTORY_TAG = "champion_history"
HISTORY_LENGTH = 50


def champion_history(name: str) -> list[str]:
    """The versions that were champion, oldest first, as recorded by :func:`set_alias` (a registered-model tag)."""
    c = _read_client()
    try:
        with tracking.guard():
            raw = c.get_registered_model(name).tags.get(HISTORY_TAG)
    except MlflowException as exc:
        raise NotFoundError(f"no registered model {name!r}") from exc
    return [str(v) for v in json.loads(raw)] if raw else []


def _record_champion(name: str, version: str) -> None:
    history = champion_history(name)
    if history and history[-1] == version:
        return
    history = ([*history, version])[-HISTORY_LENGTH:]
    tracking.client().set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def previous_champion(name: str) -> str | None:
    """The champion before the current one (``None`` when there was none)."""
    history = champion_history(name)
    current = version_of(name, CHAMPION)
    while history and history[-1] == current:
        history.pop()
    return history[-1] if history else None


def rollback_champion(name: str, *, expected: str, to: str) -> None:
    """Make ``to`` the champion again, dropping ``expected`` (the current champion) from the history's end."""
    with promotion_lock(name), tracking.guard():
        if version_of(name, CHAMPION) != expected:
            raise NotFoundError(f"{name}: the champion changed while rolling back (expected v{expected}); try again")
        history = champion_history(name)
        while history and history[-1] == expected:
            history.pop()
        c = tracking.client()
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        c.set_registered_model_alias(name, CHAMPION, str(to))
        _drop_challenger(name, str(to))
        _record_champion(name, str(to))
    log.info("%s: champion rolled back from version %s to %s", name, expected, to)

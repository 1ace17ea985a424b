"""Model registry on MLflow: versions, ``champion`` / ``challenger`` aliases, and integrity-checked loading.

A model is a **directory** written by the app's own save function (xgboost JSON, npz arrays, a torch
``state_dict`` ...). :func:`register` logs it as the artifact ``model`` of an MLflow run and creates a version
tagged with the directory's sha256, the training data's fingerprint and the git commit. :func:`fetch_model_dir`
copies it to ``$MLREF_HOME/models/<name>/<version>`` and re-hashes it on every load: a changed byte anywhere
raises :class:`IntegrityError` before any loader (some of which unpickle) touches the files.

Promotion is one alias update in the registry's database, so readers see either the old or the new champion.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from common import tracking
from common.config import get_settings, git_commit

log = logging.getLogger(__name__)
T = TypeVar("T")

CHAMPION = "champion"
CHALLENGER = "challenger"


class IntegrityError(RuntimeError):
    """A model artifact's bytes differ from the sha256 recorded when it was registered."""


class NotFoundError(LookupError):
    """No such registered model, version or alias."""


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

    @property
    def data_fingerprint(self) -> str | None:
        return self.tags.get("data_fingerprint")


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
) -> ModelVersion:
    """Log ``model_dir`` in a new run of experiment ``name`` and register it as the next version of ``name``.

    Args:
        alias: set this alias (e.g. ``"champion"``) on the new version once it is fully registered.
    """
    model_dir = Path(model_dir)
    digest = hash_dir(model_dir)
    c = tracking.client()
    version_tags = {"sha256": digest, "git_commit": git_commit(), **dict(tags or {})}
    if data_fingerprint:
        version_tags["data_fingerprint"] = data_fingerprint
    with tracking.start_run(name, run_name=f"{name}-register", params=params, tags=version_tags) as run:
        if metrics:
            tracking.log_metrics(metrics)
        tracking.log_artifact(model_dir, "model")
        run_id = run.info.run_id
        source = f"{run.info.artifact_uri.rstrip('/')}/model"
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


def _to_version(mv: Any) -> ModelVersion:
    c = tracking.client()
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    if mv.run_id:
        try:
            data = c.get_run(mv.run_id).data
            metrics, params = dict(data.metrics), dict(data.params)
        except MlflowException:
            log.warning("run %s of %s v%s is gone", mv.run_id, mv.name, mv.version)
    tags = dict(mv.tags or {})
    return ModelVersion(
        name=mv.name, version=str(mv.version), run_id=mv.run_id, sha256=tags.get("sha256", ""),
        metrics=metrics, params=params, tags=tags, aliases=tuple(getattr(mv, "aliases", ()) or ()),
    )


def get(name: str, ref: str = CHAMPION) -> ModelVersion:
    """The version of ``name`` that ``ref`` names: an alias (``champion``, ``challenger``) or a version number."""
    c = tracking.client()
    try:
        mv = c.get_model_version(name, ref) if str(ref).isdigit() else c.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        raise NotFoundError(f"model {name!r} has no version or alias {ref!r}") from exc
    return _to_version(mv)


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
        return str(tracking.client().get_model_version_by_alias(name, ref).version)
    except MlflowException:
        return None


def list_versions(name: str) -> list[ModelVersion]:
    """All versions of ``name``, oldest first."""
    c = tracking.client()
    found = c.search_model_versions(f"name='{name}'")
    return sorted((_to_version(mv) for mv in found), key=lambda v: int(v.version))


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``alias`` at ``version`` (one registry update: atomic for readers)."""
    tracking.client().set_registered_model_alias(name, alias, str(version))
    log.info("%s: alias %s -> version %s", name, alias, version)


def promote(name: str, version: str | int) -> None:
    """Make ``version`` the champion."""
    set_alias(name, CHAMPION, version)


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
            tracking.configure()
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

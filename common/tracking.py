"""Experiment tracking on MLflow: a local sqlite store under ``MLREF_HOME`` by default, any server by URI.

Every function points MLflow at the current settings first, so changing ``MLREF_HOME`` or
``MLREF_TRACKING_URI`` between calls (as tests do) takes effect. Artifacts go to ``$MLREF_HOME/artifacts``
(never a stray ``./mlruns``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402 - the environment above must be set before MLflow is imported
from mlflow.tracking import MlflowClient  # noqa: E402

from common.config import get_settings  # noqa: E402

log = logging.getLogger(__name__)
for _noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


def configure() -> str:
    """Point MLflow's tracking and registry at the current settings; returns the tracking URI."""
    settings = get_settings()
    settings.home.expanduser().mkdir(parents=True, exist_ok=True)
    uri = settings.tracking
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return uri


def client() -> MlflowClient:
    """An MLflow client bound to the current settings."""
    uri = configure()
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
        root = (settings.home.expanduser().resolve() / "artifacts" / name)
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


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

"""Settings read from the environment (prefix ``MLREF_``) or a ``.env`` file, and the one place that seeds.

| variable | default | meaning |
|---|---|---|
| ``MLREF_HOME`` | ``./.mlref`` | runs, registry, reports, prediction logs, decisions (made absolute) |
| ``MLREF_DATA_DIR`` | ``$MLREF_HOME/data`` | downloaded / user-provided datasets |
| ``MLREF_TRACKING_URI`` | ``sqlite:///$MLREF_HOME/mlflow.db`` | any MLflow tracking server |
| ``MLREF_SEED`` | ``42`` | default seed for every random thing |
| ``MLREF_API_KEY`` | unset | when set, HTTP endpoints require header ``X-API-Key`` |
| ``MLREF_HOST`` / ``MLREF_PORT`` | ``127.0.0.1`` / ``8000`` | where ``serve`` binds |
| ``MLREF_MAX_BODY_BYTES`` | ``1048576`` (1 MiB) | largest HTTP request body; larger ones get 413 |
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

T = TypeVar("T")


class Settings(BaseSettings):
    """All of mlref's settings; read fresh by :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="MLREF_", env_file=".env", extra="ignore")

    home: Path = Path(".mlref")
    data_dir: Path | None = None
    tracking_uri: str | None = None
    seed: int = 42
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1_048_576

    @field_validator("home", "data_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Relative paths are taken from the working directory once, here: every path handed to a subprocess
        that runs elsewhere (Rasa, torchrun, a server) then still points at the same place."""
        return None if value is None else value.expanduser().absolute()

    @property
    def data_path(self) -> Path:
        """Directory that holds datasets (``MLREF_DATA_DIR`` or ``$MLREF_HOME/data``)."""
        return (self.data_dir or self.home / "data").expanduser()

    @property
    def tracking(self) -> str:
        """MLflow tracking URI; a local sqlite file under ``MLREF_HOME`` unless set."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.home.expanduser().resolve() / 'mlflow.db'}"

    def path(self, *parts: str) -> Path:
        """``MLREF_HOME/parts...`` with its parent directory created."""
        p = self.home.expanduser().joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


_overrides: dict[str, Any] = {}
_overrides_lock = threading.Lock()


def get_settings() -> Settings:
    """Settings from the current environment (re-read on every call, so tests can change it), with any
    :func:`override` in force applied on top."""
    settings = Settings()
    return settings.model_copy(update=dict(_overrides)) if _overrides else settings


@contextmanager
def override(**values: Any) -> Iterator[Settings]:
    """Within the block, :func:`get_settings` returns ``values`` in place of the environment's settings.

    Process-wide (threads such as an in-process test server see it too) and restored on exit; used by demos and
    benchmarks to work in a home of their own without rewriting ``os.environ``::

        with override(home=Path(".mlref/demo/fraud"), tracking_uri=None):
            ...
    """
    unknown = set(values) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}")
    with _overrides_lock:
        saved = dict(_overrides)
        _overrides.update(values)
    try:
        yield get_settings()
    finally:
        with _overrides_lock:
            _overrides.clear()
            _overrides.update(saved)


def from_json_file(cls: type[T], path: str | Path | None) -> T:
    """An instance of the dataclass ``cls`` with defaults, updated from the JSON object in ``path`` (when given).

    Unknown keys and unreadable files raise :class:`common.errors.ConfigError` (a user error: exit code 2; a
    :class:`~common.errors.DataError` too); JSON lists become tuples where the field's default is a tuple.
    """
    cfg = cls()
    if path is None:
        return cfg
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    known = {f.name for f in dataclasses.fields(cast(Any, cls))}  # cls is a dataclass (a type[T] to mypy)
    if not isinstance(data, dict) or set(data) - known:
        unknown = sorted(set(data) - known) if isinstance(data, dict) else []
        raise ConfigError(f"config {path}: expected an object with keys from {sorted(known)}; unknown: {unknown}")
    _update(cfg, data, str(path))
    return cfg


def _update(cfg: Any, data: dict[str, Any], where: str) -> None:
    """Set ``cfg``'s fields from ``data``; an object given for a nested dataclass field updates that dataclass."""
    for key, value in data.items():
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(current)}
            if set(value) - known:
                raise ConfigError(f"config {where}: {key}: unknown keys {sorted(set(value) - known)}")
            _update(current, value, where)
            continue
        as_tuple = isinstance(value, list) and isinstance(current, tuple)
        setattr(cfg, key, tuple(value) if as_tuple else value)


def seed_everything(seed: int | None = None) -> int:
    """Seed python's ``random``, numpy's global RNG and torch (when installed). Returns the seed used."""
    seed = get_settings().seed if seed is None else int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # torch is optional for the non-torch apps
        return seed
    torch.manual_seed(seed)
    return seed


def git_commit() -> str:
    """The current git commit of the code (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def machine_info() -> dict[str, Any]:
    """What a benchmark ran on: CPU count, model name, memory, python and key library versions."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "git_commit": git_commit(),
    }
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    versions = {}
    for mod in ("numpy", "pandas", "sklearn", "xgboost", "implicit", "torch", "mlflow"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is fine here
            continue
    info["versions"] = versions
    return info

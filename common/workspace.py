"""Where a run reads and writes: one :class:`Workspace`, built once per command and passed down.

The command line builds it from the environment (``MLREF_HOME``, ``MLREF_DATA_DIR``, ``MLREF_TRACKING_URI``,
``MLREF_SEED``, ... -- the table in :mod:`common.config`) when a command starts, and hands it to the app's pipeline
functions, which pass it on: a pipeline stage never reads the environment itself. A demo or a benchmark makes a
workspace of its own (:meth:`Workspace.for_demo`, :meth:`Workspace.at`) instead of rewriting ``os.environ``::

    ws = Workspace.from_env()                     # $MLREF_HOME, read once
    data = pipeline.load_data(ws, "FD001", cfg)    # the stages take it as their first argument
    with ws.activate():                            # the library layer (registry, tracking, reports) follows it
        ...

Layout under ``home``: ``reports/`` (one directory per run, :mod:`common.reports`), ``mlflow.db`` + ``mlartifacts/``
(runs and the model registry, unless ``tracking_uri`` points elsewhere), ``models/`` (verified copies of registered
versions), ``decisions/`` (retraining verdicts), ``work/`` (staging and scratch), ``locks/``, ``demo/<app>/`` (each
demo's own workspace).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.config import Settings, get_settings, override


@dataclass(frozen=True)
class Workspace:
    """The home directory of runs, registry, reports and tracking, with the settings a command runs under."""

    home: Path
    data_dir: Path
    tracking_uri: str
    seed: int = 42
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1_048_576

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspace:
        return cls(
            home=settings.home.expanduser().absolute(),
            data_dir=settings.data_path.absolute(),
            tracking_uri=settings.tracking,
            seed=settings.seed,
            api_key=settings.api_key,
            host=settings.host,
            port=settings.port,
            max_body_bytes=settings.max_body_bytes,
        )

    @classmethod
    def from_env(cls) -> Workspace:
        """The workspace the environment (and ``.env``) describes, with any active :meth:`activate` applied."""
        return cls.from_settings(get_settings())

    @classmethod
    def at(cls, home: str | Path, *, data_dir: str | Path | None = None, seed: int = 42) -> Workspace:
        """A workspace of its own under ``home`` with a local tracking store (tests, benchmarks, examples)."""
        home = Path(home).expanduser().absolute()
        return cls(
            home=home,
            data_dir=Path(data_dir).expanduser().absolute() if data_dir else home / "data",
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            seed=seed,
        )

    # --- places -------------------------------------------------------------------------------------------------
    @property
    def reports(self) -> Path:
        """Root of the report directories (``<app>/<dataset>/<kind>/<time>``, ``index.html``)."""
        return self.home / "reports"

    def path(self, *parts: str) -> Path:
        """``home/parts...`` with its parent directory created."""
        p = self.home.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def work_dir(self, app: str) -> Path:
        """Scratch space of one app (``home/work/<app>``), created."""
        p = self.home / "work" / app
        p.mkdir(parents=True, exist_ok=True)
        return p

    # --- derived workspaces ---------------------------------------------------------------------------------------
    def for_demo(self, app: str, *, fresh: bool = True) -> Workspace:
        """``home/demo/<app>`` (emptied first when ``fresh``) with a local tracking store: a demo never touches the
        user's registry, reports or tracking server. The data directory stays the user's."""
        home = self.home / "demo" / app
        if fresh and home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True, exist_ok=True)
        return dataclasses.replace(self, home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")

    # --- the library layer ----------------------------------------------------------------------------------------
    @contextmanager
    def activate(self) -> Iterator[Workspace]:
        """Within the block the library layer (registry, tracking, reports, serving) works in this workspace.

        Process-wide, so a server thread started inside the block sees it too; restored on exit. Every field of a
        workspace is the setting of the same name (``override`` refuses any other)."""
        with override(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}):
            yield self

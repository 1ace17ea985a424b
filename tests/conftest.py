"""Shared fixtures: every test gets its own MLREF_HOME and data dir, fixed seeds, and no network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLREF_SHARED_DATA", REPO.parent / "shared" / "data"))

# Headless plotting and quiet, offline libraries for every test process.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow sqlite database, made once per session.

    Creating the schema (dozens of alembic migrations) takes seconds; each test copies this file instead.
    """
    home = tmp_path_factory.mktemp("mlflow-template")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLREF_HOME", str(home))
    mp.delenv("MLREF_TRACKING_URI", raising=False)
    try:
        from common import tracking

        tracking.client().search_experiments()
    finally:
        mp.undo()
    return home / "mlflow.db"


@pytest.fixture(autouse=True)
def mlref_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db_template: Path) -> Path:
    """A fresh MLREF_HOME (and MLREF_DATA_DIR inside it) for each test; API key and tracking URI unset."""
    home = tmp_path / "mlref-home"
    home.mkdir()
    shutil.copyfile(mlflow_db_template, home / "mlflow.db")
    monkeypatch.setenv("MLREF_HOME", str(home))
    monkeypatch.setenv("MLREF_DATA_DIR", str(home / "data"))
    monkeypatch.delenv("MLREF_API_KEY", raising=False)
    monkeypatch.delenv("MLREF_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLREF_SEED", "0")
    np.random.seed(0)
    return home


@pytest.fixture
def shared_data() -> Path:
    """The team's copy of the real datasets (../shared/data); skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set MLREF_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    from common.serving import free_port as pick

    return pick()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory):
    """One real ``redis-server`` for the session (see ``tests/redis_server.py``): skipped with one line where it
    is not installed, a failure under ``CI=true``."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_session) -> str:
    """``redis://127.0.0.1:<port>/0`` of the session's Redis, emptied for this test."""
    import redis

    with redis.Redis.from_url(redis_session.url) as client:
        client.flushall()
    return redis_session.url


@pytest.fixture
def redis_factory(tmp_path: Path):
    """``redis_factory(persist=False)``: a Redis of this test's own (to stop, kill, restart); stopped at the end."""
    from tests.redis_server import RedisServer

    servers: list[RedisServer] = []

    def make(*, persist: bool = False) -> RedisServer:
        servers.append(RedisServer(tmp_path / f"redis-{len(servers)}", persist=persist).start())
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


SLOW_TESTS = Path(__file__).with_name("slow_tests.txt")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests listed in ``tests/slow_tests.txt`` (measured over ~1 s; a file name marks all its tests, e.g.
    a module whose session fixture trains Rasa) ``slow``: ``make test-fast`` leaves them out, ``make test`` runs
    them."""
    listed = {
        line.split("#", 1)[0].strip() for line in SLOW_TESTS.read_text().splitlines() if line.split("#", 1)[0].strip()
    }
    for item in items:
        if item.nodeid in listed or item.nodeid.split("::", 1)[0] in listed:
            item.add_marker(pytest.mark.slow)

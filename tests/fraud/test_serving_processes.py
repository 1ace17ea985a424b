"""``fraud serve`` as real processes: ``--workers 2`` on one Redis scores like one process, ``--workers`` without
a shared store is a user error, and a ``kill -9`` loses no acknowledged transaction with either store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from apps.fraud.config import MODEL_NAME
from apps.fraud.data import TIMESTAMP
from apps.fraud.features import Transaction
from apps.fraud.service import FraudScorer
from apps.fraud.store import LocalFeatureStore
from apps.fraud.train import HISTORY_FILE
from common import registry
from tests.fraud.conftest import tx_body

REPO = Path(__file__).resolve().parents[2]


def _register_champion(model, history: pd.DataFrame, root: Path) -> None:
    d = model.save(root / "model")
    history.reset_index(drop=True).to_parquet(d / HISTORY_FILE)
    registry.register(MODEL_NAME, d, alias=registry.CHAMPION)


def _serve(port: int, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120.0) -> subprocess.Popen:
    """``python -m apps.fraud serve --port PORT ARGS``, ready (its own process group, so kill -9 takes its
    workers too)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.fraud", "serve", "--port", str(port), "--refresh-interval", "0", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    _kill(proc)
    raise AssertionError("serve did not become ready")


def _kill(proc: subprocess.Popen) -> None:
    """kill -9 the whole process group (the server and any workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stderr:
        proc.stderr.close()


def _score(port: int, rows: pd.DataFrame) -> list[float]:
    """Scores of ``rows``, one connection each (with several workers, the kernel hands them to either)."""
    out = []
    for r in rows.itertuples(index=False):
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/transactions/score", json=tx_body(r), timeout=30)
        assert resp.status_code == 200, resp.text
        out.append(resp.json()["score"])
    return out


@pytest.fixture
def world(tiny_raw: pd.DataFrame, tiny_model, tmp_path: Path):
    cut = tiny_raw[TIMESTAMP].min() + pd.Timedelta(days=45)
    history, future = tiny_raw[tiny_raw[TIMESTAMP] < cut], tiny_raw[tiny_raw[TIMESTAMP] >= cut]
    _register_champion(tiny_model, history, tmp_path)
    never = FraudScorer(LocalFeatureStore.from_history(history))  # a service that never stopped

    def reference(rows: pd.DataFrame) -> list[float]:
        return [
            never.score(Transaction(r.tx_id, r.timestamp, r.customer_id, r.terminal_id, r.amount), tiny_model)[0]
            for r in rows.itertuples(index=False)
        ]

    return future, reference


def test_workers_need_a_shared_store(monkeypatch, capsys) -> None:
    from apps.fraud.__main__ import app
    from common import cli

    monkeypatch.delenv("MLREF_REDIS_URL", raising=False)
    monkeypatch.setattr("sys.argv", ["fraud", "serve", "--workers", "2"])
    with pytest.raises(SystemExit) as exit_:
        cli.run(app)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--workers 2 needs a shared online state: set MLREF_REDIS_URL" in err


@pytest.mark.e2e
def test_two_workers_on_one_redis_score_like_one_process(world, redis_url: str, free_port: int) -> None:
    future, reference = world
    proc = _serve(free_port, "--workers", "2", env={"MLREF_REDIS_URL": redis_url})
    try:
        import psutil

        workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
        rows = future.head(300)
        got = _score(free_port, rows)
    finally:
        _kill(proc)
    np.testing.assert_allclose(got, reference(rows), rtol=1e-6, atol=1e-7)


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["local", "redis"])
def test_kill_9_then_restart_scores_like_a_service_that_never_stopped(
    kind: str, world, free_port: int, request
) -> None:
    future, reference = world
    env = {"MLREF_REDIS_URL": request.getfixturevalue("redis_url")} if kind == "redis" else {"MLREF_REDIS_URL": ""}
    first, after = future.head(300), future.iloc[300:400]
    proc = _serve(free_port, env=env)
    try:
        got = _score(free_port, first)  # acknowledged ...
    finally:
        _kill(proc)  # ... then kill -9
    proc = _serve(free_port, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{free_port}") as c:  # what was acknowledged is held
            assert c.post("/v1/transactions/score", json=tx_body(first.iloc[-1])).status_code == 409
        got += _score(free_port, after)
    finally:
        _kill(proc)
    want = reference(pd.concat([first, after]))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    if kind == "local":
        assert got == want  # replayed in the same order: bit-identical

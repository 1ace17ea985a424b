"""Chatbot fixtures: the Rasa environment, one model trained per session (few epochs), fake HTTP services."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from apps.chatbot.config import chatbot_venv

HAVE_RASA = (chatbot_venv() / "bin" / "rasa").exists()


def require_rasa() -> None:
    """Skip outside CI when .venv-chatbot is missing; in CI (CI=true) a missing environment is a failure."""
    if HAVE_RASA:
        return
    msg = f"{chatbot_venv()} is missing: run `make setup-chatbot`"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Path:
    home = tmp_path_factory.mktemp("chatbot-home")
    shutil.copyfile(mlflow_db_template, home / "mlflow.db")
    return home


@pytest.fixture(scope="session")
def trained(session_home: Path):
    """The project trained once per session with the quick config (validated, test stories + held-out NLU run)."""
    require_rasa()
    from apps.chatbot import lifecycle
    from apps.chatbot.config import Config
    from common.config import override

    with override(home=session_home, tracking_uri=None):
        return lifecycle.build(Config(quick=True))


class FakeService:
    """A tiny HTTP server standing in for another app: ``handler(method, path, body) -> (status, json, delay_s)``."""

    def __init__(self, handler: Callable[[str, str, Any], tuple[int, Any, float]]) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.headers: list[dict[str, str]] = []  # the request headers of each call, in the order of ``calls``
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.headers.append(dict(self.headers.items()))
                outer.calls.append((self.command, self.path, body))
                status, payload, delay = handler(self.command, self.path, body)
                time.sleep(delay)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_service() -> Iterator[Callable[..., FakeService]]:
    made: list[FakeService] = []

    def make(handler: Callable[[str, str, Any], tuple[int, Any, float]]) -> FakeService:
        made.append(FakeService(handler))
        return made[-1]

    yield make
    for s in made:
        s.close()

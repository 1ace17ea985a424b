"""A real ``redis-server`` for tests: started on a free loopback port, stopped (or killed) by the test.

No mock Redis anywhere: tests that need Redis use the ``redis_url`` / ``redis_factory`` fixtures of
``tests/conftest.py``, which skip with one line where Debian's ``redis-server`` is not installed and fail under
``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def binary() -> str | None:
    return shutil.which("redis-server")


def require_binary() -> str:
    """The ``redis-server`` path; skips the test (fails it under ``CI=true``) when it is not installed."""
    exe = binary()
    if exe is None:
        msg = "redis-server not found (apt-get install redis-server): tests on the Redis store are skipped"
        if os.environ.get("CI") == "true":
            pytest.fail(msg.replace("are skipped", "must run in CI"), pytrace=False)
        pytest.skip(msg)
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server --port <free> --bind 127.0.0.1 --save ""`` (``persist``: an append-only file in ``dir``,
    fsync'd on every write, so a restart finds the data again)."""

    def __init__(self, workdir: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.exe = require_binary()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.persist = persist
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop it (``kill``: SIGKILL, no goodbye)."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> RedisServer:
        self.stop(kill=True)
        return self.start()

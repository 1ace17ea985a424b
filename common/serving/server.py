"""Running a service: :func:`serve` (uvicorn; warns loudly beyond loopback without an API key) and
:class:`BackgroundServer` (a thread on a free loopback port, for demos and tests)."""

from __future__ import annotations

import gc
import ipaddress
import logging
import socket
import threading
import time
from typing import Any

from fastapi import FastAPI

from common.config import get_settings

log = logging.getLogger(__name__)


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


# ----------------------------------------------------------------------------- running a server
def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for anything reachable from other machines."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, api_key_required: bool) -> bool:
    """Log a WARNING when a service binds a non-loopback ``host`` without an API key; True when it warned."""
    if api_key_required or is_loopback(host):
        return False
    log.warning(
        "SERVING ON %s WITHOUT AN API KEY: anyone who can reach this address can call every endpoint, "
        "including POST /admin/reload. Set MLREF_API_KEY, or bind 127.0.0.1.",
        host,
    )
    return True


_gc_frozen = False


def freeze_gc_once() -> bool:
    """Move the objects alive now (libraries, a warm state) out of the GC's working set, once per process.

    Shorter collection pauses (tail latency) for a long-running server; a no-op after the first call.
    """
    global _gc_frozen
    if _gc_frozen:
        return False
    gc.collect()
    gc.freeze()
    _gc_frozen = True
    return True


def serve(app: FastAPI, host: str | None = None, port: int | None = None, **uvicorn_kwargs: Any) -> None:
    """Run ``app`` with uvicorn, on ``MLREF_HOST``:``MLREF_PORT`` (127.0.0.1:8000) unless given."""
    import uvicorn

    settings = get_settings()
    host = host or settings.host
    warn_if_exposed(host, getattr(app.state, "api_key_required", False))
    freeze_gc_once()
    uvicorn.run(app, host=host, port=port or settings.port, **uvicorn_kwargs)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn in a thread on 127.0.0.1:``port`` (a free one by default): real sockets, real HTTP.

    ``with BackgroundServer(app) as srv: httpx.get(srv.url + "/healthz")``. Runs the app's lifespan (model load,
    registry polling) and stops it on exit.
    """

    def __init__(self, app: Any, port: int | None = None, *, start_timeout_s: float = 30.0) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.server.should_exit = True
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

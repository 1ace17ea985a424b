"""Starting what the console needs: each app's service (``python -m apps.<app> serve``) on a free loopback port,
serving the champion of the user's registry, or else the demo's model (``$MLREF_HOME/demo/<app>``) with a banner
saying so; stopping them all again.

Each service is its own process group (the chatbot's ``serve`` runs Rasa and the action server too), logged to
``$MLREF_HOME/console/logs/<app>.log``; the environment is passed on, so the services check the same
``MLREF_API_KEY`` the console sends. The chatbot's actions are pointed at the recommender and fraud services
started here, and its gateway gets a customer-token secret (``MLREF_CHATBOT_SECRET``, made for the run when unset)
that the console's chat tab signs tokens with.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from console.services import APPS, Service

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SECRET_ENV = "MLREF_CHATBOT_SECRET"
READY_TIMEOUT_S = 180.0  # every service but the chatbot (Rasa loads TensorFlow: minutes, it is not waited for)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_name(app: str) -> str:
    import importlib

    cfg = importlib.import_module(f"apps.{app}.config")
    return getattr(cfg, "REGISTRY_NAME", None) or cfg.MODEL_NAME


def has_champion(app: str, home: Path, *, own_store: bool) -> bool:
    """Whether ``home``'s registry has a champion of ``app`` (``own_store``: its sqlite store, as demos use,
    whatever MLREF_TRACKING_URI says). A home without a store has none (and is not given one)."""
    from common import registry
    from common.config import get_settings, override

    uri = None if own_store else get_settings().tracking_uri
    if uri is None and not (home / "mlflow.db").exists():
        return False
    try:
        with override(home=home, tracking_uri=uri):
            return registry.version_of(registry_name(app), registry.CHAMPION) is not None
    except Exception as exc:  # noqa: BLE001 - a damaged or unreachable store: say so, serve what else there is
        log.warning("%s: cannot read the registry in %s: %s", app, home, exc)
        return False


def choose(app: str, home: Path) -> Service:
    """Where ``app``'s service serves from: the user's champion, else the demo's, else nowhere (with a banner)."""
    if app == "chatbot":
        from apps.chatbot.config import chatbot_venv

        if not (chatbot_venv() / "bin" / "rasa").exists():
            return Service(app, None, banner=f"The chatbot needs {chatbot_venv()}: run `make setup-chatbot`.")
    if has_champion(app, home, own_store=False):
        return Service(app, None, home=home)
    demo = home / "demo" / app
    if has_champion(app, demo, own_store=True):
        return Service(
            app,
            None,
            home=demo,
            demo=True,
            banner=f"No {app} champion in your registry ({home}): serving the demo's model from {demo}. "
            f"Train your own with `python -m apps.{app} train`.",
        )
    return Service(app, None, banner=f"No {app} model yet: run `make demo` (or `python -m apps.{app} train`).")


@dataclass
class Stack:
    """The services started for the console; ``stop()`` (or leaving the ``with`` block) ends them all."""

    services: dict[str, Service]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 20.0) -> None:
        for app, proc in self.processes.items():
            if proc.poll() is None:
                log.info("stopping the %s service (pid %d)", app, proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def wait_ready(self, apps: list[str], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until each of ``apps`` answers ``/readyz`` (or its process ended: its banner says why)."""
        deadline = time.monotonic() + timeout_s
        waiting = [a for a in apps if a in self.processes]
        while waiting and time.monotonic() < deadline:
            for app in list(waiting):
                svc, proc = self.services[app], self.processes[app]
                if proc.poll() is not None:
                    svc.banner = f"The {app} service stopped (exit {proc.returncode}): {self.last_log_line(app)}"
                    waiting.remove(app)
                    continue
                try:
                    if svc.client(timeout_s=2.0).ready().get("ready"):
                        waiting.remove(app)
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
            time.sleep(0.3)
        for app in waiting:
            log.warning("the %s service is not ready after %.0f s (log: %s)", app, timeout_s, self.logs.get(app))

    def last_log_line(self, app: str) -> str:
        path = self.logs.get(app)
        lines = path.read_text(errors="replace").strip().splitlines() if path and path.exists() else []
        return lines[-1][:300] if lines else "no output"


def start(services: dict[str, Service], log_dir: Path) -> Stack:
    """Start ``python -m apps.<app> serve`` for every service with a home; their URLs are filled in."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(services)
    ports = {app: free_port() for app, svc in services.items() if svc.home is not None}
    if "chatbot" in ports:
        svc = services["chatbot"]
        svc.env.setdefault(SECRET_ENV, os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32))
    for app in APPS:
        svc = services.get(app)
        if svc is None or svc.home is None:
            continue
        port = ports[app]
        svc.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", f"apps.{app}", "serve", "--host", "127.0.0.1", "--port", str(port)]
        if app == "chatbot":
            cfg = {
                "recommender_url": services["recommender"].url if services.get("recommender") else None,
                "fraud_url": services["fraud"].url if services.get("fraud") else None,
            }
            cfg_path = log_dir / "chatbot-config.json"
            cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if v}))
            cmd += ["--config", str(cfg_path), "--rasa-port", str(free_port()), "--actions-port", str(free_port())]
        stack.logs[app] = log_dir / f"{app}.log"
        with open(stack.logs[app], "ab") as out:
            stack.processes[app] = subprocess.Popen(
                cmd, cwd=REPO, env=svc.cli_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        log.info("%s: %s (log %s)", app, svc.url, stack.logs[app])
    return stack


def plan(home: Path, apps: tuple[str, ...] = APPS) -> dict[str, Service]:
    """For each app, where its service will serve from (see :func:`choose`)."""
    return {app: choose(app, home) for app in apps}

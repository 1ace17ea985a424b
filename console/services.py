"""What the console knows about each app's service: where it answers, which MLREF_HOME it serves from, and the
banner to show when that is not the user's own champion."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from console.client import ServiceClient

APPS = ("recommender", "fraud", "vision", "maintenance", "chatbot")
TITLES = {
    "recommender": "Recommender",
    "fraud": "Fraud",
    "vision": "Vision",
    "maintenance": "Maintenance",
    "chatbot": "Chatbot",
}


@dataclass
class Service:
    """One app's service as the console uses it.

    ``home``: the MLREF_HOME it serves from (the registry the Models tab lists, the reports the tabs show);
    ``demo``: True when that is the demo's home, not the user's; ``banner``: a sentence shown on the app's tab
    (demo fallback, or why the service is not running); ``env``: extra environment of the service and of the app's
    CLI commands (``models promote``, ``chatbot token``); ``api_key``: what the console sends as ``X-API-Key``.
    """

    app: str
    url: str | None
    home: Path | None = None
    demo: bool = False
    banner: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    api_key: str | None = field(default_factory=lambda: os.environ.get("MLREF_API_KEY") or None, repr=False)

    def client(self, timeout_s: float = 30.0) -> ServiceClient:
        """A client of this service, sending :attr:`api_key` (default: ``MLREF_API_KEY``) as ``X-API-Key``."""
        return ServiceClient(self.app, self.url or "http://127.0.0.1:9", self.api_key, timeout_s=timeout_s)

    def cli_env(self) -> dict[str, str]:
        """The environment of ``python -m apps.<app> ...`` commands about this service's registry."""
        env = {**os.environ, **self.env}
        if self.api_key:
            env["MLREF_API_KEY"] = self.api_key
        if self.home is not None:
            env["MLREF_HOME"] = str(self.home)
        if self.demo:
            env.pop("MLREF_TRACKING_URI", None)  # a demo home always has its own sqlite store
        return env

    def latest_report_file(self, name: str) -> Path | None:
        """The newest ``name`` (e.g. ``confusion_matrix.png``) under this home's ``reports/<app>/``, or None."""
        if self.home is None:
            return None
        root = self.home / "reports" / self.app
        if not root.is_dir():
            return None
        found = [p for p in root.rglob(name) if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None

"""HTTP client of one app's service: JSON in and out, the API key header, and errors a person can read.

Every failure becomes a :class:`ServiceError` whose message names the service and says what happened in one
sentence: the service's own message for a 4xx/5xx (``message`` or ``detail`` of its JSON body), or that it is not
reachable / did not answer in time. The console shows that sentence as a notice, never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)
API_KEY_HEADER = "X-API-Key"  # common.serving's header (the console does not import common.serving's middleware)


class ServiceError(Exception):
    """A call to a service failed; ``str(exc)`` is one readable sentence, ``status`` the HTTP status (None: no
    answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def error_message(body: Any) -> str:
    """The readable part of a service's error body: ``message`` (422s name each field), else ``detail`` (a
    sentence, or a list of ``{loc, msg}`` joined as ``loc: msg``)."""
    if isinstance(body, dict):
        if isinstance(body.get("message"), str) and body["message"].strip():
            return body["message"].strip()
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            parts = []
            for d in detail:
                if isinstance(d, dict):
                    loc = ".".join(str(x) for x in d.get("loc") or [])
                    parts.append(f"{loc}: {d.get('msg')}" if loc else str(d.get("msg")))
            if parts:
                return "; ".join(parts)
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return "no details"


@dataclass
class ServiceClient:
    """The service of app ``app`` at ``url``; ``api_key`` is sent as ``X-API-Key`` when set."""

    app: str
    url: str
    api_key: str | None = None
    timeout_s: float = 30.0
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(trust_env=False, timeout=self.timeout_s)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: Any = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One call; the decoded JSON answer (text for a non-JSON body), or :class:`ServiceError`."""
        hdrs = dict(headers or {})
        if self.api_key:
            hdrs[API_KEY_HEADER] = self.api_key
        try:
            r = self._http.request(
                method,
                self.url + path,
                json=json,
                params=params,
                files=files,
                headers=hdrs,
                timeout=timeout_s or self.timeout_s,
            )
        except httpx.TimeoutException:
            raise ServiceError(
                f"the {self.app} service at {self.url} did not answer within {timeout_s or self.timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"the {self.app} service at {self.url} is not reachable ({type(exc).__name__}): is it running? "
                f"`make ui` starts it, or `python -m apps.{self.app} serve`"
            ) from None
        try:
            body: Any = r.json()
        except ValueError:
            body = r.text
        if r.status_code >= 400:
            what = error_message(body)
            if r.status_code == 401:
                what += " (set MLREF_API_KEY to the services' key before starting the console)"
            raise ServiceError(f"the {self.app} service answered HTTP {r.status_code}: {what}", r.status_code)
        return body

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def ready(self) -> dict[str, Any]:
        """``/readyz``: ``{"ready": bool, "version": ..., "error": ...}`` (a 503 is an answer here, not an error)."""
        try:
            return self.get("/readyz")
        except ServiceError as exc:
            if exc.status == 503:
                return {"ready": False, "error": str(exc)}
            raise

    def model(self) -> dict[str, Any]:
        """``/v1/model``: the served version, its metrics and aliases."""
        return self.get("/v1/model")

    def reload(self) -> dict[str, Any]:
        """``POST /admin/reload``: check the registry now; the service hot-swaps to a new champion."""
        return self.post("/admin/reload")

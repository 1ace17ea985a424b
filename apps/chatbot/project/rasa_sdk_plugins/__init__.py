"""A rasa_sdk 3.6 plugin (the action server imports ``rasa_sdk_plugins`` from the path and calls ``init_hooks``):
only Rasa may call the custom actions.

- Every route but ``GET /health`` needs the header ``X-Action-Token`` equal to ``MLREF_ACTION_TOKEN`` (a random
  token per ``serve`` run that Rasa sends from its endpoints.yml); without that variable every call is refused,
  so an action server started by hand is closed, not open. The server binds ``SANIC_HOST`` (``serve`` sets
  127.0.0.1; rasa_sdk's own default is 0.0.0.0).
- Sanic's own errors keep their status (unknown path 404, wrong method 405, bad JSON 400) instead of the SDK's
  catch-all 500, and the answer never echoes the request body.
"""

from __future__ import annotations

import hmac
import logging
import os

import pluggy
from sanic import Sanic, response
from sanic.exceptions import SanicException

log = logging.getLogger(__name__)
hookimpl = pluggy.HookimplMarker("rasa_sdk")
TOKEN_ENV = "MLREF_ACTION_TOKEN"
TOKEN_HEADER = "X-Action-Token"
OPEN_PATHS = frozenset({"/health"})


class ActionServerGuard:
    @hookimpl
    def attach_sanic_app_extensions(self, app: Sanic) -> None:
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            log.error("%s is not set: the action server refuses every call (start it with `chatbot serve`)", TOKEN_ENV)

        @app.middleware("request")
        async def require_token(request):
            if request.path in OPEN_PATHS:
                return None
            given = request.headers.get(TOKEN_HEADER, "")
            if not token or not hmac.compare_digest(given.encode(), token.encode()):
                return response.json({"error": f"missing or wrong {TOKEN_HEADER}"}, status=401)
            return None

        @app.exception(SanicException)
        async def sanic_error(request, exception: SanicException):  # noqa: ARG001
            status = int(getattr(exception, "status_code", 500) or 500)
            return response.json({"error": str(exception)}, status=status)


def init_hooks(manager: pluggy.PluginManager) -> None:
    """Called by rasa_sdk's plugin manager."""
    manager.register(ActionServerGuard())

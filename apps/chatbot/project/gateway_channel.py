"""Rasa's input channel for the gateway: the REST channel (``POST /webhooks/gateway/webhook``), refusing any call
without the per-run token of ``serve`` in ``X-Rasa-Token``.

``serve`` writes a credentials.yml naming this class (``gateway_channel.GatewayInput: {token: ${MLREF_RASA_TOKEN}}``)
and gives only the gateway the token, so the conversation id (which names the customer, see
``apps/chatbot/identity.py``) cannot be forged by another local process.
"""

from __future__ import annotations

import hmac
from typing import Any

from rasa.core.channels.rest import RestInput
from sanic.exceptions import SanicException
from sanic.request import Request

TOKEN_HEADER = "X-Rasa-Token"


class Unauthorised(SanicException):
    status_code = 401
    quiet = True


class GatewayInput(RestInput):
    """The REST channel behind a shared secret."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("GatewayInput needs a token (credentials.yml: token: ${MLREF_RASA_TOKEN})")
        self.token = token.encode()

    @classmethod
    def name(cls) -> str:
        return "gateway"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> GatewayInput:
        return cls(str((credentials or {}).get("token") or ""))

    async def _extract_sender(self, req: Request) -> str | None:
        # the first thing the webhook does with a request: refuse it here, before any of it is used
        given = req.headers.get(TOKEN_HEADER, "").encode()
        if not hmac.compare_digest(given, self.token):
            raise Unauthorised(f"missing or wrong {TOKEN_HEADER}")
        return await super()._extract_sender(req)

"""Who a conversation acts for: signed customer tokens, checked by the gateway, and the Rasa conversation ids built
from them.

The identity model (apps/chatbot/README.md, "Who the assistant acts for"):

- The shop's front end, which has logged its customer in, asks for a **customer token** signed with the server
  secret ``MLREF_CHATBOT_SECRET`` (HMAC-SHA256 over ``{"sub": customer, "exp": epoch seconds}``;
  ``python -m apps.chatbot token CUSTOMER`` mints one) and sends it in the header ``X-Customer-Token`` with each
  message. The gateway checks signature and expiry; a missing token means an anonymous conversation (FAQs and
  chitchat, no account data), a bad or expired one is refused (401).
- The ``sender`` of ``POST /v1/messages`` only names the conversation (a browser tab, a chat window). The gateway
  builds Rasa's conversation id as ``<customer>:<sender>`` (``:<sender>`` when anonymous), so two customers can
  never share a conversation, and the custom actions read the customer from the part before the first ``:``
  (``project/actions/services.py``, same format; an id without ``:`` is anonymous). Rasa's REST channel and the
  action server only accept calls carrying the per-run tokens of ``serve``, so nothing else can forge such an id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time

SECRET_ENV = "MLREF_CHATBOT_SECRET"
TOKEN_HEADER = "X-Customer-Token"
ID_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"  # customer ids and conversation (sender) ids: no ':' in either
ID_RE = re.compile(ID_PATTERN.replace("$", r"\Z"))
SEPARATOR = ":"
DEFAULT_TTL_S = 3600.0
MIN_SECRET_BYTES = 16


class TokenError(ValueError):
    """A customer token that is malformed, wrongly signed or expired (the message says which)."""


def secret_from_env() -> bytes | None:
    """``MLREF_CHATBOT_SECRET`` as bytes, or None when unset; a secret shorter than 16 bytes is refused."""
    value = os.environ.get(SECRET_ENV, "")
    if not value:
        return None
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{SECRET_ENV} is too short: use at least {MIN_SECRET_BYTES} random characters")
    return value.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def mint_token(customer: str, secret: bytes, *, ttl_s: float = DEFAULT_TTL_S, now: float | None = None) -> str:
    """A token saying "this is ``customer``" until ``now + ttl_s``, signed with ``secret``."""
    if not ID_RE.match(customer):
        raise ValueError(f"customer id {customer!r}: expected 1-64 of A-Z a-z 0-9 _ . @ -")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    exp = int((time.time() if now is None else now) + ttl_s)
    payload = _b64(json.dumps({"sub": customer, "exp": exp}, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(token: str, secret: bytes, *, now: float | None = None) -> str:
    """The customer id a valid token names; :class:`TokenError` when it is malformed, forged or expired."""
    if len(token) > 512 or token.count(".") != 1:
        raise TokenError("malformed customer token")
    payload, signature = token.split(".")
    if not hmac.compare_digest(_sign(secret, payload).encode(), signature.encode()):
        raise TokenError("customer token has a wrong signature")
    try:
        claims = json.loads(_unb64(payload))
        customer, exp = claims["sub"], claims["exp"]
    except (ValueError, TypeError, KeyError) as exc:
        raise TokenError("malformed customer token") from exc
    if not isinstance(customer, str) or not ID_RE.match(customer) or not isinstance(exp, int):
        raise TokenError("malformed customer token")
    if exp < (time.time() if now is None else now):
        raise TokenError("customer token has expired")
    return customer


def conversation_id(customer: str | None, sender: str) -> str:
    """Rasa's sender id of the conversation ``sender`` of ``customer`` (None: anonymous)."""
    return f"{customer or ''}{SEPARATOR}{sender}"


def customer_of(conversation: str) -> str | None:
    """The customer a Rasa conversation id acts for (the inverse of :func:`conversation_id`); None if anonymous."""
    if SEPARATOR not in conversation:
        return None
    return conversation.split(SEPARATOR, 1)[0] or None

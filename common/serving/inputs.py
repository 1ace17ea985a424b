"""What clients see of errors and how JSON numbers are read: :func:`public_error` (no absolute paths),
:data:`JsonInt`, and the one-line message of a 422."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Strict

from common.config import get_settings

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- error texts for clients
_ABS_PATH = re.compile(r"(?<![\w$.~-])/[^\s'\"/]+(?:/[^\s'\"]*)+")


def public_error(message: str) -> str:
    """``message`` without absolute paths, safe to show to unauthenticated clients.

    ``MLREF_HOME`` becomes ``$MLREF_HOME`` and any other absolute path ``<path>``; the full text goes to the log.
    """
    home = get_settings().home.expanduser()
    for h in sorted({str(home.resolve()), str(home.absolute())}, key=len, reverse=True):
        if h.startswith("/") and len(h) > 1:
            message = message.replace(h, "$MLREF_HOME")
    return _ABS_PATH.sub("<path>", message)


def json_int(value: Any) -> Any:
    """Before-validator of :data:`JsonInt`: ``55.0`` becomes ``55``; ``true``/``false`` are refused."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not true/false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_int), Strict()]
"""An integer in a JSON body, as JSON Schema defines one: ``55`` or ``55.0``; never ``true``, ``"55"`` or ``55.5``
(422). Constraints compose: ``k: JsonInt = Field(10, ge=1, le=100)``. For query strings use plain ``int``."""


def _validation_message(errors: Sequence[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)

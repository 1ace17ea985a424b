"""Message text that every later step can store, encode and print.

``normalise_message`` is what the gateway does to a user's message before Rasa sees it; ``printable`` is what
``monitor`` does to text already in a tracker store (written before the gateway existed, or by other clients),
so one odd message can never break a report.
"""

from __future__ import annotations

import re
import unicodedata

MAX_MESSAGE_CHARS = 2000
REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")  # in a str, a valid pair is one code point: what is left is unpaired
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0/C1 controls (tabs and newlines too), line separators
PAYLOAD = re.compile(r"^/[A-Za-z_][A-Za-z0-9_]{0,63}\Z")  # a button payload: /intent, no entities or JSON


def printable(text: object) -> str:
    """``text`` as a str that encodes to UTF-8: unpaired surrogates become U+FFFD, control characters a space."""
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(" ", _SURROGATE.sub(REPLACEMENT, s))


def normalise_message(text: str) -> str:
    """A user's message as the assistant sees it: printable (see :func:`printable`), Unicode NFC, whitespace runs
    collapsed to one space, no leading or trailing space. May return ``''`` (the caller refuses it)."""
    return " ".join(unicodedata.normalize("NFC", printable(text)).split())

"""The shop's data and the other apps' HTTP APIs, as the custom actions see them (no Rasa imports here).

Settings come from the environment of the action server:

- ``MLREF_RECOMMENDER_URL`` (default ``http://127.0.0.1:8001``): ``python -m apps.recommender serve --port 8001``
- ``MLREF_FRAUD_URL`` (default ``http://127.0.0.1:8002``): ``python -m apps.fraud serve --port 8002``
- ``MLREF_CHATBOT_HTTP_TIMEOUT_S`` (default 2.0): total seconds for one call to another app
- ``MLREF_API_KEY``: sent as ``X-API-Key`` when set (the apps require it when they have one)
- ``MLREF_SHOP_STORE``: the order/customer store (JSON; default ``shop.json`` beside this file)

Every call has a timeout, and every failure (refused connection, timeout, non-2xx, a body that is not what the API
documents) becomes :class:`ServiceUnavailable` with a short reason, which the actions turn into a polite message.

Who the conversation acts for: Rasa's conversation id is ``<customer>:<conversation>`` (``:<conversation>`` when
anonymous), built by the gateway from a signed customer token (``apps/chatbot/identity.py``, same format);
:func:`customer_id` reads it back. An order is only found for the customer it belongs to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

ORDER_ID = re.compile(r"^SH\d{5}$")
STORE = Path(__file__).with_name("shop.json")


class ServiceUnavailable(Exception):
    """Another app could not answer (down, slow, or an unexpected answer)."""


def setting(name: str, default: str) -> str:
    return os.environ.get(name, default).rstrip("/")


def timeout_s() -> float:
    try:
        return max(0.05, float(os.environ.get("MLREF_CHATBOT_HTTP_TIMEOUT_S", "2.0")))
    except ValueError:
        return 2.0


def load_store() -> dict[str, Any]:
    """The shop's orders and customers (read on every call: small, and editable while the server runs)."""
    path = Path(os.environ.get("MLREF_SHOP_STORE", STORE))
    return json.loads(path.read_text(encoding="utf-8"))


def normalise_order_id(raw: str | None) -> str:
    """``'sh-12345 '`` -> ``'SH12345'`` (spaces and dashes removed, upper case)."""
    return re.sub(r"[\s\-]", "", str(raw or "")).upper()


def customer_id(sender_id: str | None) -> str | None:
    """The customer a conversation acts for: the part of Rasa's conversation id before the first ``:``; None when
    anonymous (an empty part, or an id without ``:``, which the gateway never sends)."""
    if not sender_id or ":" not in sender_id:
        return None
    return sender_id.split(":", 1)[0] or None


def find_order(order_id: str, sender_id: str | None) -> dict[str, Any] | None:
    """The order ``order_id`` if it belongs to the customer of conversation ``sender_id``, else None (whether it
    exists for someone else is not revealed)."""
    who = customer_id(sender_id)
    order = load_store()["orders"].get(order_id)
    if who is None or not isinstance(order, dict) or order.get("customer") != who:
        return None
    return order


def customer(sender_id: str | None) -> dict[str, Any]:
    """The customer record of a conversation; ``{}`` if anonymous or unknown."""
    who = customer_id(sender_id)
    return load_store()["customers"].get(who, {}) if who else {}


async def _call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    if os.environ.get("MLREF_API_KEY"):
        headers["X-API-Key"] = os.environ["MLREF_API_KEY"]
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s())) as session,
            session.request(method, url, json=body, headers=headers) as resp,
        ):
            if resp.status != 200:
                text = (await resp.text())[:200]
                raise ServiceUnavailable(f"{method} {url} -> HTTP {resp.status}: {text}")
            data = await resp.json(content_type=None)
    except (asyncio.TimeoutError, TimeoutError) as exc:  # two different types on Python 3.10
        raise ServiceUnavailable(f"{method} {url}: no answer within {timeout_s():g} s") from exc
    except aiohttp.ClientError as exc:
        raise ServiceUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
    except ValueError as exc:
        raise ServiceUnavailable(f"{method} {url}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise ServiceUnavailable(f"{method} {url}: expected a JSON object")
    return data


@dataclass(frozen=True)
class Recommendations:
    """The recommender's answer as the actions use it: item titles (or ids), and whether the list is personal (the
    recommender knows the user) or its popular items (an unknown or anonymous user: ``known_user: false``)."""

    titles: list[str]
    personalised: bool


async def recommendations(user: str, k: int = 3) -> Recommendations:
    """The recommender's top ``k`` items for ``user``."""
    base = setting("MLREF_RECOMMENDER_URL", "http://127.0.0.1:8001")
    data = await _call("GET", f"{base}/v1/users/{quote(user, safe='')}/recommendations?k={k}")
    items = data.get("items")
    if not isinstance(items, list):
        raise ServiceUnavailable("recommender: no 'items' list in the answer")
    titles = []
    for i in items[:k]:
        name = i.get("title") or i.get("item") if isinstance(i, dict) else None
        if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
            raise ServiceUnavailable("recommender: an item without a title or id")
        titles.append(str(name).strip())
    # personal only when the recommender says so; anything else is shown as popular items, never as "for you"
    personalised = data.get("known_user") is True and data.get("strategy") != "popular"
    return Recommendations(titles, personalised)


def dated_transactions(transactions: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """The store's card payments with ISO timestamps (UTC, seconds) relative to ``now`` (default: the clock).

    The store dates a payment by ``days_ago`` (days before now, fractions allowed), so the demo's charges stay
    inside the fraud service's window (not in the future, not more than ``max_late_days`` before its newest
    transaction) whenever it runs; an absolute ``timestamp`` is kept as it is."""
    now = time.time() if now is None else now
    out = []
    for tx in transactions:
        tx = dict(tx)
        if "days_ago" in tx:
            days = tx.pop("days_ago")
            if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 <= days <= 3650:
                raise ValueError(f"shop store: transaction {tx.get('tx_id')!r}: days_ago must be a number in [0, 3650]")
            moment = datetime.fromtimestamp(now - days * 86400.0, timezone.utc).replace(tzinfo=None)
            tx["timestamp"] = moment.isoformat(timespec="seconds")
        out.append(tx)
    return out


async def score_transaction(tx: dict[str, Any]) -> dict[str, Any]:
    """The fraud app's verdict on one transaction, with reasons (``?explain=true``)."""
    base = setting("MLREF_FRAUD_URL", "http://127.0.0.1:8002")
    data = await _call("POST", f"{base}/v1/transactions/score?explain=true", tx)
    score = data.get("score")
    if (
        data.get("decision") not in ("alert", "pass")
        or isinstance(score, bool)
        or not isinstance(score, (int, float))
        or not 0.0 <= score <= 1.0  # also refuses NaN
    ):
        raise ServiceUnavailable("fraud: the answer has no decision or no score in [0, 1]")
    reasons = data.get("reasons", [])
    if not isinstance(reasons, list) or not all(_is_reason(r) for r in reasons):
        raise ServiceUnavailable("fraud: 'reasons' is not a list of {feature, contribution}")
    return data


def _is_reason(reason: Any) -> bool:
    if not isinstance(reason, dict):
        return False
    feature, contribution = reason.get("feature"), reason.get("contribution")
    return (
        isinstance(feature, str)
        and bool(feature.strip())
        and (contribution is None or (isinstance(contribution, (int, float)) and not isinstance(contribution, bool)))
    )


_REASONS = [
    (re.compile(r"^amount$|^tx_amount$", re.I), "the amount of the charge"),
    (re.compile(r"^amount_to_customer_avg_(\d+)d$"), "how the amount compares with your usual spending over {} days"),
    (re.compile(r"^customer_nb_tx_(\d+)d$"), "how many card payments you made in the last {} days"),
    (re.compile(r"^customer_avg_amount_(\d+)d$"), "your average payment over the last {} days"),
    (re.compile(r"^terminal_nb_tx_(\d+)d$"), "how busy the shop's card terminal was over {} days"),
    (re.compile(r"^terminal_risk_(\d+)d$"), "recent fraud at that card terminal ({} days)"),
    (re.compile(r"^is_night$"), "the time of day (night)"),
    (re.compile(r"^is_weekend$"), "the day of the week (weekend)"),
]


def reason_direction(reason: dict[str, Any]) -> str | None:
    """``"raises"`` or ``"lowers"``: the API's own ``direction``, else the sign of the contribution."""
    direction = reason.get("direction")
    if direction in ("raises", "lowers"):
        return direction
    contribution = reason.get("contribution")
    if isinstance(contribution, (int, float)) and not isinstance(contribution, bool) and contribution != 0:
        return "raises" if contribution > 0 else "lowers"
    return None


def explain_reason(reason: dict[str, Any]) -> str:
    """One reason of the fraud API in plain words, e.g. ``'the amount of the charge (raises the risk)'``: the
    API's ``label`` when it sends one (its words for every feature), else a phrase for the feature's name."""
    label = reason.get("label")
    if isinstance(label, str) and label.strip():
        words = " ".join(label.split())[:200]
    else:
        feature = str(reason.get("feature", "?"))
        words = feature.replace("_", " ")
        for pattern, text in _REASONS:
            m = pattern.match(feature)
            if m:
                words = text.format(*m.groups())
                break
    direction = reason_direction(reason)
    return words + (f" ({direction} the risk)" if direction else "")

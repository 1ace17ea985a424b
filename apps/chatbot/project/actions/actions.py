# ruff: noqa: ARG002 - the signatures are rasa_sdk's interface
"""The shop assistant's custom actions (rasa_sdk action server, ``rasa run actions --actions actions``).

They reach the recommender and fraud apps over HTTP only (``services.py``); when one is down or slow the user gets
a polite message and the conversation goes on. ``action_default_fallback`` (the end of the two-stage fallback) and
``action_handoff`` hand the conversation to a human with a summary, appended to ``MLREF_HANDOFF_LOG`` (JSONL) when
that is set; the customer sees only a sentence with the handoff's reference.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import services

log = logging.getLogger(__name__)

ORDER_FORMAT_HINT = "Order numbers are SH followed by 5 digits, like SH12345."


class ValidateOrderStatusForm(FormValidationAction):
    def name(self) -> str:
        return "validate_order_status_form"

    def validate_order_id(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        order_id = services.normalise_order_id(value if isinstance(value, str) else (value or [""])[0])
        if not services.ORDER_ID.match(order_id):
            dispatcher.utter_message(text=f"'{value}' doesn't look like an order number. {ORDER_FORMAT_HINT}")
            return {"order_id": None}
        if services.find_order(order_id, tracker.sender_id) is None:
            dispatcher.utter_message(text=f"I can't find an order {order_id}. Could you check the number?")
            return {"order_id": None}
        return {"order_id": order_id}


class ActionOrderStatus(Action):
    def name(self) -> str:
        return "action_order_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        order_id = tracker.get_slot("order_id")
        order = services.find_order(order_id, tracker.sender_id) if order_id else None
        if order is None:
            dispatcher.utter_message(text="I couldn't look that order up. " + ORDER_FORMAT_HINT)
            return [SlotSet("order_id", None)]
        items = ", ".join(order["items"])
        text = f"Order {order_id} ({items}) is {order['status']}."
        if order.get("eta"):
            text += f" Expected delivery: {order['eta']}."
        if order.get("tracking"):
            text += f" Tracking number: {order['tracking']}."
        dispatcher.utter_message(text=text)
        return [SlotSet("order_id", None)]


class ActionRecommendProducts(Action):
    def name(self) -> str:
        return "action_recommend_products"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        # an anonymous or unknown customer gets the recommender's answer for a user it does not know (popular items)
        user = services.customer(tracker.sender_id).get("recommender_user", "anonymous")
        try:
            recs = await services.recommendations(str(user), k=3)
        except services.ServiceUnavailable as exc:
            log.warning("recommender unavailable: %s", exc)
            dispatcher.utter_message(
                text="Sorry, I can't fetch recommendations right now; our recommendation "
                "service isn't answering. Please try again in a few minutes. "
                "Anything else I can help with?"
            )
            return []
        if not recs.titles:
            dispatcher.utter_message(text="I don't have any suggestions for you yet. Anything else?")
            return []
        listed = "; ".join(recs.titles) + "."
        if recs.personalised:
            dispatcher.utter_message(text="Picked for you from what you've bought: " + listed)
        else:
            dispatcher.utter_message(
                text="I don't know your taste yet, so these are our popular items, not personal picks: " + listed
            )
        return []


def _pick_transaction(transactions: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
    """The charge the user means: one whose amount they typed (``12.50``), else the latest."""
    amounts = {float(a.replace(",", ".")) for a in re.findall(r"\d+(?:[.,]\d{1,2})?", text or "")}
    for tx in sorted(transactions, key=lambda t: t["timestamp"], reverse=True):
        if round(float(tx["amount"]), 2) in amounts:
            return tx
    return max(transactions, key=lambda t: t["timestamp"]) if transactions else None


class ActionCheckCharge(Action):
    def name(self) -> str:
        return "action_check_charge"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        # the store dates charges relative to today ("days_ago"): the fraud service refuses stale timestamps
        transactions = services.dated_transactions(services.customer(tracker.sender_id).get("transactions", []))
        tx = _pick_transaction(transactions, tracker.latest_message.get("text", ""))
        if tx is None:
            dispatcher.utter_message(
                text="I can't find card payments for your account. Say 'talk to a human' and "
                "a colleague will look into it with you."
            )
            return []
        what = f"the charge of {tx['amount']:.2f} EUR on {tx['timestamp'][:10]} ({tx.get('merchant', 'a shop')})"
        body = {k: tx[k] for k in ("tx_id", "timestamp", "customer_id", "terminal_id", "amount")}
        try:
            verdict = await services.score_transaction(body)
        except services.ServiceUnavailable as exc:
            log.warning("fraud service unavailable: %s", exc)
            dispatcher.utter_message(
                text=f"I found {what}, but our fraud check isn't available right now. "
                "If you didn't make it, say 'talk to a human' and we'll block the card "
                "for you. Anything else?"
            )
            return []
        # only reasons that pushed the way of the decision: an alert is explained by what raised the risk, a
        # pass by what lowered it (the fraud API already sends them so; an older one sent the top three by value)
        wanted = "raises" if verdict["decision"] == "alert" else "lowers"
        agreeing = [r for r in verdict.get("reasons", []) if services.reason_direction(r) == wanted]  # checked
        reasons = [services.explain_reason(r) for r in agreeing[:3]]
        lead = " The main reasons: " if wanted == "raises" else " What kept the risk low: "
        why = (lead + "; ".join(reasons) + ".") if reasons else ""
        if verdict["decision"] == "alert":
            dispatcher.utter_message(
                text=f"Our fraud check flags {what} as suspicious (risk score "
                f"{verdict['score']:.2f}).{why} Our fraud team will contact you; "
                "say 'talk to a human' to reach them now."
            )
        else:
            dispatcher.utter_message(
                text=f"Our fraud check finds {what} consistent with your usual payments (risk "
                f"score {verdict['score']:.2f}).{why} If you still don't recognise it, "
                "say 'talk to a human'."
            )
        return []


def said(tracker: Tracker) -> list[dict[str, Any]]:
    """The user messages of the conversation, each once: a message Rasa took back (``rewind``, e.g. the two-stage
    fallback replacing the user's answer with its clarified copy) is not counted again."""
    kept: list[dict[str, Any]] = []
    for e in tracker.events:
        kind = e.get("event")
        if kind == "user":
            kept.append(e)
        elif kind == "rewind" and kept:
            kept.pop()
    return kept


def conversation_summary(tracker: Tracker, max_turns: int = 6) -> dict[str, Any]:
    """What a human agent needs: the customer, the intents and slots seen, and the last user messages."""
    users = said(tracker)
    intents = [(e.get("parse_data") or {}).get("intent", {}).get("name") for e in users]
    return {
        "sender_id": tracker.sender_id,
        "customer": services.customer_id(tracker.sender_id),
        "turns": len(users),
        "intents": [i for i in intents if i],
        "last_messages": [e.get("text") for e in users[-max_turns:]],
        "slots": {k: v for k, v in tracker.current_slot_values().items() if v not in (None, [], "")},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def handoff_reference() -> str:
    """A short reference the customer can quote to the colleague (``H-7K2Q9F``)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
    return "H-" + "".join(secrets.choice(alphabet) for _ in range(6))


def _hand_off(dispatcher: CollectingDispatcher, tracker: Tracker, reason: str) -> list[EventType]:
    """The summary goes to the handoff log (``MLREF_HANDOFF_LOG``) only; the customer gets a sentence with the
    reference the colleague sees, never the payload."""
    summary = {"reference": handoff_reference(), **conversation_summary(tracker), "reason": reason}
    path = os.environ.get("MLREF_HANDOFF_LOG")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(summary) + "\n")
    else:
        log.warning("MLREF_HANDOFF_LOG is not set: handoff %s is only in this log: %s", summary["reference"], summary)
    dispatcher.utter_message(
        text=f"I'm passing you to a colleague, who will reply here shortly (reference {summary['reference']}). "
        "They can see what we've talked about, so you won't need to repeat yourself.",
        handoff=summary["reference"],  # Rasa keeps it in the bot event's metadata (monitor counts handoffs by it)
    )
    return []


INTENT_DESCRIPTIONS = {
    "greet": "say hello",
    "goodbye": "say goodbye",
    "thank": "say thanks",
    "affirm": "say yes",
    "deny": "say no",
    "bot_challenge": "ask whether I'm a bot",
    "order_status": "check an order",
    "inform_order_id": "give an order number",
    "stop": "stop what we're doing",
    "faq": "ask about returns or delivery",
    "chitchat": "have a chat",
    "recommend_products": "get product suggestions",
    "dispute_charge": "ask about a card charge",
    "human_handoff": "talk to a person",
    "out_of_scope": "ask something I can't help with",
    "start_over": "start over",
    "cancel_order": "cancel an order",
}


class ActionDefaultAskAffirmation(Action):
    """The two-stage fallback's question, in words instead of an intent name: "Did you want to check an order?"."""

    def name(self) -> str:
        return "action_default_ask_affirmation"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        ranking = tracker.latest_message.get("intent_ranking") or []
        guess = next((r["name"] for r in ranking if r.get("name") not in (None, "nlu_fallback")), None)
        if guess is None:
            dispatcher.utter_message(
                text="Sorry, I didn't get that. Could you say it another way?",
                buttons=[{"title": "Talk to a person", "payload": "/human_handoff"}],
            )
            return []
        what = INTENT_DESCRIPTIONS.get(guess, guess.replace("_", " "))
        dispatcher.utter_message(
            text=f"Sorry, I'm not sure I understood. Did you want to {what}?",
            buttons=[{"title": "Yes", "payload": f"/{guess}"}, {"title": "No", "payload": "/out_of_scope"}],
        )
        return []


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        return _hand_off(dispatcher, tracker, "asked for a human")


class ActionDefaultFallback(Action):
    """The end of the two-stage fallback (the user rejected the guesses twice): a human takes over."""

    def name(self) -> str:
        return "action_default_fallback"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> list[EventType]:
        _hand_off(dispatcher, tracker, "not understood (two-stage fallback)")
        # like Rasa's own default fallback: the message that was not understood does not steer what comes next
        # (without this, the policies would predict the fallback again and again)
        return [UserUtteranceReverted()]

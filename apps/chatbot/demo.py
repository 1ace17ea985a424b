"""The chatbot's demo, through the same pipeline functions as the CLI: train (few epochs) with the test stories and
register the champion (``train_pipeline``), evaluate it on the held-out messages (``evaluate_pipeline``), start the
gateway (``app.service``: Rasa and the action server start with it) and hold a scripted conversation through it as
the signed-in customer alice that uses the order form and custom actions (and, after a message outside what it
can do, says so and hands over to a human on request), stop everything, classify the script's messages from a file
(``app.batch``) and monitor the tracker store (``monitor_pipeline``).

Runs in the workspace it is given (``demo_pipeline``: ``$MLREF_HOME/demo/chatbot``, its own registry). The
recommender and fraud apps are not started: the conversation shows how the assistant answers when a service it
calls is down (politely, and it carries on). Retraining is not shown (another few minutes of Rasa training):
``python -m apps.chatbot retrain -d labelled.csv``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import pandas as pd

from apps.chatbot import identity, lifecycle, rasa_env, service
from apps.chatbot.config import Config
from common import registry, reports
from common.app import App, evaluate_pipeline, monitor_pipeline, train_pipeline
from common.workspace import Workspace

log = logging.getLogger(__name__)

# (user message, a phrase the bot's answer must contain)
SCRIPT = [
    ("hello", "Mlref Shop assistant"),
    ("where is my order?", "order number"),
    ("SH123", "doesn't look like an order number"),
    ("how long does delivery take?", "working day"),
    ("it's SH12345", "out for delivery"),
    ("can you recommend something for me?", "can't fetch recommendations"),
    ("I don't recognise this charge", "fraud check isn't available"),
    ("blorp fizzle wug", "can't help with that here"),  # out of scope: an honest answer and a handoff offer
    ("talk to a human", "passing you to a colleague"),  # the offer taken: handoff with a summary
    ("thanks", "welcome"),
    ("bye", "Goodbye"),
]


def converse(url: str, sender: str = "demo", token: str | None = None) -> list[dict[str, Any]]:
    """Play :data:`SCRIPT` through the gateway (``token``: the customer's); each turn records the answer and
    whether it was as expected."""
    transcript = []
    for text, expected in SCRIPT:
        answers = [m.get("text") or "" for m in service.say(url, sender, text, token=token)]
        joined = " | ".join(answers)
        ok = expected.lower() in joined.lower()
        transcript.append({"user": text, "bot": answers, "expected": expected, "ok": ok})
        log.info("user: %s\n  bot: %s", text, joined)
    return transcript


def run_demo(app: App[Config, Any, Any], ws: Workspace, cfg: Config) -> dict[str, Any]:
    """Every stage of ``app`` (the ChatbotApp, passed in so that this module does not import the pipeline that
    calls it) in the workspace ``ws`` (a demo's own) through the pipeline functions; returns a summary (what
    the end-to-end test checks). Raises when a test story fails or the conversation goes wrong."""
    trained = train_pipeline(app, ws, None, cfg, promote=True)
    evaluation = evaluate_pipeline(app, ws, None, cfg, fitted=trained.fitted)
    model, mv = app.load_model(ws, registry.CHAMPION)
    # the other apps are "down": nothing listens on these ports; Rasa and the actions on free ones
    cfg.recommender_url = f"http://127.0.0.1:{rasa_env.free_port()}"
    cfg.fraud_url = f"http://127.0.0.1:{rasa_env.free_port()}"
    cfg.rasa_port, cfg.actions_port = rasa_env.free_port(), rasa_env.free_port()
    secret = secrets.token_bytes(32)  # this run's customer-token secret: the demo signs alice in
    with service.in_background(app.service(ws, cfg, secret=secret), cfg) as assistant:
        transcript = converse(assistant.url, token=identity.mint_token("alice", secret))
        load_s = assistant.servers.load_s
        urls = {"gateway": assistant.url, "rasa": assistant.servers.url, "actions": assistant.servers.actions_url}
    work = ws.work_dir(app.name)
    messages = work / "demo_messages.csv"
    pd.DataFrame({"sender_id": "demo", "text": [text for text, _ in SCRIPT]}).to_csv(messages, index=False)
    scored = app.batch(ws, model, messages, work / "demo_intents.csv", chunksize=app.batch_chunk[0])
    monitored, _ = monitor_pipeline(app, ws, lifecycle.tracker_db(ws))
    lines = ["# Chatbot demo conversation", ""]
    for turn in transcript:
        lines += [f"**user:** {turn['user']}", ""] + [f"> {b}" for b in turn["bot"]] + [""]
    page = reports.write_text(monitored.report.parent / "transcript.md", "\n".join(lines))
    failed_turns = [t["user"] for t in transcript if not t["ok"]]
    if failed_turns:
        raise RuntimeError(f"the scripted conversation went wrong at {failed_turns}; see {page}")
    return {
        "version": mv.version,
        "metrics": trained.fitted.summary["metrics"],
        "test_stories": trained.fitted.summary["test_stories"],
        "evaluation": evaluation.metrics,
        "report": str(evaluation.report),
        "model_load_s": round(load_s, 1),
        "urls": urls,
        "conversation": transcript,
        "transcript": str(page),
        "batch": scored,
        "monitor": {**monitored.stats, "alerts": monitored.alerts, "report": str(monitored.report)},
        "model_card": str(model.parent / "model_card.md"),
    }

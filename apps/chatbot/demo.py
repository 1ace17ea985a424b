"""The chatbot's demo: train (few epochs), run the test stories, register, start both servers and the gateway, hold
a scripted conversation through the gateway as the signed-in customer alice that uses the order form and custom
actions (and, after a message outside what it can do, says so and hands over to a human on request), stop the
servers, and monitor the tracker store.

Runs inside ``cli.demo_home`` (its own registry). The recommender and fraud apps are not started: the conversation
shows how the assistant answers when a service it calls is down (politely, and it carries on).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from apps.chatbot import identity, lifecycle, rasa_env, service
from apps.chatbot.config import APP, Config
from common import registry, reports

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


def run_demo(seed: int = 42, *, trained: lifecycle.Trained | None = None) -> dict[str, Any]:
    """The demo; ``trained`` skips training with an already trained and tested model (the tests' session model)."""
    cfg = Config.quick()
    cfg.seed = seed
    trained = trained or lifecycle.build(cfg)
    if not trained.stories["all_passed"]:
        raise RuntimeError(f"test stories failed: {trained.stories['failed']} (see {trained.workdir / 'results'})")
    mv = lifecycle.register(trained, cfg, dataset="project", alias=registry.CHAMPION)
    model, _ = lifecycle.model_path(registry.CHAMPION)
    run_dir = lifecycle.workdir("demo-serve")
    db = lifecycle.tracker_db()
    # the other apps are "down": nothing listens on these ports
    cfg.recommender_url = f"http://127.0.0.1:{rasa_env.free_port()}"
    cfg.fraud_url = f"http://127.0.0.1:{rasa_env.free_port()}"
    secret = secrets.token_bytes(32)  # this run's customer-token secret: the demo signs alice in
    with service.running(model, run_dir, cfg, tracker_db=db, version=mv, secret=secret) as assistant:
        transcript = converse(assistant.url, token=identity.mint_token("alice", secret))
        load_s = assistant.servers.load_s
        urls = {"gateway": assistant.url, "rasa": assistant.servers.url, "actions": assistant.servers.actions_url}
    out = reports.new_report_dir(APP, "demo", kind="monitor")
    result = lifecycle.monitor(registry.fetch_model_dir(mv), db, out)
    lines = ["# Chatbot demo conversation", ""]
    for turn in transcript:
        lines += [f"**user:** {turn['user']}", ""] + [f"> {b}" for b in turn["bot"]] + [""]
    page = reports.write_text(out / "transcript.md", "\n".join(lines))
    card = registry.fetch_model_dir(mv) / "model_card.md"
    failed_turns = [t["user"] for t in transcript if not t["ok"]]
    if failed_turns:
        raise RuntimeError(f"the scripted conversation went wrong at {failed_turns}; see {page}")
    return {
        "version": mv.version,
        "metrics": trained.metrics(),
        "test_stories": trained.stories,
        "model_load_s": round(load_s, 1),
        "urls": urls,
        "conversation": transcript,
        "transcript": str(page),
        "monitor": result.to_dict(),
        "model_card": str(card),
    }

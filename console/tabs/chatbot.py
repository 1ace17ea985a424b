"""Chatbot tab: a chat panel through the assistant's gateway (``POST /v1/messages``), as an anonymous visitor or a
demo customer (a signed ``X-Customer-Token`` from ``python -m apps.chatbot token``); buttons become quick
replies. The gateway never sends internal payloads, so a handoff reaches the user as the bot's sentence."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import gradio as gr

from console.client import ServiceClient, ServiceError
from console.services import Service
from console.widgets import guarded, notice_box

CUSTOMERS = ["anonymous", "alice", "bob"]
TOKEN_HEADER = "X-Customer-Token"


def customer_token(svc: Service, customer: str) -> str | None:
    """A signed token for ``customer`` from the app's own command (the gateway's secret), None for anonymous."""
    if customer == "anonymous":
        return None
    run = subprocess.run(
        [sys.executable, "-m", "apps.chatbot", "token", customer],
        env=svc.cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise ServiceError(f"could not make a token for {customer}: {last}")
    return json.loads(run.stdout)["token"]


def say(client: ServiceClient, sender: str, text: str, token: str | None) -> dict[str, Any]:
    return client.post(
        "/v1/messages",
        json={"sender": sender, "text": text},
        headers={TOKEN_HEADER: token} if token else None,
        timeout_s=120.0,
    )


def bot_turns(answer: dict[str, Any]) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """The assistant's chat messages and its buttons (title, payload)."""
    turns, buttons = [], []
    for m in answer["messages"]:
        text = (m.get("text") or "").strip()
        if m.get("image"):
            text += f"\n\n![image]({m['image']})"
        if text:
            turns.append({"role": "assistant", "content": text})
        buttons += [(b["title"], b["payload"]) for b in m.get("buttons") or []]
    return turns, buttons


def build(svc: Service) -> None:
    client = svc.client(timeout_s=120.0)
    box = notice_box()
    sender = gr.State("")
    tokens = gr.State({})
    with gr.Row():
        customer = gr.Dropdown(CUSTOMERS, value="anonymous", label="Talk as", scale=1, elem_id="chat-customer")
        new = gr.Button("New conversation", scale=1)
    chat = gr.Chatbot(label="Assistant", elem_id="chat-panel", height=380)
    with gr.Row():
        text = gr.Textbox(label="Message", placeholder="e.g. where is my order SH12345?", scale=4, elem_id="chat-text")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send-btn")
    quick = gr.Radio([], label="Quick replies", elem_id="chat-quick")
    offered = gr.State([])  # the buttons of the last answer: (title, payload)

    @guarded(box)
    def on_send(msg: str, history: list, who: str, conv: str, known: dict, shown: str | None = None) -> dict:
        """Send ``msg``; the chat shows ``shown`` (a button's title) in its place when given."""
        msg = msg.strip()
        if not msg:
            raise ValueError("message: type something first")
        conv = conv or f"console-{uuid.uuid4().hex[:12]}"
        if who not in known:
            known = {**known, who: customer_token(svc, who)}
        answer = say(client, conv, msg, known[who])
        turns, buttons = bot_turns(answer)
        if not turns and not buttons:
            turns = [{"role": "assistant", "content": "(no answer)"}]
        history = [*history, {"role": "user", "content": shown or msg}, *turns]
        return {
            chat: history,
            text: "",
            sender: conv,
            tokens: known,
            quick: gr.update(choices=[(t, p) for t, p in buttons], value=None),
            offered: buttons,
        }

    @guarded(box)
    def on_quick(payload: str | None, history: list, who: str, conv: str, known: dict, offered: list) -> dict:
        if not payload:
            return {}
        title = next((t for t, p in offered if p == payload), payload)
        return on_send(payload, history, who, conv, known, title)

    def on_new() -> dict:
        return {chat: [], sender: "", quick: gr.update(choices=[], value=None), box: ""}

    outs = [box, chat, text, sender, tokens, quick, offered]
    send.click(on_send, [text, chat, customer, sender, tokens], outs)
    text.submit(on_send, [text, chat, customer, sender, tokens], outs)
    quick.input(on_quick, [quick, chat, customer, sender, tokens, offered], outs)
    new.click(on_new, [], [chat, sender, quick, box])
    customer.change(on_new, [], [chat, sender, quick, box])

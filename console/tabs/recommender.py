"""Recommender tab: top-k for a user (cold start visible), for a session built from items ("because you liked"),
and similar items; every list comes from the recommender service."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import gradio as gr
import pandas as pd

from console.client import ServiceClient
from console.services import Service
from console.widgets import guarded, notice_box

COLUMNS = ["rank", "item", "title", "genres", "score", "because you liked"]
STRATEGY = {
    "personalized": "personalised from this user's history",
    "fold_in": "folded in from the session's items",
    "popular": "cold start: nothing is known about this user, so these are the most popular items",
}


def parse_items(text: str) -> list[str]:
    """Item ids from a comma- or newline-separated text (spaces trimmed, empty parts dropped)."""
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


def for_user(client: ServiceClient, user: str, k: int) -> dict[str, Any]:
    user = user.strip()
    if not user:
        raise ValueError("user: type a user id (e.g. one from your training file)")
    return client.get("/v1/recommendations", params={"user": user, "k": int(k)})


def for_session(client: ServiceClient, items: list[str], k: int) -> dict[str, Any]:
    """Recommendations folded in from ``items``; each recommended item gets the session item it is most similar
    to (``because``), from the service's similar-items answers."""
    answer = client.post("/v1/recommendations", json={"items": items, "k": int(k), "exclude_seen": True})
    sims: dict[str, dict[str, float]] = {}
    for item in items[:10]:
        try:
            got = client.get(f"/v1/items/{quote(item, safe='')}/similar", params={"k": 100})
        except Exception:  # noqa: BLE001 - an item unknown to the model has no neighbours: no reason from it
            continue
        sims[item] = {r["item"]: r["score"] for r in got["items"]}
    for r in answer["items"]:
        best = max(sims, key=lambda s: sims[s].get(r["item"], float("-inf")), default=None)
        if best is not None and r["item"] in sims[best]:
            r["because"] = best
    return answer


def table(answer: dict[str, Any]) -> pd.DataFrame:
    rows = [
        [r["rank"], r["item"], r.get("title") or "", r.get("genres") or "", round(r["score"], 4), r.get("because", "")]
        for r in answer["items"]
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def headline(answer: dict[str, Any]) -> str:
    who = f"user **{answer['user']}**" if answer.get("user") else "this session"
    text = f"Top {len(answer['items'])} for {who}: {STRATEGY.get(answer['strategy'], answer['strategy'])}"
    if answer.get("unknown_items"):
        text += f". Unknown to the model (ignored): {', '.join(answer['unknown_items'][:10])}"
    return text + f" (model v{answer.get('model_version') or '?'})."


def similar(client: ServiceClient, item: str, k: int) -> pd.DataFrame:
    item = item.strip()
    if not item:
        raise ValueError("item: type an item id")
    got = client.get(f"/v1/items/{quote(item, safe='')}/similar", params={"k": int(k)})
    return pd.DataFrame(
        [[r["rank"], r["item"], r.get("title") or "", round(r["score"], 4)] for r in got["items"]],
        columns=["rank", "item", "title", "similarity"],
    )


def build(svc: Service) -> None:
    client = svc.client()
    box = notice_box()
    with gr.Row():
        user = gr.Textbox(
            label="User id", elem_id="rec-user", placeholder="e.g. u00017; an unknown id shows the cold start", scale=3
        )
        k = gr.Slider(1, 50, value=10, step=1, label="k", scale=1)
        by_user = gr.Button("Recommend for this user", variant="primary", elem_id="rec-user-btn", scale=1)
    with gr.Row():
        session = gr.Textbox(
            label="Or build a session from items (ids, comma-separated)", elem_id="rec-session", scale=4
        )
        by_session = gr.Button("Recommend for this session", elem_id="rec-session-btn", scale=1)
    head = gr.Markdown(elem_id="rec-headline")
    recs = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="rec-table", wrap=True)
    with gr.Row():
        item = gr.Textbox(label="Item id", elem_id="rec-item", placeholder="an item from the list above", scale=4)
        by_item = gr.Button("Similar items", elem_id="rec-similar-btn", scale=1)
    sims = gr.Dataframe(headers=["rank", "item", "title", "similarity"], interactive=False, elem_id="rec-similar")

    @guarded(box)
    def on_user(u: str, kk: float) -> dict:
        answer = for_user(client, u, int(kk))
        return {head: headline(answer), recs: table(answer)}

    @guarded(box)
    def on_session(text: str, kk: float) -> dict:
        items = parse_items(text)
        if not items:
            raise ValueError("session: type one or more item ids, comma-separated")
        answer = for_session(client, items, int(kk))
        return {head: headline(answer), recs: table(answer)}

    @guarded(box)
    def on_item(i: str, kk: float) -> dict:
        return {sims: similar(client, i, int(kk))}

    by_user.click(on_user, [user, k], [box, head, recs])
    user.submit(on_user, [user, k], [box, head, recs])
    by_session.click(on_session, [session, k], [box, head, recs])
    by_item.click(on_item, [item, k], [box, sims])

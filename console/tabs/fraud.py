"""Fraud tab: a live alert queue fed by the simulator (or a CSV file) through the scoring API, each alert's signed
reasons as a bar chart, fraud / not-fraud labels sent to ``/v1/labels`` and the day's card precision@100."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from console.client import ServiceClient
from console.services import Service
from console.widgets import guarded, notice_box, signed_bars

QUEUE_COLUMNS = ["tx_id", "time (UTC)", "card", "terminal", "amount", "score", "label", "simulator says"]
FILE_COLUMNS = ["tx_id", "timestamp", "customer_id", "terminal_id", "amount"]
MAX_FILE_ROWS = 2000
TOP_CARDS = 100


def simulated_stream(n: int, run: int, now: float | None = None, tag: str | None = None) -> pd.DataFrame:
    """``n`` transactions of the fraud app's simulator (the last ones of a fresh two-week world, seeded by ``run``),
    moved in time so that the last one happened a minute ago. Transaction ids carry ``tag`` (default: random), so
    two streams never reuse an id the service has seen (it refuses those with 409). ``label`` is the simulator's
    truth."""
    from apps.fraud.config import TINY_SIMULATION
    from apps.fraud.data import simulate

    sim = simulate(replace(TINY_SIMULATION, n_days=14, seed=1000 + run)).tail(n).reset_index(drop=True)
    now = time.time() if now is None else now
    last = sim["timestamp"].iloc[-1]
    shift = datetime.fromtimestamp(now - 60, UTC).replace(tzinfo=None) - last.to_pydatetime()
    sim["timestamp"] = sim["timestamp"] + timedelta(seconds=int(shift.total_seconds()))
    tag = tag or uuid.uuid4().hex[:6]
    sim["tx_id"] = [f"sim{run}-{tag}-{t}" for t in sim["tx_id"]]
    return sim


def read_file(path: str | Path) -> pd.DataFrame:
    """A transactions CSV (``tx_id,timestamp,customer_id,terminal_id,amount[,label]``), at most MAX_FILE_ROWS rows."""
    df = pd.read_csv(path, dtype={"tx_id": str, "customer_id": str, "terminal_id": str})
    missing = [c for c in FILE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"file: missing column(s) {', '.join(missing)}; expected {', '.join(FILE_COLUMNS)}")
    if len(df) > MAX_FILE_ROWS:
        raise ValueError(f"file: {len(df)} rows; the console streams at most {MAX_FILE_ROWS} (use `batch` for more)")
    df["timestamp"] = pd.to_datetime(df["timestamp"])
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


def score_rows(client: ServiceClient, rows: pd.DataFrame, progress: Any = None) -> list[dict[str, Any]]:
    """Each row through ``POST /v1/transactions/score`` (alerts come with their reasons); one record per row."""
    out = []
    items = list(rows.itertuples(index=False))
    for i, r in enumerate(items):
        body = {
            "tx_id": str(r.tx_id),
            "timestamp": pd.Timestamp(r.timestamp).isoformat(),
            "customer_id": str(r.customer_id),
            "terminal_id": str(r.terminal_id),
            "amount": float(r.amount),
        }
        ans = client.post("/v1/transactions/score", json=body)
        out.append(
            {
                **body,
                "score": ans["score"],
                "decision": ans["decision"],
                "reasons": ans.get("reasons") or [],
                "summary": ans.get("summary"),
                "label": None,
                "truth": int(r.label) if "label" in rows.columns and pd.notna(r.label) else None,
            }
        )
        if progress is not None and (i % 10 == 0 or i == len(items) - 1):
            progress((i + 1) / len(items), desc=f"scored {i + 1}/{len(items)}")
    return out


def queue_table(scored: list[dict[str, Any]]) -> pd.DataFrame:
    alerts = sorted((s for s in scored if s["decision"] == "alert"), key=lambda s: -s["score"])
    name = {None: "", 0: "not fraud", 1: "fraud"}
    rows = [
        [
            s["tx_id"],
            s["timestamp"][:19].replace("T", " "),
            s["customer_id"],
            s["terminal_id"],
            round(s["amount"], 2),
            round(s["score"], 3),
            name[s["label"]],
            name.get(s["truth"], ""),
        ]
        for s in alerts
    ]
    return pd.DataFrame(rows, columns=QUEUE_COLUMNS)


def card_precision(scored: list[dict[str, Any]], day: str | None = None, k: int = TOP_CARDS) -> dict[str, Any]:
    """The day's card precision@k from the labels given so far: of the k cards with the highest score that day,
    the share with a transaction labelled fraud (k = the number of cards when fewer)."""
    day = day or datetime.now(UTC).date().isoformat()
    today = [s for s in scored if s["timestamp"][:10] == day]
    best: dict[str, float] = {}
    fraud: set[str] = set()
    for s in today:
        best[s["customer_id"]] = max(best.get(s["customer_id"], 0.0), s["score"])
        if s["label"] == 1:
            fraud.add(s["customer_id"])
    top = sorted(best, key=lambda c: -best[c])[:k]
    hits = sum(c in fraud for c in top)
    return {
        "day": day,
        "k": len(top),
        "hits": hits,
        "precision": hits / len(top) if top else None,
        "labelled": sum(s["label"] is not None for s in today),
    }


def summary_line(scored: list[dict[str, Any]]) -> str:
    n_alerts = sum(s["decision"] == "alert" for s in scored)
    cp = card_precision(scored)
    p = "n/a (no transactions today)" if cp["precision"] is None else f"{cp['precision']:.2f}"
    return (
        f"Scored **{len(scored)}** transactions, **{n_alerts}** alerts. Card precision@{TOP_CARDS} on {cp['day']}: "
        f"**{p}** ({cp['hits']} of the {cp['k']} riskiest cards labelled fraud; {cp['labelled']} labels given)."
    )


def reasons_figure(rec: dict[str, Any]):
    reasons = rec["reasons"]
    if not reasons:
        return None
    return signed_bars(
        [r["label"] for r in reasons],
        [r["contribution"] for r in reasons],
        f"{rec['tx_id']}: score {rec['score']:.3f} ({rec['decision']})",
        "contribution to the log-odds of fraud: red raises the risk, blue lowers it",
    )


def send_label(client: ServiceClient, scored: list[dict[str, Any]], tx_id: str | None, label: int) -> dict:
    if not tx_id:
        raise ValueError("alert: pick an alert in the queue first")
    got = client.post("/v1/labels", json={"labels": [{"tx_id": tx_id, "label": label}]})
    for s in scored:
        if s["tx_id"] == tx_id:
            s["label"] = label
    return got


def build(svc: Service) -> None:
    client = svc.client()
    box = notice_box()
    scored = gr.State([])
    runs = gr.State(0)
    with gr.Row():
        n = gr.Slider(20, 1000, value=200, step=10, label="transactions to stream", scale=2)
        stream = gr.Button("Stream from the simulator", variant="primary", elem_id="fraud-stream-btn", scale=1)
        upload = gr.File(label="…or a CSV file", file_types=[".csv"], scale=2)
    status = gr.Markdown(elem_id="fraud-status")
    queue = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, elem_id="fraud-queue", max_height=320)
    with gr.Row():
        pick = gr.Dropdown(label="Alert", choices=[], elem_id="fraud-pick", scale=2)
        is_fraud = gr.Button("Mark fraud", variant="stop", elem_id="fraud-yes-btn", scale=1)
        not_fraud = gr.Button("Mark not fraud", elem_id="fraud-no-btn", scale=1)
    why = gr.Markdown(elem_id="fraud-summary")
    chart = gr.Plot(label="Signed reasons", elem_id="fraud-reasons")

    def view(recs: list[dict[str, Any]], chosen: str | None) -> dict:
        alerts = [s["tx_id"] for s in sorted(recs, key=lambda s: -s["score"]) if s["decision"] == "alert"]
        chosen = chosen if chosen in alerts else (alerts[0] if alerts else None)
        rec = next((s for s in recs if s["tx_id"] == chosen), None)
        return {
            scored: recs,
            status: summary_line(recs),
            queue: queue_table(recs),
            pick: gr.update(choices=alerts, value=chosen),
            why: (rec["summary"] or "") if rec else "No alert yet: stream more transactions.",
            chart: reasons_figure(rec) if rec else None,
        }

    @guarded(box)
    def on_stream(count: float, recs: list, run: int, progress: gr.Progress = gr.Progress()) -> dict:
        progress(0, desc="simulating")
        rows = simulated_stream(int(count), run)
        recs = recs + score_rows(client, rows, progress)
        return {**view(recs, None), runs: run + 1}

    @guarded(box)
    def on_file(path: str | None, recs: list, progress: gr.Progress = gr.Progress()) -> dict:
        if not path:
            return {}
        recs = recs + score_rows(client, read_file(path), progress)
        return view(recs, None)

    @guarded(box)
    def on_pick(chosen: str | None, recs: list) -> dict:
        return view(recs, chosen)

    def labeller(label: int):
        @guarded(box)
        def on_label(chosen: str | None, recs: list) -> dict:
            got = send_label(client, recs, chosen, label)
            out = view(recs, chosen)
            out[status] = out[status] + f" Label sent: {got['applied']} applied to the online state."
            return out

        return on_label

    outs = [box, scored, status, queue, pick, why, chart]
    stream.click(on_stream, [n, scored, runs], [*outs, runs])
    upload.upload(on_file, [upload, scored], outs)
    pick.input(on_pick, [pick, scored], outs)
    is_fraud.click(labeller(1), [pick, scored], outs)
    not_fraud.click(labeller(0), [pick, scored], outs)

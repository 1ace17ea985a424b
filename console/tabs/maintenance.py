"""Maintenance tab: the fleet board sorted by predicted RUL with intervals, the alert list, a unit's sensors and
RUL over its cycles with the interval band (a simulated unit replayed through the API), posting new readings, and
the evaluation's alert cost trade-off."""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
import pandas as pd

from console.client import ServiceClient
from console.services import Service
from console.widgets import guarded, notice_box, small_figure

BOARD_COLUMNS = ["unit", "cycle", "RUL", "lower", "upper", "alert"]
BOARD_CHART_UNITS = 25
STEP = 10  # cycles per request when a unit is replayed


def fleet(client: ServiceClient, limit: int = 100) -> dict[str, Any]:
    return client.get("/v1/fleet", params={"limit": limit})


def board(answer: dict[str, Any]) -> pd.DataFrame:
    rows = [
        [u["unit"], u["cycle"], u["rul"], u["lower"], u["upper"], "ALERT" if u["alert"] else ""]
        for u in answer["units"]
    ]
    return pd.DataFrame(rows, columns=BOARD_COLUMNS)


def board_figure(answer: dict[str, Any]):
    units = answer["units"][:BOARD_CHART_UNITS][::-1]
    if not units:
        return None
    fig, ax = small_figure(7.0, 0.28 * len(units) + 1.2)
    ys = range(len(units))
    rul = [u["rul"] for u in units]
    lo = [u["rul"] - (u["lower"] if u["lower"] is not None else u["rul"]) for u in units]
    hi = [(u["upper"] if u["upper"] is not None else u["rul"]) - u["rul"] for u in units]
    colours = ["#c0392b" if u["alert"] else "#2e86c1" for u in units]
    ax.errorbar(rul, list(ys), xerr=[lo, hi], fmt="none", ecolor="#888888", capsize=2, lw=1)
    ax.scatter(rul, list(ys), c=colours, s=18, zorder=3)
    ax.set_yticks(list(ys), [u["unit"] for u in units], fontsize=7)
    ax.axvline(units[0]["horizon"], color="#c0392b", ls="--", lw=0.8, label="maintenance horizon")
    ax.set_xlabel("predicted RUL (cycles) with interval; red = alert", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.tick_params(axis="x", labelsize=8)
    return fig


def alerts_line(answer: dict[str, Any]) -> str:
    alerted = [u["unit"] for u in answer["units"] if u["alert"]]
    text = f"**{answer['total']}** units ranked, **{answer['alerts']}** in alert"
    if answer.get("unscored"):
        text += f", {answer['unscored']} not scored (their readings lack a field the model needs)"
    if alerted:
        text += ": " + ", ".join(alerted[:30]) + (" …" if len(alerted) > 30 else "")
    return text + "."


def model_fields(client: ServiceClient) -> tuple[list[str], dict[str, Any]]:
    """The settings and sensors the served model needs and a reading it accepts (its OpenAPI document)."""
    spec = client.get("/openapi.json")
    reading = spec["components"]["schemas"]["Reading"]
    return [f for f in reading.get("required", []) if f != "cycle"], reading.get("example", {})


def replay(client: ServiceClient, run: int, progress: Any = None) -> tuple[str, pd.DataFrame]:
    """Post a simulated unit's whole life (run to failure) through the API, STEP cycles at a time, asking for its
    RUL after each step; returns the unit id and one row per step (cycle, rul, lower, upper, alert + sensors)."""
    from apps.maintenance.data import simulate

    fields, _ = model_fields(client)
    if not fields:
        raise ValueError("the service has no model loaded: its reading schema lists no fields")
    unit_rows = simulate(2, 1, seed=100 + run).train
    unit_rows = unit_rows[unit_rows["unit"] == unit_rows["unit"].iloc[0]]
    missing = [f for f in fields if f not in unit_rows.columns]
    if missing:
        raise ValueError(
            f"the served model needs {', '.join(missing[:5])}, which the simulator does not produce (a model trained "
            "on other data): post your unit's readings below instead"
        )
    unit = f"sim-{run}-{unit_rows['unit'].iloc[0]}"
    records = [{"cycle": int(r["cycle"]), **{f: float(r[f]) for f in fields}} for r in unit_rows.to_dict("records")]
    out = []
    for i in range(0, len(records), STEP):
        chunk = records[i : i + STEP]
        client.post(f"/v1/units/{unit}/readings", json={"readings": chunk})
        rul = client.get(f"/v1/units/{unit}/rul")
        out.append({**{k: rul[k] for k in ("cycle", "rul", "lower", "upper", "alert", "horizon")}, **chunk[-1]})
        if progress is not None:
            progress(min(1.0, (i + STEP) / len(records)), desc=f"{unit}: cycle {chunk[-1]['cycle']}")
    return unit, pd.DataFrame(out)


def unit_figure(unit: str, hist: pd.DataFrame):
    """RUL over the unit's cycles with the interval band and the horizon, and up to four sensors below."""
    fig, ax = small_figure(7.0, 4.6)
    fig.clear()
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(hist["cycle"], hist["rul"], color="#2e86c1", label="predicted RUL")
    if hist["lower"].notna().all():
        ax.fill_between(hist["cycle"], hist["lower"], hist["upper"], color="#2e86c1", alpha=0.2, label="interval")
    ax.axhline(hist["horizon"].iloc[0], color="#c0392b", ls="--", lw=0.8, label="maintenance horizon")
    ax.set_title(f"{unit}: RUL over its cycles", fontsize=9)
    ax.set_ylabel("cycles", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=8)
    sensors = [c for c in hist.columns if c.startswith("sensor_")][:4]
    ax2 = fig.add_subplot(2, 1, 2, sharex=ax)
    for s in sensors:
        v = hist[s]
        ax2.plot(hist["cycle"], (v - v.mean()) / (v.std() or 1.0), lw=1, label=s)
    ax2.set_xlabel("cycle", fontsize=8)
    ax2.set_ylabel("sensor (standardised)", fontsize=8)
    ax2.legend(fontsize=7, ncol=4)
    ax2.tick_params(labelsize=8)
    return fig


def parse_readings(text: str) -> list[dict[str, Any]]:
    """Readings from JSON: a list of readings, one reading, or ``{"readings": [...]}``."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"readings: not valid JSON ({exc})") from None
    if isinstance(doc, dict) and "readings" in doc:
        doc = doc["readings"]
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list) or not doc or not all(isinstance(r, dict) for r in doc):
        raise ValueError('readings: expected a JSON object, a list of objects or {"readings": [...]}')
    return doc


def rul_line(rul: dict[str, Any]) -> str:
    band = f" (interval {rul['lower']} to {rul['upper']})" if rul.get("lower") is not None else ""
    state = " — **ALERT**: maintenance due within the horizon" if rul.get("alert") else ""
    return f"Unit **{rul['unit']}** at cycle {rul['cycle']}: RUL **{rul['rul']}** cycles{band}{state}."


def build(svc: Service) -> None:
    client = svc.client()
    box = notice_box()
    runs = gr.State(0)
    with gr.Row():
        refresh = gr.Button("Refresh the fleet board", variant="primary", elem_id="mnt-fleet-btn")
        replay_btn = gr.Button("Replay a simulated unit", elem_id="mnt-replay-btn")
    alerts = gr.Markdown(elem_id="mnt-alerts")
    with gr.Row():
        table = gr.Dataframe(headers=BOARD_COLUMNS, interactive=False, elem_id="mnt-board", max_height=360)
        chart = gr.Plot(label="Fleet, most urgent first", elem_id="mnt-board-plot")
    unit_head = gr.Markdown(elem_id="mnt-unit")
    unit_plot = gr.Plot(label="Unit", elem_id="mnt-unit-plot")
    with gr.Accordion("Post new readings", open=False):
        with gr.Row():
            unit = gr.Textbox(label="Unit id", value="unit-1", scale=1)
            example = gr.Button("Fill in a reading the model accepts", scale=1)
        readings = gr.Code(label="Readings (JSON)", language="json", value="[]")
        post = gr.Button("Post readings", elem_id="mnt-post-btn")
    with gr.Accordion("Alert policy: the cost trade-off (latest evaluation)", open=False):
        trade_text = gr.Markdown()
        trade_btn = gr.Button("Show the trade-off")
        trade = gr.Image(type="filepath", interactive=False, label="Alert trade-off")

    def board_out(ans: dict[str, Any]) -> dict:
        return {alerts: alerts_line(ans), table: board(ans), chart: board_figure(ans)}

    @guarded(box)
    def on_refresh() -> dict:
        return board_out(fleet(client))

    @guarded(box)
    def on_replay(run: int, progress: gr.Progress = gr.Progress()) -> dict:
        name, hist = replay(client, run, progress)
        last = hist.iloc[-1].to_dict()
        return {
            runs: run + 1,
            unit_head: rul_line({"unit": name, **last}) + f" Replayed {int(last['cycle'])} cycles through the API.",
            unit_plot: unit_figure(name, hist),
            **board_out(fleet(client)),
        }

    @guarded(box)
    def on_example() -> dict:
        _, ex = model_fields(client)
        return {readings: json.dumps([ex], indent=1)}

    @guarded(box)
    def on_post(u: str, text: str) -> dict:
        u = u.strip()
        if not u:
            raise ValueError("unit: type a unit id")
        client.post(f"/v1/units/{u}/readings", json={"readings": parse_readings(text)})
        return {unit_head: rul_line(client.get(f"/v1/units/{u}/rul")), **board_out(fleet(client))}

    @guarded(box)
    def on_trade() -> dict:
        path = svc.latest_report_file("alert_tradeoff.png")
        if path is None:
            return {trade_text: "No evaluation report yet: `python -m apps.maintenance evaluate` writes one."}
        return {
            trade: str(path),
            trade_text: f"From `{path.parent}`: moving the threshold right is safer and more wasteful.",
        }

    refresh.click(on_refresh, [], [box, alerts, table, chart])
    replay_btn.click(on_replay, [runs], [box, runs, unit_head, unit_plot, alerts, table, chart])
    example.click(on_example, [], [box, readings])
    post.click(on_post, [unit, readings], [box, unit_head, alerts, table, chart])
    trade_btn.click(on_trade, [], [box, trade, trade_text])

"""Models tab: per app the registered versions (``python -m apps.<app> models list``), which one the service
serves (``/v1/model``), metrics, links to the HTML reports and the MLflow UI; promote and roll back with a
confirmation step, after which the service is asked to reload (``/admin/reload``) and the tab shows the swap."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import gradio as gr
import pandas as pd

from console.client import ServiceError
from console.services import TITLES, Service
from console.widgets import guarded, notice_box

COLUMNS = ["version", "aliases", "dataset", "metrics", "created"]


def models_cli(svc: Service, *args: str) -> Any:
    """``python -m apps.<app> models ARGS`` in the service's home; its JSON answer, or a readable ServiceError."""
    run = subprocess.run(
        [sys.executable, "-m", f"apps.{svc.app}", "models", *args],
        env=svc.cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise ServiceError(f"`models {' '.join(args)}` of {svc.app} failed (exit {run.returncode}): {last}")
    return json.loads(run.stdout)


def versions_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    out = [
        [
            r["version"],
            ", ".join(r["aliases"]) or "-",
            r.get("dataset") or "-",
            ", ".join(f"{k}={v}" for k, v in list(r["metrics"].items())[:4]) or "-",
            r.get("created") or "-",
        ]
        for r in rows
    ]
    return pd.DataFrame(out, columns=COLUMNS)


def served_line(svc: Service) -> str:
    try:
        info = svc.client().model()
    except ServiceError as exc:
        return f"Served: unknown ({exc})."
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in list(info["metrics"].items())[:4] if isinstance(v, int | float))
    aliases = ", ".join(info["aliases"]) or "no alias"
    return f"The {svc.app} service serves **version {info['version']}** ({aliases}){': ' + metrics if metrics else ''}."


def links(svc: Service) -> str:
    if svc.home is None:
        return ""
    parts = []
    index = svc.home / "reports" / "index.html"
    if index.exists():
        parts.append(f"[HTML reports]({'/gradio_api/file=' + str(index)})")
    db = svc.home / "mlflow.db"
    if db.exists():
        parts.append(
            f"MLflow UI: `mlflow ui --backend-store-uri sqlite:///{db}` then [127.0.0.1:5000](http://127.0.0.1:5000)"
        )
    where = "the demo's home" if svc.demo else "your home"
    return f"Registry in {where} `{svc.home}`. " + " · ".join(parts)


def swap(svc: Service, action: str, version: str | None) -> str:
    """Promote ``version`` (or roll back), then ask the service to reload; what it serves now."""
    if action == "promote":
        if not version:
            raise ValueError("version: pick a version to promote")
        res = models_cli(svc, "promote", str(version))
    else:
        res = models_cli(svc, "rollback")
    served = svc.client().reload()["version"]  # the service may have swapped already on its own registry poll
    text = f"Champion of {svc.app}: version {res['champion']} (was {res['previous']}); "
    if str(served) == str(res["champion"]):
        return text + f"the service now serves version {served}."
    return text + f"the service still serves version {served}: the new one did not load (see the service's log)."


def build(services: dict[str, Service]) -> None:
    box = notice_box()
    usable = [a for a, s in services.items() if s.home is not None]
    pending = gr.State(None)
    with gr.Row():
        app = gr.Dropdown([(TITLES[a], a) for a in usable], value=usable[0] if usable else None, label="App", scale=1)
        refresh = gr.Button("Refresh", variant="primary", elem_id="models-refresh-btn", scale=1)
    served = gr.Markdown(elem_id="models-served")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="models-table")
    where = gr.Markdown()
    with gr.Row():
        version = gr.Dropdown([], label="Version", scale=1, elem_id="models-version")
        promote = gr.Button("Promote…", scale=1, elem_id="models-promote-btn")
        rollback = gr.Button("Roll back…", scale=1, elem_id="models-rollback-btn")
    with gr.Row(visible=False) as confirm_row:
        question = gr.Markdown(elem_id="models-question")
        confirm = gr.Button("Confirm", variant="stop", elem_id="models-confirm-btn")
        cancel = gr.Button("Cancel", elem_id="models-cancel-btn")
    result = gr.Markdown(elem_id="models-result")

    def view(a: str) -> dict:
        svc = services[a]
        rows = models_cli(svc, "list", "--json")
        return {
            served: served_line(svc),
            table: versions_table(rows),
            where: links(svc),
            version: gr.update(choices=[r["version"] for r in rows], value=None),
        }

    @guarded(box)
    def on_refresh(a: str | None) -> dict:
        if not a:
            raise ValueError("app: no app has a registry to show (run `make demo`)")
        return view(a)

    @guarded(box)
    def ask(action: str, a: str | None, v: str | None) -> dict:
        if not a:
            raise ValueError("app: pick an app")
        if action == "promote" and not v:
            raise ValueError("version: pick a version to promote")
        text = (
            f"Promote version **{v}** of {a} to champion? The running service hot-swaps to it."
            if action == "promote"
            else f"Roll {a} back to the previous champion? The running service hot-swaps to it."
        )
        return {pending: (action, a, v), question: text, confirm_row: gr.update(visible=True)}

    @guarded(box)
    def on_confirm(p: tuple | None) -> dict:
        if not p:
            return {confirm_row: gr.update(visible=False)}
        action, a, v = p
        text = swap(services[a], action, v)
        return {pending: None, confirm_row: gr.update(visible=False), result: text, **view(a)}

    def on_cancel() -> dict:
        return {pending: None, confirm_row: gr.update(visible=False), result: "Cancelled: nothing changed."}

    outs = [box, served, table, where, version]
    refresh.click(on_refresh, [app], outs)
    app.change(on_refresh, [app], outs)
    promote.click(lambda a, v: ask("promote", a, v), [app, version], [box, pending, question, confirm_row])
    rollback.click(lambda a, v: ask("rollback", a, v), [app, version], [box, pending, question, confirm_row])
    confirm.click(on_confirm, [pending], [*outs, pending, confirm_row, result])
    cancel.click(on_cancel, [], [pending, confirm_row, result])

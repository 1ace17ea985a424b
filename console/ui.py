"""The console page: a status line per service, then one tab per app and the Models tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from console.client import ServiceError
from console.services import APPS, TITLES, Service
from console.tabs import chatbot, fraud, maintenance, models, recommender, vision
from console.widgets import BANNER_CLASS, NOTICE_CLASS

CSS = f"""
.{NOTICE_CLASS} p {{ color: #b03a2e; font-weight: 600; }}
.{BANNER_CLASS} {{ background: #fdf2e9; border-left: 4px solid #e67e22; padding: 4px 10px; }}
"""
BUILDERS = {
    "recommender": recommender.build,
    "fraud": fraud.build,
    "vision": vision.build,
    "maintenance": maintenance.build,
    "chatbot": chatbot.build,
}


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: nothing is fetched from a font service (offline, no console
    errors)."""
    fonts = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=fonts, font_mono=["ui-monospace", "monospace"])


def status_table(services: dict[str, Service]) -> str:
    """One line per service: its URL and whether it is ready, with the served version."""
    lines = ["| app | service | status |", "|---|---|---|"]
    for app in APPS:
        svc = services.get(app)
        if svc is None or svc.url is None:
            lines.append(f"| {TITLES[app]} | - | not started{': ' + svc.banner if svc and svc.banner else ''} |")
            continue
        try:
            ready = svc.client(timeout_s=3.0).ready()
            if ready.get("ready"):
                state = "ready" + (f", version {ready['version']}" if ready.get("version") else "")
            else:
                state = f"starting: {ready.get('error')}"
        except ServiceError as exc:
            state = f"⚠️ {exc}"
        if svc.demo:
            state += " (demo model)"
        lines.append(f"| {TITLES[app]} | {svc.url} | {state} |")
    return "\n".join(lines)


def build_console(services: dict[str, Service], *, title: str = "mlref console") -> gr.Blocks:
    """The page for ``services`` (app name -> :class:`Service`); a missing app gets a tab saying why."""
    with gr.Blocks(title=title, analytics_enabled=False) as page:
        gr.Markdown(f"# {title}\nFive reference ML apps, each through its own HTTP API.")
        status = gr.Markdown(elem_id="console-status")
        for app in APPS:
            svc = services.get(app) or Service(app, None, banner=f"the {app} service is not configured")
            with gr.Tab(TITLES[app], id=app, elem_id=f"tab-{app}"):
                if svc.banner:
                    gr.Markdown(f"**{svc.banner}**", elem_classes=[BANNER_CLASS], elem_id=f"banner-{app}")
                BUILDERS[app](svc)
        with gr.Tab("Models", id="models", elem_id="tab-models"):
            models.build(services)
        page.load(lambda: status_table(services), [], [status])
    return page


def launch(
    page: gr.Blocks, services: dict[str, Service], *, host: str = "127.0.0.1", port: int = 7860, block: bool = True
):
    """Serve ``page``; the services' report directories are readable through it (links of the Models tab)."""
    allowed = sorted(
        {str(s.home / "reports") for s in services.values() if s.home is not None and (s.home / "reports").is_dir()}
    )
    return page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=True,
        show_error=False,
        ssr_mode=False,
        allowed_paths=[str(Path(p)) for p in allowed],
        theme=theme(),
        css=CSS,
        footer_links=[],
    )

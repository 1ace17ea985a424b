"""``python -m console`` (``make ui``): start the apps' services and the console on http://127.0.0.1:7860.

``--url APP=URL`` uses a service that is already running instead of starting one. Ctrl-C (or SIGTERM) stops the
console and every service it started.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import typer

from console.services import APPS, Service

app = typer.Typer(add_completion=False, help=__doc__)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@app.command()
def main(
    host: str = typer.Option("127.0.0.1", "--host", help="the console's address (loopback by default)"),
    port: int = typer.Option(7860, "--port", help="the console's port"),
    only: str = typer.Option(",".join(APPS), "--apps", help="apps to start, comma-separated"),
    url: list[str] = typer.Option([], "--url", help="APP=URL: use this running service instead of starting one"),
) -> None:
    """Start each app's service (its champion, else the demo's model) and the console; Ctrl-C stops all."""
    from common.config import get_settings
    from common.serving import is_loopback
    from console import launcher, ui

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    wanted = tuple(a.strip() for a in only.split(",") if a.strip())
    unknown = [a for a in wanted if a not in APPS]
    given: dict[str, str] = {}
    for item in url:
        name, _, value = item.partition("=")
        if name not in APPS or not value:
            unknown.append(item)
        given[name] = value
    if unknown:
        typer.echo(f"error: unknown app(s) {', '.join(unknown)}; apps: {', '.join(APPS)}", err=True)
        raise typer.Exit(2)
    if not is_loopback(host):
        logging.warning("the console listens on %s: anyone who can reach it can use every service through it", host)
    home = get_settings().home.expanduser().resolve()
    services = launcher.plan(home, tuple(a for a in wanted if a not in given))
    services |= {a: Service(a, u) for a, u in given.items()}
    signal.signal(signal.SIGTERM, _interrupt)
    with launcher.start(services, Path(home) / "console" / "logs") as stack:
        stack.wait_ready([a for a in stack.processes if a != "chatbot"])
        for name, svc in services.items():
            typer.echo(f"{name}: {svc.url or '-'}{'  [' + svc.banner + ']' if svc.banner else ''}", err=True)
        page = ui.build_console(services)
        typer.echo(f"console: http://{host}:{port} (Ctrl-C stops it and the services)", err=True)
        try:
            ui.launch(page, services, host=host, port=port, block=True)
        except KeyboardInterrupt:
            pass
        finally:
            page.close()


if __name__ == "__main__":
    app()

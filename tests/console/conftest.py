"""Fixtures of the console's browser tests: tiny registered models of four apps served by the launcher (real
processes, real HTTP, an API key set), the console on a free loopback port, and Debian's Chromium driven by
Playwright.

Without /usr/bin/chromium or the playwright package the browser tests are skipped with one line saying what to
install, except under CI=true, where that is a failure. ``MLREF_SCREENSHOTS=DIR`` (``make screenshots``) copies
each test's screenshot to DIR as a small palette PNG.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("MLREF_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
API_KEY = "console-test-key-0123456789"
APPS = ("recommender", "fraud", "vision", "maintenance")
VIEWPORT = {"width": 1280, "height": 900}


def require_browser() -> None:
    """Skip (fail under CI=true) when Chromium or Playwright is missing."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is missing (pip install -r requirements/main.txt)")
    if problems:
        msg = "console browser tests need " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def console_home(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Path:
    """A registry with tiny models of four apps (the recommender twice)."""
    require_browser()
    from tests.console import world

    home = tmp_path_factory.mktemp("console-home")
    shutil.copyfile(mlflow_db_template, home / "mlflow.db")
    (home / "reports").mkdir()
    (home / "reports" / "index.html").write_text("<html><body><h1>mlref reports</h1></body></html>")
    return world.build(home, APPS)


@pytest.fixture(scope="session")
def services(console_home: Path) -> Iterator[dict[str, Any]]:
    """The four services started by the launcher from ``console_home``, each requiring API_KEY."""
    from console import launcher

    planned = launcher.plan(console_home, APPS)
    for svc in planned.values():
        svc.api_key = API_KEY
    with launcher.start(planned, console_home / "console" / "logs") as stack:
        stack.wait_ready(list(stack.processes), timeout_s=240)
        not_ready = {a: s.banner for a, s in planned.items() if s.banner or a not in stack.processes}
        assert not not_ready, not_ready
        yield planned


class Console:
    """A console page served on a free port; ``close()`` stops it."""

    def __init__(self, services: dict[str, Any]) -> None:
        from common.serving import free_port
        from console import ui

        self.page = ui.build_console(services)
        self.port = free_port()
        ui.launch(self.page, services, port=self.port, block=False)
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.page.close()


@pytest.fixture(scope="session")
def console(services: dict[str, Any]) -> Iterator[Console]:
    c = Console(services)
    yield c
    c.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser page that records console errors and uncaught exceptions (``errors``)."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.errors: list[str] = []
        self.page = self._open()

    def _open(self) -> Any:
        page = self.context.new_page()
        page.set_default_timeout(60_000)
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        return page

    def fresh(self) -> Any:
        """Close the page and open a new one: leaving a Gradio page by navigating aborts its event stream, which
        Gradio logs as an error; closing the page does not."""
        self.page.close()
        self.page = self._open()
        return self.page

    def shot(self, path: Path, *, full_page: bool = False) -> Path:
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def small_png(src: Path, dst: Path) -> None:
    """``src`` as a 256-colour PNG (screenshots of flat UI: a fraction of the size, the same look)."""
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


@pytest.fixture
def page(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; after the test: its screenshot in tmp_path (and MLREF_SCREENSHOTS), no browser errors."""
    p = Page(browser)
    yield p
    name = request.node.name.removeprefix("test_")
    shot = p.shot(tmp_path / f"{name}.png")
    out = os.environ.get("MLREF_SCREENSHOTS")
    if out and getattr(request.node, "screenshot_name", None):
        Path(out).mkdir(parents=True, exist_ok=True)
        small_png(shot, Path(out) / f"{request.node.screenshot_name}.png")
    p.context.close()
    assert not p.errors, f"browser console errors: {p.errors}"

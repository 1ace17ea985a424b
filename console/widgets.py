"""Pieces every tab uses: the notice box, the guard that turns a failed call into a notice, small figures."""

from __future__ import annotations

import functools
import logging
import textwrap
from collections.abc import Callable
from typing import Any

import gradio as gr
from matplotlib.figure import Figure

from console.client import ServiceError

log = logging.getLogger(__name__)
NOTICE_CLASS = "mlref-notice"
BANNER_CLASS = "mlref-banner"


def notice_box() -> gr.Markdown:
    """An (initially empty) markdown line where a tab's errors appear."""
    return gr.Markdown("", elem_classes=[NOTICE_CLASS])


def warn(text: str) -> str:
    return f"⚠️ {text}"


def guarded(box: gr.Markdown) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorate a handler that returns ``{component: value}``: a :class:`ServiceError` (or any other failure)
    becomes a readable notice in ``box`` and nothing else changes; success clears ``box``."""

    def deco(fn: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> dict:
            try:
                out = fn(*args, **kwargs)
            except ServiceError as exc:
                return {box: warn(str(exc))}
            except ValueError as exc:  # the user's input, checked by the console before any call
                return {box: warn(str(exc))}
            except Exception as exc:
                log.exception("console handler %s failed", fn.__name__)
                return {box: warn(f"the console failed: {type(exc).__name__}: {exc}")}
            out.setdefault(box, "")
            return out

        return wrapper

    return deco


def small_figure(width: float = 6.0, height: float = 3.0) -> tuple[Figure, Any]:
    """A matplotlib figure without pyplot (no global backend) and its axes."""
    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    return fig, fig.add_subplot()


def signed_bars(labels: list[str], values: list[float], title: str, xlabel: str) -> Figure:
    """Horizontal bars, red for positive values and blue for negative, largest on top."""
    fig, ax = small_figure(7.5, 0.55 * max(len(labels), 2) + 1.2)
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, values, color=["#c0392b" if v > 0 else "#2e86c1" for v in values])
    ax.set_yticks(ys, [textwrap.fill(label, 38) for label in labels], fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(textwrap.fill(xlabel, 70), fontsize=8)
    fig.suptitle(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    return fig

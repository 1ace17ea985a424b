"""Markdown reports as HTML pages a browser shows: ``report.md`` -> ``report.html`` beside it.

:func:`render_html` turns a report's markdown (CommonMark plus GitHub tables, rendered by ``markdown-it-py``) into
one page with its CSS inline. Raw HTML in the markdown is shown as text, never passed through: reports quote names
users chose (datasets, columns, intents), and a dataset called ``<script>...`` must stay text. Links keep
markdown-it's URL check (no ``javascript:``). Figures stay relative ``<img src="drift.png">`` links, so the page
shows them when it sits beside them, as it always does in a report directory.
"""

from __future__ import annotations

import html
from functools import lru_cache

from markdown_it import MarkdownIt

CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;line-height:1.5;color:#1f2328;"
    "max-width:70em;margin:2em auto;padding:0 1.5em}"
    "h1,h2,h3{line-height:1.25}h1{border-bottom:1px solid #d0d7de;padding-bottom:.3em}"
    "h2{border-bottom:1px solid #eaeef2;padding-bottom:.2em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto}"
    "th,td{border:1px solid #d0d7de;padding:4px 10px;vertical-align:top}"
    "th{background:#f6f8fa}tr:nth-child(even) td{background:#fbfcfd}"
    "img{max-width:100%;height:auto}"
    "code{background:#f6f8fa;padding:.1em .3em;border-radius:4px;font-size:90%}"
    "pre{background:#f6f8fa;padding:1em;overflow-x:auto}pre code{padding:0}"
    "nav,footer{font-size:90%;color:#59636e}a{color:#0969da}"
)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # "commonmark" + tables and strikethrough; html=False turns raw HTML into escaped text
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def title_of(markdown: str, default: str = "report") -> str:
    """The first ``# `` heading of ``markdown`` (``default`` when there is none)."""
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or default
    return default


def render_html(
    markdown: str, *, title: str | None = None, index_href: str | None = None, source: str | None = None
) -> str:
    """A complete HTML page of ``markdown``: tables as tables, figures inline, raw HTML escaped.

    Args:
        title: the page's ``<title>`` (default: the first ``# `` heading).
        index_href: a link back to the reports index (relative), shown above the report.
        source: the markdown file's name, linked below the report.
    """
    title = title if title is not None else title_of(markdown)
    body = _parser().render(markdown)
    nav = f'<nav><a href="{html.escape(index_href)}">&larr; all reports</a></nav>\n' if index_href else ""
    foot = ""
    if source:
        foot = f'<footer><p>Markdown source: <a href="{html.escape(source)}">{html.escape(source)}</a></p></footer>\n'
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head><body>\n"
        f"{nav}<main>\n{body}</main>\n{foot}</body></html>\n"
    )

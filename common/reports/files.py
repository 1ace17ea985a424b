"""Formatting for reports (numbers, markdown tables) and their atomic writers (text, strict JSON, PNG figures): a
reader sees the previous version of a file or the complete new one, with the mode the umask gives. A markdown
report gets its HTML page beside it in the same call (``report.md`` -> ``report.html``, :mod:`.pages`)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common.config import get_settings
from common.data import atomic_path
from common.reports.pages import render_html

log = logging.getLogger(__name__)

REPORT_FILES = ("report.md", "drift.md")  # the page of a report directory, in order of preference
INDEX_HTML = "index.html"


def reports_root() -> Path:
    """``$MLREF_HOME/reports`` (not created)."""
    return get_settings().home.expanduser() / "reports"


# ------------------------------------------------------------------ formatting


def format_value(value: Any, digits: int = 4) -> str:
    """A value as table text: ints as is, floats to ``digits`` decimals (scientific if tiny), NaN as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and abs(v) < 10 ** (-digits + 1):
            return f"{v:.{max(digits - 1, 1)}e}"
        return f"{v:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    df: pd.DataFrame,
    *,
    digits: int = 4,
    index: bool = True,
    index_name: str | None = None,
    bold: Mapping[str, set[Any]] | None = None,
    right: Collection[str] = (),
) -> str:
    """Render ``df`` as a GitHub markdown table (no ``tabulate`` needed).

    Args:
        df: rows x columns; values formatted with :func:`format_value`.
        index: include the index as the first column (named ``index_name`` or ``df.index.name``).
        bold: column -> set of row labels whose cell is printed in bold (e.g. the best model per metric).
        right: columns to right-align although they hold text (numbers are right-aligned anyway).
    """
    bold = bold or {}
    headers = [str(c) for c in df.columns]
    if index:
        headers = [index_name or (str(df.index.name) if df.index.name is not None else ""), *headers]
    lines = ["| " + " | ".join(headers) + " |"]
    aligns = [":---"] if index else []
    aligns += ["---:" if pd.api.types.is_numeric_dtype(df[c]) or str(c) in right else ":---" for c in df.columns]
    lines.append("| " + " | ".join(aligns) + " |")
    for i, label in enumerate(df.index):
        cells = [format_value(label, digits)] if index else []
        for j, col in enumerate(df.columns):
            text = format_value(df.iat[i, j], digits)  # per cell: iterrows would upcast ints to float
            if label in bold.get(str(col), set()):
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _clean_float(float(obj))
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dt.datetime | dt.date | pd.Timestamp):
        return obj.isoformat()
    return str(obj)


def _clean_float(v: float) -> float | None:
    return None if (math.isnan(v) or math.isinf(v)) else v


def _clean(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float | np.floating):
        return _clean_float(float(obj))
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


# ------------------------------------------------------------------ atomic writers


def write_text(path: str | Path, text: str, *, html: bool | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    With ``html`` (default: for a markdown report, see :func:`is_report_markdown`) the HTML page of the markdown is
    then written beside it, atomically too (:func:`write_html`): like a build output it is never older than its
    source, which is how the index tells a stale page.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if html if html is not None else is_report_markdown(path):
        write_html(path, text)
    return path


def is_report_markdown(path: str | Path) -> bool:
    """Whether ``path`` is a report people open: ``report.md``/``drift.md`` anywhere, or any ``.md`` under
    :func:`reports_root` except the index (which has its own ``index.html``)."""
    path = Path(path)
    if path.suffix.lower() != ".md":
        return False
    if path.name in REPORT_FILES:
        return True
    root = reports_root()
    return _is_within(path, root) and path.resolve() != (root / "index.md").resolve()


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def write_html(md_path: str | Path, markdown: str | None = None) -> Path:
    """Render the markdown report ``md_path`` (its text ``markdown``, or the file) to ``<stem>.html`` beside it,
    atomically; a page under :func:`reports_root` links back to the index. Returns the HTML path."""
    md_path = Path(md_path)
    if markdown is None:
        markdown = md_path.read_text(encoding="utf-8")
    root = reports_root()
    index_href = None
    if _is_within(md_path, root):
        index_href = Path(os.path.relpath(root.resolve() / INDEX_HTML, md_path.parent.resolve())).as_posix()
    page = render_html(markdown, index_href=index_href, source=md_path.name)
    out = md_path.with_suffix(".html")
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf become null) to ``path`` atomically."""
    return write_text(path, json.dumps(_clean(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 110, close: bool = True) -> Path:
    """Save ``fig`` as PNG at ``path`` atomically; then close it (frees pyplot's reference) if ``close``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    if close and "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("._")
    return (stem or "figure").removesuffix(".png")

"""Evaluation reports: a markdown page (usable as a model card), the metrics as JSON, and PNG figures.

:func:`write_report` writes into ``out_dir``:

- ``<figure>.png`` for each figure (Agg, headless),
- ``metrics.json`` (machine-readable: metrics table, model info, figure names, timestamp),
- ``report.md`` last, so the markdown never links to a figure that is not there yet.

Every file is written atomically (temporary file beside it, then ``os.replace``): a reader sees the previous
version or the complete new one. The set of files is not replaced as one unit; a crash between files can leave
new figures next to the previous ``report.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")  # headless; never override a backend the user already chose

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common.data import atomic_path

log = logging.getLogger(__name__)

__all__ = ["write_report", "markdown_table", "format_value", "write_text", "write_json", "save_figure"]


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
) -> str:
    """Render ``df`` as a GitHub markdown table (no ``tabulate`` needed).

    Args:
        df: rows x columns; values formatted with :func:`format_value`.
        index: include the index as the first column (named ``index_name`` or ``df.index.name``).
        bold: column -> set of row labels whose cell is printed in bold (e.g. the best model per metric).
    """
    bold = bold or {}
    headers = [str(c) for c in df.columns]
    if index:
        headers = [index_name or (str(df.index.name) if df.index.name is not None else "")] + headers
    lines = ["| " + " | ".join(headers) + " |"]
    aligns = [":---"] if index else []
    aligns += ["---:" if pd.api.types.is_numeric_dtype(df[c]) else ":---" for c in df.columns]
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


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


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


# ------------------------------------------------------------------ the report


def _metrics_frame(metrics: pd.DataFrame | Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Rows = models (or datasets/splits), columns = metric names."""
    if isinstance(metrics, pd.DataFrame):
        df = metrics.copy()
        if "model" in df.columns and isinstance(df.index, pd.RangeIndex):
            df = df.set_index("model")
        if df.index.name is None:
            df.index.name = "model"
        return df
    df = pd.DataFrame.from_dict({str(k): dict(v) for k, v in metrics.items()}, orient="index")
    df.index.name = "model"
    return df


def _best_rows(df: pd.DataFrame, higher_is_better: Mapping[str, bool]) -> dict[str, set[Any]]:
    best: dict[str, set[Any]] = {}
    for col, higher in higher_is_better.items():
        if col not in df.columns or not pd.api.types.is_numeric_dtype(df[col]) or df[col].isna().all():
            continue
        target = df[col].max() if higher else df[col].min()
        best[str(col)] = set(df.index[df[col] == target])
    return best


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    metrics: pd.DataFrame | Mapping[str, Mapping[str, float]],
    figures: Mapping[str, Figure | str | Path] | None = None,
    sections: Mapping[str, str] | None = None,
    model_info: Mapping[str, Any] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    digits: int = 4,
    close_figures: bool = True,
) -> Path:
    """Write an evaluation report / model card into ``out_dir``; returns the path of ``report.md``.

    Args:
        out_dir: created if missing; files in it with the same names are replaced (each atomically).
        title: the page title (``# title``).
        metrics: rows = models (champion, baselines ...) x columns = metric names; a DataFrame (index = model
            name, or a ``model`` column) or ``{model: {metric: value}}``.
        figures: name -> matplotlib Figure (saved as ``<name>.png``) or path of an existing PNG (copied).
        sections: heading -> markdown body, in order (e.g. "Intended use", "Data", "Limitations").
        model_info: key -> value shown under "Model details" (name, version, data fingerprint, params ...).
        higher_is_better: metric -> direction; the best value of each listed metric is printed in bold.
        digits: decimals for floats in the table.
        close_figures: close matplotlib figures after saving them.

    Files: ``report.md``, ``metrics.json`` and ``<figure>.png`` per figure.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = _metrics_frame(metrics)
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()

    fig_files: dict[str, str] = {}
    for name, fig in (figures or {}).items():
        fname = f"{_safe_name(name)}.png"
        if isinstance(fig, str | Path):
            src = Path(fig)
            with atomic_path(out / fname) as tmp:
                shutil.copyfile(src, tmp)
        else:
            save_figure(fig, out / fname, close=close_figures)
        fig_files[name] = fname

    write_json(
        out / "metrics.json",
        {
            "title": title,
            "created_at": created,
            "metrics": {str(k): v for k, v in table.to_dict(orient="index").items()},
            "model_info": dict(model_info or {}),
            "figures": fig_files,
        },
    )

    md = [f"# {title}", "", f"_Generated {created}_", ""]
    if model_info:
        md += ["## Model details", "", "| field | value |", "| :--- | :--- |"]
        md += [f"| {format_value(k)} | {format_value(v, digits)} |" for k, v in model_info.items()]
        md.append("")
    md += [
        "## Metrics",
        "",
        markdown_table(table, digits=digits, bold=_best_rows(table, higher_is_better or {})),
    ]
    if higher_is_better:
        md += ["", "Best value per metric in bold."]
    md.append("")
    for heading, body in (sections or {}).items():
        md += [f"## {heading}", "", body.strip(), ""]
    if fig_files:
        md += ["## Figures", ""]
        for name, fname in fig_files.items():
            md += [f"### {name}", "", f"![{name}]({fname})", ""]
    path = write_text(out / "report.md", "\n".join(md).rstrip() + "\n")
    log.info("report written: %s (%d rows, %d figures)", path, len(table), len(fig_files))
    return path

"""The evaluation report / model card: :func:`write_report` writes figures, ``metrics.json`` and ``report.md``
(model details, data, metrics against baselines with their spread, figures, limitations) into a run directory;
:func:`data_summary` is the per-column table of its "Data" section."""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common.data import atomic_path
from common.reports.files import _safe_name, format_value, markdown_table, save_figure, write_json, write_text
from common.reports.index import _read_json, publish

log = logging.getLogger(__name__)


def data_summary(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per column of ``frame``: dtype, non-null count, missing share, distinct values, and min / median /
    max for numeric columns (NaN otherwise). For the "Data" table of a model card."""
    rows = []
    for name in columns if columns is not None else frame.columns:
        s = frame[name]
        numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        x = pd.to_numeric(s, errors="coerce") if numeric else None
        rows.append(
            {
                "column": str(name),
                "dtype": str(s.dtype),
                "non_null": int(s.notna().sum()),
                "missing_share": float(s.isna().mean()) if len(s) else 0.0,
                "distinct": int(s.nunique(dropna=True)),
                "min": float(x.min()) if x is not None and x.notna().any() else np.nan,
                "median": float(x.median()) if x is not None and x.notna().any() else np.nan,
                "max": float(x.max()) if x is not None and x.notna().any() else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("column") if rows else pd.DataFrame()


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


def _interval_columns(df: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    """metric -> its companion columns: ``(m_std,)`` or ``(m_lo, m_hi)``."""
    out: dict[str, tuple[str, ...]] = {}
    for c in map(str, df.columns):
        if f"{c}_std" in df.columns:
            out[c] = (f"{c}_std",)
        elif f"{c}_lo" in df.columns and f"{c}_hi" in df.columns:
            out[c] = (f"{c}_lo", f"{c}_hi")
    return out


def _display_table(
    table: pd.DataFrame, digits: int, baselines: Collection[str], champion: str | None
) -> tuple[pd.DataFrame, bool]:
    """The metrics table as text: ``mean ± std`` or ``value [lo, hi]`` cells; a ``role`` column when roles are
    known. Returns (table, whether any interval was merged)."""
    pairs = _interval_columns(table)
    companions = {c for cs in pairs.values() for c in cs}
    shown = [c for c in map(str, table.columns) if c not in companions]
    out = pd.DataFrame(index=table.index)
    if baselines or champion:
        out["role"] = [
            "champion" if str(i) == champion else "baseline" if str(i) in set(map(str, baselines)) else "candidate"
            for i in table.index
        ]
    for c in shown:
        cells = []
        for i in range(len(table)):
            text = format_value(table[c].iat[i], digits)
            extra = [table[x].iat[i] for x in pairs.get(c, ())]
            if len(extra) == 1 and text != "-" and not _missing(extra[0]):
                text += f" ± {format_value(extra[0], digits)}"
            elif len(extra) == 2 and text != "-" and not any(map(_missing, extra)):
                text += f" [{format_value(extra[0], digits)}, {format_value(extra[1], digits)}]"
            cells.append(text)
        out[c] = pd.Series(cells, index=table.index, dtype=object)
    return out, bool(pairs)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float | np.floating) and math.isnan(v))


def _facts_table(facts: Mapping[str, Any], digits: int) -> list[str]:
    lines = ["| field | value |", "| :--- | ---: |"]
    return lines + [f"| {format_value(k)} | {format_value(v, digits)} |" for k, v in facts.items()]


def _remove_stale_figures(out: Path, keep: set[str]) -> None:
    """Delete the figures an earlier report in ``out`` listed that the new one does not produce."""
    old = _read_json(out / "metrics.json").get("figures")
    if not isinstance(old, dict):
        return
    for fname in set(map(str, old.values())) - keep:
        stale = out / Path(fname).name
        if stale.suffix == ".png":
            stale.unlink(missing_ok=True)


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
    intended_use: str | None = None,
    limitations: str | None = None,
    data: Mapping[str, Any] | None = None,
    data_columns: pd.DataFrame | None = None,
    baselines: Collection[str] = (),
    champion: str | None = None,
    interval_note: str | None = None,
) -> Path:
    """Write an evaluation report / model card into ``out_dir``; returns the path of ``report.md``.

    Args:
        out_dir: a run directory (:func:`new_report_dir`), created if missing. Figures an earlier report in the
            same directory listed and this one does not are deleted, so no stale figure stays beside the page.
        title: the page title (``# title``).
        metrics: rows = models (champion, baselines ...) x columns = metric names; a DataFrame (index = model
            name, or a ``model`` column) or ``{model: {metric: value}}``. A column ``m_std`` (or ``m_lo`` and
            ``m_hi``) is shown in the same cell as ``m``: ``0.70 ± 0.02`` (``0.45 [0.43, 0.47]``).
        figures: name -> matplotlib Figure (saved as ``<name>.png``) or path of an existing PNG (copied).
        sections: heading -> markdown body, in order (protocol, selected parameters ...).
        model_info: key -> value shown under "Model details" (name, version, data fingerprint, params ...).
        higher_is_better: metric -> direction; the best value of each listed metric is printed in bold.
        digits: decimals for floats in the tables.
        close_figures: close matplotlib figures after saving them.
        intended_use / limitations: the model card's sections of those names.
        data: dataset facts (rows, time span, positive rate ...) shown as a table under "Data".
        data_columns: a per-column profile (:func:`data_summary`) shown under "Data".
        baselines / champion: row names; adds a ``role`` column (champion, baseline, candidate).
        interval_note: what ``±`` / ``[lo, hi]`` mean (e.g. "std over 4 prequential test folds").

    Files: ``report.md``, ``metrics.json`` and ``<figure>.png`` per figure. When ``out_dir`` lies under
    :func:`reports_root`, the ``latest`` link and the index are updated (:func:`publish`).
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
    _remove_stale_figures(out, set(fig_files.values()))

    write_json(
        out / "metrics.json",
        {
            "title": title,
            "created_at": created,
            "metrics": {str(k): v for k, v in table.to_dict(orient="index").items()},
            "model_info": dict(model_info or {}),
            "champion": champion,
            "baselines": sorted(map(str, baselines)),
            "data": dict(data or {}),
            "figures": fig_files,
        },
    )

    md = [f"# {title}", "", f"_Generated {created}_", ""]
    if model_info:
        md += ["## Model details", "", "| field | value |", "| :--- | :--- |"]
        md += [f"| {format_value(k)} | {format_value(v, digits)} |" for k, v in model_info.items()]
        md.append("")
    if intended_use:
        md += ["## Intended use", "", intended_use.strip(), ""]
    if data or data_columns is not None:
        md += ["## Data", ""]
        if data:
            md += [*_facts_table(data, digits), ""]
        if data_columns is not None and len(data_columns):
            md += [markdown_table(data_columns, digits=digits), ""]
    shown, merged = _display_table(table, digits, baselines, champion)
    best = _best_rows(table, higher_is_better or {})
    md += [
        "## Metrics",
        "",
        markdown_table(shown, digits=digits, bold=best, right=[c for c in shown.columns if c != "role"]),
    ]
    notes = []
    if merged:
        notes.append(interval_note or "± = standard deviation; [lo, hi] = interval")
    if higher_is_better:
        notes.append("best value per metric in bold")
    if notes:
        md += ["", "; ".join(notes).capitalize() + "."]
    md.append("")
    for heading, body in (sections or {}).items():
        md += [f"## {heading}", "", body.strip(), ""]
    if fig_files:
        md += ["## Figures", ""]
        for name, fname in fig_files.items():
            md += [f"### {name}", "", f"![{name}]({fname})", ""]
    if limitations:
        md += ["## Limitations", "", limitations.strip(), ""]
    path = write_text(out / "report.md", "\n".join(md).rstrip() + "\n")
    log.info("report written: %s (%d rows, %d figures)", path, len(table), len(fig_files))
    publish(out)
    return path

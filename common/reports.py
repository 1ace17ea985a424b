"""Reports people can browse: evaluation reports / model cards, PR and calibration curves, and an index.

Layout under ``$MLREF_HOME/reports`` (:func:`new_report_dir`)::

    reports/index.md, index.html                 every report below, newest first (rebuilt after each report)
    reports/<app>/<dataset>/<kind>/<run>/        one directory per run, never reused: report.md (or drift.md),
                                                 metrics.json, <figure>.png ...
    reports/<app>/<dataset>/<kind>/latest        symlink to the newest run directory of that kind

``<run>`` is the UTC start time (``20261129T070532Z``, ``-2``, ``-3`` ... when two runs share a second) or
``<time>-<run id>``. ``<kind>`` is ``evaluation``, ``monitor``, ``bench`` ...

:func:`write_report` writes into a run directory ``<figure>.png`` for each figure, ``metrics.json``
(machine-readable: metrics, model info, figure names, timestamp) and ``report.md`` last, so the markdown never
links to a figure that is not there yet; then it points ``latest`` at the run and rebuilds the index.

Every file is written atomically (temporary file beside it, then ``os.replace``) with the mode the umask gives
(``0644`` under umask 022): a reader sees the previous version or the complete new one. Figures are
``matplotlib.figure.Figure`` objects rendered by the Agg canvas; nothing here touches pyplot's global state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common.config import get_settings
from common.data import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "REPORT_FILES",
    "bootstrap_intervals",
    "calibration_figure",
    "data_summary",
    "dataset_slug",
    "format_value",
    "markdown_table",
    "new_report_dir",
    "pr_curve_figure",
    "precision_recall_points",
    "publish",
    "reliability_table",
    "reports_root",
    "save_figure",
    "update_index",
    "write_json",
    "write_report",
    "write_text",
]

REPORT_FILES = ("report.md", "drift.md")  # the page of a report directory, in order of preference
LATEST = "latest"
_RUN_RE = re.compile(r"^\d{8}T\d{6}Z(?:-[A-Za-z0-9_.-]+)?$")


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


# ------------------------------------------------------------------ where reports go


def reports_root() -> Path:
    """``$MLREF_HOME/reports`` (not created)."""
    return get_settings().home.expanduser() / "reports"


def dataset_slug(name: str | Path | None) -> str:
    """A directory name for a dataset: the file name without ``.csv``/``.parquet``/``.gz`` ..., lower case, runs
    of other characters as ``-`` (``~/data/My Shop.csv.gz`` -> ``my-shop``, ``ml-100k`` -> ``ml-100k``)."""
    text = str(name or "").strip()
    base = Path(text).name if ("/" in text or "\\" in text) else text
    lowered = base.lower()
    for suffix in (".gz", ".bz2", ".zip", ".csv", ".tsv", ".txt", ".parquet", ".pq"):
        lowered = lowered.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]+", "-", lowered).strip("-") or "dataset"


def new_report_dir(
    app: str,
    dataset: str | Path | None,
    kind: str = "evaluation",
    *,
    run_id: str | None = None,
    root: str | Path | None = None,
) -> Path:
    """Create and return a fresh directory ``<root>/<app>/<dataset>/<kind>/<UTC time>[-<run id>]``.

    ``root`` defaults to :func:`reports_root`. The directory never existed before (a counter is appended when two
    runs start in the same second), so a report never lands beside the figures of an older one.
    """
    parent = Path(root) if root is not None else reports_root()
    parent = parent / _safe_part(app) / dataset_slug(dataset) / _safe_part(kind)
    parent.mkdir(parents=True, exist_ok=True)
    base = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if run_id:
        base += "-" + _safe_part(run_id)
    for n in range(1, 10_000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"no free report directory name under {parent}")  # pragma: no cover - 10k runs a second


def _safe_part(text: str) -> str:
    part = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text).strip()).strip("._")
    return part or "unnamed"


def _run_key(name: str) -> tuple[str, int, str]:
    """Sort key of run directory names: time, then the same-second counter as a number."""
    stamp, _, rest = name.partition("-")
    counter = int(rest.rsplit("-", 1)[-1]) if rest.rsplit("-", 1)[-1].isdigit() else 1
    return stamp, counter, name


def _report_page(directory: Path) -> Path | None:
    return next((directory / f for f in REPORT_FILES if (directory / f).is_file()), None)


def _point_latest(parent: Path) -> Path | None:
    """Point ``parent/latest`` at the newest run directory under ``parent`` that holds a report page."""
    runs = [
        d.name
        for d in parent.iterdir()
        if d.is_dir() and not d.is_symlink() and _RUN_RE.match(d.name) and _report_page(d)
    ]
    if not runs:
        return None
    newest = max(runs, key=_run_key)
    link = parent / LATEST
    tmp = parent / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(newest, tmp, target_is_directory=True)  # relative: the tree can be moved or copied
        os.replace(tmp, link)
    except OSError as exc:  # e.g. a file system without symlinks: the index still lists every run
        tmp.unlink(missing_ok=True)
        log.warning("could not point %s at %s: %s", link, newest, exc)
        return None
    return link


def publish(out_dir: str | Path) -> Path | None:
    """After a report was written to ``out_dir``: point the ``latest`` link of its kind at the newest run and
    rebuild the index of :func:`reports_root`. Returns the index path; ``None`` when ``out_dir`` lies elsewhere
    (a report written to any other directory is left alone)."""
    out = Path(out_dir)
    root = reports_root()
    try:
        out.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    if _RUN_RE.match(out.name):
        _point_latest(out.parent)
    return update_index(root)


# ------------------------------------------------------------------ the index


def _first_line(path: Path, prefix: str) -> str | None:
    with contextlib.suppress(OSError), path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _summary(directory: Path, page: Path) -> str:
    """One line about a report: the alerts of a monitoring run, or the rows of an evaluation."""
    if page.name == "drift.md":
        verdict = _read_json(directory / "monitor.json")
        if "alerts" in verdict:
            alerts = verdict["alerts"] or []
            if not alerts:
                return "no alert"
            return f"{len(alerts)} alert(s): {alerts[0]}" + (" ..." if len(alerts) > 1 else "")
        drift = _read_json(directory / "drift.json")
        return {True: "drift", False: "no drift"}.get(drift.get("drift"), "")
    metrics = _read_json(directory / "metrics.json").get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return ""
    names = list(map(str, metrics))
    return f"{len(names)} model(s): " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def _entries(root: Path) -> list[dict[str, Any]]:
    out = []
    for dirpath, dirnames, _ in os.walk(root):  # symlinks (``latest``) are not followed: each run listed once
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        d = Path(dirpath)
        page = _report_page(d)
        if page is None or d == root:
            continue
        rel = d.relative_to(root)
        parts = rel.parts
        app, dataset, kind = (parts[0], parts[1], parts[2]) if len(parts) == 4 else (parts[0], "-", "-")
        created = _first_line(page, "_Generated ")
        created = (
            created.rstrip("_")
            if created
            else dt.datetime.fromtimestamp(page.stat().st_mtime, dt.UTC).replace(microsecond=0).isoformat()
        )
        out.append(
            {
                "created": created,
                "app": app,
                "dataset": dataset,
                "kind": kind,
                "dir": rel.as_posix(),
                "page": (rel / page.name).as_posix(),
                "title": _first_line(page, "# ") or page.name,
                "summary": _summary(d, page),
                "figures": sorted(f.name for f in d.glob("*.png")),
            }
        )
    out.sort(key=lambda e: (e["created"], e["dir"]), reverse=True)
    return out


def update_index(root: str | Path | None = None) -> Path:
    """Rebuild ``index.md`` and ``index.html`` in ``root`` (default :func:`reports_root`): every directory below
    that holds a ``report.md`` or ``drift.md``, newest first. Returns the path of ``index.md``."""
    root = Path(root) if root is not None else reports_root()
    root.mkdir(parents=True, exist_ok=True)
    entries = _entries(root)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    md = [
        "# Reports",
        "",
        f"_Updated {now}; {len(entries)} report(s), newest first. The `latest` link in each "
        "`<app>/<dataset>/<kind>/` directory points at its newest run._",
        "",
    ]
    if entries:
        md += [
            "| created (UTC) | app | dataset | kind | report | summary |",
            "| :--- | :--- | :--- | :--- | :--- | :--- |",
        ]
        md += [
            f"| {e['created']} | {format_value(e['app'])} | {format_value(e['dataset'])} | "
            f"{format_value(e['kind'])} | [{format_value(e['title'])}]({e['page']}) | "
            f"{format_value(e['summary'])} |"
            for e in entries
        ]
    write_text(root / "index.md", "\n".join(md) + "\n")

    def cell(text: str) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    rows = []
    for e in entries:
        thumbs = " ".join(
            f'<a href="{html.escape(e["dir"])}/{html.escape(f)}"><img src="{html.escape(e["dir"])}/'
            f'{html.escape(f)}" alt="{html.escape(f)}" height="60"></a>'
            for f in e["figures"]
        )
        rows.append(
            "<tr>"
            + cell(e["created"])
            + cell(e["app"])
            + cell(e["dataset"])
            + cell(e["kind"])
            + f'<td><a href="{html.escape(e["page"])}">{html.escape(e["title"])}</a></td>'
            + cell(e["summary"])
            + f"<td>{thumbs}</td></tr>"
        )
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>mlref reports</title>\n'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}</style></head><body>\n"
        f"<h1>Reports</h1>\n<p>Updated {html.escape(now)}; {len(entries)} report(s), newest first.</p>\n"
        "<table>\n<tr><th>created (UTC)</th><th>app</th><th>dataset</th><th>kind</th><th>report</th>"
        "<th>summary</th><th>figures</th></tr>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n"
    )
    write_text(root / "index.html", page)
    return root / "index.md"


# ------------------------------------------------------------------ data summary and intervals


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


def bootstrap_intervals(
    n: int,
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    *,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over ``n`` independent units (users, cards ...).

    ``statistic(indices)`` computes named metrics on the units at ``indices`` (shape ``(n,)``, drawn with
    replacement); it is called ``n_boot`` times and each metric gets the ``alpha / 2`` and ``1 - alpha / 2``
    quantiles of its values: ``{name: (lo, hi)}``, a ``1 - alpha`` interval for the metric on the full set.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one unit")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        for name, value in statistic(rng.integers(0, n, n)).items():
            draws.setdefault(name, []).append(float(value))
    out = {}
    for name, values in draws.items():
        lo, hi = np.nanquantile(np.asarray(values), [alpha / 2, 1 - alpha / 2])
        out[name] = (float(lo), float(hi))
    return out


# ------------------------------------------------------------------ classifier curves


def _binary(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel().astype(float)
    s = np.asarray(y_score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values, y_score {s.size}")
    ok = np.isfinite(s) & np.isfinite(y)
    y, s = y[ok], s[ok]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be binary (0/1)")
    return y, s


def precision_recall_points(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(recall, precision)`` at every distinct score threshold, highest first, starting at recall 0 /
    precision 1 (each array of shape ``(n_thresholds + 1,)``); the area under the step curve is the average
    precision. Raises ``ValueError`` without a positive."""
    y, s = _binary(y_true, y_score)
    n_pos = y.sum()
    if n_pos == 0:
        raise ValueError("precision-recall curve needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    return np.r_[0.0, tp / n_pos], np.r_[1.0, precision]


def reliability_table(y_true: Any, y_prob: Any, n_bins: int = 10, strategy: str = "quantile") -> pd.DataFrame:
    """Calibration (reliability) table: predicted probabilities in ``n_bins`` bins (``quantile``: equal counts,
    ``uniform``: equal width on [0, 1]); per bin ``n``, ``mean_predicted``, ``observed_rate`` (share of
    positives) and its 95 % Wilson interval ``lo``/``hi``. Empty bins are dropped."""
    y, p = _binary(y_true, y_prob)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    z = 1.959963984540054
    for b in np.unique(idx):
        m = idx == b
        n = int(m.sum())
        rate = float(y[m].mean())
        centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        rows.append(
            {
                "bin": int(b),
                "n": n,
                "mean_predicted": float(p[m].mean()),
                "observed_rate": rate,
                "lo": max(0.0, centre - half),
                "hi": min(1.0, centre + half),
            }
        )
    return pd.DataFrame(rows, columns=["bin", "n", "mean_predicted", "observed_rate", "lo", "hi"])


def pr_curve_figure(curves: Mapping[str, tuple[Any, Any]], title: str = "Precision-recall") -> Figure:
    """Precision-recall curves, one per ``name -> (y_true, y_score)``, average precision in the legend, and the
    positive rate (what a random ranking reaches) as a dotted line."""
    from common.metrics.classification import average_precision

    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    rate = None
    for name, (y, s) in curves.items():
        recall, precision = precision_recall_points(y, s)
        ax.step(recall, precision, where="post", lw=1.4, label=f"{name} (AP {average_precision(*_binary(y, s)):.3f})")
        rate = float(np.mean(_binary(y, s)[0]))
    if rate is not None:
        ax.axhline(rate, color="0.5", ls=":", lw=1, label=f"random ({rate:.3g})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def calibration_figure(
    curves: Mapping[str, tuple[Any, Any]],
    n_bins: int = 10,
    strategy: str = "quantile",
    title: str = "Calibration (reliability)",
) -> Figure:
    """Reliability diagram per ``name -> (y_true, y_prob)``: observed positive rate (95 % Wilson interval) vs
    mean predicted probability per bin (:func:`reliability_table`), the diagonal = perfect calibration, expected
    calibration error (10 equal-width bins) in the legend; below, the distribution of the predictions."""
    from common.metrics.classification import expected_calibration_error

    fig = Figure(figsize=(6, 6))
    ax, hist = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top = 0.0
    for name, (y, p) in curves.items():
        yy, pp = _binary(y, p)
        t = reliability_table(yy, pp, n_bins, strategy)
        err = np.clip(np.vstack([t["observed_rate"] - t["lo"], t["hi"] - t["observed_rate"]]), 0, None)
        ece = expected_calibration_error(yy, np.clip(pp, 0, 1))
        ax.errorbar(
            t["mean_predicted"],
            t["observed_rate"],
            yerr=err,
            marker="o",
            ms=4,
            lw=1.2,
            capsize=2,
            label=f"{name} (ECE {ece:.3f})",
        )
        hist.hist(pp, bins=50, range=(0, 1), histtype="step", label=name)
        top = max(top, float(t["hi"].max()), float(t["mean_predicted"].max()))
    lim = min(1.0, max(0.05, top * 1.1))
    ax.plot([0, lim], [0, lim], color="0.5", ls="--", lw=1, label="perfectly calibrated")
    ax.set(ylabel="observed positive rate", xlim=(0, lim), ylim=(0, lim), title=title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    hist.set(xlabel="predicted probability", ylabel="rows", yscale="log")
    fig.tight_layout()
    return fig


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

"""Where reports go and the index of them all: ``reports/<app>/<dataset>/<kind>/<run>/``, the ``latest`` link of
each kind, and ``reports/index.md`` / ``index.html`` (newest first), rebuilt by :func:`publish`."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from common.reports.files import REPORT_FILES, format_value, reports_root, write_html, write_text

log = logging.getLogger(__name__)

__all__ = ["LATEST", "REPORT_FILES", "dataset_slug", "new_report_dir", "publish", "reports_root", "update_index"]

LATEST = "latest"
_RUN_RE = re.compile(r"^\d{8}T\d{6}Z(?:-[A-Za-z0-9_.-]+)?$")


# ------------------------------------------------------------------ where reports go


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
        flag = drift.get("drift")
        return "drift" if flag is True else "no drift" if flag is False else ""
    metrics = _read_json(directory / "metrics.json").get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return ""
    names = list(map(str, metrics))
    return f"{len(names)} model(s): " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")


def _html_page(page: Path) -> str | None:
    """The name of the HTML page of the markdown report ``page``, rendered now when it is missing or older than
    the markdown (reports written before pages existed); ``None`` when it cannot be written."""
    target = page.with_suffix(".html")
    try:
        if not target.is_file() or target.stat().st_mtime < page.stat().st_mtime:
            write_html(page)
    except OSError as exc:  # e.g. a read-only copy of the tree: the index links the markdown instead
        log.warning("could not render %s: %s", target, exc)
        return None
    return target.name


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
                "html": _html_page(page),
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
    write_text(root / "index.md", "\n".join(md) + "\n", html=False)

    def cell(text: str) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    rows = []
    for e in entries:
        thumbs = " ".join(
            f'<a href="{html.escape(e["dir"])}/{html.escape(f)}"><img src="{html.escape(e["dir"])}/'
            f'{html.escape(f)}" alt="{html.escape(f)}" height="60"></a>'
            for f in e["figures"]
        )
        href = f"{e['dir']}/{e['html']}" if e["html"] else e["page"]
        rows.append(
            "<tr>"
            + cell(e["created"])
            + cell(e["app"])
            + cell(e["dataset"])
            + cell(e["kind"])
            + f'<td><a href="{html.escape(href)}">{html.escape(e["title"])}</a></td>'
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
    write_text(root / "index.html", page, html=False)
    return root / "index.md"

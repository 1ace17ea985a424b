"""Rebuild the README's results table from ``bench/results/*.json``.

    python -m bench.report            # rewrites the block between <!-- results-table --> markers in README.md

Each results file has the shape every app's ``bench`` command writes::

    {"app", "dataset", "protocol", "models": {name: {"metrics": {...}, "train_s", "predict_s"}},
     "machine": {...}, "published": {name: {metric: value}}   # optional anchors}

Metrics whose name ends in ``_std`` are shown as ``mean ± std`` next to their mean. A result over several data
draws (a ``draws`` section) has ``<metric>_std`` across draws and ``<metric>_fold_std`` across folds: shown as
``mean ± std [± fold_std]``, with a line naming the draws.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results-table -->", "<!-- /results-table -->"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def _metric_columns(models: dict[str, dict], limit: int = 6) -> list[str]:
    cols: list[str] = []
    for m in models.values():
        for k, v in (m.get("metrics") or {}).items():
            if k.endswith("_std") or not isinstance(v, int | float) or k in cols:
                continue
            cols.append(k)
    return cols[:limit]


def app_table(res: dict[str, Any]) -> str:
    """Markdown for one app's results (ours first, then published anchors)."""
    models: dict[str, dict] = res.get("models", {})
    cols = _metric_columns(models)
    lines = [
        f"**{res.get('app', '?')}** — {res.get('dataset', '?')}; protocol: {res.get('protocol', '?')}",
        "",
        "| model | " + " | ".join(cols) + " | train s | predict s |",
        "|---" * (len(cols) + 3) + "|",
    ]
    for name, m in models.items():
        met = m.get("metrics") or {}
        cells = []
        for c in cols:
            v = met.get(c)
            std = met.get(f"{c}_std")
            cell = f"{_fmt(v)} ± {_fmt(std)}" if std is not None and v is not None else _fmt(v)
            if met.get(f"{c}_fold_std") is not None and v is not None:
                cell += f" [± {_fmt(met[f'{c}_fold_std'])}]"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(m.get('train_s'))} | {_fmt(m.get('predict_s'))} |")
    for name, met in (res.get("published") or {}).items():
        cells = [_fmt(met.get(c)) for c in cols]
        lines.append(f"| {name} (published) | " + " | ".join(cells) + " | | |")
    draws = res.get("draws") or {}
    if draws.get("n"):
        lines += [
            "",
            f"_± = std across {draws['n']} draws (seeds {', '.join(map(str, draws.get('seeds', [])))}); "
            "[± ...] = std across test folds, mean over draws_",
        ]
    machine = res.get("machine") or {}
    if machine:
        lines += [
            "",
            f"_{machine.get('cpu_count', '?')} CPUs ({machine.get('cpu_model', '?')}), "
            f"git {str(machine.get('git_commit', '?'))[:8]}_",
        ]
    return "\n".join(lines)


def build(results_dir: Path = ROOT / "bench" / "results") -> str:
    files = sorted(results_dir.glob("*.json"))
    if not files:
        return "(no benchmark results yet: run `make bench`)"
    return "\n\n".join(app_table(json.loads(f.read_text())) for f in files)


def update_readme(readme: Path = ROOT / "README.md", results_dir: Path = ROOT / "bench" / "results") -> bool:
    """Replace the marked block of ``readme``; returns True when it changed."""
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"{readme}: markers {START} / {END} not found", file=sys.stderr)
        return False
    new = re.sub(
        re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{build(results_dir)}\n{END}", text, flags=re.S
    )
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    update_readme()

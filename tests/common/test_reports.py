"""common.reports: the evaluation report / model card."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from common.reports import format_value, markdown_table, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fig() -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [0.2, 0.5, 0.4])
    return fig


def test_write_report_files_table_and_pngs(tmp_path):
    metrics = {"xgboost": {"auc": 0.91234, "ap": 0.5}, "logreg": {"auc": 0.85, "ap": 0.31}}
    md_path = write_report(
        tmp_path / "rep",
        title="Fraud model card",
        metrics=metrics,
        figures={"roc curve": _fig(), "pr": _fig()},
        sections={"Intended use": "Scoring card transactions.", "Limitations": "Simulated data."},
        model_info={"name": "fraud", "version": "3"},
        higher_is_better={"auc": True, "ap": True},
    )
    out = tmp_path / "rep"
    assert md_path == out / "report.md"
    md = md_path.read_text()
    assert "# Fraud model card" in md
    assert "| model | auc | ap |" in md
    assert "| xgboost | **0.9123** | **0.5000** |" in md
    assert "| logreg | 0.8500 | 0.3100 |" in md
    assert "## Intended use" in md and "Simulated data." in md
    assert "| version | 3 |" in md
    for name in ("roc_curve.png", "pr.png"):
        p = out / name
        assert f"]({name})" in md
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    data = json.loads((out / "metrics.json").read_text())
    assert data["metrics"]["xgboost"]["auc"] == 0.91234
    assert data["figures"] == {"roc curve": "roc_curve.png", "pr": "pr.png"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left"


def test_write_report_dataframe_with_nan_and_overwrite(tmp_path):
    df = pd.DataFrame({"model": ["a", "b"], "rmse": [12.5, np.nan], "n": [10, 20]})
    write_report(tmp_path, title="first", metrics=df)
    md_path = write_report(tmp_path, title="second", metrics=df)
    md = md_path.read_text()
    assert "# second" in md
    assert "| a | 12.5000 | 10 |" in md and "| b | - | 20 |" in md
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["b"]["rmse"] is None


def test_format_and_table():
    assert format_value(1.5e-7) == "1.500e-07"
    assert format_value(3) == "3"
    assert format_value(float("nan")) == "-"
    t = markdown_table(pd.DataFrame({"x": [1.0]}, index=pd.Index(["r"], name="k")))
    assert t.splitlines() == ["| k | x |", "| :--- | ---: |", "| r | 1.0000 |"]

"""common.reports: the evaluation report / model card."""

from __future__ import annotations

import json
import os
import stat

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from common.data import write_table
from common.metrics.classification import average_precision
from common.reports import (
    bootstrap_intervals,
    calibration_figure,
    data_summary,
    format_value,
    markdown_table,
    new_report_dir,
    pr_curve_figure,
    precision_recall_points,
    publish,
    reliability_table,
    write_report,
)

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


# ------------------------------------------------------------------ report directories, index, file modes


def test_each_run_gets_its_own_directory_and_the_index_lists_both(mlref_home):
    metrics = {"xgboost": {"auc": 0.9}, "logreg": {"auc": 0.8}}
    first = new_report_dir("fraud", "~/data/Mine.csv", "evaluation")
    write_report(first, title="first run", metrics=metrics, figures={"old": _fig()})
    second = new_report_dir("fraud", "~/data/Mine.csv", "evaluation")
    write_report(second, title="second run", metrics=metrics, figures={"new": _fig()})

    root = mlref_home / "reports"
    assert first != second and first.parent == second.parent == root / "fraud" / "mine" / "evaluation"
    assert (first / "old.png").exists() and not (first / "new.png").exists()  # no mixing of runs
    assert (second / "new.png").exists() and not (second / "old.png").exists()
    assert (first / "report.md").read_text().startswith("# first run")
    latest = first.parent / "latest"
    assert latest.is_symlink() and latest.resolve() == second.resolve()
    index = (root / "index.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| 20")]
    assert len(rows) == 2 and "second run" in rows[0] and "first run" in rows[1]  # newest first
    assert f"({second.relative_to(root).as_posix()}/report.md)" in index
    html = (root / "index.html").read_text()
    assert f'href="{first.relative_to(root).as_posix()}/report.html"' in html and "new.png" in html


def test_a_report_in_the_same_directory_drops_figures_it_no_longer_makes(tmp_path):
    write_report(tmp_path, title="a", metrics={"m": {"x": 1.0}}, figures={"pr": _fig(), "calibration": _fig()})
    write_report(tmp_path, title="b", metrics={"m": {"x": 1.0}}, figures={"pr": _fig()})
    assert (tmp_path / "pr.png").exists() and not (tmp_path / "calibration.png").exists()


def test_reports_outside_the_reports_root_leave_the_index_alone(mlref_home, tmp_path):
    write_report(tmp_path / "elsewhere", title="t", metrics={"m": {"x": 1.0}})
    assert publish(tmp_path / "elsewhere") is None
    assert not (mlref_home / "reports" / "index.md").exists()


def test_same_second_runs_do_not_collide(tmp_path):
    dirs = {new_report_dir("app", "d", root=tmp_path) for _ in range(5)}
    assert len(dirs) == 5 and all(d.is_dir() for d in dirs)
    run = new_report_dir("app", "d", "monitor", run_id="ms stratified", root=tmp_path)
    assert run.name.endswith("-ms_stratified") and run.parent.name == "monitor"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_report_files_follow_the_umask(mlref_home, umask, mode):
    old = os.umask(umask)
    try:
        out = new_report_dir("fraud", "sim", "evaluation")
        write_report(out, title="t", metrics={"m": {"x": 1.0}}, figures={"f": _fig()})
        write_table(pd.DataFrame({"a": [1]}), out / "scored.csv")
    finally:
        os.umask(old)
    files = [out / n for n in ("report.md", "report.html", "metrics.json", "f.png", "scored.csv")]
    files += [mlref_home / "reports" / n for n in ("index.md", "index.html")]
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: mode for f in files}


# ------------------------------------------------------------------ model card


def test_model_card_sections_data_table_roles_and_intervals(tmp_path):
    metrics = pd.DataFrame(
        {
            "average_precision": [0.70, 0.62],
            "average_precision_std": [0.02, 0.03],
            "ndcg": [0.45, 0.25],
            "ndcg_lo": [0.43, 0.23],
            "ndcg_hi": [0.47, 0.27],
        },
        index=pd.Index(["xgboost", "logreg"], name="model"),
    )
    frame = pd.DataFrame({"amount": [1.0, 2.0, np.nan, 4.0], "label": [0, 1, 0, 0]})
    md = write_report(
        tmp_path,
        title="card",
        metrics=metrics,
        intended_use="Rank transactions for investigators.",
        limitations="Simulated data only.",
        data={"rows": 4, "fraud_rate": 0.25},
        data_columns=data_summary(frame),
        baselines=["logreg"],
        champion="xgboost",
        interval_note="± = std over 4 folds",
        higher_is_better={"average_precision": True},
    ).read_text()
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads == ["## Intended use", "## Data", "## Metrics", "## Limitations"]
    assert "Rank transactions for investigators." in md and "Simulated data only." in md
    assert "| rows | 4 |" in md and "| fraud_rate | 0.2500 |" in md
    assert "| amount | float64 | 3 | 0.2500 | 3 | 1.0000 | 2.0000 | 4.0000 |" in md
    assert "| model | role | average_precision | ndcg |" in md
    assert "| xgboost | champion | **0.7000 ± 0.0200** | 0.4500 [0.4300, 0.4700] |" in md
    assert "| logreg | baseline | 0.6200 ± 0.0300 | 0.2500 [0.2300, 0.2700] |" in md
    assert "± = std over 4 folds" in md
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["xgboost"]["average_precision_std"] == 0.02 and saved["champion"] == "xgboost"


def test_bootstrap_intervals_cover_the_mean_with_the_expected_width():
    rng = np.random.default_rng(1)
    values = rng.normal(5.0, 2.0, 400)
    ((lo, hi),) = bootstrap_intervals(len(values), lambda idx: {"mean": values[idx].mean()}, n_boot=400).values()
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(400), rel=0.2)


# ------------------------------------------------------------------ classifier curves


def test_precision_recall_points_match_average_precision_and_hand_computed_curve():
    y = np.array([1, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1])
    recall, precision = precision_recall_points(y, s)
    # thresholds 0.9 | 0.8 (tie: one positive, one negative) | 0.3 | 0.2 | 0.1
    np.testing.assert_allclose(recall, [0, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(precision, [1, 1, 2 / 3, 3 / 4, 3 / 5, 3 / 6])
    assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(average_precision(y, s))
    with pytest.raises(ValueError, match="at least one positive"):
        precision_recall_points([0, 0], [0.1, 0.2])


def test_reliability_table_of_calibrated_and_overconfident_scores():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)  # calibrated by construction
    t = reliability_table(y, p, n_bins=10)
    assert len(t) == 10 and t["n"].sum() == p.size and (t["n"] == 2000).all()  # quantile bins: equal counts
    assert ((t["lo"] <= t["mean_predicted"] + 0.01) & (t["mean_predicted"] - 0.01 <= t["hi"])).all()
    over = reliability_table(y, np.clip(p * 2 - 0.5, 0, 1), n_bins=5, strategy="uniform")
    top = over.iloc[-1]
    assert top["mean_predicted"] > top["hi"]  # pushed towards 1: observed rate below what was predicted
    with pytest.raises(ValueError, match="strategy"):
        reliability_table(y, p, strategy="kmeans")


def test_pr_and_calibration_figures_as_report_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=3000) < 0.05).astype(int)
    good = np.clip(0.05 + 0.6 * y + rng.normal(0, 0.1, y.size), 0, 1)
    weak = np.clip(0.05 + 0.1 * y + rng.normal(0, 0.1, y.size), 0, 1)
    curves = {"good": (y, good), "weak": (y, weak)}
    write_report(
        tmp_path,
        title="clf",
        metrics={"good": {"ap": 0.9}},
        figures={"precision_recall": pr_curve_figure(curves), "calibration": calibration_figure(curves)},
    )
    md = (tmp_path / "report.md").read_text()
    for name in ("precision_recall.png", "calibration.png"):
        img = mpimg.imread(tmp_path / name)
        assert f"]({name})" in md and img.shape[0] > 100 and img.shape[1] > 100


# ------------------------------------------------------------------ HTML pages


def test_every_report_gets_an_html_page_with_tables_figures_and_a_link_back(mlref_home):
    out = new_report_dir("fraud", "sim", "evaluation")
    write_report(
        out,
        title="Fraud model card",
        metrics={"xgboost": {"auc": 0.91}, "logreg": {"auc": 0.85}},
        figures={"pr curve": _fig()},
        higher_is_better={"auc": True},
    )
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<title>Fraud model card</title>" in page
    assert "<h1>Fraud model card</h1>" in page and "<table>" in page and "<th" in page
    assert "<td" in page and "<strong>0.9100</strong>" in page  # markdown bold and table cells rendered
    assert '<img src="pr_curve.png" alt="pr curve"' in page and (out / "pr_curve.png").exists()
    assert '<a href="../../../../index.html">' in page and '<a href="report.md">' in page
    assert "<style>" in page and "<link" not in page and "<script" not in page  # nothing to fetch
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temp files left"

    index = (mlref_home / "reports" / "index.html").read_text()
    assert f'href="{out.relative_to(mlref_home / "reports").as_posix()}/report.html"' in index
    assert "<th>figures</th>" in index  # the index page is the index, not a rendering of index.md


def test_drift_reports_and_other_markdown_in_a_report_directory_get_pages(mlref_home, tmp_path):
    from common.monitoring import ReferenceProfile, detect_drift
    from common.reports import write_text

    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 500), "prediction": rng.uniform(0, 1, 500)})
    cur = ref.assign(x=ref["x"] + 2.0)
    out = new_report_dir("fraud", "sim", "monitor")
    detect_drift(ReferenceProfile.from_frame(ref), cur).save(out, title="Fraud drift")
    page = (out / "drift.html").read_text()
    assert "<h1>Fraud drift</h1>" in page and '<img src="drift.png"' in page and "<table>" in page
    assert "drift.html" in (mlref_home / "reports" / "index.html").read_text()

    transcript = write_text(out / "transcript.md", "# Transcript\n\n| who | text |\n| --- | --- |\n| bot | hi |\n")
    assert "<td>bot</td>" in transcript.with_suffix(".html").read_text()
    write_text(tmp_path / "notes.md", "# not a report")  # outside the reports root: markdown only
    assert not (tmp_path / "notes.html").exists()


def test_html_in_names_users_chose_stays_text(mlref_home):
    evil = "<script>alert(1)</script>"
    out = new_report_dir("fraud", evil, "evaluation")
    write_report(
        out,
        title=f"Model card for {evil}",
        metrics={evil: {"auc": 0.9}},
        model_info={"dataset": evil, "link": "[x](javascript:alert(1))"},
        data={"rows": 3, '<img src=x onerror="alert(1)">': 1},
        sections={"Notes": f"{evil}\n\n<iframe src='http://example.com'></iframe>"},
    )
    page = (out / "report.html").read_text()
    tags = _tags(page)
    assert {"h1", "table", "td"} <= {t for t, _ in tags}
    assert not {t for t, _ in tags} & {"script", "iframe"}
    assert not [a for _, attrs in tags for a, _ in attrs if a.startswith("on")], "no event handler attributes"
    assert not [v for _, attrs in tags for a, v in attrs if a in ("href", "src") and "javascript" in (v or "")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as the text it is
    assert "<title>Model card for &lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    assert "script" not in {t for t, _ in _tags((mlref_home / "reports" / "index.html").read_text())}


def _tags(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every start tag of an HTML page with its attributes, as a browser's parser sees them."""
    from html.parser import HTMLParser

    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def test_the_index_renders_pages_for_reports_written_before_pages_existed(mlref_home):
    from common.reports import update_index

    old = new_report_dir("fraud", "sim", "evaluation")
    (old / "report.md").write_text("# An old report\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    update_index()
    assert "<td>1</td>" in (old / "report.html").read_text()
    root = mlref_home / "reports"
    assert f'href="{old.relative_to(root).as_posix()}/report.html"' in (root / "index.html").read_text()

    (old / "report.md").write_text("# An edited report\n")  # a page older than its markdown is rendered again
    os.utime(old / "report.html", (1, 1))
    update_index()
    assert "<h1>An edited report</h1>" in (old / "report.html").read_text()

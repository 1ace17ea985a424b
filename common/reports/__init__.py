"""Reports people can browse: evaluation reports / model cards, PR and calibration curves, and an index.

Layout under ``$MLREF_HOME/reports`` (:func:`new_report_dir`)::

    reports/index.md, index.html                 every report below, newest first (rebuilt after each report)
    reports/<app>/<dataset>/<kind>/<run>/        one directory per run, never reused: report.md (or drift.md)
                                                 and its page report.html, metrics.json, <figure>.png ...
    reports/<app>/<dataset>/<kind>/latest        symlink to the newest run directory of that kind

``<run>`` is the UTC start time (``20261129T070532Z``, ``-2``, ``-3`` ... when two runs share a second) or
``<time>-<run id>``. ``<kind>`` is ``evaluation``, ``monitor``, ``bench`` ...

:func:`write_report` writes into a run directory ``<figure>.png`` for each figure, ``metrics.json``
(machine-readable: metrics, model info, figure names, timestamp) and ``report.md`` last, so the markdown never
links to a figure that is not there yet; then it points ``latest`` at the run and rebuilds the index.

Every markdown report (``report.md``, ``drift.md``, any ``.md`` under the reports root) is rendered to an HTML
page beside it by the same :func:`write_text` call (:mod:`~common.reports.pages`: tables as tables, figures
inline, raw HTML in the markdown shown as text); ``index.html`` links those pages, rendering any that are missing.

Every file is written atomically (temporary file beside it, then ``os.replace``) with the mode the umask gives
(``0644`` under umask 022): a reader sees the previous version or the complete new one. Figures are
``matplotlib.figure.Figure`` objects rendered by the Agg canvas; nothing here touches pyplot's global state.

Modules: :mod:`~common.reports.files` (formatting, atomic writers), :mod:`~common.reports.pages` (markdown to
HTML), :mod:`~common.reports.index` (report
directories, ``latest``, the index), :mod:`~common.reports.figures` (PR and calibration figures) and
:mod:`~common.reports.card` (:func:`write_report`). The statistics behind the figures live in
:mod:`common.metrics` (:func:`~common.metrics.classification.precision_recall_points`,
:func:`~common.metrics.calibration.reliability_table`, :func:`~common.metrics.bootstrap.bootstrap_intervals`) and
are re-exported here for existing callers.
"""

from common.metrics.bootstrap import bootstrap_intervals
from common.metrics.calibration import reliability_table
from common.metrics.classification import precision_recall_points
from common.reports.card import data_summary, write_report
from common.reports.figures import calibration_figure, pr_curve_figure
from common.reports.files import format_value, markdown_table, save_figure, write_html, write_json, write_text
from common.reports.index import LATEST, REPORT_FILES, dataset_slug, new_report_dir, publish, reports_root, update_index
from common.reports.pages import render_html

__all__ = [
    "LATEST",
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
    "render_html",
    "reports_root",
    "save_figure",
    "update_index",
    "write_html",
    "write_json",
    "write_report",
    "write_text",
]

"""Champion vs challenger: evaluate both on the most recent labelled window, promote only on a clear, fair win.

Three rules every app gets from here:

- **Fairness.** Neither model may have been trained on the evaluation window. Every registered version carries the
  tag ``last_training_timestamp`` (unix seconds of its newest training row, :func:`common.registry.register`);
  a comparison on a window starting at ``window_start`` is refused when a model's tag is ``>= window_start`` or
  missing (it cannot be shown to be fair), and the refusal is recorded as a decision that promotes nothing:
  "no fair comparison: champion v3 saw data up to X >= window start Y; bring newer labelled data". A model that
  has seen the window would be scored on its own training data (for a recommender, worse: those items are in its
  seen-filter, so it scores 0 and any challenger wins). We refuse rather than compare a refit of the champion on
  older data, because the refit is not the model being served: the decision would be about a different model.
  :func:`guard` applies the rule before a challenger is trained, so a refused retrain costs nothing.
- **Compare-and-set promotion.** The winner is promoted only if the champion it was compared against is still
  champion (:func:`common.registry.compare_and_promote`, under a file lock); otherwise the decision records
  "champion changed, not promoted". Two concurrent retrains can therefore never both win.
- **Audit.** Every decision is recorded twice: as an MLflow run in experiment ``<name>-retraining`` (scores,
  versions, verdict) and as one JSON line in ``$MLREF_HOME/decisions/<name>.jsonl`` (an audit log that survives a
  lost tracking server).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from common import registry, tracking
from common.config import get_settings

log = logging.getLogger(__name__)

NO_FAIR_COMPARISON = "no fair comparison"
CHAMPION_CHANGED = "champion changed, not promoted"


@dataclass
class Decision:
    """The outcome of one champion-vs-challenger comparison.

    ``challenger_version`` is the version that was evaluated ("" when none was trained); ``promoted_version`` the
    one made champion (the challenger, or its refit on all data, see :func:`champion_vs_challenger`).
    ``window_start``: unix seconds of the evaluation window's first row, when the app gave it.
    """

    app: str
    champion_version: str | None
    challenger_version: str
    metric: str
    champion_score: float | None
    challenger_score: float
    margin: float
    higher_is_better: bool
    promoted: bool
    reason: str
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    window_start: float | None = None
    promoted_version: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    champion_score: float | None, challenger_score: float, *, margin: float = 0.0, higher_is_better: bool = True
) -> tuple[bool, str]:
    """Promotion rule. With ``gain = challenger - champion`` (negated when lower is better), promote iff
    ``gain > margin``; with no champion score, promote; a non-finite challenger score never wins.

    ``margin`` is absolute, in the metric's units (e.g. 0.005 AP).
    """
    if not math.isfinite(challenger_score):
        return False, f"challenger score {challenger_score} is not finite"
    if champion_score is None or not math.isfinite(champion_score):
        return True, "no valid champion score: the challenger becomes champion"
    gain = challenger_score - champion_score if higher_is_better else champion_score - challenger_score
    if gain > margin:
        return True, f"challenger better by {gain:.4g} > margin {margin:.4g}"
    return False, f"challenger gain {gain:.4g} does not exceed margin {margin:.4g}: champion kept"


# ------------------------------------------------------------------ fairness


def unix_seconds(value: Any) -> float:
    """``value`` (unix seconds, ``datetime``, ``pd.Timestamp``, ``np.datetime64``) as float unix seconds (UTC;
    naive datetimes are taken as UTC)."""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return float(value)
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.timestamp()


def last_training_timestamp(timestamps: pd.Series | np.ndarray) -> float:
    """The tag value for a model trained on rows with these timestamps: the newest one, in unix seconds."""
    values = pd.Series(timestamps).dropna()
    if values.empty:
        raise ValueError("no training timestamps: cannot record what the model has seen")
    return unix_seconds(values.max())


def _when(t: float) -> str:
    iso = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"{iso} ({t:.0f})"


def _problem(mv: registry.ModelVersion | None, window_start: float, role: str) -> str | None:
    if mv is None:
        return None
    seen = mv.last_training_timestamp
    if seen is None:
        return (
            f"{role} v{mv.version} has no {registry.LAST_TRAINING_TIMESTAMP_TAG} tag, so it may have seen the "
            f"window starting {_when(window_start)}"
        )
    if seen >= window_start:
        return f"{role} v{mv.version} saw data up to {_when(seen)} >= window start {_when(window_start)}"
    return None


def fairness_problem(
    champion: registry.ModelVersion | None, challenger: registry.ModelVersion | None, window_start: float
) -> str | None:
    """Why comparing ``champion`` and ``challenger`` on the window from ``window_start`` (unix seconds) is unfair,
    or ``None`` when neither was trained on data at or after it."""
    problems = [
        p for p in (_problem(champion, window_start, "champion"), _problem(challenger, window_start, "challenger")) if p
    ]
    if not problems:
        return None
    return f"{NO_FAIR_COMPARISON}: {'; '.join(problems)}; bring newer labelled data"


def refuse(
    name: str,
    reason: str,
    *,
    metric: str,
    margin: float = 0.0,
    higher_is_better: bool = True,
    window_start: float | None = None,
) -> Decision:
    """Record a retraining refused before any challenger was trained (nothing trained, nothing promoted) and return
    it. ``reason`` starts with :data:`NO_FAIR_COMPARISON` when the data cannot give a fair comparison."""
    champion = registry.find(name, registry.CHAMPION)
    decision = Decision(
        app=name,
        champion_version=champion.version if champion else None,
        challenger_version="",
        metric=metric,
        champion_score=None,
        challenger_score=float("nan"),
        margin=margin,
        higher_is_better=higher_is_better,
        promoted=False,
        reason=reason,
        window_start=window_start,
    )
    record(decision)
    log.warning("%s retraining refused: %s", name, reason)
    return decision


def guard(
    name: str, window_start: float, *, metric: str, margin: float = 0.0, higher_is_better: bool = True
) -> Decision | None:
    """Check the current champion before a challenger is trained: ``None`` when it did not see the window, else
    the recorded refusal (:func:`refuse`)."""
    reason = fairness_problem(registry.find(name, registry.CHAMPION), None, window_start)
    if reason is None:
        return None
    return refuse(
        name, reason, metric=metric, margin=margin, higher_is_better=higher_is_better, window_start=window_start
    )


# ------------------------------------------------------------------ the comparison


def champion_vs_challenger(
    name: str,
    challenger: registry.ModelVersion,
    evaluate: Callable[[registry.ModelVersion], float],
    *,
    metric: str,
    margin: float = 0.0,
    higher_is_better: bool = True,
    window_start: float | None = None,
    refit: Callable[[registry.ModelVersion], registry.ModelVersion] | None = None,
) -> Decision:
    """Score the current champion and ``challenger`` with ``evaluate`` (same recent window), then promote or keep.

    Args:
        evaluate: ``evaluate(version)`` loads that version (e.g. via :func:`registry.load`) and returns ``metric``
            on the most recent labelled window.
        window_start: unix seconds of the window's first row. When given, the comparison is refused (recorded,
            nothing promoted) if either model was trained on data at or after it, see the module docstring. Apps
            must give it; ``None`` skips the check (with a warning) for data without time.
        refit: called with the winning challenger to build the version actually promoted, e.g. the same
            configuration refitted on all data including the window (the challenger itself had to leave the
            window out to be compared fairly). Not called when the challenger loses.

    Promotion is compare-and-set: it happens only if the champion compared against is still champion; otherwise
    the decision says "champion changed, not promoted". A challenger that is not promoted gets the
    ``challenger`` alias for inspection.
    """
    champion = registry.find(name, registry.CHAMPION)
    if champion is not None and champion.version == challenger.version:
        raise ValueError(f"version {challenger.version} of {name} is already the champion")

    def decision(
        promoted: bool,
        reason: str,
        champion_score: float | None,
        challenger_score: float,
        promoted_version: str | None = None,
    ) -> Decision:
        d = Decision(
            app=name,
            champion_version=champion.version if champion else None,
            challenger_version=challenger.version,
            metric=metric,
            champion_score=champion_score,
            challenger_score=challenger_score,
            margin=margin,
            higher_is_better=higher_is_better,
            promoted=promoted,
            reason=reason,
            window_start=window_start,
            promoted_version=promoted_version,
        )
        record(d)
        log.info("%s retraining: %s", name, reason)
        return d

    if window_start is None:
        log.warning("%s: no evaluation window start given; cannot check that neither model saw the window", name)
    else:
        unfair = fairness_problem(champion, challenger, window_start)
        if unfair is not None:
            registry.set_alias(name, registry.CHALLENGER, challenger.version)
            return decision(False, unfair, None, float("nan"))

    challenger_score = float(evaluate(challenger))
    champion_score = float(evaluate(champion)) if champion is not None else None
    promoted, reason = decide(champion_score, challenger_score, margin=margin, higher_is_better=higher_is_better)
    if not promoted:
        registry.set_alias(name, registry.CHALLENGER, challenger.version)
        return decision(False, reason, champion_score, challenger_score)

    target = refit(challenger) if refit is not None else challenger
    expected = champion.version if champion is not None else None
    if registry.compare_and_promote(name, target.version, expected):
        if target.version != challenger.version:
            reason += f"; promoted its refit on all data, v{target.version}"
        return decision(True, reason, champion_score, challenger_score, promoted_version=target.version)
    now = registry.version_of(name, registry.CHAMPION)
    registry.set_alias(name, registry.CHALLENGER, target.version)
    reason = (
        f"{CHAMPION_CHANGED}: compared against v{expected} but v{now} became champion meanwhile "
        f"(this challenger: {reason})"
    )
    return decision(False, reason, champion_score, challenger_score)


# ------------------------------------------------------------------ the record


def record(decision: Decision) -> None:
    """Append ``decision`` to ``$MLREF_HOME/decisions/<app>.jsonl`` and log it as an MLflow run."""
    path = get_settings().path("decisions", f"{decision.app}.jsonl")
    line = json.dumps(decision.to_dict()) + "\n"
    with open(path, "a") as fh:  # one small write per decision: concurrent appends do not interleave
        fh.write(line)
    params = {k: v for k, v in decision.to_dict().items() if not k.endswith("_score")}
    with tracking.start_run(
        f"{decision.app}-retraining",
        run_name="champion-vs-challenger",
        params=params,
        nested=mlflow.active_run() is not None,
    ):
        scores = {"challenger_score": decision.challenger_score, "promoted": float(decision.promoted)}
        if decision.champion_score is not None:
            scores["champion_score"] = decision.champion_score
        tracking.log_metrics(scores)


def history(name: str) -> list[Decision]:
    """All recorded decisions for ``name``, oldest first."""
    path = get_settings().path("decisions", f"{name}.jsonl")
    if not path.exists():
        return []
    known = {f.name for f in fields(Decision)}
    return [
        Decision(**{k: v for k, v in json.loads(line).items() if k in known})
        for line in path.read_text().splitlines()
        if line.strip()
    ]


__all__ = [
    "CHAMPION_CHANGED",
    "NO_FAIR_COMPARISON",
    "Decision",
    "champion_vs_challenger",
    "decide",
    "fairness_problem",
    "guard",
    "history",
    "last_training_timestamp",
    "record",
    "refuse",
    "unix_seconds",
]

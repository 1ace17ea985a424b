"""Champion vs challenger: evaluate both on the most recent labelled window, promote only on a clear win.

Every decision is recorded twice: as an MLflow run in experiment ``<name>-retraining`` (scores, versions, the
verdict) and as one JSON line in ``$MLREF_HOME/decisions/<name>.jsonl`` (an audit log that survives a lost
tracking server).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from common import registry, tracking
from common.config import get_settings

log = logging.getLogger(__name__)


@dataclass
class Decision:
    """The outcome of one champion-vs-challenger comparison."""

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


def champion_vs_challenger(
    name: str,
    challenger: registry.ModelVersion,
    evaluate: Callable[[registry.ModelVersion], float],
    *,
    metric: str,
    margin: float = 0.0,
    higher_is_better: bool = True,
) -> Decision:
    """Score the current champion and ``challenger`` with ``evaluate`` (same recent window), then promote or keep.

    ``evaluate(version)`` loads that version (e.g. via :func:`registry.load`) and returns ``metric`` on the most
    recent labelled window. The losing challenger keeps the ``challenger`` alias for inspection.
    """
    champion = registry.find(name, registry.CHAMPION)
    if champion is not None and champion.version == challenger.version:
        raise ValueError(f"version {challenger.version} of {name} is already the champion")
    challenger_score = float(evaluate(challenger))
    champion_score = float(evaluate(champion)) if champion is not None else None
    promoted, reason = decide(champion_score, challenger_score, margin=margin, higher_is_better=higher_is_better)
    if promoted:
        registry.promote(name, challenger.version)
    else:
        registry.set_alias(name, registry.CHALLENGER, challenger.version)
    decision = Decision(
        app=name, champion_version=champion.version if champion else None,
        challenger_version=challenger.version, metric=metric, champion_score=champion_score,
        challenger_score=challenger_score, margin=margin, higher_is_better=higher_is_better,
        promoted=promoted, reason=reason,
    )
    record(decision)
    log.info("%s retraining: %s", name, reason)
    return decision


def record(decision: Decision) -> None:
    """Append ``decision`` to ``$MLREF_HOME/decisions/<app>.jsonl`` and log it as an MLflow run."""
    path = get_settings().path("decisions", f"{decision.app}.jsonl")
    with open(path, "a") as fh:
        fh.write(json.dumps(decision.to_dict()) + "\n")
    params = {k: v for k, v in decision.to_dict().items() if not k.endswith("_score")}
    with tracking.start_run(f"{decision.app}-retraining", run_name="champion-vs-challenger", params=params):
        scores = {"challenger_score": decision.challenger_score, "promoted": float(decision.promoted)}
        if decision.champion_score is not None:
            scores["champion_score"] = decision.champion_score
        tracking.log_metrics(scores)


def history(name: str) -> list[Decision]:
    """All recorded decisions for ``name``, oldest first."""
    path = get_settings().path("decisions", f"{name}.jsonl")
    if not path.exists():
        return []
    return [Decision(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]

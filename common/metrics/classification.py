"""Binary-classification metrics for scored events (fraud, alerts), including the fraud handbook's card precision.

Inputs are 1-D array-likes: ``y_true`` in {0, 1}, ``y_score`` any real score where higher means "more likely
positive". Ties in scores are handled the way scikit-learn does (one threshold per distinct score), so
:func:`roc_auc` and :func:`average_precision` equal ``sklearn.metrics.roc_auc_score`` /
``average_precision_score`` exactly; they are re-implemented here so the formulas are in one readable place.

Reference for the card-based metric: Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud
Detection - Practical Handbook* (ULB / Worldline), chapter 4.3 "Precision top-k metrics".
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


def _pair(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true has {t.size} values, y_score {s.size}")
    if t.size == 0:
        raise ValueError("empty input")
    if not np.isin(t, (0, 1, True, False)).all():
        raise ValueError("y_true must be binary (0/1)")
    if np.isnan(s).any():
        raise ValueError("y_score contains NaN")
    return t.astype(np.int64), s


def _curve(t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct threshold, scores in decreasing order."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), t.size - 1]
    tps = np.cumsum(t_sorted)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps.astype(float), fps.astype(float)


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve: ``P(score(pos) > score(neg)) + 0.5 * P(tie)``.

    Computed by the trapezoidal rule over (FPR, TPR) points at every distinct score threshold.
    Raises ``ValueError`` when only one class is present (the AUC is undefined).
    """
    t, s = _pair(y_true, y_score)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs both classes in y_true")
    tps, fps = _curve(t, s)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return float(np.trapezoid(tpr, fpr))


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Average precision: ``AP = sum_n (R_n - R_{n-1}) * P_n`` over distinct thresholds in decreasing order.

    ``P_n``/``R_n`` are precision and recall when every event scoring ``>=`` the n-th threshold is flagged
    (step-wise, no interpolation; scikit-learn's definition). Returns 0.0 when there is no positive.
    """
    t, s = _pair(y_true, y_score)
    n_pos = int(t.sum())
    if n_pos == 0:
        return 0.0
    tps, fps = _curve(t, s)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _top_k(t: np.ndarray, s: np.ndarray, k: int) -> np.ndarray:
    if k <= 0:
        raise ValueError("k must be positive")
    order = np.argsort(-s, kind="mergesort")  # stable: ties keep input order
    return t[order[:k]]


def precision_at_k(y_true: ArrayLike, y_score: ArrayLike, k: int) -> float:
    """Share of positives among the ``k`` highest scores: ``sum(top-k labels) / k``.

    The denominator is ``k`` even when fewer than ``k`` events exist (the handbook's convention: an empty
    alert slot is a wasted one). Ties at the cut are broken by input order.
    """
    t, s = _pair(y_true, y_score)
    return float(_top_k(t, s, k).sum() / k)


def recall_at_k(y_true: ArrayLike, y_score: ArrayLike, k: int) -> float:
    """Share of all positives found among the ``k`` highest scores: ``sum(top-k labels) / sum(labels)``.

    Returns 0.0 when there is no positive.
    """
    t, s = _pair(y_true, y_score)
    n_pos = int(t.sum())
    return 0.0 if n_pos == 0 else float(_top_k(t, s, k).sum() / n_pos)


def card_precision_at_k_per_day(
    df: pd.DataFrame,
    k: int,
    *,
    group_col: str = "customer_id",
    score_col: str = "score",
    label_col: str = "label",
    day_col: str = "day",
    exclude: Iterable | None = None,
    remove_detected: bool = True,
) -> pd.DataFrame:
    """Daily card precision top-k (handbook 4.3), one row per day.

    For each day in increasing order:

    1. drop the events of cards in ``exclude`` and, when ``remove_detected``, of cards detected as compromised
       (a true positive in the top k) on an *earlier* day - an investigator does not re-check a blocked card;
    2. aggregate to one row per card: ``card_score = max(score)``, ``card_label = max(label)``;
    3. ``CP@k(day) = #{compromised cards among the k highest card scores} / k``.

    Returns columns ``day, card_precision, n_compromised_cards, n_detected`` where ``n_compromised_cards``
    counts the compromised cards still eligible that day (the best achievable is ``min(1, that / k)``).
    Ties at the cut are broken by the card order in the frame (as a stable sort would).
    """
    if k <= 0:
        raise ValueError("k must be positive")
    missing = [c for c in (group_col, score_col, label_col, day_col) if c not in df.columns]
    if missing:
        raise ValueError(f"card_precision_at_k: missing columns {missing}")
    detected: set = set(exclude) if exclude is not None else set()
    rows = []
    for day, part in df.groupby(day_col, sort=True):
        part = part[~part[group_col].isin(detected)] if detected else part
        cards = part.groupby(group_col, sort=False).agg(score=(score_col, "max"), label=(label_col, "max"))
        cards = cards.sort_values("score", ascending=False, kind="mergesort")
        top = cards.head(k)
        hits = top.index[top["label"].to_numpy() == 1]
        rows.append(
            {
                "day": day,
                "card_precision": len(hits) / k,
                "n_compromised_cards": int((cards["label"] == 1).sum()),
                "n_detected": len(hits),
            }
        )
        if remove_detected:
            detected.update(hits.tolist())
    return pd.DataFrame(rows, columns=["day", "card_precision", "n_compromised_cards", "n_detected"])


def card_precision_at_k(
    df: pd.DataFrame,
    k: int,
    *,
    group_col: str = "customer_id",
    score_col: str = "score",
    label_col: str = "label",
    day_col: str = "day",
    exclude: Iterable | None = None,
    remove_detected: bool = True,
) -> float:
    """Mean over days of the daily card precision top-k; see :func:`card_precision_at_k_per_day`.

    ``CP@k = mean_day( |{compromised cards in the day's top-k cards by max score}| / k )``, with cards detected
    on earlier days (and ``exclude``) removed - the handbook's ``card_precision_top_k`` with
    ``remove_detected_compromised_cards=True``.
    """
    per_day = card_precision_at_k_per_day(
        df,
        k,
        group_col=group_col,
        score_col=score_col,
        label_col=label_col,
        day_col=day_col,
        exclude=exclude,
        remove_detected=remove_detected,
    )
    if per_day.empty:
        raise ValueError("card_precision_at_k: no rows")
    return float(per_day["card_precision"].mean())


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> float:
    """ECE with equal-width probability bins: ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``.

    ``y_prob`` must lie in [0, 1]; bin ``b`` holds ``p`` in ``[b/n_bins, (b+1)/n_bins)`` (1.0 in the last bin).
    """
    t, p = _pair(y_true, y_prob)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("y_prob must be within [0, 1]")
    if n_bins <= 0:
        raise ValueError("n_bins must be positive")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    n = np.bincount(idx, minlength=n_bins).astype(float)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=t, minlength=n_bins)
    nz = n > 0
    return float(np.sum(np.abs(sum_y[nz] - sum_p[nz])) / t.size)


def finite_binary(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(y, s)`` as float arrays of shape ``(n,)`` without the pairs where either is NaN or infinite; raises
    ``ValueError`` when the lengths differ or ``y_true`` is not 0/1 (unlike :func:`roc_auc`, NaN scores are dropped)."""
    y = np.asarray(y_true).ravel().astype(float)
    s = np.asarray(y_score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values, y_score {s.size}")
    ok = np.isfinite(s) & np.isfinite(y)
    y, s = y[ok], s[ok]
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be binary (0/1)")
    return y, s


def precision_recall_points(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(recall, precision)`` at every distinct score threshold, highest first, starting at recall 0 /
    precision 1 (each array of shape ``(n_thresholds + 1,)``).

    At threshold ``t_n``: ``precision_n = TP_n / (TP_n + FP_n)`` and ``recall_n = TP_n / P`` where ``TP_n`` /
    ``FP_n`` count positives / negatives scoring ``>= t_n`` and ``P`` all positives; the area under the step curve
    ``sum_n (R_n - R_{n-1}) * P_n`` is :func:`average_precision`. Non-finite pairs are dropped
    (:func:`finite_binary`). Raises ``ValueError`` without a positive."""
    y, s = finite_binary(y_true, y_score)
    n_pos = y.sum()
    if n_pos == 0:
        raise ValueError("precision-recall curve needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    return np.r_[0.0, tp / n_pos], np.r_[1.0, precision]

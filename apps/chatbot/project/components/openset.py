"""Out-of-scope detection for the intent classifier: an in-scope score per message and its calibrated threshold.

numpy only, so it runs in either environment (the classifier in .venv-chatbot, tests and ``nlu-bench`` in .venv).

Scores (higher = more like the intents the model was trained on):

- ``msp``: the maximum softmax probability of the intent classifier (Hendrycks & Gimpel 2017).
- ``knn_msp``: the cosine similarity of the message's sentence embedding to its nearest training example, plus
  ``msp_weight`` x the maximum softmax probability. Measured on Banking77 with 19 of 77 intents unseen (2 seeds):
  AUROC 0.89-0.90 against 0.86 for ``msp`` alone, and more out-of-scope recall at the same in-scope cost.

The threshold is calibrated on held-out in-scope data only (no out-of-scope examples needed): out-of-fold
predictions of the training data, each message scored by a model that did not see it. It is the highest threshold
whose rejections cost at most ``max_accuracy_drop`` of in-scope accuracy on those predictions (a rejected message
counts as an error; rejecting a misclassified one costs nothing).
"""

from __future__ import annotations

import numpy as np

SCORES = ("msp", "knn_msp")
MSP_WEIGHT = 0.5


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def nearest_similarity(queries: np.ndarray, examples: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """The cosine similarity of each query to its nearest example (both sets of rows, any norm)."""
    q, e = unit_rows(np.atleast_2d(queries)), unit_rows(examples)
    if len(e) == 0:
        return np.zeros(len(q), np.float32)
    return np.concatenate([(q[i : i + chunk] @ e.T).max(1) for i in range(0, len(q), chunk)])


def in_scope_scores(probs: np.ndarray, similarity: np.ndarray, msp_weight: float = MSP_WEIGHT) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES` from class probabilities ``(n, k)`` and nearest-example similarities ``(n,)``."""
    msp = np.asarray(probs, dtype=np.float64).max(1)
    return {"msp": msp, "knn_msp": np.asarray(similarity, dtype=np.float64) + msp_weight * msp}


def calibrate(scores: np.ndarray, correct: np.ndarray, max_accuracy_drop: float) -> float:
    """The highest threshold ``t`` (reject ``score < t``) that rejects at most ``floor(max_accuracy_drop * n)`` of
    the ``correct`` held-out in-scope predictions, i.e. costs at most ``max_accuracy_drop`` of accuracy."""
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    if scores.shape != correct.shape or scores.ndim != 1:
        raise ValueError("scores and correct must be 1-d arrays of the same length")
    if not 0 <= max_accuracy_drop < 1:
        raise ValueError(f"max_accuracy_drop must be in [0, 1), got {max_accuracy_drop}")
    kept = np.sort(scores[correct])
    if len(kept) == 0:
        return float("-inf")  # nothing held out was right: no basis for rejecting anything
    allowed = int(np.floor(max_accuracy_drop * len(scores)))
    return float(kept[min(allowed, len(kept) - 1)])

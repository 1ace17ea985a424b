"""Percentile bootstrap intervals of metrics over independent units (users, cards, days ...)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


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

"""Sampled prediction logging to JSONL for monitoring (:class:`PredictionLog`)."""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


class PredictionLog:
    """Append a sampled share of predictions to a JSONL file for monitoring (thread-safe).

    Args:
        path: the JSONL file (e.g. ``$MLREF_HOME/predictions/<app>.jsonl``).
        sample_rate: probability in [0, 1] that a record is kept.
    """

    def __init__(self, path: str | Path, sample_rate: float = 1.0, seed: int = 0) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def log(self, record: dict[str, Any]) -> bool:
        """Write ``record`` (plus a UTC ``logged_at``) with probability ``sample_rate``; True when written."""
        with self._lock:
            if self._rng.random() >= self.sample_rate:
                return False
            line = json.dumps({"logged_at": datetime.now(UTC).isoformat(), **record}, default=str)
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        return True

    def read(self) -> pd.DataFrame:
        """All logged records (empty frame when nothing was logged)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame()
        return pd.read_json(self.path, lines=True)

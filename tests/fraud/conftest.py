"""Shared tiny fraud world (simulated once per test session, in memory; no files)."""

from __future__ import annotations

import pandas as pd
import pytest

from apps.fraud.config import TINY_SIMULATION, FraudConfig
from apps.fraud.data import simulate
from apps.fraud.model import FraudModel
from apps.fraud.train import prepare, train_model


@pytest.fixture(scope="session")
def tiny_raw() -> pd.DataFrame:
    return simulate(TINY_SIMULATION)


@pytest.fixture(scope="session")
def tiny_prepared(tiny_raw: pd.DataFrame) -> pd.DataFrame:
    return prepare(tiny_raw, FraudConfig().features)


@pytest.fixture(scope="session")
def tiny_model(tiny_prepared: pd.DataFrame) -> FraudModel:
    """A small xgboost trained on the tiny world's latest labelled week."""
    cfg = FraudConfig()
    params = {**cfg.xgb.params(), "n_estimators": 60}
    return train_model(tiny_prepared, cfg, params=params)


def tx_body(r) -> dict:
    """The JSON body of ``POST /v1/transactions/score`` for one row of a transactions frame."""
    return {
        "tx_id": int(r.tx_id),
        "timestamp": r.timestamp.isoformat(),
        "customer_id": int(r.customer_id),
        "terminal_id": int(r.terminal_id),
        "amount": float(r.amount),
    }

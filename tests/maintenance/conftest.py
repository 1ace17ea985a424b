"""Shared fixtures of the maintenance tests: a tiny configuration, a small simulated fleet, one trained tiny model
of each kind (the default boosted trees, and the DCNN)."""

from __future__ import annotations

import pytest

from apps.maintenance.config import Config
from apps.maintenance.data import Fleet, simulate
from apps.maintenance.model import RULModel
from apps.maintenance.train import train

TINY = dict(
    window=10,
    boost_trees=150,
    epochs=4,
    channels=4,
    kernel=3,
    hidden=16,
    batch_size=64,
    lr=3e-3,
    n_seeds=1,
    max_train_s=60,
    window_units=4,
    seed=0,
)


def tiny_config(**kw) -> Config:
    return Config(**{**TINY, **kw})


@pytest.fixture(scope="session")
def fleet() -> Fleet:
    return simulate(16, 10, seed=3)


@pytest.fixture(scope="session")
def tiny_model(fleet: Fleet) -> RULModel:
    return train(fleet.train, tiny_config())


@pytest.fixture(scope="session")
def tiny_dcnn(fleet: Fleet) -> RULModel:
    return train(fleet.train, tiny_config(model="dcnn"))

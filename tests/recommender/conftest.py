"""Small synthetic data shared by the recommender tests (seconds, not minutes)."""

from __future__ import annotations

import pytest

from apps.recommender.config import RecommenderConfig
from apps.recommender.data import Dataset, synthetic

SMALL = {"n_users": 400, "n_items": 200, "n_clusters": 6, "mean_activity": 25.0}


@pytest.fixture(scope="session")
def small() -> Dataset:
    return synthetic(**SMALL, seed=7)


@pytest.fixture
def cfg() -> RecommenderConfig:
    return RecommenderConfig(seed=7, threads=1)


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test session (local[1]; the JVM starts once, ~15 s): every Spark test and the
    code under test (``spark_session`` reuses it) share it."""
    from apps.recommender.model import spark_session

    session = spark_session({"spark.sql.shuffle.partitions": "2"}, threads=1)
    yield session
    session.stop()

"""The Spark-native path (parquet + ``--engine spark``): read, validated, indexed, split, fitted and evaluated in
Spark; only ids, factors and the sampled users' rows reach the driver.

Shares the session's one SparkSession (``spark`` in conftest.py, local[1]). Skipped when Java or pyspark are
missing, except under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from apps.recommender.__main__ import app
from apps.recommender.config import RecommenderConfig
from apps.recommender.data import ITEM, USER, load_dataset
from apps.recommender.synth import SynthSpec, write_synthetic
from common import cli, registry

if importlib.util.find_spec("pyspark") is None and os.environ.get("CI") == "true":
    pytest.fail("pyspark is missing under CI=true: requirements/main.txt installs it", pytrace=False)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None or shutil.which("java") is None, reason="needs pyspark and Java 17"
    ),
]

FAST = {"iterations": 8}  # both paths get the same (short) recipe: the comparison, not the optimum, is tested


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth-native")
    write_synthetic(SynthSpec(interactions=12_000, users=400, items=300, clusters=6, seed=3, chunk_users=150), out)
    return out / "interactions.parquet"


def _cfg() -> RecommenderConfig:
    return RecommenderConfig(engine="spark", threads=1, seed=3, iterations=FAST["iterations"])


def test_parquet_sources_take_the_spark_path_csv_does_not(tmp_path, clustered):
    from apps.recommender.spark_native import is_parquet_source

    (tmp_path / "parts").mkdir()
    shutil.copy(clustered, tmp_path / "parts" / "part-0.parquet")
    (tmp_path / "x.csv").write_text("user,item\nu,i\n")
    assert is_parquet_source(clustered) and is_parquet_source(tmp_path / "parts")
    assert is_parquet_source(str(tmp_path / "parts" / "*.parquet"))
    assert is_parquet_source("s3a://bucket/interactions/") and is_parquet_source("hdfs://nn/data/x.parquet")
    assert not is_parquet_source(tmp_path / "x.csv") and not is_parquet_source("s3a://bucket/x.csv")
    assert not is_parquet_source("synthetic") and not is_parquet_source(None)


def test_split_keeps_train_and_test_for_every_eligible_user(spark, tmp_path):
    """Per user: floor(0.75 n) rows in train (the in-memory ms-stratified count), >= 1 train and >= 1 test when
    n >= 2, test-only when n == 1; the same seed gives the same split."""
    from pyspark.sql import functions as F

    from apps.recommender.spark_native import index_and_split, read_interactions

    rows = [(f"u{n}", f"i{j}") for n in range(1, 9) for j in range(n)]
    path = tmp_path / "small.parquet"
    pd.DataFrame(rows, columns=[USER, ITEM]).to_parquet(path)
    data = read_interactions(spark, str(path))
    cfg = RecommenderConfig(seed=11)
    first = index_and_split(data, cfg, ratio=0.75)
    try:
        got = first.frame.groupBy(USER).agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("train").cast("int")).alias("t"))
        per_user = got.toPandas().set_index(USER)
        keys = first.frame.select(USER, ITEM, "train").toPandas().sort_values([USER, ITEM]).reset_index(drop=True)
    finally:
        first.frame.unpersist()
    n, t = per_user["n"], per_user["t"]
    assert (t == np.floor(0.75 * n)).all(), per_user
    assert ((t >= 1) & (n - t >= 1))[n >= 2].all()
    assert (t == 0)[n == 1].all()
    assert first.counts["train_users"] == 7 and first.counts["rows"] == 36
    again = index_and_split(data, cfg, ratio=0.75)
    try:
        same = again.frame.select(USER, ITEM, "train").toPandas().sort_values([USER, ITEM]).reset_index(drop=True)
    finally:
        again.frame.unpersist()
    pd.testing.assert_frame_equal(keys, same)


def test_native_and_in_memory_spark_agree_and_beat_popular(spark, clustered):
    """Same data, same recipe, same evaluated users: the Spark-native split and fit vs the in-memory split with
    SparkALS; nDCG@10 close (different random splits) and both far above most-popular."""
    from apps.recommender.evaluate import evaluate_bundle, split
    from apps.recommender.spark_native import read_interactions, train_spark_native
    from apps.recommender.train import fit_bundle

    cfg = _cfg()
    ds = load_dataset(clustered)
    train, test = split(ds.interactions, "ms-stratified", ratio=0.75, seed=cfg.seed)
    users = sorted(set(test[USER]) & set(train[USER]))
    native = train_spark_native(read_interactions(spark, str(clustered)), cfg, eval_users=users)
    assert native.held_out["users"] == len(users) and native.held_out["skipped_users"] == 0
    assert native.bundle.info["path"] == "spark-native" and native.bundle.model.engine == "spark"
    assert native.bundle.user_items.nnz == len(ds.interactions)
    in_memory = evaluate_bundle(fit_bundle(train, "als", dict(FAST), cfg=cfg), test, (10,))
    popular = evaluate_bundle(fit_bundle(train, "popular", cfg=RecommenderConfig(seed=3)), test, (10,))
    a, b, p = native.held_out["ndcg@10"], in_memory["ndcg@10"], popular["ndcg@10"]
    assert a > 1.5 * p and b > 1.5 * p, (a, b, p)
    assert abs(a - b) < 0.05, (a, b)
    assert abs(native.held_out["recall@10"] - in_memory["recall@10"]) < 0.05


def _train(monkeypatch, path) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["recommender", "train", "--dataset", str(path), "--engine", "spark"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        cli.run(app)
    return int(exc.value.code), err.getvalue()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame({USER: ["a", None, "b", " "], ITEM: ["x", "y", "z", "x"]}),
            "column 'user' is empty/null in 2 row(s)",
        ),
        (
            pd.DataFrame({USER: ["a", "a", "b"], ITEM: ["x", "y", "z"], "weight": [1.0, -2.0, 0.0]}),
            "column 'weight' is not greater than 0 in 2 row(s)",
        ),
        (
            pd.DataFrame({USER: ["a", "a", "b"], ITEM: ["x", "y", "z"], "weight": [1.0, np.inf, -np.inf]}),
            "column 'weight' is not finite (NaN or infinity) in 2 row(s)",
        ),
        (pd.DataFrame({USER: ["a"], "product": ["x"]}), "missing required column(s) ['item']"),
    ],
    ids=["null-user", "negative-weight", "non-finite-weight", "no-item-column"],
)
def test_bad_parquet_is_refused_in_one_line_and_nothing_is_registered(spark, tmp_path, monkeypatch, frame, message):
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    code, err = _train(monkeypatch, path)
    assert code == 2, err
    lines = [line for line in err.splitlines() if message in line]
    assert len(lines) == 1 and str(path) in lines[0], err
    assert registry.list_versions("recommender") == []


def test_train_cli_registers_a_servable_bundle_from_a_parquet_directory(spark, clustered, tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    parts.mkdir()
    shutil.copy(clustered, parts / "part-00000.parquet")
    monkeypatch.setattr(
        "sys.argv", ["recommender", "train", "--dataset", str(parts), "--engine", "spark", "--iterations", "5"]
    )
    monkeypatch.setenv("MLREF_SEED", "3")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        cli.run(app)
    assert exc.value.code in (0, None), out.getvalue()
    doc = json.loads(out.getvalue()[out.getvalue().index("{") :])
    assert doc["params"]["engine"] == "spark" and doc["held_out"]["ndcg@10"] > 0.1
    from apps.recommender.lifecycle import load_version

    bundle, mv = load_version()
    assert bundle.info["path"] == "spark-native" and bundle.model.engine == "spark"
    assert mv.version == doc["version"]
    user = bundle.users.ids[0]
    rec = bundle.recommend_users([user], 5)[0]
    assert rec.strategy == "personalized" and len(rec.items) == 5
    assert not set(rec.items) & set(bundle.items.ids[bundle.user_items[0].indices])  # seen items filtered

"""Spark MLlib ALS (``--engine spark``) in local mode: trained through the CLI, served without a JVM.

One Spark session for the test session (``spark`` in conftest.py: the JVM starts once, ~15 s); the CLI's
``spark_session`` reuses it. Skipped when Java or pyspark are missing, except under ``CI=true``, where pyspark is
installed by the requirements.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from apps.recommender.__main__ import app
from apps.recommender.data import ITEM, USER, load_dataset
from apps.recommender.synth import SynthSpec, write_synthetic

if importlib.util.find_spec("pyspark") is None and os.environ.get("CI") == "true":
    pytest.fail("pyspark is missing under CI=true: requirements/main.txt installs it", pytrace=False)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None or shutil.which("java") is None, reason="needs pyspark and Java 17"
    ),
]

runner = CliRunner()


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A small clustered data set written by the scalable generator (the file ``--dataset`` reads)."""
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(interactions=12_000, users=400, items=300, clusters=6, seed=3, chunk_users=150), out)
    return out / "interactions.parquet"


def test_train_spark_beats_popular_and_serves_without_jvm(spark, clustered):
    r = runner.invoke(app, ["train", "--dataset", str(clustered), "--engine", "spark", "--seed", "3"])
    assert r.exit_code == 0, r.output
    out = _json(r.stdout)
    assert out["params"]["engine"] == "spark"
    spark_ndcg = out["held_out"]["ndcg@10"]
    r = runner.invoke(app, ["train", "--dataset", str(clustered), "--model", "popular", "--no-promote"])
    assert r.exit_code == 0, r.output
    popular_ndcg = _json(r.stdout)["held_out"]["ndcg@10"]
    assert spark_ndcg > 1.5 * popular_ndcg, (spark_ndcg, popular_ndcg)

    ds = load_dataset(clustered)
    user = ds.interactions[USER].iloc[0]
    r = runner.invoke(app, ["predict", user, "--k", "5"])
    assert r.exit_code == 0, r.output
    assert _json(r.stdout)["strategy"] == "personalized" and len(_json(r.stdout)["items"]) == 5
    history = ",".join(ds.interactions[ITEM].iloc[:3])
    r = runner.invoke(app, ["predict", "--items", history, "--k", "4"])
    assert r.exit_code == 0, r.output
    assert _json(r.stdout)["strategy"] == "fold_in" and len(_json(r.stdout)["items"]) == 4

    from apps.recommender.pipeline import APP_IMPL
    from apps.recommender.service import build_app
    from common import registry
    from common.workspace import Workspace

    ws = Workspace.from_env()
    with ws.activate():
        bundle, mv = APP_IMPL.load_model(ws)
        model_dir = registry.fetch_model_dir(mv)
    assert bundle.model.engine == "spark"
    with TestClient(build_app(bundle=bundle, refresh_interval_s=None)) as client:
        got = client.post("/v1/recommendations", json={"items": history.split(","), "k": 3})
        assert got.status_code == 200 and got.json()["strategy"] == "fold_in" and len(got.json()["items"]) == 3
        got = client.get(f"/v1/users/{user}/recommendations", params={"k": 3})
        assert got.status_code == 200 and got.json()["strategy"] == "personalized"

    # serving loads the factors with pyspark unimportable: no JVM is needed
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from apps.recommender.model import RecommenderBundle\n"
        f"b = RecommenderBundle.load({str(model_dir)!r})\n"
        f"print(b.model.engine, len(b.recommend_users([{user!r}], 3)[0].items))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["spark", "3"]


def test_spark_fold_in_solves_sparks_normal_equation(spark, clustered):
    """Spark's last half-iteration solves each user against the final item factors, so folding a known user in
    from their own row must give back their trained factors (checks the alpha and regParam mapping)."""
    from apps.recommender.config import RecommenderConfig
    from apps.recommender.train import fit_bundle

    ds = load_dataset(clustered)
    cfg = RecommenderConfig(engine="spark", threads=1, seed=3)
    bundle = fit_bundle(ds.interactions, "als", {"iterations": 4}, cfg=cfg)
    model = bundle.model
    rows = np.arange(20)
    folded = model.fold_in(bundle.user_items[rows])
    trained = model.user_factors[rows]
    np.testing.assert_allclose(folded, trained, rtol=1e-4, atol=1e-4)

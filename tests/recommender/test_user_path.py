"""The path a new user takes: the demo, then `train` on their own file, then `predict`.

The answer must come from the model trained on the user's file, never silently from the demo's model.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from apps.recommender.__main__ import app
from apps.recommender.data import ITEM, USER
from common import registry

runner = CliRunner()


@pytest.mark.e2e
def test_demo_then_own_file_then_predict_serves_the_users_model(small, tmp_path, mlref_home):
    r = runner.invoke(app, ["demo", "--tiny", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "your own registry is untouched" in r.stderr
    assert registry.find("recommender") is None  # the demo lived in $MLREF_HOME/demo/recommender

    # the user's own file, with ids the synthetic demo never uses
    mine = small.interactions.copy()
    mine[USER] = "shopper-" + mine[USER].astype(str)
    mine[ITEM] = "sku-" + mine[ITEM].astype(str)
    path = tmp_path / "my_interactions.csv"
    mine.to_csv(path, index=False)
    r = runner.invoke(app, ["train", "--dataset", str(path), "--model", "ease"])
    assert r.exit_code == 0, r.output
    trained = json.loads(r.stdout)
    assert trained["alias"] == "champion" and trained["version"] == "1"
    assert r.stderr.strip().splitlines()[-1].startswith("recommender: version 1 is now the champion")

    user = mine[USER].iloc[0]
    r = runner.invoke(app, ["predict", user, "--k", "5"])
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    assert answer["version"] == "1" and answer["strategy"] == "personalized"
    assert all(it["item"].startswith("sku-") for it in answer["items"])  # the user's catalogue, not the demo's

    # a second model on the same file does not silently replace what is served, and says how to
    r = runner.invoke(app, ["train", "--dataset", str(path), "--model", "als"])
    assert json.loads(r.stdout)["alias"] == "challenger"
    assert "models promote 2" in r.stderr
    assert json.loads(runner.invoke(app, ["predict", user]).stdout)["version"] == "1"
    runner.invoke(app, ["models", "promote", "2"])
    assert json.loads(runner.invoke(app, ["predict", user]).stdout)["version"] == "2"

"""The command line with a user's own interactions file, and the MovieLens parsers on fake files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.recommender.__main__ import app
from apps.recommender.data import ITEM, TITLE, USER, load_movielens
from common.data import DataError

runner = CliRunner()


def _json(output: str) -> dict:
    return json.loads(output[output.index("{"):])


def test_help_lists_every_command():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("demo", "train", "evaluate", "serve", "predict", "batch", "monitor", "retrain", "bench"):
        assert cmd in r.output


def test_train_predict_batch_on_own_file(small, tmp_path):
    path = tmp_path / "interactions.parquet"
    small.interactions.to_parquet(path)
    r = runner.invoke(app, ["train", "--dataset", str(path), "--model", "ease", "--lambda", "200"])
    assert r.exit_code == 0, r.output
    out = _json(r.output)
    assert out["alias"] == "champion" and out["params"]["lambda_"] == 200
    assert out["held_out"]["ndcg@10"] > 0.1
    user = small.interactions[USER].iloc[0]
    r = runner.invoke(app, ["predict", user, "--k", "3"])
    assert r.exit_code == 0, r.output
    assert _json(r.output)["strategy"] == "personalized" and len(_json(r.output)["items"]) == 3
    r = runner.invoke(app, ["predict", "--items", ",".join(small.interactions[ITEM].iloc[:2]), "--k", "2"])
    assert _json(r.output)["strategy"] == "fold_in"
    r = runner.invoke(app, ["batch", "--output", str(tmp_path / "recs.csv"), "--k", "2"])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "recs.csv")) == 2 * small.n_users


def test_bad_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"customer": [1], "product": [2]}).to_csv(path, index=False)
    r = runner.invoke(app, ["train", "--dataset", str(path)])
    assert r.exit_code != 0 and isinstance(r.exception, DataError)
    assert "missing column" in str(r.exception)


def test_movielens_parsers_on_fake_files(mlref_home):
    root = mlref_home / "data"
    (root / "ml-1m").mkdir(parents=True)
    (root / "ml-1m" / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (root / "ml-1m" / "movies.dat").write_bytes("10::Toy Story (1995)::Animation|Children's\n"
                                                "20::Á köldum klaka (1994)::Drama\n".encode("latin-1"))
    ds = load_movielens("ml-1m", download=False)
    assert len(ds.interactions) == 3 and ds.interactions[USER].tolist() == ["1", "1", "2"]
    assert ds.items.loc["20", TITLE].startswith("Á köldum")
    (root / "ml-100k").mkdir()
    (root / "ml-100k" / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    genres = ["unknown", "Action"]
    (root / "ml-100k" / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    (root / "ml-100k" / "u.item").write_text("242|Kolya (1996)|24-Jan-1997||http://x|0|1\n"
                                             "302|L.A. Confidential (1997)|01-Jan-1997||http://y|1|0\n")
    ds = load_movielens("ml-100k", download=False)
    assert ds.items.loc["242", "genres"] == "Action" and len(ds.interactions) == 2
    with pytest.raises(DataError):
        load_movielens("ml-25m", download=False)

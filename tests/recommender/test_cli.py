"""The command line with a user's own interactions file, and the MovieLens parsers on fake files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from apps.recommender.__main__ import app
from apps.recommender.data import ITEM, TITLE, USER, load_movielens
from apps.recommender.lifecycle import register_bundle
from apps.recommender.train import fit_bundle
from common import cli, registry
from common.data import DataError

runner = CliRunner()


def _json(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


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
    out = _json(r.stdout)
    assert out["alias"] == "champion" and out["params"]["lambda_"] == 200
    assert out["held_out"]["ndcg@10"] > 0.1
    user = small.interactions[USER].iloc[0]
    r = runner.invoke(app, ["predict", user, "--k", "3"])
    assert r.exit_code == 0, r.output
    assert _json(r.stdout)["strategy"] == "personalized" and len(_json(r.stdout)["items"]) == 3
    r = runner.invoke(app, ["predict", "--items", ",".join(small.interactions[ITEM].iloc[:2]), "--k", "2"])
    assert _json(r.stdout)["strategy"] == "fold_in"
    r = runner.invoke(app, ["batch", "--output", str(tmp_path / "recs.csv"), "--k", "2"])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "recs.csv")) == 2 * small.n_users


def _exit_and_stderr(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the CLI as ``python -m apps.recommender`` would (cli.run maps errors to exit codes)."""
    monkeypatch.setattr("sys.argv", ["recommender", *args])
    try:
        cli.run(app)
    except SystemExit as exit_:
        return exit_.code, capsys.readouterr().err
    raise AssertionError("cli.run returned without an exit code")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "customer,product\n1,2\n",
            r"missing required column\(s\) \['user', 'item'\]; found \['customer', 'product'\]",
        ),
        ("user,item\nu1,i1\n", r"too little data for the ms-stratified split: 1 interaction\(s\) of 1 user\(s\)"),
        ("user,item\nu1,i1\nu2,i2\nu3,i1\n", r"too little data for the ms-stratified split"),  # one interaction each
        ("user,item,weight\nu1,i1,0\n", r"column 'weight' is not greater than 0 in 1 row\(s\): row 0: 0"),
    ],
)
def test_train_on_unusable_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys, rows, message):
    path = tmp_path / "mine.csv"
    path.write_text(rows)
    code, err = _exit_and_stderr(["train", "--dataset", str(path)], monkeypatch, capsys)
    assert code == 2
    assert re.search(message, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert registry.find("recommender") is None  # nothing registered


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("", "could not read"),
        ("customer\nc1\n", r"missing required column\(s\) \['user'\]"),
        ("user\n", r"0 row\(s\); at least 1 needed"),
    ],
)
def test_batch_with_unusable_users_file_is_one_line_exit_2(small, tmp_path, monkeypatch, capsys, content, message):
    register_bundle(fit_bundle(small.interactions, "popular"), small.interactions, alias=registry.CHAMPION)
    users = tmp_path / "users.csv"
    if content is not None:
        users.write_text(content)
    out = tmp_path / "recs.parquet"
    code, err = _exit_and_stderr(["batch", "--input", str(users), "--output", str(out)], monkeypatch, capsys)
    assert code == 2 and re.search(message, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_movielens_parsers_on_fake_files(mlref_home):
    root = mlref_home / "data"
    (root / "ml-1m").mkdir(parents=True)
    (root / "ml-1m" / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (root / "ml-1m" / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's\n20::Á köldum klaka (1994)::Drama\n".encode("latin-1")
    )
    ds = load_movielens("ml-1m", root, download=False)
    assert len(ds.interactions) == 3 and ds.interactions[USER].tolist() == ["1", "1", "2"]
    assert ds.items.loc["20", TITLE].startswith("Á köldum")
    (root / "ml-100k").mkdir()
    (root / "ml-100k" / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    genres = ["unknown", "Action"]
    (root / "ml-100k" / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(genres)))
    (root / "ml-100k" / "u.item").write_text(
        "242|Kolya (1996)|24-Jan-1997||http://x|0|1\n302|L.A. Confidential (1997)|01-Jan-1997||http://y|1|0\n"
    )
    ds = load_movielens("ml-100k", root, download=False)
    assert ds.items.loc["242", "genres"] == "Action" and len(ds.interactions) == 2
    with pytest.raises(DataError, match="unknown MovieLens variant 'ml-25m'"):
        load_movielens("ml-25m", root, download=False)


def test_every_command_keeps_its_options_as_config_fields(tmp_path, monkeypatch, capsys):
    """evaluate --protocol/--models/--k, retrain --new/--window-days and monitor --days work as before the port to
    common.app; a bad value is a one-line exit 2 naming the config field."""
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"tiny": True, "threads": 1}))
    args = ["evaluate", "--config", str(tiny), "--protocol", "leave-last-out", "--models", "popular,random", "--k", "5"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = _json(r.stdout)
    assert set(out["metrics"]) == {"popular", "random"} and "hit_rate@5" in out["metrics"]["popular"]
    assert "(leave-last-out)" in Path(out["report"]).read_text()

    assert runner.invoke(app, ["train", "--config", str(tiny), "--model", "popular"]).exit_code == 0
    r = runner.invoke(app, ["monitor", "--dataset", "synthetic-next", "--days", "3"])
    assert r.exit_code in (0, 1), r.output
    days3 = _json(r.stdout)["stats"]["interactions"]
    everything = _json(runner.invoke(app, ["monitor", "--dataset", "synthetic-next"]).stdout)["stats"]["interactions"]
    assert 0 < days3 < everything
    r = runner.invoke(app, ["retrain", "--config", str(tiny), "--new", "synthetic-next", "--window-days", "5"])
    assert r.exit_code == 0, r.output
    assert _json(r.stdout)["challenger_version"] == "2"

    code, err = _exit_and_stderr(["evaluate", "--config", str(tiny), "--models", "als,nope"], monkeypatch, capsys)
    assert code == 2 and "config models: unknown models ['nope']" in err, err
    code, err = _exit_and_stderr(["train", "--model", "svd"], monkeypatch, capsys)
    assert code == 2 and "config model: unknown model 'svd'" in err, err

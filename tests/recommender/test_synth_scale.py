"""The scalable synthetic generator, the scaling script's pieces, and the engine option's errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from apps.recommender.__main__ import app
from apps.recommender.config import RecommenderConfig
from apps.recommender.data import GENRES, USER, load_dataset
from apps.recommender.evaluate import evaluate_bundle, split
from apps.recommender.scale import ease_guard_check, main, run_child, summarize
from apps.recommender.synth import SynthSpec, write_synthetic
from apps.recommender.synth import main as synth_main
from apps.recommender.train import fit_bundle
from common import cli
from common.errors import ConfigError

SPEC = SynthSpec(interactions=20_000, users=500, items=400, clusters=8, seed=5, chunk_users=120)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SPEC, out)
    return out


def test_synth_streams_chunks_into_one_file_the_loader_reads(synth_dir, tmp_path):
    path = synth_dir / "interactions.parquet"
    assert pq.ParquetFile(path).num_row_groups == 5  # 500 users / 120 per chunk: written chunk by chunk
    ds = load_dataset(path)
    summary = json.loads((synth_dir / "synth.json").read_text())
    assert summary["rows"] == len(ds.interactions)
    assert 0.85 * SPEC.interactions <= len(ds.interactions) <= 1.05 * SPEC.interactions
    assert ds.n_users == SPEC.users and ds.n_items <= SPEC.items
    assert ds.interactions.groupby(USER).size().min() >= 2  # every user can be split
    assert ds.items[GENRES].str.startswith("cluster-").all()  # <stem>.items.csv picked up
    again = tmp_path / "again"
    write_synthetic(SPEC, again)  # seeded: the same bytes of data
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(again / "interactions.parquet"))


def test_synth_clusters_make_quality_measurable(synth_dir):
    ds = load_dataset(synth_dir / "interactions.parquet")
    train, test = split(ds.interactions, "ms-stratified")
    cfg = RecommenderConfig(threads=1)
    ease = evaluate_bundle(fit_bundle(train, "ease", cfg=cfg), test)["ndcg@10"]
    popular = evaluate_bundle(fit_bundle(train, "popular", cfg=cfg), test)["ndcg@10"]
    assert ease > 1.5 * popular


def test_synth_bad_argument_is_exit_2_naming_it(tmp_path, capsys):
    code = synth_main(["--interactions", "100", "--users", "1000", "--out", str(tmp_path)])
    assert code == 2
    assert "--interactions" in capsys.readouterr().err
    assert not (tmp_path / "interactions.parquet").exists()


@pytest.mark.slow
def test_scale_records_ease_refusal_not_a_crash(synth_dir):
    r = run_child(
        "ease",
        synth_dir / "interactions.parquet",
        eval_users=50,
        threads=1,
        seed=1,
        timeout_s=300,
        params={"max_items": 100},
    )
    assert "refused" in r and "above its limit of 100 items" in r["refused"], r
    r["size"] = 20_000
    (check,) = ease_guard_check([r])
    assert check["refused"] and check["estimate_gib"] > 0


def test_scale_summary_fits_each_engine_and_names_refusals():
    rows = [
        {"engine": "als", "rows": 1e5, "train_s": 1.0, "fit_s": 1.0, "peak_rss_bytes": 1e8, "size": 100_000},
        {"engine": "als", "rows": 1e6, "train_s": 10.0, "fit_s": 9.0, "peak_rss_bytes": 1e9, "size": 1_000_000},
        {"engine": "ease", "refused": "EASE needs ...", "size": 1_000_000},
    ]
    got = summarize(rows)
    assert got["als"]["train_s_exponent"] == pytest.approx(1.0)
    assert got["als"]["peak_rss_bytes_exponent"] == pytest.approx(1.0)
    assert got["ease"]["not_run"] == [{"size": 1_000_000, "why": "EASE needs ..."}]
    assert got["ease"]["train_s_exponent"] is None


def test_scale_bad_sizes_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["--sizes", "lots"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "flink"], "config engine: 'flink'"),
        (["--engine", "spark", "--model", "ease"], "config engine: spark trains only --model als"),
    ],
)
def test_unusable_engine_is_a_config_error(args, message, monkeypatch, capsys):
    cfg = RecommenderConfig(engine=args[1], model=args[3] if len(args) > 2 else "als")
    with pytest.raises(ConfigError, match=message):
        cfg.check()
    monkeypatch.setattr("sys.argv", ["recommender", "train", "--dataset", "synthetic", *args])
    with pytest.raises(SystemExit) as exc:
        cli.run(app)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_engine_is_part_of_the_als_recipe_only():
    cfg = RecommenderConfig(engine="spark", spark_conf={"spark.master": "local[1]"})
    assert cfg.model_params("als")["engine"] == "spark"
    assert cfg.model_params("als")["spark_conf"] == {"spark.master": "local[1]"}
    assert "engine" not in cfg.model_params("ease")
    assert "engine" not in RecommenderConfig().model_params("als")  # the default recipe is unchanged


def test_activity_is_heavy_tailed():
    from apps.recommender.synth import _activity

    act = _activity(np.random.default_rng(0), 5000, SynthSpec(interactions=250_000, users=5000, items=5000))
    assert abs(act.sum() - 250_000) < 0.02 * 250_000
    assert act.max() > 10 * np.median(act) and act.min() >= 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "--sizes", "lots"], "--sizes: comma-separated numbers"),
        (["--sizes", "1e6"], "--sizes goes with --scale"),
    ],
)
def test_bench_scale_argument_errors_exit_2(args, message, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["recommender", "bench", *args])
    with pytest.raises(SystemExit) as exc:
        cli.run(app)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err

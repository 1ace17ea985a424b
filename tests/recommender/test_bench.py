"""The benchmark on a user's file: named after the dataset, the reference result left alone, bounded tuning."""

from __future__ import annotations

import json

from apps.recommender.bench import run_bench


def test_bench_on_a_file_never_overwrites_the_reference_result(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference = tmp_path / "bench" / "results" / "recommender.json"
    reference.parent.mkdir(parents=True)
    reference.write_text('{"dataset": "ml-100k"}')
    path = tmp_path / "My Shop.csv"
    small.interactions.iloc[:2500].to_csv(path, index=False)
    doc = run_bench(str(path), tune_trials=3, tune_models=("ease",), tune_budget_s=30, robustness_seeds=(), threads=1)
    written = tmp_path / "bench" / "results" / "recommender-my-shop.json"
    assert json.loads(written.read_text())["dataset"] == str(path)
    assert reference.read_text() == '{"dataset": "ml-100k"}'
    assert doc["tuning"]["ease"]["trials"] <= 3 and doc["tuning"]["ease"]["budget_s"] == 30
    assert doc["models"]["ease"]["metrics"]["ndcg@10"] > doc["models"]["random"]["metrics"]["ndcg@10"]

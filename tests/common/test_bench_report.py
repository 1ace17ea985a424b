"""bench/report.py: the README results table is built from the results JSON, std shown beside the mean."""

import json
from pathlib import Path

from bench import report


def test_results_table_from_json(tmp_path: Path) -> None:
    res = {
        "app": "fraud",
        "dataset": "simulated",
        "protocol": "prequential",
        "models": {
            "xgboost": {"metrics": {"auc": 0.8712, "auc_std": 0.01, "ap": 0.7}, "train_s": 3.2, "predict_s": 0.1}
        },
        "published": {"handbook xgboost": {"auc": 0.869, "ap": 0.687}},
        "machine": {"cpu_count": 2, "cpu_model": "x", "git_commit": "abcdef123"},
    }
    (tmp_path / "fraud.json").write_text(json.dumps(res))
    table = report.build(tmp_path)
    assert "| model | auc | ap | train s | predict s |" in table
    assert "| xgboost | 0.871 ± 0.010 | 0.700 | 3.200 | 0.100 |" in table
    assert "| handbook xgboost (published) | 0.869 | 0.687 | | |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold table\n{report.END}\nrest\n")
    assert report.update_readme(readme, tmp_path) is True
    text = readme.read_text()
    assert "old table" not in text and table in text
    assert text.startswith("intro\n") and text.endswith("rest\n")
    assert report.update_readme(readme, tmp_path) is False  # idempotent

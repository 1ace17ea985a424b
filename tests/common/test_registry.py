"""common.tracking + common.registry: versions, aliases, metadata, integrity checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import registry, tracking
from common.config import git_commit


def model_dir(tmp_path: Path, value: float, name: str = "m") -> Path:
    d = tmp_path / f"{name}-{value}"
    (d / "sub").mkdir(parents=True)
    (d / "weights.json").write_text(json.dumps({"value": value}))
    (d / "sub" / "extra.txt").write_text("x")
    return d


def load_value(path: Path) -> float:
    return json.loads((path / "weights.json").read_text())["value"]


def test_register_records_metrics_params_fingerprint_commit_and_hash(tmp_path: Path, mlref_home: Path) -> None:
    d = model_dir(tmp_path, 1.0)
    mv = registry.register("toy", d, metrics={"auc": 0.9, "p@10": 0.5}, params={"C": 1.0},
                           data_fingerprint="abc123", alias="champion")
    assert mv.version == "1"
    assert mv.sha256 == registry.hash_dir(d)
    assert mv.metrics == {"auc": 0.9, "p_10": 0.5}
    assert mv.params["C"] == "1.0"
    assert mv.data_fingerprint == "abc123"
    assert mv.tags["git_commit"] == git_commit()
    assert "champion" in mv.aliases
    assert (mlref_home / "mlflow.db").exists()
    assert not Path("mlruns").exists() or Path("mlruns").stat().st_mtime < d.stat().st_mtime


def test_aliases_and_promotion(tmp_path: Path) -> None:
    v1 = registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    v2 = registry.register("toy", model_dir(tmp_path, 2.0), alias="challenger")
    assert registry.get("toy").version == v1.version
    assert registry.get("toy", "challenger").version == v2.version
    registry.promote("toy", v2.version)
    model, mv = registry.load("toy", "champion", load_value)
    assert (model, mv.version) == (2.0, v2.version)
    assert [v.version for v in registry.list_versions("toy")] == ["1", "2"]
    with pytest.raises(registry.NotFoundError):
        registry.get("toy", "nonexistent-alias")
    assert registry.find("other-model") is None


def test_tampered_artifact_is_refused(tmp_path: Path, mlref_home: Path) -> None:
    registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    stored = next((mlref_home / "artifacts").rglob("weights.json"))
    stored.write_text(json.dumps({"value": 666.0}))  # someone edits the artifact store
    with pytest.raises(registry.IntegrityError, match="modified after registration"):
        registry.load("toy", "champion", load_value)
    assert not (mlref_home / "models" / "toy" / "1").exists()  # nothing unverified was left to load


def test_tampered_local_copy_is_refused(tmp_path: Path, mlref_home: Path) -> None:
    registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    assert registry.load("toy", "champion", load_value)[0] == 1.0
    cached = mlref_home / "models" / "toy" / "1"
    (cached / "sub" / "extra.txt").write_text("y")  # even an unrelated file in the directory counts
    with pytest.raises(registry.IntegrityError, match="local copy"):
        registry.load("toy", "champion", load_value)


def test_hash_dir_covers_file_names_and_contents(tmp_path: Path) -> None:
    d = model_dir(tmp_path, 1.0)
    h = registry.hash_dir(d)
    (d / "sub" / "extra.txt").rename(d / "sub" / "renamed.txt")
    assert registry.hash_dir(d) != h


def test_tracking_logs_runs_metrics_and_artifacts(tmp_path: Path, mlref_home: Path) -> None:
    with tracking.start_run("exp", params={"lr": 0.1, "layers": [1, 2]}) as run:
        tracking.log_metrics({"loss": 0.5, "bad": float("nan")}, step=1)
        tracking.log_dict({"a": 1}, "reports/metrics.json")
    data = tracking.client().get_run(run.info.run_id).data
    assert data.params == {"lr": "0.1", "layers": "[1, 2]"}
    assert data.metrics == {"loss": 0.5}
    assert list((mlref_home / "artifacts" / "exp").rglob("metrics.json"))

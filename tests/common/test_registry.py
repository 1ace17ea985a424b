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
    mv = registry.register(
        "toy", d, metrics={"auc": 0.9, "p@10": 0.5}, params={"C": 1.0}, data_fingerprint="abc123", alias="champion"
    )
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


# ------------------------------------------------------------------ registering from a temporary directory, run links


def test_register_dir_stages_in_a_temporary_directory_and_removes_it(mlref_home: Path) -> None:
    seen: list[Path] = []

    def build(d: Path) -> None:
        seen.append(d)
        (d / "weights.json").write_text(json.dumps({"value": 3.0}))

    mv = registry.register_dir("toy", build, alias="champion", last_training_timestamp=1_700_000_000)
    assert registry.load("toy", "champion", load_value)[0] == 3.0
    assert seen and not seen[0].exists()  # the staging copy is gone, the registry keeps its own
    assert seen[0].is_relative_to(mlref_home / "work" / "toy" / "staging")
    assert mv.last_training_timestamp == 1_700_000_000.0

    def broken(d: Path) -> None:
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("save failed")

    with pytest.raises(RuntimeError, match="save failed"):
        registry.register_dir("toy", broken)
    assert [v.version for v in registry.list_versions("toy")] == ["1"]  # nothing half-registered
    assert list((mlref_home / "work" / "toy" / "staging").iterdir()) == []


def test_each_version_links_to_the_run_that_trained_it(tmp_path: Path) -> None:
    with tracking.start_run("toy-training", run_name="fit", params={"C": 2.0}) as train_run:
        tracking.log_metrics({"loss": 0.1})
        inside = registry.register("toy", model_dir(tmp_path, 1.0))
    assert inside.training_run_id == train_run.info.run_id
    assert inside.run_id != train_run.info.run_id  # the registration run is nested in the training run
    assert tracking.client().get_run(inside.run_id).data.tags["mlflow.parentRunId"] == train_run.info.run_id
    assert tracking.client().get_run(inside.training_run_id).data.params == {"C": "2.0"}

    outside = registry.register("toy", model_dir(tmp_path, 2.0), params={"C": 3.0})
    assert outside.training_run_id == outside.run_id  # no training run given: its own run, with its params

    explicit = registry.register("toy", model_dir(tmp_path, 3.0), training_run_id=train_run.info.run_id)
    assert registry.get("toy", explicit.version).training_run_id == train_run.info.run_id


# ------------------------------------------------------------------ a missing or damaged registry


def test_read_only_calls_never_create_a_store(tmp_path: Path, mlref_home: Path) -> None:
    db = mlref_home / "mlflow.db"
    db.unlink()
    with pytest.raises(registry.NoRegistryError, match=f"there is no registry yet at {db}"):
        registry.get("toy")
    with pytest.raises(registry.NotFoundError, match="no registry yet"):
        registry.load("toy", "champion", load_value)
    assert registry.find("toy") is None
    assert registry.version_of("toy") is None
    assert registry.list_versions("toy") == []
    assert not db.exists()
    registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")  # a write creates it
    assert db.exists() and registry.get("toy").version == "1"


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_store_is_one_plain_error_and_is_left_as_it_is(tmp_path: Path, mlref_home: Path, damage: str) -> None:
    from mlref_testing.probe import faults

    registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    db = faults.registry_db()
    assert db == mlref_home / "mlflow.db"
    if damage == "empty":
        faults.empty_registry()
        expected = "the file is empty"
    elif damage == "garbage":
        db.write_bytes(b"these are not the bytes of a database" * 100)
        expected = "not an SQLite database"
    else:
        faults.truncate_registry(0.3)
        expected = "malformed"
    size = db.stat().st_size
    for call in (
        lambda: registry.get("toy"),
        lambda: registry.find("toy"),
        lambda: registry.list_versions("toy"),
        lambda: registry.load("toy", "champion", load_value),
    ):
        with pytest.raises(registry.DamagedRegistryError, match=f"the registry at {db} is damaged: .*{expected}"):
            call()
    with pytest.raises(registry.DamagedRegistryError):  # a write does not paper over it either
        registry.register("toy", model_dir(tmp_path, 2.0))
    assert db.stat().st_size == size  # not re-created, not "repaired": the evidence stays for the user
    from common import cli

    assert isinstance(registry.DamagedRegistryError("x"), cli.user_error_types())  # exit code 2, one line


# ------------------------------------------------------------------ compare-and-set promotion


def test_compare_and_promote_only_moves_the_expected_champion(tmp_path: Path) -> None:
    v1 = registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    v2 = registry.register("toy", model_dir(tmp_path, 2.0))
    v3 = registry.register("toy", model_dir(tmp_path, 3.0))
    assert registry.compare_and_promote("toy", v2.version, expected=v1.version)
    assert not registry.compare_and_promote("toy", v3.version, expected=v1.version)  # v1 is no longer champion
    assert registry.get("toy").version == v2.version
    assert not registry.compare_and_promote("toy", v3.version, expected=None)  # there is a champion already
    assert registry.champion_history("toy") == ["1", "2"]


def test_promotion_lock_excludes_other_threads_and_times_out(tmp_path: Path) -> None:
    import threading

    registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    v2 = registry.register("toy", model_dir(tmp_path, 2.0))
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with registry.promotion_lock("toy"):
            held.set()
            release.wait(20)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(20)
        lock = registry.promotion_lock("toy", timeout_s=0.3)
        with pytest.raises(registry.LockTimeoutError, match=r"toy\.lock"), lock:
            pass
    finally:
        release.set()
        t.join()
    with registry.promotion_lock("toy"), registry.promotion_lock("toy"):  # re-entrant in one thread
        registry.promote("toy", v2.version)
    assert registry.get("toy").version == v2.version


def test_a_store_being_created_is_not_mistaken_for_a_damaged_one(tmp_path: Path, mlref_home: Path) -> None:
    import threading

    (mlref_home / "mlflow.db").unlink()
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:  # polls like a server while the first writer creates the store
        while not done.is_set():
            try:
                registry.find("toy")
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    try:
        mv = registry.register("toy", model_dir(tmp_path, 1.0), alias="champion")
    finally:
        done.set()
        t.join(30)
    assert errors == [] and mv.version == "1"
    assert (mlref_home / "mlflow.db.create.lock").exists()


def test_experiment_creation_failing_for_another_reason_raises_mlflows_error(
    mlref_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a concurrent create is answered with the existing experiment; any other failure is MLflow's own error
    (it used to end in AttributeError on None)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def refuse(self, name, artifact_location=None):
        raise MlflowException(f"cannot create {name}: read-only store")

    monkeypatch.setattr(MlflowClient, "create_experiment", refuse)
    with pytest.raises(MlflowException, match="read-only store"):
        tracking.experiment_id("never-created")

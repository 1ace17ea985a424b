"""The fault kit (mlref_testing/probe/faults.py) on the lifecycle: kill -9 during batch and retrain, a flipped byte in a
registered model, an emptied or truncated registry seen from the apps' command lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common import registry, retraining
from mlref_testing.probe import faults

WINDOW = 1_700_000_000.0


def _toy(tmp_path: Path, value: float, alias: str | None = None) -> registry.ModelVersion:
    d = tmp_path / f"toy-{value}"
    d.mkdir()
    (d / "score.json").write_text(json.dumps(value))
    (d / "weights.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    return registry.register("toy", d, alias=alias, last_training_timestamp=WINDOW - 1)


def _load(path: Path) -> float:
    return json.loads((path / "score.json").read_text())


def test_kill_9_during_batch_leaves_the_old_output_intact(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": np.arange(1000), "x": np.arange(1000) * 0.5}).to_csv(src, index=False)
    dst = tmp_path / "scores.parquet"
    dst.write_bytes(b"yesterday's scores")
    marker = tmp_path / "chunk3"
    cmd = faults.script_cmd(
        tmp_path,
        f"""
import time
from pathlib import Path
from common.batch import score_file

calls = 0

def slow(df):
    global calls
    calls += 1
    if calls == 3:  # two chunks are already in the temporary output
        Path({str(marker)!r}).touch()
        time.sleep(120)
    return df.assign(score=df["x"] * 2)

score_file({str(src)!r}, {str(dst)!r}, slow, chunksize=100, progress=False)
""",
    )
    done = faults.run_and_kill(cmd, when_path_exists=marker, timeout_s=60)
    assert done.killed
    assert dst.read_bytes() == b"yesterday's scores"  # never a partial file at the output path
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".batch-tmp")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".scores.parquet.")


def test_kill_9_during_promotion_leaves_the_champion_and_a_readable_registry(tmp_path: Path) -> None:
    v1 = _toy(tmp_path, 0.5, alias=registry.CHAMPION)
    v2 = _toy(tmp_path, 0.9)
    marker = tmp_path / "promoting"
    # the worst moment: the challenger won, the promotion lock is held, the alias is not written yet
    cmd = faults.script_cmd(
        tmp_path,
        f"""
import json, time
from pathlib import Path
from common import registry, retraining

real = registry.set_alias

def set_alias(name, alias, version):
    if alias == registry.CHAMPION:
        Path({str(marker)!r}).touch()
        time.sleep(120)
    return real(name, alias, version)

registry.set_alias = set_alias
evaluate = lambda mv: json.loads((registry.fetch_model_dir(mv) / "score.json").read_text())
retraining.champion_vs_challenger("toy", registry.get("toy", "{v2.version}"), evaluate, metric="ap",
                                  window_start={WINDOW})
""",
    )
    done = faults.run_and_kill(cmd, when_path_exists=marker, timeout_s=60)
    assert done.killed
    assert registry.get("toy").version == v1.version
    assert [v.version for v in registry.list_versions("toy")] == [v1.version, v2.version]
    assert registry.load("toy", registry.CHAMPION, _load)[0] == 0.5
    assert retraining.history("toy") == []  # no decision claims a promotion that did not happen
    with registry.promotion_lock("toy", timeout_s=5):  # the dead process's lock went with it
        pass
    d = retraining.champion_vs_challenger(
        "toy", v2, lambda mv: registry.load("toy", mv.version, _load)[0], metric="ap", window_start=WINDOW
    )
    assert d.promoted and registry.get("toy").version == v2.version


def test_a_flipped_byte_in_a_registered_model_is_refused_at_load(tmp_path: Path, mlref_home: Path) -> None:
    mv = _toy(tmp_path, 0.5, alias=registry.CHAMPION)
    stored = faults.artifact_files(mv)
    assert stored[0].name == "weights.bin" and stored[0].is_relative_to(mlref_home / "artifacts")
    faults.flip_byte(stored[0])
    with pytest.raises(registry.IntegrityError, match="modified after registration"):
        registry.load("toy", registry.CHAMPION, _load)
    assert not (mlref_home / "models" / "toy" / mv.version).exists()


def test_an_emptied_or_truncated_registry_is_exit_2_with_one_line_from_the_apps(
    tmp_path: Path, mlref_home: Path
) -> None:
    v1 = _toy(tmp_path, 0.5, alias=registry.CHAMPION)
    homes = {case: tmp_path / case for case in ("empty", "truncated")}
    for home in homes.values():
        shutil.copytree(mlref_home, home)
    faults.truncate(homes["empty"] / "mlflow.db", 0)
    faults.truncate(homes["truncated"] / "mlflow.db", 0.4)
    cases = [  # (home, a read-only command, expected message)
        (homes["empty"], faults.app_cmd("recommender", "predict", "u1"), "the file is empty (0 bytes)"),
        (homes["truncated"], faults.app_cmd("fraud", "models", "list"), "database disk image is malformed"),
    ]
    results = faults.run_concurrently(
        [c for _, c, _ in cases], timeout_s=180, environ=[faults.env(MLREF_HOME=str(h)) for h, _, _ in cases]
    )
    for (home, _, expected), res in zip(cases, results, strict=True):
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, (res.args, res.stderr[-3000:])
        assert "Traceback" not in res.stderr and len(lines) == 1, lines
        assert lines[0].startswith(f"error: the registry at {home / 'mlflow.db'} is damaged: ") and expected in lines[0]
    assert (homes["empty"] / "mlflow.db").stat().st_size == 0  # the read did not quietly make a new, empty store
    assert registry.get("toy").version == v1.version  # the original home is untouched

"""The command line on a user's own folder: train -> predict -> batch -> evaluate -> export -> monitor, the shared
report directories, and the exit codes of user errors."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from apps.vision.__main__ import app
from common.errors import ConfigError
from common.workspace import Workspace
from tests.vision.conftest import make_folder

runner = CliRunner()
TINY = ["--arch", "airnet", "--widths", "8,16,16", "--image-size", "16", "--epochs", "2", "--batch-size", "32"]


def test_train_predict_batch_evaluate_export_monitor(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "photos", per_class=15)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"amp": False, "tta": 1}))
    r = runner.invoke(app, ["train", "--dataset", str(folder), "--config", str(cfg), *TINY])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["version"] == "1" and "champion" in out["aliases"] and out["test"]["accuracy"] >= 0
    assert Path(out["report"]).is_file() and out["dataset"] == str(folder)
    assert out["epochs"] == 2 and out["arch"] == "airnet" and out["skipped_files"] == 0

    img = next((folder / "red").glob("*.png"))
    r = runner.invoke(app, ["predict", str(img), "--k", "2"])
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["labels"]) == 2

    archive = tmp_path / "incoming.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder / "blue", arcname="incoming")
    r = runner.invoke(app, ["batch", "--input", str(archive), "--output", str(tmp_path / "p.parquet")])
    assert r.exit_code == 0, r.output
    preds = pd.read_parquet(tmp_path / "p.parquet")
    assert len(preds) == 15 and set(preds.columns) >= {"path", "prediction", "confidence", "top_k", "error"}

    r = runner.invoke(app, ["evaluate", "--dataset", str(folder), "--ref", "1"])  # decoded at the model's 16 px
    assert r.exit_code == 0, r.output
    evaluated = json.loads(r.stdout)
    assert "accuracy" in evaluated["metrics"] and evaluated["version"] == "1"
    assert evaluated["baselines"]["prior"]["accuracy"] <= 0.5  # 3 balanced classes

    # issue 18: train's and evaluate's reports are two runs of reports/vision/<dataset>/evaluation (neither
    # overwrites the other), `latest` points at the newest, and the index has a row naming dataset and kind
    train_run, eval_run = Path(out["report"]).parent, Path(evaluated["report"]).parent
    kind = train_run.parent
    assert train_run != eval_run and eval_run.parent == kind and kind.name == "evaluation"
    assert kind.parent == Workspace.from_env().reports / "vision" / "photos"
    assert (train_run / "report.md").is_file() and (kind / "latest").resolve() == eval_run.resolve()
    index = (Workspace.from_env().reports / "index.md").read_text().replace("`", "")
    assert index.count("| vision | photos | evaluation |") == 2, index

    r = runner.invoke(app, ["export", "--out", str(tmp_path / "exported")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["max_abs_logit_diff"]["onnx"] < 1e-3
    assert (tmp_path / "exported" / "model.onnx").is_file()

    r = runner.invoke(app, ["monitor", "--dataset", str(folder)])
    assert r.exit_code in (0, 1), r.output  # same distribution: usually 0; never a crash
    monitored = json.loads(r.stdout)
    assert "drifted_features" in monitored["stats"] and monitored["stats"]["accuracy"] >= 0
    assert Path(monitored["report"]).parent.parent == Workspace.from_env().reports / "vision" / "photos" / "monitor"


def test_user_errors_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "apps.vision", *args], capture_output=True, text=True, cwd=repo, timeout=400
        )

    r = run("train", "--dataset", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no such file or directory" in r.stderr.strip().splitlines()[-1]
    r = run("predict", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "has no version" in r.stderr
    r = run("train", "--arch", "notanet", "--epochs", "1")
    assert r.returncode == 2 and "not 'airnet' nor a torchvision model" in r.stderr


def test_the_apps_own_options_reach_the_stages(monkeypatch) -> None:
    """serve --backend, batch --k, train --widths and retrain --epochs (declared on VisionApp, not patched into the
    standard commands) arrive at the stages with the values given."""
    from apps.vision.pipeline import APP_IMPL

    seen: dict[str, object] = {}
    monkeypatch.setattr(APP_IMPL, "serve", lambda ws, host, port, **kw: seen.update(serve=kw))
    monkeypatch.setattr(APP_IMPL, "retrain", lambda ws, d, cfg, margin: seen.update(epochs=cfg.fine_tune_epochs) or {})
    monkeypatch.setattr(APP_IMPL, "load_model", lambda ws, ref: (None, type("MV", (), {"version": "1"})))
    monkeypatch.setattr(APP_IMPL, "batch", lambda ws, m, src, out, *, chunksize, **kw: seen.update(batch=kw) or {})
    assert runner.invoke(app, ["serve", "--backend", "onnx"]).exit_code == 0
    assert runner.invoke(app, ["retrain", "--dataset", "new", "--epochs", "7"]).exit_code == 0
    assert runner.invoke(app, ["batch", "--input", "in", "--output", "o.csv", "--k", "2"]).exit_code == 0
    assert seen == {"serve": {"backend": "onnx"}, "epochs": 7, "batch": {"k": 2}}
    assert APP_IMPL.config(None, {"widths": (8, 16, 16)}).widths == (8, 16, 16)
    r = runner.invoke(app, ["train", "--widths", "8,x"])  # a ConfigError: cli.run makes it one line, exit 2
    assert isinstance(r.exception, ConfigError) and "--widths" in str(r.exception)

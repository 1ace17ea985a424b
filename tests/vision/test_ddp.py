"""2-process DDP runs (torchrun, gloo on CPU): the vision training recipe, and the `train` command under torchrun
(every rank trains, rank 0 alone opens the tracking run, reports and registers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.vision.conftest import make_folder

REPO = Path(__file__).resolve().parents[2]


def test_two_process_ddp_training(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "data", per_class=12)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests" / "vision" / "ddp_train_script.py"),
        str(folder),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    params = [k for k in w0 if "running_" not in k and "num_batches" not in k]
    assert len(params) > 10
    for name in params:  # different inits, one model: DDP broadcast, synced gradients, lookahead on both ranks
        assert torch.equal(w0[name], w1[name]), name  # (BatchNorm running statistics stay per rank)
    h0, h1 = (json.loads((tmp_path / f"history{r}.json").read_text()) for r in (0, 1))
    assert [r["val_accuracy"] for r in h0] == [r["val_accuracy"] for r in h1] and len(h0) == 2
    ckpt = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["extra"]["world_size"] == 2 and ckpt["epoch"] == 2


def test_torchrun_train_command_registers_and_reports_once_from_rank_0(tmp_path: Path) -> None:
    from common import registry, tracking
    from common.workspace import Workspace

    folder = make_folder(tmp_path / "photos", per_class=12)
    cfg = tmp_path / "tiny.json"
    recipe = {"widths": [8, 16, 16], "image_size": 16, "epochs": 2, "batch_size": 16, "tta": 1}
    cfg.write_text(json.dumps(recipe | {"amp": False, "channels_last": False}))
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MLREF_HOME": str(home)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLREF_TRACKING_URI"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "apps.vision"]
    cmd += ["train", "--dataset", str(folder), "--config", str(cfg), "--checkpoint-dir", str(tmp_path / "ckpt")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)  # one JSON document: rank 1 prints nothing
    assert out["version"] == "1" and out["epochs"] == 2
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["extra"]["world_size"] == 2
    with Workspace.at(home).activate() as ws:
        assert [v.version for v in registry.list_versions("vision")] == ["1"]
        runs = tracking.client().search_runs([tracking.experiment_id("vision-training")])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        kind = ws.reports / "vision" / "photos" / "evaluation"
        assert [d for d in kind.iterdir() if d.name != "latest"] == [Path(out["report"]).parent]

"""A 2-process DDP smoke run (torchrun, gloo on CPU) of the vision training recipe."""

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

"""Worker for tests/common/test_training.py::test_ddp_two_processes (not a test itself).

Run as ``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/common/ddp_fit_script.py OUT``.
Each rank starts from a *different* random init (DDP must broadcast rank 0's), trains a linear classifier on
two Gaussian blobs, and writes its final weights and history to OUT/rank<r>.pt and OUT/history<r>.json.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from common.training import TrainConfig, accuracy, cleanup_distributed, fit, setup_distributed


def blobs(n: int, seed: int) -> TensorDataset:
    """Two 2-D Gaussian blobs at (-2, -2) and (2, 2), unit variance; x: [n, 2] float32, y: [n] int64."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) + (y.float() * 4 - 2).unsqueeze(1)
    return TensorDataset(x, y)


def main(out: Path) -> None:
    logging.basicConfig(level=logging.INFO)
    info = setup_distributed("cpu")
    torch.manual_seed(100 + info.rank)  # deliberately different inits per rank
    model = nn.Linear(2, 2)
    config = TrainConfig(
        epochs=3,
        lr=0.05,
        batch_size=32,
        checkpoint_dir=out / "ckpt",
        progress=False,
        device="cpu",
        early_stopping_patience=None,
    )
    result = fit(model, blobs(512, 0), blobs(101, 1), nn.CrossEntropyLoss(), config, metrics={"accuracy": accuracy})
    torch.save(model.state_dict(), out / f"rank{info.rank}.pt")
    (out / f"history{info.rank}.json").write_text(json.dumps(result.history))
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Worker for tests/vision/test_ddp.py (not a test itself).

``python -m torch.distributed.run --standalone --nproc_per_node=2 tests/vision/ddp_train_script.py FOLDER OUT``:
each rank trains the tiny AirNet recipe on FOLDER (DDP over gloo, batch per process) from a different initial
seed and writes its final weights and history to OUT/rank<r>.pt and OUT/history<r>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from apps.vision.data import load, train_val_test
from apps.vision.train import fit_model, make_model
from common.training import cleanup_distributed, setup_distributed
from tests.vision.conftest import tiny_config


def main(folder: Path, out: Path) -> None:
    info = setup_distributed("cpu")
    cfg = tiny_config(epochs=2, batch_size=16)
    tr, va, _ = train_val_test(load(folder, image_size=cfg.image_size, progress=False), 0.2, 0.2, 0)
    net = make_model(tiny_config(epochs=2, batch_size=16, seed=100 + info.rank), tr)  # different inits per rank
    result = fit_model(net, tr, va, cfg, checkpoint_dir=out / "ckpt", progress=False)
    torch.save(net.state_dict(), out / f"rank{info.rank}.pt")
    (out / f"history{info.rank}.json").write_text(json.dumps(result.history))
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

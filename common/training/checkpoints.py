"""Checkpoints: model, optimizer, scheduler, AMP scaler, RNG and early-stopping state with the run's config as a
plain dict, written atomically and read with ``weights_only=True`` (no arbitrary pickles)."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from common.training.config import TrainConfig
from common.training.distributed import _unwrap

LAST = "last.pt"
BEST = "best.pt"


def _rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as types ``torch.load(weights_only=True)`` accepts."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # (name, keys, pos, has_gauss, gauss)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    epoch: int,
    best: Mapping[str, Any] | None = None,
    config: TrainConfig | Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same directory, then ``os.replace``).

    ``epoch`` is the number of finished epochs; ``config`` is stored as a plain dict so the checkpoint loads
    with ``weights_only=True``; ``extra`` must hold only plain python types and tensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "best": dict(best) if best is not None else None,
        "config": config.to_dict() if isinstance(config, TrainConfig) else dict(config),
        "extra": dict(extra) if extra is not None else {},
        "torch_version": str(torch.__version__),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no arbitrary pickles).

    Keys: model, optimizer, scheduler, scaler, epoch, best, config (dict), extra, torch_version.
    """
    return torch.load(Path(path), map_location=map_location, weights_only=True)

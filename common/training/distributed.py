"""Devices and distributed data parallel: the process group torchrun describes (gloo on CPU, nccl on CUDA), the
reductions the loop needs over ranks, moving batches to a device, and unwrapping a DDP model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# ---------------------------------------------------------------------------------------------- devices / DDP


def select_device(pref: str = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; anything else is passed to ``torch.device`` (e.g. ``cuda:1``)."""
    if pref != "auto":
        return torch.device(pref)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment; a single-process no-op without it.

    nccl with ``cuda:LOCAL_RANK`` when CUDA is available (and ``device`` is not ``cpu``), else gloo on CPU.
    Idempotent: a second call reuses the initialised group.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(device=select_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        if rank == 0:
            logger.info("distributed: backend=%s world_size=%d", backend, world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats over all ranks (float64 for exactness)."""
    if not info.distributed:
        return values
    dev = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def _all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (a list of length world_size, on every rank)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_to_device(v, device) for v in x)
    return x

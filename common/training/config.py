"""The options of :func:`~common.training.loop.fit` (:class:`TrainConfig`, stored in every checkpoint as a plain
dict) and what it returns (:class:`FitResult`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

MetricFn = Callable[[Tensor, Tensor], float]
"""``metric(outputs[N, ...], targets[N, ...]) -> float`` over a whole split (CPU tensors, outputs float32)."""

# Options that may differ between a checkpoint and the run resuming it without a warning.
_RESUME_FREE = {"resume", "progress", "checkpoint_dir", "num_workers", "device", "max_time_s"}


@dataclass
class TrainConfig:
    """Every option of :func:`fit`. ``batch_size`` is per process under DDP (global = batch_size * world)."""

    epochs: int = 10
    lr: float = 1e-3  # peak learning rate of AdamW (and of the schedule)
    weight_decay: float = 0.0
    batch_size: int = 64
    grad_clip: float | None = 1.0  # max global L2 norm of the gradients; None = no clipping
    amp: bool = True  # fp16 autocast + GradScaler on CUDA; on CPU only with amp_dtype="bfloat16"
    amp_dtype: Literal["float16", "bfloat16"] = "float16"
    scheduler: Literal["cosine", "onecycle", "none"] = "cosine"  # stepped once per batch
    early_stopping_patience: int | None = 5  # epochs without improvement before stopping; None = never
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    monitor: str = "val_loss"  # a history key: train_loss, val_loss or val_<metric name>
    mode: Literal["min", "max"] = "min"
    restore_best: bool = True  # load the best epoch's weights into the model when fit returns
    checkpoint_dir: Path | None = None  # last.pt every epoch, best.pt on improvement (rank 0 only)
    resume: bool = True  # continue from checkpoint_dir/last.pt when it exists
    seed: int = 42  # seeds shuffling (same on all ranks) and dropout etc. (seed + rank)
    device: str = "auto"  # auto = cuda > mps > cpu; ignored under torchrun (cuda:LOCAL_RANK or cpu)
    num_workers: int = 0
    progress: bool = True  # tqdm bar per epoch (main rank only)
    max_time_s: float | None = None  # stop after the first epoch that ends this many seconds into training
    channels_last: bool = False  # model and 4-D inputs in channels_last memory format (faster convs on CPU/GPU)
    ema_decay: float | None = None  # EMA of the weights (validation, best and returned model use it); None = off
    ema_every: int = 1  # update the EMA every this many optimizer steps (decay applies per update)

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (paths as str), safe for ``torch.load(weights_only=True)`` and JSON."""
        d = dataclasses.asdict(self)
        d["checkpoint_dir"] = None if self.checkpoint_dir is None else str(self.checkpoint_dir)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from other versions) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("checkpoint_dir") is not None:
            kw["checkpoint_dir"] = Path(kw["checkpoint_dir"])
        return cls(**kw)


@dataclass
class FitResult:
    """What :func:`fit` did. ``history`` has one dict per epoch (epoch is 1-based)."""

    history: list[dict[str, float]]
    best_epoch: int | None
    best_metric: float | None
    checkpoint_path: Path | None  # best.pt when checkpoint_dir was set
    stopped_early: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # what the caller adds about the run (e.g. its precision)

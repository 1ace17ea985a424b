"""A small, straight-line torch training loop shared by the torch apps (vision, predictive maintenance).

Modelled on torchvision's ``references/classification/train.py``: every option lives in :class:`TrainConfig`,
checkpoints carry that config (as a plain dict) next to the model, optimizer, scheduler, AMP scaler, RNG and
early-stopping state, and distributed mode is switched on by the environment variables ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): gloo on CPU, nccl on CUDA, a ``DistributedSampler`` per rank,
losses and metrics reduced over all ranks, and only rank 0 writes checkpoints and logs.

Data contract: a dataset yields ``(inputs, target)`` pairs; the default collate stacks them into a batch
``(inputs[B, ...], target[B, ...])``; ``model(inputs)`` returns ``outputs[B, ...]`` and
``loss_fn(outputs, target)`` a scalar mean over the batch. ``inputs`` may also be a tuple/list/dict of tensors
(moved to the device as a whole and passed to the model as one argument).

Typical use::

    result = fit(model, train_ds, val_ds, nn.CrossEntropyLoss(), TrainConfig(epochs=20, checkpoint_dir=d),
                 metrics={"accuracy": accuracy})
    # under torchrun: torchrun --nproc_per_node=2 -m apps.vision train ...   (batch_size is per process)

Resuming (``resume=True`` and ``checkpoint_dir/last.pt`` present) continues after the last finished epoch and
reproduces the weights of an uninterrupted run bit for bit on the same machine and world size (every rank
reads the checkpoint, so under DDP ``checkpoint_dir`` must be on a filesystem all ranks share).

Modules: :mod:`~common.training.config` (:class:`TrainConfig`, :class:`FitResult`),
:mod:`~common.training.distributed` (devices, torchrun's process group), :mod:`~common.training.hooks`
(:class:`StepHook`, :class:`WeightEMA`), :mod:`~common.training.checkpoints` and :mod:`~common.training.loop`
(:func:`fit`, :func:`evaluate`). Everything public is importable from ``common.training``.
"""

from common.training.checkpoints import BEST, LAST, load_checkpoint, save_checkpoint
from common.training.config import FitResult, MetricFn, TrainConfig
from common.training.distributed import (  # noqa: F401 - used by apps.vision
    DistInfo,
    _all_gather,
    _all_reduce_sum,
    _unwrap,
    cleanup_distributed,
    select_device,
    setup_distributed,
)
from common.training.hooks import StepHook, WeightEMA
from common.training.loop import accuracy, evaluate, fit

__all__ = [
    "BEST",
    "LAST",
    "DistInfo",
    "FitResult",
    "MetricFn",
    "StepHook",
    "TrainConfig",
    "WeightEMA",
    "accuracy",
    "cleanup_distributed",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "select_device",
    "setup_distributed",
]

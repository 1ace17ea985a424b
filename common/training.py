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
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from common.config import seed_everything

logger = logging.getLogger(__name__)

MetricFn = Callable[[Tensor, Tensor], float]
"""``metric(outputs[N, ...], targets[N, ...]) -> float`` over a whole split (CPU tensors, outputs float32)."""

LAST = "last.pt"
BEST = "best.pt"
# Options that may differ between a checkpoint and the run resuming it without a warning.
_RESUME_FREE = {"resume", "progress", "checkpoint_dir", "num_workers", "device", "max_time_s"}


class StepHook:
    """Something that acts on the model between optimizer steps (lookahead, weight averaging, freezing).

    ``after_step`` runs after every optimizer step (``step`` is 1-based over the whole run, ``total_steps`` the
    run's length), ``after_epoch`` after each epoch's last step, before validation. Its state (``state_dict``:
    plain python types and tensors only) is saved in checkpoints and restored on resume.
    """

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimizer step."""

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after each epoch's training steps."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class WeightEMA(StepHook):
    """Exponential moving average of the floating-point weights and buffers: every ``every`` steps,
    ``ema = decay * ema + (1 - decay) * w``. :func:`fit` validates, keeps and returns the averaged weights."""

    def __init__(self, decay: float, every: int = 1) -> None:
        if not 0.0 <= decay < 1.0 or every < 1:
            raise ValueError(f"EMA needs 0 <= decay < 1 and every >= 1, got decay={decay}, every={every}")
        self.decay, self.every = decay, every
        self.shadow: dict[str, Tensor] = {}

    def _init(self, model: nn.Module) -> None:
        self.shadow = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:  # noqa: ARG002 - the interface's signature
        if not self.shadow:
            self._init(model)
            return
        if step % self.every:
            return
        with torch.no_grad():
            for k, v in _unwrap(model).state_dict().items():
                if v.is_floating_point():
                    self.shadow[k].lerp_(v.detach(), 1.0 - self.decay)
                else:
                    self.shadow[k].copy_(v)

    def averaged_state(self, model: nn.Module) -> dict[str, Tensor]:
        """The averaged state dict (the model's own before the first step)."""
        return self.shadow if self.shadow else _unwrap(model).state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.shadow = {k: v.clone() for k, v in state.get("shadow", {}).items()}


def _swap_state(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Load ``state`` into ``model`` and return a copy of the weights it replaced."""
    net = _unwrap(model)
    old = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    return old


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


@dataclass
class FitResult:
    """What :func:`fit` did. ``history`` has one dict per epoch (epoch is 1-based)."""

    history: list[dict[str, float]]
    best_epoch: int | None
    best_metric: float | None
    checkpoint_path: Path | None  # best.pt when checkpoint_dir was set
    stopped_early: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # what the caller adds about the run (e.g. its precision)


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


# ---------------------------------------------------------------------------------------------- checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
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


# ---------------------------------------------------------------------------------------------- evaluation


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: _to_device(v, device) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_to_device(v, device) for v in x)
    return x


def _autocast(device: torch.device, enabled: bool, dtype: str) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype), enabled=enabled)


def _amp_enabled(config: TrainConfig, device: torch.device) -> bool:
    if not config.amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and config.amp_dtype == "bfloat16")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    ds: Dataset,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
    metrics: Mapping[str, MetricFn] | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    amp: bool = False,
    amp_dtype: str = "float16",
    num_workers: int = 0,
    dist_info: DistInfo | None = None,
) -> dict[str, float]:
    """Mean loss (key ``loss``, sample-weighted) and each metric over the whole of ``ds``.

    Under DDP each rank scores a disjoint shard (no padding, so no sample counts twice) and the outputs are
    gathered, so every rank returns the same numbers. Metrics see all outputs at once (on CPU, float32).
    """
    info = dist_info or DistInfo(device=torch.device(device) if device is not None else select_device())
    device = torch.device(device) if device is not None else info.device
    net = _unwrap(model)  # DDP's forward would broadcast buffers: a collective that uneven shards would hang
    was_training = net.training
    net.eval()
    shard = Subset(ds, range(info.rank, len(ds), info.world_size)) if info.distributed else ds
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    loss_sum, count = 0.0, 0
    outs: list[Tensor] = []
    tgts: list[Tensor] = []
    for inputs, target in loader:
        inputs, target = _to_device(inputs, device), _to_device(target, device)
        with _autocast(device, amp, amp_dtype):
            out = net(inputs)
            if loss_fn is not None:
                loss_sum += float(loss_fn(out, target)) * len(target)
        count += len(target)
        if metrics:
            outs.append(out.detach().float().cpu())
            tgts.append(target.detach().cpu())
    net.train(was_training)
    loss_sum, count = _all_reduce_sum([loss_sum, float(count)], info)
    result: dict[str, float] = {}
    if loss_fn is not None:
        result["loss"] = loss_sum / max(count, 1.0)
    if metrics:
        gathered = _all_gather((outs, tgts), info)
        all_out = torch.cat([o for rank_outs, _ in gathered for o in rank_outs])
        all_tgt = torch.cat([t for _, rank_tgts in gathered for t in rank_tgts])
        for name, fn in metrics.items():
            result[name] = float(fn(all_out, all_tgt))
    return result


# ---------------------------------------------------------------------------------------------- training


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any | None:
    if config.scheduler == "none":
        return None
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=max(total_steps, 1))
    raise ValueError(f"unknown scheduler {config.scheduler!r}: use cosine, onecycle or none")


def _improved(value: float, best: float | None, config: TrainConfig) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - config.min_delta if config.mode == "min" else value > best + config.min_delta


@dataclass
class _Loop:
    """The state one :func:`fit` call carries from epoch to epoch (what a checkpoint saves)."""

    model: nn.Module
    config: TrainConfig
    info: DistInfo
    loader: DataLoader
    sampler: DistributedSampler
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    scaler: torch.amp.GradScaler
    use_amp: bool
    hooks: list[StepHook]
    ema: WeightEMA | None
    ckpt_dir: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"metric": None, "epoch": None, "bad_epochs": 0})
    best_state: dict[str, Tensor] | None = None
    start_epoch: int = 0
    stopped: bool = False

    @property
    def total_steps(self) -> int:
        return self.config.epochs * len(self.loader)


def _check_monitor(config: TrainConfig, val_ds: Dataset | None, metrics: Mapping[str, MetricFn] | None) -> None:
    allowed = {"train_loss"}
    if val_ds is not None:
        allowed |= {"val_loss"} | {f"val_{m}" for m in metrics or {}}
    if config.monitor not in allowed:
        raise ValueError(f"monitor={config.monitor!r} is not in this run's history: {sorted(allowed)}")


def _setup_loop(
    model: nn.Module,
    train_ds: Dataset,
    config: TrainConfig,
    step_hooks: Sequence[StepHook],
    optimizer_factory: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None,
    scheduler_factory: Callable[[torch.optim.Optimizer, TrainConfig, int], Any] | None,
) -> _Loop:
    """Join the process group, place the model, and build the loader, optimizer, scheduler and AMP scaler."""
    info = setup_distributed(config.device)
    device = info.device
    seed_everything(config.seed + info.rank)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = WeightEMA(config.ema_decay, config.ema_every) if config.ema_decay is not None else None
    # A DistributedSampler also in single-process mode: epoch e's order depends only on (seed, e), so a
    # resumed run sees the same batches as an uninterrupted one.
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed)
    loader = DataLoader(
        train_ds,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    optimizer = (
        optimizer_factory(model, config)
        if optimizer_factory is not None
        else torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    )
    total_steps = config.epochs * len(loader)
    scheduler = (
        scheduler_factory(optimizer, config, total_steps)
        if scheduler_factory is not None
        else _make_scheduler(optimizer, config, total_steps)
    )
    use_amp = _amp_enabled(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and config.amp_dtype == "float16")
    return _Loop(
        model=model,
        config=config,
        info=info,
        loader=loader,
        sampler=sampler,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        use_amp=use_amp,
        hooks=[*step_hooks, *([ema] if ema is not None else [])],
        ema=ema,
        ckpt_dir=Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None,
    )


def _resume(run: _Loop) -> None:
    """Continue from ``checkpoint_dir/last.pt`` when asked and present: weights, optimizer, scheduler, scaler,
    early-stopping state, history, hooks and every rank's RNG state."""
    config, info, ckpt_dir = run.config, run.info, run.ckpt_dir
    if ckpt_dir is None or not config.resume or not (ckpt_dir / LAST).exists():
        return
    ckpt = load_checkpoint(ckpt_dir / LAST, map_location=info.device)
    changed = {k for k, v in ckpt["config"].items() if k not in _RESUME_FREE and config.to_dict().get(k, v) != v}
    if changed:
        logger.warning(
            "resuming %s with changed options %s: the run will not match an uninterrupted one",
            ckpt_dir / LAST,
            sorted(changed),
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.scheduler is not None and ckpt["scheduler"] is not None:
        run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    run.start_epoch, run.best = ckpt["epoch"], dict(ckpt["best"])
    run.history = list(ckpt["extra"].get("history", []))
    patience = config.early_stopping_patience  # re-judged, so a larger patience lets a stopped run go on
    run.stopped = patience is not None and run.best["bad_epochs"] >= patience
    for hook, state in zip(run.hooks, ckpt["extra"].get("hooks", []), strict=False):
        hook.load_state_dict(state)
    rngs = ckpt["extra"].get("rng", [])
    if len(rngs) == info.world_size:
        _set_rng_state(rngs[info.rank])
    else:
        logger.warning("checkpoint has RNG states for %d ranks, this run has %d", len(rngs), info.world_size)
    if config.restore_best and (ckpt_dir / BEST).exists():
        run.best_state = load_checkpoint(ckpt_dir / BEST, map_location="cpu")["model"]
    if info.is_main:
        logger.info("resumed from %s after epoch %d", ckpt_dir / LAST, run.start_epoch)


def _train_epoch(
    run: _Loop,
    net: nn.Module,
    epoch: int,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batch_transform: Callable[[Any, Tensor, int], tuple[Any, Tensor]] | None,
) -> tuple[float, float]:
    """One pass over the training data; returns (mean training loss over all ranks, seconds of training)."""
    config, info, device = run.config, run.info, run.info.device
    show = config.progress and info.is_main
    t0 = time.perf_counter()
    net.train()
    run.sampler.set_epoch(epoch)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    bar = tqdm(run.loader, desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False)
    for step, (inputs, target) in enumerate(bar):
        inputs, target = _to_device(inputs, device), _to_device(target, device)
        if batch_transform is not None:
            inputs, target = batch_transform(inputs, target, epoch)
        if config.channels_last and isinstance(inputs, Tensor) and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        loss = _train_step(run, net, loss_fn, inputs, target, (epoch - 1) * len(run.loader) + step + 1)
        loss_sum += loss.detach().double() * len(target)
        seen += len(target)
        if show and step % 10 == 0:
            rate = seen * info.world_size / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4g}", img_s=f"{rate:.0f}")
    for hook in run.hooks:
        hook.after_epoch(run.model, epoch)
    train_time = time.perf_counter() - t0
    bar.close()
    total, n = _all_reduce_sum([loss_sum.item(), float(seen)], info)
    return total / max(n, 1.0), train_time


def _train_step(
    run: _Loop,
    net: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Any,
    target: Tensor,
    global_step: int,
) -> Tensor:
    """Forward, backward (scaled under fp16), optional clipping, optimizer and scheduler step, step hooks."""
    config = run.config
    with _autocast(run.info.device, run.use_amp, config.amp_dtype):
        loss = loss_fn(net(inputs), target)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if config.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.scheduler is not None:
        run.scheduler.step()
    for hook in run.hooks:
        hook.after_step(run.model, global_step, run.total_steps)
    return loss


def _track_best(run: _Loop, row: dict[str, float], epoch: int) -> bool:
    """Early-stopping bookkeeping on ``row[config.monitor]``; keeps a copy of the best weights. True if best."""
    value = row[run.config.monitor]  # the same on every rank (reduced), so all ranks stop together
    is_best = _improved(value, run.best["metric"], run.config)
    if is_best:
        run.best = {"metric": value, "epoch": epoch, "bad_epochs": 0}
        if run.config.restore_best:
            run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    else:
        run.best["bad_epochs"] += 1
    return is_best


def _out_of_time(run: _Loop, t_start: float, epoch: int) -> bool:
    config = run.config
    out = config.max_time_s is not None and time.perf_counter() - t_start >= config.max_time_s
    out = bool(_all_reduce_sum([float(out)], run.info)[0])  # all ranks stop together
    if out and not run.stopped and run.info.is_main and epoch < config.epochs:
        logger.info("time budget: stopping after epoch %d (max_time_s=%s)", epoch, config.max_time_s)
    return out


def _save_epoch(run: _Loop, epoch: int, is_best: bool) -> None:
    """last.pt (and best.pt when ``is_best``) after an epoch; every rank's RNG state goes into the checkpoint."""
    if run.ckpt_dir is None:
        return
    rngs = _all_gather(_rng_state(), run.info)
    if not run.info.is_main:
        return
    extra = {
        "history": run.history,
        "stopped": run.stopped,
        "rng": rngs,
        "world_size": run.info.world_size,
        "hooks": [h.state_dict() for h in run.hooks],
    }
    args = dict(
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        epoch=epoch,
        best=run.best,
        config=run.config,
        extra=extra,
    )
    save_checkpoint(run.ckpt_dir / LAST, **args)
    if is_best:  # best.pt holds the weights that were validated (the EMA's when it is on)
        live_w = _swap_state(run.model, run.ema.averaged_state(run.model)) if run.ema is not None else None
        save_checkpoint(run.ckpt_dir / BEST, **args)
        if live_w is not None:
            _unwrap(run.model).load_state_dict(live_w)


def fit(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset | None,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    config: TrainConfig | None = None,
    *,
    metrics: Mapping[str, MetricFn] | None = None,
    optimizer_factory: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    scheduler_factory: Callable[[torch.optim.Optimizer, TrainConfig, int], Any] | None = None,
    batch_transform: Callable[[Any, Tensor, int], tuple[Any, Tensor]] | None = None,
    step_hooks: Sequence[StepHook] = (),
) -> FitResult:
    """Train ``model`` in place and return the per-epoch history.

    History keys: ``epoch`` (1-based), ``train_loss``, ``val_loss`` and ``val_<metric>`` (when ``val_ds`` is
    given), ``lr`` (at the end of the epoch) and ``time_s``. ``optimizer_factory(model, config)`` replaces
    the default AdamW(lr, weight_decay). ``on_epoch_end(epoch, row)`` runs on the main rank after the epoch's
    checkpoint is written (e.g. to log to MLflow); it must not draw from the global RNGs if bitwise-exact
    resume matters. Under torchrun the process group is joined here; call :func:`cleanup_distributed` at the
    end of the script. On return the model is unwrapped (never DDP), on the training device, with the best
    epoch's weights when ``restore_best``.

    ``scheduler_factory(optimizer, config, total_steps)`` replaces ``config.scheduler`` (stepped once per batch).
    ``batch_transform(inputs, target, epoch)`` runs on each training batch once it is on the device (batch-level
    augmentation: decode once, augment whole batches); validation batches are not transformed. ``step_hooks``
    (:class:`StepHook`) act after each step/epoch; ``config.ema_decay`` adds a :class:`WeightEMA`. History rows
    also hold ``train_time_s`` (the epoch's training steps only, no validation).
    """
    config = config or TrainConfig()
    _check_monitor(config, val_ds, metrics)
    run = _setup_loop(model, train_ds, config, step_hooks, optimizer_factory, scheduler_factory)
    _resume(run)
    info, ema = run.info, run.ema
    net: nn.Module = model  # wrapped after any resume so that DDP broadcasts the restored weights
    if info.distributed:
        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    t_start = time.perf_counter()
    for epoch in range(run.start_epoch + 1, config.epochs + 1):
        if run.stopped:
            break
        t0 = time.perf_counter()
        train_loss, train_time = _train_epoch(run, net, epoch, loss_fn, batch_transform)
        row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss}
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"train loss is {train_loss} in epoch {epoch}")
        live = _swap_state(model, ema.averaged_state(model)) if ema is not None else None
        if val_ds is not None:
            val = evaluate(
                net,
                val_ds,
                loss_fn,
                metrics,
                batch_size=config.batch_size,
                device=info.device,
                amp=run.use_amp,
                amp_dtype=config.amp_dtype,
                num_workers=config.num_workers,
                dist_info=info,
            )
            row.update({f"val_{k}": v for k, v in val.items()})
        row["lr"] = run.optimizer.param_groups[0]["lr"]
        row["train_time_s"] = train_time
        row["time_s"] = time.perf_counter() - t0
        run.history.append(row)
        is_best = _track_best(run, row, epoch)
        if live is not None:  # back to the live weights: training (and its checkpoint) continues from them
            _unwrap(model).load_state_dict(live)
        patience = config.early_stopping_patience
        run.stopped = patience is not None and run.best["bad_epochs"] >= patience
        run.stopped = _out_of_time(run, t_start, epoch) or run.stopped
        if info.is_main:
            logger.info(
                "epoch %d/%d %s", epoch, config.epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            )
        _save_epoch(run, epoch, is_best)
        if info.is_main and on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if run.stopped and info.is_main:
            best = run.best
            logger.info(
                "early stopping after epoch %d: %s has not improved for %d epochs (best %.4g at %d)",
                epoch,
                config.monitor,
                best["bad_epochs"],
                best["metric"],
                best["epoch"],
            )

    if config.restore_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    elif ema is not None:
        model.load_state_dict(ema.averaged_state(model))
    history = run.history
    return FitResult(
        history=history,
        best_epoch=run.best["epoch"],
        best_metric=run.best["metric"],
        checkpoint_path=run.ckpt_dir / BEST if run.ckpt_dir is not None else None,
        stopped_early=run.stopped and bool(history) and history[-1]["epoch"] < config.epochs,
    )


def accuracy(outputs: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy: mean(argmax(outputs[N, C], dim=1) == targets[N]), in [0, 1]."""
    return float((outputs.argmax(dim=1) == targets).float().mean())


__all__ = [
    "DistInfo",
    "FitResult",
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

"""The training loop: :func:`fit` and :func:`evaluate` (the design, data contract and resume guarantee are in
:mod:`common.training`'s docstring)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from common.config import seed_everything
from common.training.checkpoints import BEST, LAST, _rng_state, _set_rng_state, load_checkpoint, save_checkpoint
from common.training.config import _RESUME_FREE, FitResult, MetricFn, TrainConfig
from common.training.distributed import (
    DistInfo,
    _all_gather,
    _all_reduce_sum,
    _to_device,
    _unwrap,
    select_device,
    setup_distributed,
)
from common.training.hooks import StepHook, WeightEMA, _swap_state

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- evaluation


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
    n_rows = len(cast(Sized, ds))  # map-style datasets have a length; torch.utils.data.Dataset does not declare it
    shard = Subset(ds, range(info.rank, n_rows, info.world_size)) if info.distributed else ds
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    loss_sum, count = 0.0, 0.0
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
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed
    )
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
    args: dict[str, Any] = dict(
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

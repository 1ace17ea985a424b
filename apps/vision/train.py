"""Training through ``common.training.fit``: batch augmentation on the decoded uint8 tensor, the airbench recipe
for AirNet, AdamW + one-cycle for torchvision nets, checkpoint/resume and DDP (under ``torchrun``) from common.

AirNet recipe (airbench94, checked against ``KellerJordan/cifar10-airbench``): SGD with Nesterov momentum 0.85;
lr 11.5 and weight decay 0.0153 per 1024 images in airbench's decoupled form (here on a mean loss: group lr
``lr / (1 + 1/(1-m)) * B / 1024``, per-step decay ``wd * B / 1024 / (1 + 1/(1-m))``); BatchNorm biases at 64x
lr; label smoothing 0.2; lr from 0.2x up to 1x at 23 % of the steps, then down to 0.07x; the whitening bias
trains for 3 epochs; lookahead every 5 steps with decay ``0.95^5 (t/T)^3`` and a full copy at the end;
augmentation: flips (random per image, alternating every epoch) and translations of up to 2 pixels.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from apps.vision import precision
from apps.vision.config import Config
from apps.vision.data import ImageSet
from apps.vision.model import AIRNET, AirNetBackbone, ImageClassifier, VisionModel, build, load_matching
from apps.vision.precision import Precision
from common import training

log = logging.getLogger(__name__)
LOOKAHEAD_EVERY = 5


class TrainImages(Dataset):
    """``((image uint8[3, S, S], index), label)``: the index lets the augmentation flip per image and epoch.
    ``images`` is a tensor or the disk cache's :class:`~apps.vision.cache.DiskImages` (read per batch)."""

    def __init__(self, images: ImageSet) -> None:
        self.images, self.labels = images.images, images.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[tuple[Tensor, int], Tensor]:
        return (self.images[i], i), self.labels[i]

    def __getitems__(self, idx: list[int]) -> list[tuple[tuple[Tensor, int], Tensor]]:
        """A whole batch with one gather (the DataLoader's batched fetch): the disk cache reads it in file order."""
        batch, labels = self.images[torch.as_tensor(idx)], self.labels[idx]
        return [((batch[j], i), labels[j]) for j, i in enumerate(idx)]


class EvalImages(Dataset):
    """``(image uint8[3, S, S], label)``."""

    def __init__(self, images: ImageSet) -> None:
        self.images, self.labels = images.images, images.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, idx: list[int]) -> list[tuple[Tensor, Tensor]]:
        batch, labels = self.images[torch.as_tensor(idx)], self.labels[idx]
        return list(zip(batch, labels, strict=True))


def random_translate(x: Tensor, pad: int) -> Tensor:
    """Shift every image of ``x[B, C, H, W]`` (float) by its own random offset in ``[-pad, pad]``^2 (reflect)."""
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    shifts = torch.randint(0, 2 * pad + 1, (b, 2))
    out = torch.empty_like(x)
    for sy in range(2 * pad + 1):
        for sx in range(2 * pad + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            if mask.any():
                out[mask] = padded[mask, :, sy : sy + h, sx : sx + w]
    return out


class BatchAugment:
    """``(inputs, target, epoch) -> (float images[B, 3, S, S] in 0..255, target)`` on whole batches.

    Flips: each image has a fixed random flip bit, XOR-ed with the epoch's parity (airbench's alternating flip:
    every image is seen both ways in any two consecutive epochs). Then translation, optional TrivialAugment,
    mixup / cutmix (soft targets ``[B, C]``).
    """

    def __init__(self, n: int, num_classes: int, cfg: Config, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.flip_bits = torch.rand(n, generator=g) < 0.5
        self.cfg, self.num_classes = cfg, num_classes
        self._trivial = None
        if cfg.trivial_augment:
            from torchvision.transforms import v2

            self._trivial = v2.TrivialAugmentWide()

    def __call__(self, inputs: Any, target: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        images, idx = inputs
        if self._trivial is not None:  # one random op per group of 16 images (uint8)
            images = torch.cat([self._trivial(c) for c in images.split(16)])
        x = images.float()
        if self.cfg.flip:
            flip = self.flip_bits[idx.cpu()] ^ bool(epoch % 2)
            x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
        x = random_translate(x, self.cfg.translate)
        if self.cfg.mixup > 0 or self.cfg.cutmix > 0:
            x, target = self._mix(x, target)
        return x, target

    def _mix(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        soft = F.one_hot(target, self.num_classes).float()
        perm = torch.randperm(len(x))
        use_cutmix = self.cfg.cutmix > 0 and (self.cfg.mixup <= 0 or torch.rand(()) < 0.5)
        alpha = self.cfg.cutmix if use_cutmix else self.cfg.mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        if use_cutmix:
            h, w = x.shape[-2:]
            ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
            y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        else:
            x = lam * x + (1 - lam) * x[perm]
        return x, lam * soft + (1 - lam) * soft[perm]


class Lookahead(training.StepHook):
    """airbench's lookahead: every 5 steps ``slow = lerp(slow, w, 1 - d)`` then ``w = slow``, with
    ``d = 0.95^5 (t/T)^3`` (weak early, strong late); at the end of training ``w = slow``."""

    def __init__(self) -> None:
        self.slow: dict[str, Tensor] = {}

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        if step % LOOKAHEAD_EVERY and step < total_steps:
            return
        state = model.state_dict()
        if not self.slow:
            self.slow = {k: v.detach().clone() for k, v in state.items() if v.is_floating_point()}
            return
        decay = 1.0 if step >= total_steps else 0.95**LOOKAHEAD_EVERY * (step / total_steps) ** 3
        with torch.no_grad():
            for k, slow in self.slow.items():
                slow.lerp_(state[k], 1.0 - decay)
                state[k].copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": {k: v.detach().cpu() for k, v in self.slow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slow = {k: v.clone() for k, v in state.get("slow", {}).items()}


def triangle(step: int, total: int, start: float = 0.2, peak: float = 0.23, end: float = 0.07) -> float:
    """airbench's lr multiplier: linear from ``start`` to 1 at ``peak`` of the steps, then to ``end``."""
    p = int(peak * total)
    if step <= p:
        return start + (1 - start) * step / max(p, 1)
    return 1 + (end - 1) * (step - p) / max(total - p, 1)


def _airnet_optimizer(cfg: Config, world_size: int, steps_per_epoch: Callable[[], int]) -> tuple[Callable, Callable]:
    """(optimizer_factory, scheduler_factory) for AirNet in airbench's parametrisation (see the module doc)."""
    batch = cfg.batch_size * world_size  # the global batch: DDP averages the per-rank mean losses

    def optimizer(model: nn.Module, _tc: training.TrainConfig) -> torch.optim.Optimizer:
        kilostep = 1 + 1 / (1 - cfg.momentum)
        lr = cfg.lr / kilostep / 1024 * batch  # per step, on a mean loss
        decay = cfg.weight_decay * batch / 1024 / kilostep  # per step, relative to the weights
        net = training._unwrap(model)
        whiten_bias = [net.backbone.whiten.bias]
        norm_bias = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
        seen = {id(p) for p in whiten_bias + norm_bias}
        other = [p for p in net.parameters() if p.requires_grad and id(p) not in seen]
        groups = [
            dict(params=other, lr=lr, weight_decay=decay / lr),
            dict(params=norm_bias, lr=lr * cfg.bias_scaler, weight_decay=decay / (lr * cfg.bias_scaler)),
            dict(params=whiten_bias, lr=lr, weight_decay=decay / lr),
        ]
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)

    def scheduler(opt: torch.optim.Optimizer, _tc: training.TrainConfig, total: int) -> Any:
        freeze_at = cfg.whiten_bias_epochs * steps_per_epoch()

        def main(i: int) -> float:
            return triangle(i, total)

        def whiten(i: int) -> float:
            return triangle(i, total) if i < freeze_at else 0.0

        return torch.optim.lr_scheduler.LambdaLR(opt, [main, main, whiten])

    return optimizer, scheduler


def channel_stats(images: Tensor, n: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in 0..1) of up to ``n`` images drawn at random (a folder read in class order
    would otherwise give the first classes' colours: CIFAR-10's first 10,000 are planes and cars)."""
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n].sort().values
    total, squares, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for chunk in pick.split(256):  # 256 images at a time: never n float copies of 224 px images (6 GB at 10,000)
        x = images[chunk].double() / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.numel() // 3
    mean = total / count
    std = ((squares - count * mean * mean) / max(count - 1, 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def whitening_images(image_size: int) -> int:
    """Images the whitening filters are fitted on: 5,000 at 32 px, fewer at larger sizes so that their 2x2 patches
    stay at about 5,000 x 31^2 (the patch matrix of 5,000 images at 224 px would take 12 GB)."""
    return max(64, min(5000, 5000 * 32 * 32 // (image_size * image_size)))


def make_model(cfg: Config, train: ImageSet) -> ImageClassifier:
    """The network of ``cfg`` for ``train``'s classes, initialised (whitening / pretrained / --init-from)."""
    torch.manual_seed(cfg.seed)  # the same config gives the same initial weights
    mean, std = channel_stats(train.images) if cfg.arch == AIRNET else (None, None)
    net = build(cfg.arch, len(train.classes), widths=tuple(cfg.widths), pretrained=cfg.pretrained, mean=mean, std=std)
    if cfg.init_from:
        load_matching(net, cfg.init_from)
    elif isinstance(net.backbone, AirNetBackbone):
        g = torch.Generator().manual_seed(cfg.seed)
        pick = torch.randperm(len(train), generator=g)[: whitening_images(train.image_size)]
        net.backbone.init_whitening(net.normalize(train.images[pick]))
    return net


def train_config(
    cfg: Config, *, checkpoint_dir: Path | None = None, progress: bool = True, epochs: int | None = None
) -> training.TrainConfig:
    airnet = cfg.arch == AIRNET
    return training.TrainConfig(
        epochs=epochs if epochs is not None else cfg.epochs,
        lr=cfg.adam_lr,
        weight_decay=cfg.adam_weight_decay,
        batch_size=cfg.batch_size,
        grad_clip=None if airnet else 1.0,
        amp=bool(cfg.amp),  # resolved by fit_model (precision.choose) before this is called
        amp_dtype=_amp_dtype(),
        scheduler="onecycle",
        early_stopping_patience=None,
        monitor="val_accuracy",
        mode="max",
        restore_best=False,
        checkpoint_dir=checkpoint_dir,
        seed=cfg.seed,
        progress=progress,
        channels_last=bool(cfg.channels_last),
        ema_decay=None if airnet else cfg.ema_decay,
        device=cfg.device,
    )


def _amp_dtype() -> str:
    return "float16" if torch.cuda.is_available() else "bfloat16"


def fit_model(
    net: ImageClassifier,
    train: ImageSet,
    val: ImageSet | None,
    cfg: Config,
    *,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    epochs: int | None = None,
    lr_scale: float = 1.0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> training.FitResult:
    """Train ``net`` in place on ``train`` (validation accuracy per epoch on ``val``) with ``cfg``'s recipe."""
    if len(train) < 2:
        from common.data import DataError

        raise DataError(f"{len(train)} training image(s): need at least 2")
    run_cfg = Config(**{**cfg.to_dict(), "lr": cfg.lr * lr_scale, "adam_lr": cfg.adam_lr * lr_scale})
    augment = BatchAugment(len(train), len(train.classes), cfg, cfg.seed)
    chosen = choose_precision(net, train, cfg, augment)
    run_cfg = chosen.apply(run_cfg)
    tc = train_config(run_cfg, checkpoint_dir=checkpoint_dir, progress=progress, epochs=epochs)
    if val is None or not len(val):
        tc.monitor, tc.mode = "train_loss", "min"
    world = int(os.environ.get("WORLD_SIZE", 1))
    per_rank = math.ceil(len(train) / world)
    hooks: list[training.StepHook] = []
    kw: dict[str, Any] = {}
    if cfg.arch == AIRNET:
        opt, sched = _airnet_optimizer(run_cfg, world, lambda: math.ceil(per_rank / cfg.batch_size))
        kw = {"optimizer_factory": opt, "scheduler_factory": sched}
        if cfg.lookahead:
            hooks.append(Lookahead())
    loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if cfg.compile:
        net.forward = torch.compile(net.forward)  # type: ignore[method-assign]
    t0 = time.perf_counter()
    result = training.fit(
        net,
        TrainImages(train),
        EvalImages(val) if val is not None and len(val) else None,
        loss,
        tc,
        metrics={"accuracy": training.accuracy} if val is not None and len(val) else None,
        batch_transform=augment,
        step_hooks=hooks,
        on_epoch_end=on_epoch_end,
        **kw,
    )
    log.info(
        "trained %s for %d epoch(s) in %.1fs (%s)", cfg.arch, len(result.history), time.perf_counter() - t0, chosen.name
    )
    result.info["precision"] = chosen.to_dict()
    net.eval()
    return result


def probe_batch(train: ImageSet, cfg: Config, augment: BatchAugment) -> tuple[Tensor, Tensor]:
    """One real augmented batch of this rank's size (float images, labels) for timing training steps."""
    n = min(cfg.batch_size, math.ceil(len(train) / int(os.environ.get("WORLD_SIZE", 1))))
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(train), generator=g)[:n]
    return augment((train.images[idx], idx), train.labels[idx], 1)


def choose_precision(net: ImageClassifier, train: ImageSet, cfg: Config, augment: BatchAugment) -> Precision:
    """The measured precision for training ``net`` on ``train`` (see :mod:`apps.vision.precision`): a few steps
    on one real augmented batch of this rank's size."""
    x, y = probe_batch(train, cfg, augment)
    return precision.choose(cfg, net, x, y, device=precision.resolve_device(cfg.device))


def to_vision_model(net: ImageClassifier, train: ImageSet, cfg: Config, **meta: Any) -> VisionModel:
    """Wrap a trained ``net`` with its classes, preprocessing and config (temperature 1 until calibrated)."""
    net = net.cpu().to(memory_format=torch.contiguous_format)
    info = {
        "arch": cfg.arch,
        "widths": list(cfg.widths),
        "mean": (net.normalize.mean.flatten() / 255).tolist(),
        "std": (net.normalize.std.flatten() / 255).tolist(),
        "config": cfg.to_dict(),
        **meta,
    }
    return VisionModel(net.eval(), list(train.classes), train.image_size, 1.0, cfg.tta, info)


def train(
    train_set: ImageSet, val: ImageSet | None, cfg: Config, *, checkpoint_dir: Path | None = None, progress: bool = True
) -> tuple[VisionModel, training.FitResult]:
    """Build, train and wrap a model (uncalibrated: see :func:`apps.vision.evaluate.calibrate`)."""
    precision.resolve_device(cfg.device)
    if cfg.image_size != train_set.image_size:
        from common.data import DataError

        raise DataError(f"images are {train_set.image_size}px but the config says image_size={cfg.image_size}")
    net = make_model(cfg, train_set)
    result = fit_model(net, train_set, val, cfg, checkpoint_dir=checkpoint_dir, progress=progress)
    return to_vision_model(net, train_set, cfg, history=result.history, **result.info), result


def tune(train_set: ImageSet, val: ImageSet, cfg: Config, trials: int) -> Config:
    """``trials`` Optuna trials over the lr (0.3x-3x) and label smoothing (0-0.3), each a run of half the epochs
    scored by validation accuracy (the test split is never seen); returns ``cfg`` with the best values."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    short = max(1, cfg.epochs // 2)

    def objective(trial: optuna.Trial) -> float:
        scale = trial.suggest_float("lr_scale", 0.3, 3.0, log=True)
        trial_cfg = Config(**{**cfg.to_dict(), "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.3)})
        net = make_model(trial_cfg, train_set)
        result = fit_model(net, train_set, val, trial_cfg, epochs=short, lr_scale=scale, progress=False)
        return result.history[-1]["val_accuracy"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=trials)
    best = study.best_params
    log.info("tuning: best validation accuracy %.4f with %s", study.best_value, best)
    return Config(
        **{
            **cfg.to_dict(),
            "lr": cfg.lr * best["lr_scale"],
            "adam_lr": cfg.adam_lr * best["lr_scale"],
            "label_smoothing": best["label_smoothing"],
        }
    )

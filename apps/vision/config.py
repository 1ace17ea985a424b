"""Settings and defaults of the vision app: one place to read what it does out of the box.

Override with flags (``--arch resnet18 --epochs 5``) or a JSON file (``--config my.json`` with any field of
:class:`Config`; unknown keys are an error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from common.config import from_json_file

APP = "vision"
REGISTRY_NAME = "vision"  # the model's name in the registry
CIFAR_DIR = "cifar10-jpeg"  # the reference benchmark dataset, under MLREF_DATA_DIR


@dataclass
class Config:
    """Everything a training run needs besides the data."""

    arch: str = "airnet"  # airnet (fast residual-free net for small images) or a torchvision name (resnet18, ...)
    widths: tuple[int, ...] = (64, 256, 256)  # airnet block widths (airbench94: 64/256/256; airbench95: 128/384/384)
    image_size: int = 32  # images are resized (shorter side) and centre-cropped to this square
    epochs: int = 10
    batch_size: int = 512
    lr: float = 11.5  # airnet: SGD lr per 1024 images in airbench's decoupled form; torchvision nets: AdamW lr
    momentum: float = 0.85
    weight_decay: float = 0.0153  # airnet: per 1024 images, decoupled; torchvision nets: AdamW weight decay
    bias_scaler: float = 64.0  # airnet: lr multiplier of the BatchNorm biases
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3  # airnet: epochs the whitening layer's bias trains before it is frozen
    lookahead: bool = True  # airnet: airbench's lookahead (weights pulled to their EMA every 5 steps)
    adam_lr: float = 1e-3  # torchvision nets: peak AdamW lr (one-cycle schedule)
    adam_weight_decay: float = 0.05  # torchvision nets
    ema_decay: float | None = None  # torchvision nets: EMA of the weights (e.g. 0.999); None = off
    flip: bool = True  # random horizontal flips (alternating per epoch for airnet)
    translate: int = 2  # random translation by up to this many pixels (reflect padding)
    trivial_augment: bool = False  # torchvision's TrivialAugmentWide on uint8 batches (slower, for long runs)
    mixup: float = 0.0  # mixup alpha (0 = off)
    cutmix: float = 0.0  # cutmix alpha (0 = off)
    tta: int = 2  # test-time augmentation: 0 none, 1 flip, 2 flip + 1-pixel translations
    pretrained: bool = False  # torchvision ImageNet weights (needs network or the torch hub cache)
    init_from: str | None = None  # a local state_dict (.pt, loaded with weights_only=True) to fine-tune from
    amp: bool | None = None  # autocast (bf16 on CPU, fp16 on CUDA); None = measured: a few timed training steps of
    # the actual net and batch pick the faster (apps/vision/precision.py); bf16 is only tried where the CPU runs it
    # natively (AVX-512 BF16 / AMX). MLREF_VISION_AMP=on|off pins it where the config says None.
    channels_last: bool | None = None  # memory format of the convolutions; None = measured alongside amp
    compile: bool = False  # torch.compile (measured slower than eager on 2 CPU cores: 727 vs 1,250 images/s)
    val_fraction: float = 0.1  # of the labelled images, when the data has no test split: validation
    test_fraction: float = 0.2  # and test (stratified, deterministic)
    top_k: int = 5  # labels returned by the service
    max_upload_bytes: int = 10 * 1024 * 1024  # per image
    max_request_bytes: int = 32 * 1024 * 1024  # per HTTP request (a batch)
    max_pixels: int = 40_000_000  # decompression-bomb guard: width * height of one image
    max_batch_images: int = 64  # per HTTP request
    monitor_psi: float = 0.2  # drift threshold (PSI) per statistic
    confidence_drop: float = 0.1  # alert when mean top-1 confidence falls by more than this
    fine_tune_epochs: int = 3  # retrain: epochs of fine-tuning the champion on new labelled images
    fine_tune_lr_scale: float = 0.3  # retrain: peak lr relative to Config.lr
    seed: int = 42

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        cfg = cls()
        for key, value in data.items():
            if key in known:
                setattr(cfg, key, tuple(value) if isinstance(value, list) else value)
        return cfg

    @classmethod
    def from_file(cls, path: str | Path | None) -> Config:
        """Defaults, updated from a JSON file (unknown keys are an error)."""
        return from_json_file(cls, path)

"""Settings and defaults of the vision app: one place to read what it does out of the box.

Override with flags (``--arch resnet18 --epochs 5``) or a JSON file (``--config my.json`` with any field of
:class:`Config`; unknown keys are an error). Which fields each command exposes as flags: ``VisionApp.flags`` in
``pipeline.py``.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from common.config import from_json_file
from common.data import DataError

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
    device: str = "auto"  # auto (cuda > mps > cpu), cpu, cuda or cuda:N
    compile: bool = False  # torch.compile (measured slower than eager on 2 CPU cores: 727 vs 1,250 images/s)
    val_fraction: float = 0.1  # of the labelled images, when the data has no test split: validation
    test_fraction: float = 0.2  # and test (stratified, deterministic)
    top_k: int = 5  # labels returned by the service
    max_upload_bytes: int = 10 * 1024 * 1024  # per image
    max_request_bytes: int = 32 * 1024 * 1024  # per HTTP request (a batch)
    max_pixels: int = 40_000_000  # decompression-bomb guard: width * height of one image
    max_batch_images: int = 64  # per HTTP request
    max_decode_pixels: int = 80_000_000  # per serving process: pixels being decoded at once (>= max_pixels)
    max_concurrent_decodes: int = 4  # per serving process: images being decoded at once
    decode_wait_s: float = 10.0  # how long a request waits for the decoding budget before 503 + Retry-After
    monitor_psi: float = 0.2  # drift threshold (PSI) per statistic
    confidence_drop: float = 0.1  # alert when mean top-1 confidence falls by more than this
    fine_tune_epochs: int = 3  # retrain: epochs of fine-tuning the champion on new labelled images
    fine_tune_lr_scale: float = 0.3  # retrain: peak lr relative to Config.lr
    cache: str = "auto"  # decoded images: memory (RAM), disk (a file read per batch) or auto (disk when large)
    cache_dir: str | None = None  # where the disk cache lives (default: the data directory's cache/vision)
    seed: int = 42
    # options of one command rather than of the model (each is a flag of that command)
    checkpoint_dir: str | None = None  # train: checkpoint every epoch here; an interrupted run resumes
    ref: str = "champion"  # evaluate: the registered version or alias to evaluate
    tiny: bool = False  # demo: a smaller, faster variant (what the tests run)

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
        """Defaults, updated from a JSON file (unknown keys and values of the wrong type or out of bounds are an
        error naming the field)."""
        cfg = from_json_file(cls, path)
        try:
            return cfg.validate()
        except DataError as exc:
            raise DataError(f"config {path}: {exc}") from None

    def validate(self) -> Config:
        """Check every field's type and bounds (:data:`BOUNDS`); raises :class:`DataError` naming the field.

        The bounds keep every size a config controls sane: a 100,000-pixel ``image_size`` or a million-wide layer
        would exhaust memory long before it could train.
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints[f.name])
            if f.name in BOUNDS and value is not None:
                lo, hi = BOUNDS[f.name]
                for v in value if isinstance(value, tuple) else (value,):
                    if not lo <= v <= hi:
                        raise DataError(f"{f.name}: {v!r} is out of bounds; use {lo} to {hi}")
        if not self.widths or len(self.widths) > 6:
            raise DataError(f"widths: {list(self.widths)}: give 1 to 6 block widths, e.g. [64, 256, 256]")
        if self.val_fraction + self.test_fraction >= 1:
            raise DataError(f"val_fraction + test_fraction: {self.val_fraction + self.test_fraction:g}; must be < 1")
        if self.max_decode_pixels < self.max_pixels:
            raise DataError(
                f"max_decode_pixels: {self.max_decode_pixels} < max_pixels {self.max_pixels}; the decoding budget "
                "must hold at least one image of the largest size accepted"
            )
        if self.cache not in ("memory", "disk", "auto"):
            raise DataError(f"cache: {self.cache!r}; use memory, disk or auto")
        if not self.arch.strip():
            raise DataError("arch: empty; use airnet or a torchvision model name")
        return self


MiB = 1024 * 1024
# inclusive bounds of the numeric fields (each element of a tuple); types are checked from the annotations
BOUNDS: dict[str, tuple[float, float]] = {
    "widths": (1, 4096),
    "image_size": (8, 512),
    "epochs": (1, 100_000),
    "batch_size": (1, 65_536),
    "lr": (0.0, 1e4),
    "momentum": (0.0, 1.0),
    "weight_decay": (0.0, 100.0),
    "bias_scaler": (0.0, 1e6),
    "label_smoothing": (0.0, 0.999),
    "whiten_bias_epochs": (0, 100_000),
    "adam_lr": (0.0, 10.0),
    "adam_weight_decay": (0.0, 100.0),
    "ema_decay": (0.0, 0.999999),
    "translate": (0, 256),
    "mixup": (0.0, 1000.0),
    "cutmix": (0.0, 1000.0),
    "tta": (0, 2),
    "val_fraction": (0.0, 0.9),
    "test_fraction": (0.0, 0.9),
    "top_k": (1, 1000),
    "max_upload_bytes": (1, 256 * MiB),
    "max_request_bytes": (1, 2048 * MiB),
    "max_pixels": (1, 150_000_000),
    "max_batch_images": (1, 1024),
    "max_decode_pixels": (1, 2_000_000_000),
    "max_concurrent_decodes": (1, 256),
    "decode_wait_s": (0.0, 600.0),
    "monitor_psi": (0.0, 100.0),
    "confidence_drop": (0.0, 1.0),
    "fine_tune_epochs": (1, 100_000),
    "fine_tune_lr_scale": (0.0, 100.0),
    "seed": (0, 2**32 - 1),
}


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _check_type(name: str, value: Any, hint: Any) -> None:
    """``value`` matches the annotation ``hint`` (int, float, bool, str, ``X | None``, ``tuple[int, ...]``):
    booleans are not numbers, integers are floats, floats must be finite."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return
        hint = next(h for h in options if h is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, tuple | list):
            raise DataError(f"{name}: {value!r} is not a list; expected a list of {_type_name(item)}")
        for v in value:
            _check_type(name, v, item)
        return
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
    }.get(hint, True)
    if not ok:
        raise DataError(f"{name}: {value!r} is not a valid {_type_name(hint)}")

"""Fixtures of the vision tests: a tiny generated ImageFolder (with odd and broken files) and a tiny config."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.vision.config import Config

CLASSES = ("red", "green", "blue")
SIZE = 16


def tiny_config(**kw) -> Config:
    """A net small enough to train in seconds on 2 cores. Precision is measured (or pinned by MLREF_VISION_AMP):
    every test must pass in fp32 and bf16 alike."""
    base = dict(
        widths=(8, 16, 16),
        image_size=SIZE,
        epochs=3,
        batch_size=32,
        tta=1,
        fine_tune_epochs=1,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    return Config(**{**base, **kw})


def colour_image(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """HxWx3 uint8: noise plus a dominant channel ``label`` in a random square (the class signal)."""
    img = rng.integers(0, 90, (size, size, 3)).astype(np.int32)
    y, x = rng.integers(0, size // 2, 2)
    img[y : y + size // 2, x : x + size // 2, label] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: int = 24, seed: int = 0, fmt: str = "png") -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(colour_image(c, rng)).save(root / name / f"{i:03d}.{fmt}")
    return root


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "shapes")


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Three classes of good images plus grayscale, RGBA, palette, zero-byte, truncated, text and hidden files."""
    root = make_folder(tmp_path / "odd", per_class=4)
    rng = np.random.default_rng(1)
    Image.fromarray(colour_image(0, rng)[..., 0], mode="L").save(root / "red" / "grey.png")
    rgba = np.dstack([colour_image(1, rng), np.full((SIZE, SIZE), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "green" / "alpha.png")
    Image.fromarray(colour_image(2, rng)).convert("P").save(root / "blue" / "palette.gif")
    (root / "red" / "empty.jpg").write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(colour_image(1, rng)).save(good, format="JPEG")
    (root / "green" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    (root / "blue" / "notes.txt").write_text("not an image")
    (root / "blue" / ".DS_Store").write_bytes(b"\0\1")
    (root / "stray.png").write_bytes(png_bytes(colour_image(0, rng)))
    (root / "red" / "bomb.png").write_bytes(bomb_png())
    return root


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory):
    """(model, train, val, test): a tiny net trained for 3 epochs on a generated folder, once per session.

    Tests must not change it (copy it first): it is shared.
    """
    from apps.vision.data import load, train_val_test
    from apps.vision.evaluate import calibrate
    from apps.vision.train import train

    folder = make_folder(tmp_path_factory.mktemp("vision") / "shapes")
    cfg = tiny_config(epochs=3)
    tr, va, te = train_val_test(
        load(folder, image_size=cfg.image_size, progress=False), cfg.val_fraction, cfg.test_fraction, cfg.seed
    )
    model, _ = train(tr, va, cfg, progress=False)
    calibrate(model, va)
    return model, tr, va, te

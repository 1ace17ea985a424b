"""The JPEG-cost experiment (apps/vision/jpeg_cost.py): its image transforms and a tiny run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from apps.vision import jpeg_cost
from tests.vision.conftest import make_folder, tiny_config


def _smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Photo-like test images: smooth gradients and a few edges (JPEG's home ground), uint8[n, 3, size, size]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            a, b, e = rng.uniform(-1, 1, 3)
            img = 128 + 60 * a * xx + 60 * b * yy + 40 * (xx + e * yy > 0.5)
            out[i, c] = np.clip(img + rng.normal(0, 4, (size, size)), 0, 255)
    return torch.from_numpy(out)


def test_downsample_is_the_rounded_block_mean_and_refuses_a_factor_that_does_not_divide() -> None:
    x = torch.tensor([[[[0, 2, 10, 10], [4, 7, 10, 11], [255, 255, 0, 0], [255, 254, 0, 1]]]], dtype=torch.uint8)
    y = jpeg_cost.downsample(x, 2)
    assert y.dtype == torch.uint8 and y.shape == (1, 1, 2, 2)
    assert y.tolist() == [[[[3, 10], [255, 0]]]]  # 13/4 = 3.25 -> 3, 41/4 = 10.25 -> 10, 1019/4 -> 255, 1/4 -> 0
    with pytest.raises(ValueError, match="factor 3"):
        jpeg_cost.downsample(x, 3)


def test_jpeg_round_trip_loses_detail_and_more_at_lower_quality() -> None:
    x = _smooth_images(16, size=16)
    hi, bpp_hi = jpeg_cost.jpeg_roundtrip(x, quality=95)
    lo, bpp_lo = jpeg_cost.jpeg_roundtrip(x, quality=30)
    assert hi.shape == x.shape and hi.dtype == torch.uint8
    assert not torch.equal(lo, x)  # lossy
    assert jpeg_cost.psnr(x, x) == math.inf
    assert 20 < jpeg_cost.psnr(x, lo) < jpeg_cost.psnr(x, hi) < 60
    assert 0 < bpp_lo < bpp_hi < 24  # fewer bits at lower quality; headers not counted


def test_arms_keep_labels_and_differ_only_by_the_encoding(tmp_path: Path) -> None:
    from apps.vision.data import ImageSet

    x = _smooth_images(8)
    s = ImageSet(x, torch.arange(8) % 2, ["a", "b"], [f"{i}" for i in range(8)], np.full((8, 2), 32))
    sets, info = jpeg_cost.arms(s, s.subset(np.arange(4)), factor=2, quality=75)
    (ltr, lte), (jtr, jte) = sets["lossless"], sets["jpeg75"]
    assert ltr.images.shape == jtr.images.shape == (8, 3, 16, 16) and len(lte) == len(jte) == 4
    assert torch.equal(ltr.labels, s.labels) and torch.equal(jtr.labels, s.labels)
    assert torch.equal(ltr.images, jpeg_cost.downsample(x, 2)) and not torch.equal(jtr.images, ltr.images)
    assert 20 < info["psnr_db"] < 60 and info["bits_per_pixel"] > 0


def test_run_on_a_folder_writes_both_arms_and_the_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "shop"
    make_folder(root / "train", per_class=12)
    make_folder(root / "test", per_class=4, seed=1)
    out = tmp_path / "cost.json"
    monkeypatch.setattr(
        jpeg_cost, "run", lambda *a, **kw: _real_run(*a, cfg=tiny_config(batch_size=16), progress=False, **kw)
    )
    assert jpeg_cost.main(["--dataset", str(root), "--epochs", "1", "--seeds", "1", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["arms"]) == {"lossless", "jpeg75"}
    for arm in doc["arms"].values():
        assert 0 <= arm["metrics"]["accuracy_tta"] <= 1 and len(arm["per_seed_accuracy_tta"]) == 1
    lossless, jpeg = doc["arms"]["lossless"]["metrics"], doc["arms"]["jpeg75"]["metrics"]
    assert doc["cost_points_tta"] == pytest.approx(100 * (lossless["accuracy_tta"] - jpeg["accuracy_tta"]), abs=0.01)
    assert doc["images"]["size_px"] == 16 and doc["cpu_kind"] and "cpu_model" in doc["machine"]


_real_run = jpeg_cost.run


def test_a_folder_without_a_test_split_or_a_bad_factor_is_a_user_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "flat", per_class=4)
    out = tmp_path / "cost.json"
    assert jpeg_cost.main(["--dataset", str(root), "--epochs", "1", "--seeds", "1", "--output", str(out)]) == 2
    both = tmp_path / "both"
    make_folder(both / "train", per_class=4)
    make_folder(both / "test", per_class=2)
    assert jpeg_cost.main(["--dataset", str(both), "--factor", "3", "--seeds", "1", "--output", str(out)]) == 2
    assert not out.exists()


def test_upsampled_arms_keep_the_original_size_and_the_averaged_content() -> None:
    from apps.vision.data import ImageSet

    x = _smooth_images(6)
    s = ImageSet(x, torch.arange(6) % 2, ["a", "b"], [f"{i}" for i in range(6)], np.full((6, 2), 32))
    sets, info = jpeg_cost.arms(s, s, factor=2, quality=75, up=True)
    (ltr, _), (jtr, _) = sets["lossless"], sets["jpeg75"]
    assert ltr.images.shape == jtr.images.shape == (6, 3, 32, 32)
    # bicubic upsampling of the 16 px average: averaging it down again gives that average back, but for the
    # cubic's overshoot at edges
    diff = (jpeg_cost.downsample(ltr.images, 2).int() - jpeg_cost.downsample(x, 2).int()).abs()
    assert diff.float().mean() < 1 and diff.max() <= 10
    assert not torch.equal(jtr.images, ltr.images) and 20 < info["psnr_db"] < 60

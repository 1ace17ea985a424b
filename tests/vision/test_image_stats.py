"""The monitor's per-image statistics: computed a batch at a time, equal to the whole-set formula."""

from __future__ import annotations

import numpy as np
import torch

from apps.vision.data import ImageSet
from apps.vision.lifecycle import image_stats


def test_image_stats_in_batches_equal_the_whole_set_at_once() -> None:
    g = torch.Generator().manual_seed(0)
    n = 7
    images = torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8)
    images[0] = 0  # a black image: zero contrast and sharpness
    s = ImageSet(images, torch.zeros(n, dtype=torch.int64), ["a"], [str(i) for i in range(n)], np.full((n, 2), 40))
    small, whole = image_stats(s, batch_size=3), image_stats(s, batch_size=1000)
    assert list(small.columns) == [
        "brightness", "contrast", "sharpness", "width", "height", "mean_r", "mean_g", "mean_b"
    ]  # fmt: skip
    np.testing.assert_allclose(small.to_numpy(), whole.to_numpy(), rtol=1e-6)
    x = images.float()
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    np.testing.assert_allclose(small["brightness"], luma.mean(dim=(1, 2)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(small["mean_g"], x[:, 1].mean(dim=(1, 2)).numpy(), rtol=1e-6)
    assert small.loc[0, "contrast"] == 0 and small.loc[0, "sharpness"] == 0
    assert (small["width"] == 40).all() and len(image_stats(s.subset([]))) == 0

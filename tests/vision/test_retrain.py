"""Retraining fairness for images: no timestamps, so what a model was trained on is checked by content hash."""

from __future__ import annotations

import numpy as np
import torch

from apps.vision.data import ImageSet, content_hashes
from apps.vision.lifecycle import retrain, seen_images
from common import registry, retraining
from tests.vision.conftest import tiny_config
from tests.vision.helpers import register_copy


def _renamed(images: ImageSet) -> ImageSet:
    """The same pictures under other file names (what a re-export of the training folder looks like)."""
    return ImageSet(
        images.images.clone(),
        images.labels.clone(),
        list(images.classes),
        [f"elsewhere/{i}.png" for i in range(len(images))],
        images.sizes.copy(),
    )


def test_content_hashes_follow_pixels_not_names(tiny_trained) -> None:
    _, tr, _, te = tiny_trained
    assert np.array_equal(content_hashes(tr), content_hashes(_renamed(tr)))
    assert not np.isin(content_hashes(te), content_hashes(tr)).any()
    brighter = _renamed(te)
    brighter.images = (brighter.images.int() + 1).clamp(0, 255).to(torch.uint8)
    assert not np.isin(content_hashes(brighter), content_hashes(te)).any()


def test_retrain_on_the_champions_own_training_images_is_refused(tiny_trained) -> None:
    _, mv = register_copy(tiny_trained)
    _, tr, _, _ = tiny_trained
    assert set(seen_images(mv).tolist()) == set(content_hashes(tr).tolist())
    decision = retrain(_renamed(tr), tiny_config(), dataset="same-images-again")
    assert not decision.promoted and decision.challenger_version == ""
    assert decision.reason.startswith(retraining.NO_FAIR_COMPARISON)
    assert f"{len(tr)} of the {len(tr)} labelled images are in champion v{mv.version}" in decision.reason
    assert len(registry.list_versions("vision")) == 1  # nothing trained, nothing registered
    assert retraining.history("vision")[-1].reason == decision.reason


def test_seen_images_go_to_fine_tuning_and_never_into_the_comparison(tiny_trained) -> None:
    _, mv = register_copy(tiny_trained)
    _, tr, va, te = tiny_trained
    new = ImageSet(
        torch.cat([tr.images, va.images, te.images]),
        torch.cat([tr.labels, va.labels, te.labels]),
        list(tr.classes),
        tr.paths + va.paths + te.paths,
        np.concatenate([tr.sizes, va.sizes, te.sizes]),
    )
    decision = retrain(new, tiny_config(), dataset="old-and-new")
    assert decision.challenger_version and not decision.reason.startswith(retraining.NO_FAIR_COMPARISON)
    challenger = registry.get("vision", decision.challenger_version)
    seen = seen_images(challenger)
    assert np.isin(content_hashes(tr), seen).all()  # inherits the champion's record
    assert np.isin(seen_images(mv), seen).all()
    unseen = ~np.isin(content_hashes(new), seen)  # the hold-out: new images only, trained on by neither
    assert 0 < unseen.sum() < len(va) + len(te)
    assert not np.isin(content_hashes(new)[unseen], content_hashes(tr)).any()

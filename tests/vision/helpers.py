"""Shared helpers of the vision tests."""

from __future__ import annotations

import copy

from apps.vision.lifecycle import register
from apps.vision.model import VisionModel
from common import registry


def register_copy(trained, alias: str | None = registry.CHAMPION) -> tuple[VisionModel, registry.ModelVersion]:
    """Register a copy of the session's tiny model in this test's MLREF_HOME."""
    model, tr, _, _ = trained
    model = copy.deepcopy(model)
    return model, register(model, tr, metrics={"test_accuracy": 0.5}, dataset="tiny", alias=alias)

"""Registering a vision model says what it is doing: every slow step is one INFO line with its duration."""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest


def test_register_logs_each_slow_step_with_its_duration(tiny_trained, caplog: pytest.LogCaptureFixture) -> None:
    from apps.vision.lifecycle import register

    model, tr, _, _ = tiny_trained
    copy = dataclasses.replace(model, meta=dict(model.meta))  # register writes into meta; the fixture is shared
    with caplog.at_level(logging.INFO):
        register(copy, tr, metrics={"accuracy": 0.5}, dataset="tiny")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    expected = [
        r"content hashes of \d+ training images in \d+\.\d s",
        r"embeddings and PCA of \d+ reference images in \d+\.\d s",
        r"monitoring reference .* in \d+\.\d s",
        r"TorchScript and ONNX exports written in \d+\.\d s",
        r"sha256 of the model directory \(\d+\.\d MB\) in \d+\.\d s",
        r"stored as an MLflow artifact in \d+\.\d s",
        r"registered vision version \d+",
    ]
    found = [next((i for i, line in enumerate(lines) if re.search(p, line)), None) for p in expected]
    assert None not in found, dict(zip(expected, found, strict=True))
    assert found == sorted(found), "in the order they happen"

"""TorchScript and ONNX exports agree with eager torch, and the service can load either."""

from __future__ import annotations

from pathlib import Path

import torch

from apps.vision.export import export, parity
from apps.vision.model import VisionModel


def test_exports_match_torch(tiny_trained, tmp_path: Path) -> None:
    model, _, _, te = tiny_trained
    path = model.save(tmp_path / "m")
    files = export(path)
    assert files["onnx"].stat().st_size > 0 and files["torchscript"].stat().st_size > 0
    diffs = parity(path, te.images)
    assert diffs["onnx"] < 1e-3 and diffs["torchscript"] < 1e-4, diffs
    # the batch dimension is dynamic and probabilities (with TTA and temperature) agree per backend
    ref = VisionModel.load(path).predict_proba(te.images[:5])
    for backend in ("torchscript", "onnx"):
        vm = VisionModel.load(path, backend)
        assert vm.backend == backend
        assert torch.allclose(vm.predict_proba(te.images[:5]), ref, atol=1e-4)
        assert vm.predict_proba(te.images[:1]).shape == (1, 3)

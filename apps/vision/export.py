"""Export a saved model to TorchScript (``model.ts``) and ONNX (``model.onnx``) and check they agree with torch;
running them is :func:`apps.vision.model.runtime_forward` (re-exported here), what ``VisionModel.load(path,
backend)`` uses for ``backend=torchscript|onnx``.

Both exports take float32 input ``[B, 3, S, S]`` in 0..255 (the normalisation is inside the graph) and return
logits ``[B, C]``; the batch dimension is dynamic. ONNX uses the TorchScript-based exporter (opset 17) and runs
on ONNX Runtime's CPU provider.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor

from apps.vision.model import BACKENDS, ONNX, TORCHSCRIPT, VisionModel, runtime_forward

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "ONNX", "TORCHSCRIPT", "copy_out", "export", "parity", "runtime_forward"]


def export(model_dir: str | Path, *, opset: int = 17) -> dict[str, Path]:
    """Write ``model.ts`` and ``model.onnx`` next to the weights of a saved model; returns their paths."""
    model_dir = Path(model_dir)
    vm = VisionModel.load(model_dir)
    net = vm.net.eval()
    example = torch.randint(0, 256, (2, 3, vm.image_size, vm.image_size)).float()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example)
        traced.save(str(model_dir / TORCHSCRIPT))
        torch.onnx.export(
            net,
            (example,),
            str(model_dir / ONNX),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    return {"torchscript": model_dir / TORCHSCRIPT, "onnx": model_dir / ONNX}


def parity(model_dir: str | Path, images: Tensor) -> dict[str, float]:
    """Largest absolute logit difference of TorchScript and ONNX Runtime against eager torch on ``images``."""
    ref = VisionModel.load(model_dir).logits(images, tta=0)
    return {
        b: float((VisionModel.load(model_dir, b).logits(images, tta=0) - ref).abs().max())
        for b in ("torchscript", "onnx")
    }


def copy_out(model_dir: str | Path, out: str | Path, *, check: bool = True) -> dict[str, float]:
    """Copy a registered model's exports and ``model.json`` into ``out``, after a parity check on 8 random images
    when ``check`` (returned: the largest absolute logit difference per runtime)."""
    model_dir, out = Path(model_dir), Path(out)
    diffs = {}
    if check:
        size = VisionModel.load(model_dir).image_size
        diffs = parity(model_dir, torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8))
    out.mkdir(parents=True, exist_ok=True)
    for name in (ONNX, TORCHSCRIPT, "model.json"):
        shutil.copyfile(model_dir / name, out / name)
    return diffs

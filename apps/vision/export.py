"""Export a saved model to TorchScript (``model.ts``) and ONNX (``model.onnx``), check they agree with torch, and
run them: :func:`runtime_forward` gives the logits function the service uses for ``backend=torchscript|onnx``.

Both exports take float32 input ``[B, 3, S, S]`` in 0..255 (the normalisation is inside the graph) and return
logits ``[B, C]``; the batch dimension is dynamic. ONNX uses the TorchScript-based exporter (opset 17) and runs
on ONNX Runtime's CPU provider.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

TORCHSCRIPT, ONNX = "model.ts", "model.onnx"
BACKENDS = ("torch", "torchscript", "onnx")


def export(model_dir: str | Path, *, opset: int = 17) -> dict[str, Path]:
    """Write ``model.ts`` and ``model.onnx`` next to the weights of a saved model; returns their paths."""
    from apps.vision.model import VisionModel

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


def runtime_forward(model_dir: str | Path, backend: str) -> Callable[[Tensor], Tensor]:
    """The logits function of an exported model: ``f(float32[B, 3, S, S]) -> float32[B, C]``."""
    model_dir = Path(model_dir)
    if backend == "torchscript":
        path = model_dir / TORCHSCRIPT
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: this version was registered without exports")
        module = torch.jit.load(str(path), map_location="cpu").eval()

        def ts_forward(x: Tensor) -> Tensor:
            with torch.no_grad():
                return module(x.float().contiguous())

        return ts_forward
    if backend == "onnx":
        import onnxruntime as ort

        path = model_dir / ONNX
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: this version was registered without exports")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

        def onnx_forward(x: Tensor) -> Tensor:
            out = session.run(None, {"images": np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
            return torch.from_numpy(out)

        return onnx_forward
    raise ValueError(f"backend {backend!r}: use one of {BACKENDS}")


def parity(model_dir: str | Path, images: Tensor) -> dict[str, float]:
    """Largest absolute logit difference of TorchScript and ONNX Runtime against eager torch on ``images``."""
    from apps.vision.model import VisionModel

    ref = VisionModel.load(model_dir).logits(images, tta=0)
    return {
        b: float((VisionModel.load(model_dir, b).logits(images, tta=0) - ref).abs().max())
        for b in ("torchscript", "onnx")
    }

"""The classifiers: a fast net for small images (airbench design), torchvision architectures by name, and the
saved model (weights + classes + preprocessing + calibration) that the registry, service and batch scorer load.

Every network is an :class:`ImageClassifier`: ``Normalize`` (uint8-range input ``[B, 3, S, S]`` -> standardised
float, so the preprocessing travels with the weights) -> ``backbone`` (-> penultimate embedding ``[B, D]``) ->
``head`` (-> logits ``[B, C]``).

AirNet (Keller Jordan's airbench94/95, CIFAR-10 speed-run design): a frozen 2x2 whitening convolution whose
filters are the +-eigenvectors of the training patches' covariance (its bias trains for a few epochs), three blocks
``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU`` with identity (dirac) initialised convolutions,
BatchNorm with frozen scale, a final 3x3 max-pool and a bias-free linear head scaled by 1/9.

A saved model is a directory: ``weights.pt`` (a state_dict, loaded with ``weights_only=True``; the registry has
already checked its sha256), ``model.json`` (architecture, classes, image size, normalisation, temperature, TTA
level) and, after :func:`apps.vision.export.export`, ``model.ts`` (TorchScript) and ``model.onnx``.
"""

from __future__ import annotations

import itertools
import json
import logging
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common.data import DataError, DownloadError

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHTS, META = "weights.pt", "model.json"
TORCHSCRIPT, ONNX = "model.ts", "model.onnx"  # written by apps.vision.export.export
BACKENDS = ("torch", "torchscript", "onnx")
AIRNET = "airnet"


class Normalize(nn.Module):
    """``(x - 255 * mean) / (255 * std)`` per channel on uint8-range input (any dtype), float32 output."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


class ImageClassifier(nn.Module):
    """normalise -> backbone (embedding ``[B, D]``) -> head (logits ``[B, C]``)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ------------------------------------------------------------------------------------------ AirNet


class Scale(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the bias trains), eps 1e-12, running-stat momentum 0.4."""

    def __init__(self, channels: int, momentum: float = 0.4) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


def _dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])  # an implicit residual: the first c_in filters start as identity
    return conv


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _dirac_conv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBN(c_out)
        self.conv2 = _dirac_conv(c_out, c_out)
        self.norm2 = FrozenScaleBN(c_out)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirNetBackbone(nn.Module):
    """Whitening conv (2x2, 24 filters) -> GELU -> 3 ConvGroups -> global max-pool -> ``[B, widths[-1]]``."""

    def __init__(self, widths: tuple[int, ...] = (64, 256, 256)) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.act = nn.GELU()
        chans = [24, *widths]
        self.groups = nn.Sequential(*[ConvGroup(a, b) for a, b in itertools.pairwise(chans)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return torch.flatten(F.adaptive_max_pool2d(x, 1), 1)

    @torch.no_grad()
    def init_whitening(self, normalized: Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from ``normalized[N, 3, H, W]`` training images (a few thousand suffice)."""
        x = normalized.float()
        c, (h, w) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)
        eigval, eigvec = eigval.flip(0), eigvec.T.flip(0)  # largest first, one eigenvector per row
        filters = (eigvec / torch.sqrt(eigval.clamp_min(0) + eps)[:, None]).reshape(c * h * w, c, h, w)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))


def airnet(
    num_classes: int,
    widths: tuple[int, ...] = (64, 256, 256),
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.25, 0.25, 0.25),
) -> ImageClassifier:
    head = nn.Sequential(nn.Linear(widths[-1], num_classes, bias=False), Scale(1 / 9))
    return ImageClassifier(AirNetBackbone(tuple(widths)), head, mean, std)


# ------------------------------------------------------------------------------------------ torchvision


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _replace_last_linear(net: nn.Module) -> int:
    """Swap the net's last ``nn.Linear`` for ``Identity``; returns its input width (the embedding size)."""
    last = None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last = (name, mod)
    if last is None:
        raise DataError(f"{type(net).__name__}: no final linear layer to replace")
    name, mod = last
    parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
    setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    return mod.in_features


def torchvision_net(arch: str, num_classes: int, *, pretrained: bool = False) -> ImageClassifier:
    """A torchvision architecture by name with a new ``num_classes`` head; ``pretrained``: its default
    ImageNet weights (torch hub cache or download; offline: :class:`DownloadError` saying what to do)."""
    import torchvision.models as tvm

    names = torchvision_names()
    if arch not in names:
        close = [n for n in names if n.startswith(arch[:4])][:8]
        raise DataError(
            f"--arch {arch!r}: not '{AIRNET}' nor a torchvision model (e.g. resnet18, "
            f"mobilenet_v3_small, efficientnet_b0{'; close: ' + ', '.join(close) if close else ''})"
        )
    weights = tvm.get_model_weights(arch).DEFAULT if pretrained else None
    try:
        net = tvm.get_model(arch, weights=weights)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise DownloadError(
            f"could not fetch the pretrained {arch} weights ({weights}) from the network or the torch hub cache "
            f"({type(exc).__name__}); download {weights.url} elsewhere and pass it with --init-from FILE"
        ) from None
    width = _replace_last_linear(net)
    return ImageClassifier(net, nn.Linear(width, num_classes), IMAGENET_MEAN, IMAGENET_STD)


def build(
    arch: str,
    num_classes: int,
    *,
    widths: tuple[int, ...] = (64, 256, 256),
    pretrained: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageClassifier:
    """The network ``arch`` (``airnet`` or a torchvision name) for ``num_classes`` classes."""
    if num_classes < 2:
        raise DataError(f"need at least 2 classes, got {num_classes}")
    if arch == AIRNET:
        if pretrained:
            raise DataError("--pretrained: airnet has no pretrained weights; use --init-from FILE")
        return airnet(num_classes, tuple(widths), mean or (0.5, 0.5, 0.5), std or (0.25, 0.25, 0.25))
    return torchvision_net(arch, num_classes, pretrained=pretrained)


def load_matching(net: ImageClassifier, path: str | Path) -> dict[str, int]:
    """Initialise ``net`` from a local state_dict file (``torch.load(weights_only=True)``: tensors only).

    Accepts our own saved weights (``backbone.*``/``head.*``), a torchvision state_dict of the same architecture
    (loaded into the backbone; its old classification layer is dropped), or a checkpoint dict with ``model`` /
    ``state_dict``. Tensors whose shape differs (another number of classes) are skipped. Returns counts.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"--init-from {path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - unpickling refused or a damaged file: the user's input
        raise DataError(f"--init-from {path}: not a tensors-only state_dict ({type(exc).__name__}: {exc})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"--init-from {path}: expected a state_dict (names -> tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = any(k.startswith(("backbone.", "head.")) for k in state)
    target = net if own else net.backbone
    current = target.state_dict()
    ok = {k: v for k, v in state.items() if k in current and current[k].shape == v.shape}
    if len(ok) < max(1, len(current) // 2):
        raise DataError(f"--init-from {path}: only {len(ok)} of {len(current)} tensors match this architecture")
    target.load_state_dict(ok, strict=False)
    counts = {"loaded": len(ok), "skipped": len(state) - len(ok), "missing": len(current) - len(ok)}
    log.info("initialised from %s: %s", path, counts)
    return counts


# ------------------------------------------------------------------------------------------ inference


def tta_views(x: Tensor, level: int) -> list[tuple[float, Tensor]]:
    """(weight, view) pairs: 0 the image; 1 + its mirror; 2 + both mirrored 1-pixel shifts (airbench's TTA)."""
    if level <= 0:
        return [(1.0, x)]
    views = [(0.5, x), (0.5, x.flip(-1))]
    if level == 1:
        return views
    s = x.shape[-1]
    padded = F.pad(x.float(), (1, 1, 1, 1), mode="reflect")
    shifted = [padded[..., 0:s, 0:s], padded[..., 2 : s + 2, 2 : s + 2]]
    return [(0.25, x), (0.25, x.flip(-1))] + [(0.125, v) for t in shifted for v in (t, t.flip(-1))]


@dataclass
class VisionModel:
    """A trained classifier with what it needs to be used: classes, input size, temperature and TTA level.

    ``forward`` is the logits function of the backend (torch module, TorchScript module or ONNX Runtime session)
    on float32 uint8-range input ``[B, 3, S, S]``.
    """

    net: ImageClassifier | None
    classes: list[str]
    image_size: int
    temperature: float = 1.0
    tta: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"
    forward: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.forward is None and self.net is not None:
            self.forward = self.net

    @torch.no_grad()
    def logits(self, images: Tensor, *, batch_size: int = 500, tta: int | None = None) -> Tensor:
        """Logits ``[N, C]`` (float32) of uint8 ``images[N, 3, S, S]``, averaged over the TTA views."""
        level = self.tta if tta is None else tta
        if self.net is not None:
            self.net.eval()
        outs = []
        for chunk in images.split(batch_size):
            x = chunk.float().contiguous(memory_format=torch.channels_last)
            outs.append(sum(w * self.forward(v.contiguous()).float() for w, v in tta_views(x, level)))
        return torch.cat(outs) if outs else torch.zeros(0, len(self.classes))

    def predict_proba(self, images: Tensor, *, batch_size: int = 500, calibrated: bool = True) -> Tensor:
        """Class probabilities ``[N, C]``: softmax(logits / T) with the temperature fitted on validation."""
        t = self.temperature if calibrated else 1.0
        return torch.softmax(self.logits(images, batch_size=batch_size) / t, dim=1)

    @torch.no_grad()
    def embed(self, images: Tensor, *, batch_size: int = 500) -> Tensor:
        """Penultimate-layer embeddings ``[N, D]`` (torch backend only)."""
        if self.net is None:
            raise RuntimeError("embeddings need the torch backend")
        self.net.eval()
        return torch.cat([self.net.features(c.float()).float() for c in images.split(batch_size)])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        assert self.net is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        torch.save(state, path / WEIGHTS)
        doc = {
            "classes": self.classes,
            "image_size": self.image_size,
            "temperature": self.temperature,
            "tta": self.tta,
            **self.meta,
        }
        (path / META).write_text(json.dumps(doc, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, backend: str = "torch") -> VisionModel:
        """Rebuild from a saved directory; ``backend``: ``torch``, ``torchscript`` (model.ts) or ``onnx``."""
        path = Path(path)
        doc = json.loads((path / META).read_text())
        classes, size = list(doc.pop("classes")), int(doc.pop("image_size"))
        temperature, tta = float(doc.pop("temperature", 1.0)), int(doc.pop("tta", 0))
        net = build(
            doc["arch"],
            len(classes),
            widths=tuple(doc.get("widths", (64, 256, 256))),
            mean=tuple(doc.get("mean", IMAGENET_MEAN)),
            std=tuple(doc.get("std", IMAGENET_STD)),
        )
        net.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
        net.eval()
        model = cls(net, classes, size, temperature, tta, doc)
        if backend == "torch":
            return model
        model.forward, model.backend = runtime_forward(path, backend), backend
        return model


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


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()

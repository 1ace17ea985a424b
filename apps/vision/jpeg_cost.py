"""What the JPEG copy of CIFAR-10 costs: the bench recipe on a lossless set and on its JPEG re-encoding.

No lossless CIFAR-10 is on the development machines, so this makes a small lossless set out of the JPEG copy:
each 32x32 image is averaged down by ``factor`` (2 -> 16x16 px), which removes the detail above the new Nyquist
limit where JPEG-75's quantisation and 4:2:0 chroma subsampling did most of their damage. That set is the
*lossless* arm; the *jpeg* arm is the same images encoded as JPEG at ``quality`` (default 75, 4:2:0 chroma, as the
copy) and decoded back. Both arms train the same fixed schedule (``apps.vision.bench.run_one``: the airbench94
recipe, ``epochs`` x ``seeds``) and are tested on their own version of the test split, so the difference in test
accuracy is what one JPEG-75 encoding costs this recipe at that size.

At 16 px an 8x8 JPEG block spans a quarter of the image, so that cost overstates the one at 32 px. ``--upsample``
brackets it from the other side: the 16 px lossless images are brought back to 32 px (bicubic) before the JPEG arm
encodes them, so both arms train at 32 px on images whose blocks cover what the copy's do, but whose content is
smoother than real 32 px photographs (JPEG loses less on smooth content): a lower estimate.

``python -m apps.vision.jpeg_cost [--epochs 10 --seeds 2] [--upsample]`` -> ``bench/results/vision-jpeg-cost.json``
(``vision-jpeg-cost-upsampled.json``). The images' PSNR (dB) and JPEG bits per pixel are recorded beside the
accuracies, with the CPU model and load.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from apps.vision.bench import BENCH_CONFIG, _load_avg, _over_seeds, cpu_kind, limited, run_one
from apps.vision.config import Config
from apps.vision.data import CIFAR10, ImageSet, load
from common.cli import setup_logging
from common.config import machine_info
from common.data import DataError
from common.reports import write_json
from common.workspace import Workspace

log = logging.getLogger(__name__)

OUTPUT = Path("bench/results/vision-jpeg-cost.json")


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``uint8[N, 3, S, S]`` -> ``uint8[N, 3, S/factor, S/factor]``: the mean of each ``factor x factor`` block,
    rounded (a box filter: no aliasing of the detail it removes, no ringing)."""
    if factor < 1 or images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"factor {factor} does not divide the image size {tuple(images.shape[-2:])}")
    out = torch.nn.functional.avg_pool2d(images.float(), factor)
    return out.round().clamp(0, 255).to(torch.uint8)


def jpeg_roundtrip(images: torch.Tensor, quality: int = 75, subsampling: str = "4:2:0") -> tuple[torch.Tensor, float]:
    """Each image encoded as a baseline JPEG by Pillow (libjpeg) and decoded back, and the mean bits per pixel
    of the entropy-coded data (the scan after the SOS header; the ~600 bytes of tables and headers excluded)."""
    out = torch.empty_like(images)
    nbytes = 0
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
        data = buf.getvalue()
        sos = data.index(b"\xff\xda")
        nbytes += len(data) - (sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")) - 2  # minus EOI
        buf.seek(0)
        out[i] = torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)
    pixels = len(images) * images.shape[-1] * images.shape[-2]
    return out, 8 * nbytes / max(pixels, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of ``b`` against ``a`` (both uint8): 10 log10(255^2 / MSE)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))


def upsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``uint8[N, 3, S, S]`` -> ``uint8[N, 3, S*factor, S*factor]`` by bicubic interpolation, rounded and clamped."""
    out = torch.nn.functional.interpolate(images.float(), scale_factor=factor, mode="bicubic", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def arms(
    train: ImageSet, test: ImageSet, factor: int, quality: int, *, up: bool = False
) -> tuple[dict[str, tuple], dict[str, float]]:
    """The lossless and JPEG versions of ``train``/``test`` at 1/``factor`` the size (``up``: brought back to the
    original size before the encoding), and what the encoding did."""

    def with_images(s: ImageSet, images: torch.Tensor) -> ImageSet:
        return ImageSet(images, s.labels, list(s.classes), list(s.paths), np.full((len(s), 2), images.shape[-1]))

    small_train, small_test = downsample(train.images, factor), downsample(test.images, factor)
    if up:
        small_train, small_test = upsample(small_train, factor), upsample(small_test, factor)
    t0 = time.perf_counter()
    jpeg_train, bpp_train = jpeg_roundtrip(small_train, quality)
    jpeg_test, bpp_test = jpeg_roundtrip(small_test, quality)
    log.info("JPEG-%d round trip of %d images in %.1fs", quality, len(train) + len(test), time.perf_counter() - t0)
    info = {
        "psnr_db": round(psnr(small_test, jpeg_test), 2),
        "bits_per_pixel": round((bpp_train * len(train) + bpp_test * len(test)) / (len(train) + len(test)), 3),
    }
    return {
        "lossless": (with_images(train, small_train), with_images(test, small_test)),
        f"jpeg{quality}": (with_images(train, jpeg_train), with_images(test, jpeg_test)),
    }, info


def run(
    dataset: str | None = None,
    *,
    cfg: Config | None = None,
    epochs: int = 10,
    seeds: int = 2,
    factor: int = 2,
    quality: int = 75,
    up: bool = False,
    limit: int | None = None,
    ws: Workspace | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` (default: the bench recipe) for ``epochs`` on both arms of ``dataset`` (default: the CIFAR-10
    copy; any folder with ``train`` and ``test`` splits, read at 32 px), ``seeds`` seeds each; the JSON document."""
    ws = ws or Workspace.from_env()
    load_before = _load_avg()
    ds = load(dataset or CIFAR10, image_size=32, progress=progress, data_dir=ws.data_dir)
    train, test = ds.train, ds.test
    if test is None:
        raise DataError(f"{ds.name}: no test split; the comparison needs train/ and test/ folders")
    if limit:
        train, test = limited(train, test, limit)
    size = 32 if up else 32 // factor
    cfg = replace(cfg or BENCH_CONFIG, image_size=size, epochs=epochs)
    sets, info = arms(train, test, factor, quality, up=up)
    results: dict[str, Any] = {}
    for name, (tr, te) in sets.items():
        per_seed = [
            run_one(f"{name}-{size}px", replace(cfg, seed=cfg.seed + i), tr, te, progress=progress)
            for i in range(seeds)
        ]
        entry = _over_seeds(per_seed)["entry"]
        results[name] = {
            "metrics": entry["metrics"],
            "per_seed_accuracy_tta": [r["entry"]["metrics"]["accuracy_tta"] for r in per_seed],
            "train_s": entry["train_s"],
            "precision": entry["precision"]["name"],
        }
    lossless, jpeg = results["lossless"]["metrics"], results[f"jpeg{quality}"]["metrics"]
    return {
        "dataset": ds.name,
        "what": f"the bench recipe ({epochs} epochs, {seeds} seed(s)) on {ds.name} averaged down to {32 // factor}px"
        f"{' and bicubic-upsampled to 32px' if up else ''} "
        f"(lossless) and on those images as JPEG-{quality} 4:2:0 (decoded): the accuracy one JPEG encoding costs",
        "images": {"train": len(train), "test": len(test), "size_px": size, "factor": factor, "upsampled": up},
        "jpeg": {"quality": quality, "subsampling": "4:2:0", **info},
        "arms": results,
        "cost_points_tta": round(100 * (lossless["accuracy_tta"] - jpeg["accuracy_tta"]), 2),
        "cost_points_plain": round(100 * (lossless["accuracy"] - jpeg["accuracy"]), 2),
        "cpu_kind": cpu_kind(),
        "load_before": load_before,
        "load_after": _load_avg(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=None, help="a folder with train/ and test/ (default: the CIFAR-10 copy)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--factor", type=int, default=2, help="downsampling factor (2: 32 -> 16 px)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality of the jpeg arm")
    p.add_argument("--upsample", action="store_true", help="bring the averaged images back to 32 px (bicubic)")
    p.add_argument("--limit", type=int, default=None, help="first N training/test images only (a quick check)")
    p.add_argument("--output", type=Path, default=None, help=f"default {OUTPUT} (-upsampled with --upsample)")
    a = p.parse_args(argv)
    setup_logging()
    try:
        doc = run(
            a.dataset,
            epochs=a.epochs,
            seeds=a.seeds,
            factor=a.factor,
            quality=a.quality,
            up=a.upsample,
            limit=a.limit,
        )
    except (DataError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    output = a.output or (OUTPUT.with_name(f"{OUTPUT.stem}-upsampled.json") if a.upsample else OUTPUT)
    write_json(output, doc)
    log.info("JPEG-%d costs %.2f points (TTA) -> %s", a.quality, doc["cost_points_tta"], output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

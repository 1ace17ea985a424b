"""How the vision app's cost grows with the number of images: peak memory, decode time and training speed for the
in-memory tensor and the disk cache (:mod:`apps.vision.cache`).

``python -m apps.vision bench --scale [--sizes 1e3,1e4,1e5] [--sizes-224 1e3,1e4]`` (or ``python -m
apps.vision.scale``) writes ``bench/results/vision-scale.json`` and ``vision-scale.png`` (log-log curves).

- **Data**: synthetic ImageFolders (:func:`write_synthetic_folder`: 10 classes of smooth coloured JPEGs, seeded),
  written once per size into ``--data-dir`` and reused while their spec matches; 32 px images for the 32 px series,
  256 px images decoded to 224 px for the 224 px series.
- **Each (mode, size)** runs in a fresh interpreter (:func:`common.scaling.run_measured`: peak RSS of the process
  tree): decode the folder (``memory``: into one tensor; ``disk``: into a new cache file, the old one deleted first),
  then ``--steps`` training steps of a small AirNet (batch ``--batch-size``; at 224 px a quarter of the steps
  and a sixteenth of the batch, random images across the whole set,
  the app's batch augmentation) through the app's own data path (:class:`apps.vision.train.TrainImages`, one
  gather per batch). A memory run that will not fit is refused by the app's guard, recorded with its message.
- **Throughput** (``--throughput``, on by default when the CIFAR-10 JPEG copy is in the data directory): 10,000
  CIFAR-10 training images (1,000 per class), the app's training loop (:func:`apps.vision.train.fit_model`, default
  AirNet, fp32) for ``--epochs`` epochs, memory and disk alternated ``--repeats`` times: images/s side by side.

Exponents b of ``cost ∝ images^b`` are fitted per series (:func:`common.scaling.exponents`); the machine's load
is recorded beside them (:func:`common.scaling.conditions`): numbers from a loaded machine are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import scaling

log = logging.getLogger(__name__)

DEFAULT_OUTPUT = Path("bench/results/vision-scale.json")
MODES = ("memory", "disk")
N_CLASSES = 10
SOURCE_PX = {32: 32, 224: 256}  # the synthetic JPEGs' size per decoded size


# ------------------------------------------------------------------ synthetic folders


def synthetic_images(n: int, size: int, seed: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8[n, size, size, 3], labels int64[n])``: image ``start + i`` of a seeded stream, a smooth gradient
    in its class's hue plus a bright square and mild noise (compresses like a photo, not like white noise)."""
    rng = np.random.default_rng([seed, start])
    labels = (np.arange(start, start + n) % N_CLASSES).astype(np.int64)
    hue = np.stack([np.cos(labels * 0.63), np.cos(labels * 0.63 + 2.1), np.cos(labels * 0.63 + 4.2)], 1)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    grad = (
        ramp[None, :, None, None] * rng.uniform(0.3, 1, (n, 1, 1, 1)).astype(np.float32)
        + ramp[None, None, :, None] * 0.4
    )
    img = 90 + 80 * grad * hue[:, None, None, :].astype(np.float32)
    img += 6 * rng.standard_normal((n, size, size, 3), dtype=np.float32)
    for i, (y, x) in enumerate(rng.integers(0, size // 2, (n, 2))):
        img[i, y : y + size // 3, x : x + size // 3] += 60
    return np.clip(img, 0, 255).astype(np.uint8), labels


def write_synthetic_folder(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """An ImageFolder of ``n`` synthetic ``size`` px JPEGs (``root/c<k>/<i>.jpg``), written once: a folder whose
    spec (``<root>.json``) matches is reused. Memory stays at one chunk of images."""
    from PIL import Image

    spec = {"n": n, "size": size, "seed": seed, "classes": N_CLASSES, "format": 2}
    chunk = max(1, min(1000, 2**22 // (size * size)))  # about 50 MB of float32 pixels at a time
    meta = root.with_name(root.name + ".json")  # beside the folder: inside it, it would be a stray file
    if meta.exists() and json.loads(meta.read_text()) == spec:
        return root
    log.info("writing %d synthetic %d px images into %s", n, size, root)
    for c in range(N_CLASSES):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for start in range(0, n, chunk):
        images, labels = synthetic_images(min(chunk, n - start), size, seed, start)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(img).save(root / f"c{label}" / f"{start + i:07d}.jpg", quality=85)
    meta.write_text(json.dumps(spec))
    return root


def cifar_subset(archive: Path, out: Path, per_class: int = 1000) -> Path:
    """The first ``per_class`` JPEGs of each class of a CIFAR-10 ``train.tar.gz`` as an ImageFolder (written once)."""
    done = out.with_name(out.name + ".json")  # beside the folder: inside it, it would be a stray file
    spec = {"archive": str(archive), "per_class": per_class}
    if done.exists() and json.loads(done.read_text()) == spec:
        return out
    counts: dict[str, int] = {}
    with tarfile.open(archive, "r:*") as tf:
        for m in tf:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) < 2 or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            cls = parts[-2]
            if counts.get(cls, 0) >= per_class:
                continue
            fh = tf.extractfile(m)
            if fh is None:
                continue
            (out / cls).mkdir(parents=True, exist_ok=True)
            (out / cls / parts[-1]).write_bytes(fh.read())
            counts[cls] = counts.get(cls, 0) + 1
    done.write_text(json.dumps(spec))
    return out


# ------------------------------------------------------------------ one measured run (the child)


def run_one(
    mode: str,
    folder: Path,
    *,
    image_size: int,
    cache_dir: Path,
    steps: int,
    batch_size: int,
    widths: tuple[int, ...],
    seed: int,
) -> dict[str, Any]:
    """Decode ``folder`` in ``mode`` and train ``steps`` steps on random batches of the whole set: the child's
    measurements (``refused`` with the guard's message when memory mode will not fit)."""
    import torch

    from apps.vision.cache import CacheTooLarge
    from apps.vision.config import Config
    from apps.vision.data import read_folder
    from apps.vision.train import BatchAugment, TrainImages, make_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out: dict[str, Any] = {"mode": mode, "image_size": image_size, "rss_start_bytes": scaling.rss_bytes()}
    t0 = time.perf_counter()
    try:
        data = read_folder(folder, image_size=image_size, cache=mode, cache_dir=cache_dir, progress=False)
    except CacheTooLarge as exc:
        out["refused"] = str(exc)
        out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
        return out
    out["decode_s"] = time.perf_counter() - t0
    out["images"] = len(data)
    out["decode_images_per_s"] = len(data) / max(out["decode_s"], 1e-9)
    out["rss_after_decode_bytes"] = scaling.rss_bytes()
    cfg = Config(widths=widths, image_size=image_size, batch_size=batch_size, seed=seed)
    net = make_model(cfg, data)
    augment = BatchAugment(len(data), len(data.classes), cfg, seed)
    sampler = torch.utils.data.RandomSampler(
        range(len(data)), num_samples=(steps + 1) * batch_size, generator=torch.Generator().manual_seed(seed)
    )
    loader = torch.utils.data.DataLoader(TrainImages(data), batch_size=batch_size, sampler=sampler)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    t_start, seen = 0.0, 0
    for step, (inputs, target) in enumerate(loader):
        if step == 1:  # the first step (allocations, kernel selection) is not timed
            t_start, seen = time.perf_counter(), 0
        x, y = augment(inputs, target, 1)
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    out["train_steps"] = steps
    out["train_images_per_s"] = seen / max(time.perf_counter() - t_start, 1e-9)
    out["peak_rss_self_bytes"] = scaling.peak_rss_self_bytes()
    out["data_rss_bytes"] = max(out["rss_after_decode_bytes"] - out["rss_start_bytes"], 1)
    return out


def run_throughput_one(mode: str, folder: Path, *, cache_dir: Path, epochs: int, seed: int) -> dict[str, Any]:
    """The app's training loop (default AirNet, fp32, no validation) on ``folder`` for ``epochs`` epochs."""
    from apps.vision.config import Config
    from apps.vision.data import read_folder
    from apps.vision.train import fit_model, make_model

    cfg = Config(epochs=epochs, seed=seed, amp=False, channels_last=False, cache=mode)
    t0 = time.perf_counter()
    data = read_folder(folder, image_size=cfg.image_size, cache=mode, cache_dir=cache_dir, progress=False)
    decode_s = time.perf_counter() - t0
    net = make_model(cfg, data)
    result = fit_model(net, data, None, cfg, progress=False)
    rates = [len(data) / row["train_time_s"] for row in result.history]
    return {
        "mode": mode,
        "images": len(data),
        "decode_s": decode_s,
        "epoch_images_per_s": rates,
        "train_images_per_s": float(np.mean(rates)),
        "peak_rss_self_bytes": scaling.peak_rss_self_bytes(),
    }


# ------------------------------------------------------------------ the parent


def _child(*args: str) -> list[str]:
    return scaling.python_child("apps.vision.scale", "--child", *args)


def _clear_cache(cache_dir: Path) -> None:
    for p in cache_dir.glob("*.vimg"):
        p.unlink()


def run_series(
    image_size: int,
    sizes: list[int],
    *,
    data_dir: Path,
    steps: int,
    batch_size: int,
    seed: int,
    timeout_s: float,
    modes: tuple[str, ...] = MODES,
) -> list[dict[str, Any]]:
    """Each of ``modes`` at every size of one image size (each run a child process)."""
    results = []
    for size in sizes:
        folder = write_synthetic_folder(
            data_dir / f"synth-{SOURCE_PX[image_size]}px-{size}", size, SOURCE_PX[image_size], seed
        )
        cache_dir = data_dir / "cache"
        for mode in modes:
            _clear_cache(cache_dir)  # every disk run decodes and writes its cache: decode_s is comparable
            cmd = _child(mode, "--folder", str(folder), "--image-size", str(image_size), "--cache-dir", str(cache_dir))
            cmd += ["--steps", str(steps), "--batch-size", str(batch_size), "--seed", str(seed)]
            log.info("%d px, %d images: %s ...", image_size, size, mode)
            r = scaling.run_measured(cmd, timeout_s=timeout_s)
            r.update(series=f"{mode} {image_size}px", mode=mode, image_size=image_size, size=size)
            results.append(r)
            keys = ("decode_s", "train_images_per_s", "peak_rss_bytes", "refused", "failed")
            log.info("%d px, %d images, %s: %s", image_size, size, mode, {k: r[k] for k in keys if k in r})
        _clear_cache(cache_dir)
    return results


def run_throughput(
    folder: Path, *, data_dir: Path, epochs: int, repeats: int, seed: int, timeout_s: float
) -> dict[str, Any]:
    """Memory and disk alternated ``repeats`` times on ``folder``: images/s of the app's training loop."""
    runs = []
    cache_dir = data_dir / "cache"
    for rep in range(repeats):
        for mode in MODES:
            _clear_cache(cache_dir)
            cmd = _child(mode, "--throughput", "--folder", str(folder), "--cache-dir", str(cache_dir))
            cmd += ["--epochs", str(epochs), "--seed", str(seed)]
            log.info("throughput %s (repeat %d) ...", mode, rep + 1)
            r = scaling.run_measured(cmd, timeout_s=timeout_s)
            r.update(mode=mode, repeat=rep + 1)
            runs.append(r)
            log.info("throughput %s: %s images/s", mode, r.get("epoch_images_per_s") or r.get("failed"))
    _clear_cache(cache_dir)
    per_mode = {}
    for mode in MODES:
        rates = [v for r in runs if r["mode"] == mode for v in r.get("epoch_images_per_s", [])]
        per_mode[mode] = {
            "images_per_s_mean": float(np.mean(rates)) if rates else None,
            "images_per_s_std": float(np.std(rates)) if rates else None,
            "epochs_measured": len(rates),
        }
    mem, disk = per_mode["memory"]["images_per_s_mean"], per_mode["disk"]["images_per_s_mean"]
    return {
        "what": "training images/s of the app's loop (default AirNet, fp32, batch 512) on 10,000 CIFAR-10 training "
        f"images, {epochs} epoch(s) per run, memory and disk alternated {repeats} time(s)",
        "runs": runs,
        "summary": per_mode,
        "disk_over_memory": disk / mem if mem and disk else None,
    }


def memory_limits(fraction: float) -> dict[str, Any]:
    """Where memory mode stops: the most images its guard accepts, now and on a whole 24 GB machine."""
    from apps.vision.cache import available_memory, image_bytes

    avail = available_memory()
    out: dict[str, Any] = {"guard_fraction": fraction, "available_bytes_now": avail}
    for px in (32, 224):
        out[f"max_images_{px}px_now"] = int(fraction * avail // image_bytes(px))
        out[f"max_images_{px}px_24gb"] = int(fraction * 24e9 // image_bytes(px))
    return out


def run_scale(
    sizes: list[int],
    sizes_224: list[int],
    *,
    output: Path = DEFAULT_OUTPUT,
    data_dir: Path,
    steps: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    timeout_s: float = 1800.0,
    throughput: Path | None = None,
    throughput_epochs: int = 1,
    repeats: int = 2,
    modes: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    """The curves (and the CIFAR throughput when ``throughput`` is a folder); writes ``output`` + PNG."""
    from apps.vision.cache import MEMORY_FRACTION
    from common.reports.files import write_json

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    results = run_series(
        32, sizes, data_dir=data_dir, steps=steps, batch_size=batch_size, seed=seed, timeout_s=timeout_s, modes=modes
    )
    if sizes_224:
        results += run_series(
            224,
            sizes_224,
            data_dir=data_dir,
            steps=max(steps // 4, 2),
            batch_size=max(batch_size // 16, 2),  # 49x the pixels of 32 px: a step of 8 takes seconds
            seed=seed,
            timeout_s=timeout_s,
            modes=modes,
        )
    metrics = ("peak_rss_bytes", "data_rss_bytes", "decode_s")
    doc: dict[str, Any] = {
        "what": "vision cost vs images: peak RSS of the process tree, resident memory the decoded data adds, decode "
        "time and training images/s of a fixed number of steps, for the in-memory tensor and the disk cache, on "
        "synthetic JPEG folders",
        "sizes": {"32px": sizes, "224px": sizes_224},
        "steps": steps,
        "batch_size": batch_size,
        "results": results,
        "exponents": scaling.exponents(results, series="series", x="size", metrics=metrics),
        "memory_mode_limit": memory_limits(MEMORY_FRACTION),
    }
    if throughput is not None:
        doc["throughput"] = run_throughput(
            throughput, data_dir=data_dir, epochs=throughput_epochs, repeats=repeats, seed=seed, timeout_s=timeout_s
        )
    doc["conditions"] = scaling.conditions(t0, load_start)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, doc)
    panels = [
        ("peak_rss_bytes", "peak RSS GiB (process)", 2**30),
        ("data_rss_bytes", "RSS added by the data GiB", 2**30),
        ("decode_s", "decode seconds", 1.0),
        ("train_images_per_s", "training images/s", 1.0),
    ]
    note = doc["conditions"]["note"]
    scaling.plot_curves(
        results,
        output.with_suffix(".png"),
        series="series",
        x="size",
        x_label="images",
        panels=panels,
        title=f"Vision: memory vs disk cache ({note})",
    )
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What the command prints: exponents, peak RSS per run, throughput."""
    rows = [
        {k: r.get(k) for k in ("series", "size", "peak_rss_bytes", "decode_s", "train_images_per_s", "refused")}
        for r in doc["results"]
    ]
    out = {"exponents": doc["exponents"], "runs": rows, "memory_mode_limit": doc["memory_mode_limit"]}
    if "throughput" in doc:
        out["throughput"] = doc["throughput"]["summary"] | {"disk_over_memory": doc["throughput"]["disk_over_memory"]}
    return out


def _sizes(minimum: int) -> Any:
    def parse(text: str) -> list[int]:
        if not text.strip():
            return []
        try:
            return scaling.parse_sizes(text, minimum=minimum, what="images")
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or set(modes) - set(MODES):
        raise argparse.ArgumentTypeError(f"--modes: {text!r}; use memory, disk or memory,disk")
    return modes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m apps.vision bench --scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes(10), default=[1000, 10_000, 100_000], help="images at 32 px (1e3,1e4,1e5)")
    p.add_argument("--sizes-224", type=_sizes(10), default=[1000, 10_000], help="images at 224 px ('' for none)")
    p.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--data-dir", type=Path, default=None, help="synthetic folders and caches (default: data dir)")
    p.add_argument("--steps", type=int, default=10, help="training steps timed per run (224 px: a quarter)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (224 px: a sixteenth)")
    p.add_argument(
        "--throughput",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CIFAR-10 memory vs disk images/s (default: when the JPEG copy is in the data dir)",
    )
    p.add_argument("--epochs", type=int, default=1, help="throughput: epochs per run")
    p.add_argument("--repeats", type=int, default=2, help="throughput: memory/disk pairs")
    p.add_argument("--modes", type=_modes, default=MODES, help="memory,disk (the default: both)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child run")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0 done, 2 bad arguments (argparse's message) or a refused child run."""
    a = parser().parse_args(argv)
    for name in ("steps", "batch_size", "epochs", "repeats"):
        if getattr(a, name) < 1:
            parser().error(f"--{name.replace('_', '-')}: at least 1, got {getattr(a, name)}")
    if not a.sizes and not a.sizes_224:
        parser().error("--sizes / --sizes-224: give at least one size")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if a.child:
        if a.throughput:
            r = run_throughput_one(a.child, a.folder, cache_dir=a.cache_dir, epochs=a.epochs, seed=a.seed)
        else:
            r = run_one(
                a.child,
                a.folder,
                image_size=a.image_size,
                cache_dir=a.cache_dir,
                steps=a.steps,
                batch_size=a.batch_size,
                widths=(16, 32, 32),
                seed=a.seed,
            )
        print(json.dumps(r))
        return scaling.REFUSED_EXIT if "refused" in r else 0
    from common.workspace import Workspace

    ws_data = Workspace.from_env().data_dir
    data_dir = a.data_dir or ws_data / "vision-scale"
    cifar = ws_data / "cifar10-jpeg" / "train.tar.gz"
    folder = None
    if a.throughput or (a.throughput is None and cifar.exists()):
        if not cifar.exists():
            parser().error(f"--throughput: {cifar} not found (the CIFAR-10 JPEG copy; see MLREF_DATA_DIR)")
        folder = cifar_subset(cifar, data_dir / "cifar10-10k")
    doc = run_scale(
        a.sizes,
        a.sizes_224,
        output=a.output,
        data_dir=data_dir,
        steps=a.steps,
        batch_size=a.batch_size,
        seed=a.seed,
        timeout_s=a.timeout,
        throughput=folder,
        throughput_epochs=a.epochs,
        repeats=a.repeats,
        modes=a.modes,
    )
    print(json.dumps({"output": str(a.output), **summary(doc)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

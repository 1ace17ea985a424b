"""Benchmark: test accuracy against training wall-clock on CIFAR-10 (the JPEG-75 copy), or on any ImageFolder.

``python -m apps.vision bench`` -> ``bench/results/vision.json`` + ``vision.png`` (accuracy-vs-time curve) +
``vision.md`` (table); ``--dataset DIR`` -> ``bench/results/vision-<name>.json`` (+ .png/.md).

Two runs of the AirNet (airbench94) recipe, each its own complete schedule sized to a training-time budget:

- ``short``: ``short_budget_s`` (default 400 s, under the 7-minute mark; airbench94's 10 epochs took 391 s on a
  quiet AMX machine in bf16);
- ``long``: ``budget_s`` (default 1,080 s = 18 minutes, under the 20-minute mark).

The precision probe (timed training steps, counted in the training time) sets each run's epoch count so that it fits
its budget on whatever CPU it meets (a precision pinned by the config is timed alone); ``epochs`` fixes the count
instead.

Per run: the test accuracy after every epoch (plain forward, no TTA) against cumulative training seconds
(validation time excluded), the final accuracy with TTA, the time to 85/90/92 % (first epoch at or above, or
the final TTA point), training images/s, inference images/s (raw torch forward, batch 500) and the served model
(``POST /v1/images:classify``, in-process, JPEG uploads, batches of 64) against raw torch on the same images:
the ratio is the service's overhead (decoding, HTTP, JSON). The test set is the dataset's own test split (never
used for any choice: the recipe is fixed in advance). Machine load (1-minute load average) is recorded before and
after: on a shared machine the times mean little.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from apps.vision import precision
from apps.vision.config import APP, Config
from apps.vision.data import CIFAR10, Dataset, Images, ImageSet, load, train_val_test
from apps.vision.evaluate import top_k_accuracy
from apps.vision.pipeline import APP_IMPL
from apps.vision.precision import resolve_device
from apps.vision.train import BatchAugment, choose_precision, fit_model, make_model, probe_batch, to_vision_model
from common import cli
from common.app import Fitted
from common.config import machine_info
from common.reports import save_figure, write_json, write_text
from common.workspace import Workspace

log = logging.getLogger(__name__)

THRESHOLDS = (0.85, 0.90, 0.92)
ANCHORS = {
    "airbench94 (A100, lossless CIFAR-10)": {"accuracy_tta": 0.9401, "train_s": 3.83},
    "airbench95 (A100, lossless CIFAR-10)": {"accuracy_tta": 0.9501, "train_s": 10.4},
}
BENCH_CONFIG = Config(batch_size=1024, epochs=10, widths=(64, 256, 256), tta=2)  # airbench94


def bench_config(path: Path | None = None, device: str = "auto") -> Config:
    """The bench recipe on ``device`` with the fields of the JSON file ``path`` over it (checked like any config:
    unknown keys, bad JSON, wrong types are a user error); a device that is not there is one error line."""
    resolve_device(device)
    cfg = replace(BENCH_CONFIG, device=device)
    if path is None:
        return cfg
    Config.from_file(path)  # validates the file on its own
    return Config.from_dict({**cfg.to_dict(), **json.loads(Path(path).read_text())}).validate()


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``bench`` prints: where the results went and each run's headline figures."""
    return {
        "output": doc.get("output"),
        "figure": doc.get("figure"),
        **{
            k: {"metrics": v["metrics"], "train_s": v["train_s"], "time_to": v["time_to"]}
            for k, v in doc["models"].items()
        },
        "serving": doc["serving"],
    }


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_kind() -> str:
    """``amx``, ``avx512``, ``avx2`` (x86 CPU feature class, what decides bf16 and vector speed) or the machine."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
    except OSError:
        flags = []
    for kind, flag in (("amx", "amx_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return platform.machine() or "unknown"


def gemm_peak(dtype: torch.dtype, device: torch.device, n: int = 4096, repeats: int = 3) -> float:
    """The machine's practical peak in FLOP/s for ``dtype``: the best of ``repeats`` timed ``n x n @ n x n``
    products (2 n^3 FLOPs each) after a warm-up, with the threads training uses."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_flops_per_image(cfg: Config, train: ImageSet, batch: int = 32) -> float:
    """FLOPs of one training step per image (forward + backward; convolutions and matmuls, 2 per multiply-add),
    counted by ``torch.utils.flop_counter`` on the model of ``cfg``."""
    from torch.utils.flop_counter import FlopCounterMode

    net = make_model(cfg, train).train()
    n = min(batch, len(train))
    x = train.images[:n].float()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(net(x), train.labels[:n]).backward()
    return counter.get_total_flops() / n


# aten operators of a training step, grouped by what they are (the rest is "other": optimizer, copies, loss)
OP_GROUPS = {
    "convolution": ("convolution", "conv2d", "mkldnn_conv"),
    "max_pool": ("max_pool",),
    "batch_norm": ("batch_norm",),
    "gelu": ("gelu",),
    "fill": ("fill_", "zero_"),
    "matmul": ("aten::mm", "aten::addmm", "aten::linear"),
}


def step_profile(cfg: Config, train: ImageSet, precision_: dict[str, Any], steps: int = 3) -> dict[str, Any]:
    """Where one training step's time goes: ``steps`` steps of ``cfg``'s model at its batch size, in the chosen
    precision, under ``torch.profiler``; self time per operator group (:data:`OP_GROUPS`) as a fraction of the
    total and the step's seconds. Convolution-bound nets spend most of it in ``convolution``; the memory-bound
    passes (pooling, normalisation, activations, zero fills) are what the GEMM peak cannot speed up."""
    from torch.profiler import ProfilerActivity, profile

    augment = BatchAugment(len(train), len(train.classes), cfg, cfg.seed)
    x, y = probe_batch(train, cfg, augment)
    step = precision.training_step(
        cfg,
        make_model(cfg, train),
        x,
        y,
        amp=bool(precision_.get("amp")),
        channels_last=bool(precision_.get("channels_last")),
        dtype=precision_.get("dtype") or "bfloat16",
        device=resolve_device(cfg.device),
    )
    step()  # warm-up: oneDNN primitives
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - t0) / steps
    groups = dict.fromkeys([*OP_GROUPS, "other"], 0.0)
    for ev in prof.key_averages():
        if not ev.key.startswith("aten::"):
            continue
        group = next((g for g, keys in OP_GROUPS.items() if any(k in ev.key for k in keys)), "other")
        groups[group] += ev.self_cpu_time_total
    total = sum(groups.values()) or 1.0
    return {
        "batch": len(x),
        "step_s": round(wall, 4),
        "fraction": {g: round(v / total, 3) for g, v in groups.items()},
    }


def efficiency(entry: dict[str, Any], flops_per_image: float, peaks: dict[str, float]) -> dict[str, float]:
    """Achieved training FLOP/s (counted FLOPs x measured images/s) against the peak of the precision trained in."""
    dtype = entry["precision"]["dtype"] if entry["precision"]["amp"] else "float32"
    achieved = flops_per_image * entry["metrics"]["train_images_per_s"]
    return {
        "train_gflop_per_image": round(flops_per_image / 1e9, 4),
        "train_gflops_per_s": round(achieved / 1e9, 1),
        "peak_gflops_per_s": round(peaks[dtype] / 1e9, 1),
        "peak_dtype": dtype,
        "fraction_of_peak": round(achieved / peaks[dtype], 3),
    }


def time_to(curve: list[dict[str, float]], final: dict[str, float], thresholds=THRESHOLDS) -> dict[str, float | None]:
    """Seconds of training until the test accuracy first reached each threshold (None: never)."""
    points = [(p["train_s"], p["accuracy"]) for p in curve] + [(final["train_s"], final["accuracy_tta"])]
    return {f"{int(t * 100)}%": next((round(s, 1) for s, a in points if a >= t), None) for t in thresholds}


def served_vs_raw(model, images: ImageSet, cfg: Config, batch: int = 64, repeats: int = 3) -> dict[str, float]:
    """Seconds per batch of ``batch`` images: HTTP service (JPEG uploads, in-process) vs raw torch forward.

    The service is the pipeline's, serving ``model`` registered (by the pipeline's ``register``) as the champion of
    a throwaway workspace."""
    from fastapi.testclient import TestClient

    from common import registry

    x = images.images[:batch]
    jpegs = []
    for arr in x:
        buf = io.BytesIO()
        Image.fromarray(arr.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    raw_s = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.logits(x, tta=model.tta)
        raw_s.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as home, Workspace.at(home).activate() as ws:
        sample = images.subset(np.arange(min(len(images), 500)))
        data = Images("bench", None, Dataset("bench", sample), sample, sample.subset([]), sample.subset([]))
        APP_IMPL.register(ws, Fitted(model), data, cfg, dataset="bench", alias=registry.CHAMPION)
        files = [("files", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(jpegs)]
        service = APP_IMPL.service(
            ws, refresh_interval_s=None, cfg=replace(cfg, max_batch_images=batch), prediction_log=False
        )
        with TestClient(service) as client:
            client.post("/v1/images:classify", files=files[:2])  # warm-up
            http_s = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = client.post("/v1/images:classify", files=files)
                http_s.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"service answered {r.status_code}: {r.text[:200]}")
    raw, http = float(np.median(raw_s)), float(np.median(http_s))
    return {
        "batch": batch,
        "raw_torch_s": round(raw, 4),
        "served_s": round(http, 4),
        "overhead_ratio": round(http / raw, 3),
        "served_images_per_s": round(batch / http, 1),
    }


def run_one(
    name: str, cfg: Config, train: ImageSet, test: ImageSet, *, budget_s: float | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` (epochs fixed, or set from ``budget_s``) with the test accuracy after every epoch."""
    # precision is chosen here (timed steps, counted as training time); its measured rate sizes a budgeted run
    t0 = time.perf_counter()
    augment = BatchAugment(len(train), len(train.classes), cfg, cfg.seed)
    chosen = choose_precision(make_model(cfg, train), train, cfg, augment)
    cfg = chosen.apply(cfg)
    if budget_s is not None:
        rate = chosen.rates.get(chosen.name)
        if rate is None:  # pinned by the config or MLREF_VISION_AMP: nothing measured yet, time that one choice
            x, y = probe_batch(train, cfg, augment)
            rate = precision.training_rate(cfg, make_model(cfg, train), x, y, chosen, device=resolve_device(cfg.device))
        epochs = max(1, int((budget_s - (time.perf_counter() - t0)) * rate * 0.97 / len(train)))
        cfg = replace(cfg, epochs=min(epochs, 200))
        log.info("%s: probe %.0f images/s -> %d epochs for a %.0fs budget", name, rate, cfg.epochs, budget_s)
    probe_s = time.perf_counter() - t0
    t_setup = time.perf_counter()
    net = make_model(cfg, train)
    setup_s = time.perf_counter() - t_setup
    curve: list[dict[str, float]] = []
    elapsed = [probe_s + setup_s]

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        elapsed[0] += row["train_time_s"]
        curve.append({"epoch": epoch, "train_s": round(elapsed[0], 2), "accuracy": round(row["val_accuracy"], 4)})
        log.info("%s epoch %d: %.2f%% at %.0fs of training", name, epoch, 100 * row["val_accuracy"], elapsed[0])

    result = fit_model(net, train, test, cfg, progress=progress, on_epoch_end=on_epoch)
    train_s = elapsed[0]
    model = to_vision_model(net, train, cfg)
    t0 = time.perf_counter()
    logits = model.logits(test.images, tta=cfg.tta)
    tta_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = model.logits(test.images, tta=0)
    infer_s = time.perf_counter() - t0
    probs = torch.softmax(logits, 1)
    final = {"train_s": round(train_s, 2), "accuracy_tta": float((probs.argmax(1) == test.labels).float().mean())}
    n_seen = len(train) * len(result.history)
    return {
        "model": model,
        "curve": curve,
        "entry": {
            "metrics": {
                "accuracy_tta": round(final["accuracy_tta"], 4),
                "accuracy": round(float((plain.argmax(1) == test.labels).float().mean()), 4),
                "top5_accuracy_tta": round(top_k_accuracy(probs, test.labels, 5), 4),
                "train_images_per_s": round(n_seen / max(train_s - probe_s - setup_s, 1e-9), 1),
                "infer_images_per_s": round(len(test) / infer_s, 1),
            },
            "train_s": round(train_s, 1),
            "predict_s": round(tta_s, 2),
            "epochs": cfg.epochs,
            "time_to": time_to(curve, final),
            "curve": curve,
            "recipe": {
                k: v
                for k, v in cfg.to_dict().items()
                if k
                in (
                    "arch",
                    "widths",
                    "epochs",
                    "batch_size",
                    "lr",
                    "momentum",
                    "weight_decay",
                    "label_smoothing",
                    "lookahead",
                    "flip",
                    "translate",
                    "tta",
                )
            },
            "precision": chosen.to_dict(),
            "seed": cfg.seed,
            "budget_s": budget_s,
            "probe_s": round(probe_s, 3),  # a quiet machine probes a tiny set in < 0.05 s
        },
    }


def _over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's entry over seeds: metrics as the mean with ``<metric>_std``, each seed's figures kept."""
    if len(per_seed) == 1:
        return per_seed[0]
    first = per_seed[0]
    entry = copy.deepcopy(first["entry"])
    metrics: dict[str, float] = {}
    for k in first["entry"]["metrics"]:
        vals = [r["entry"]["metrics"][k] for r in per_seed]
        metrics[k] = round(statistics.fmean(vals), 4)
        metrics[f"{k}_std"] = round(statistics.stdev(vals), 4)
    entry["metrics"] = metrics
    entry["train_s"] = round(statistics.fmean(r["entry"]["train_s"] for r in per_seed), 1)
    entry["per_seed"] = [
        {k: r["entry"][k] for k in ("seed", "metrics", "train_s", "time_to", "precision")} for r in per_seed
    ]
    best = max(per_seed, key=lambda r: r["entry"]["metrics"]["accuracy_tta"])
    return {"model": best["model"], "curve": first["curve"], "entry": entry}


def kinds_section(out: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """``out``'s earlier ``cpu_kinds`` with this run's kind replaced: what each CPU kind measured last."""
    kinds: dict[str, Any] = {}
    if out.is_file():
        try:
            kinds = dict(json.loads(out.read_text()).get("cpu_kinds") or {})
        except (OSError, ValueError, AttributeError):
            log.warning("%s: unreadable, its earlier CPU kinds are not kept", out)
    kinds[doc["cpu_kind"]] = {
        "cpu_model": doc["machine"].get("cpu_model"),
        "cpu_count": doc["machine"].get("cpu_count"),
        "git_commit": doc["machine"].get("git_commit"),
        "date": time.strftime("%Y-%m-%d"),
        "load_before": doc["load_before"],
        "load_after": doc["load_after"],
        "seeds": doc["seeds"],
        "peak_gflops_per_s": doc["peak_gflops_per_s"],
        "models": {
            k: {
                "epochs": m["epochs"],
                "train_s": m["train_s"],
                "metrics": {
                    x: v
                    for x, v in m["metrics"].items()
                    if x.split("_std")[0] in ("accuracy_tta", "accuracy", "train_images_per_s")
                },
                "time_to": m["time_to"],
                "precision": {x: m["precision"][x] for x in ("name", "source", "rates")},
                "efficiency": m.get("efficiency"),
            }
            for k, m in doc["models"].items()
        },
    }
    return kinds


def curve_figure(runs: dict[str, dict[str, Any]], title: str) -> Figure:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, run in runs.items():
        e = run["entry"]
        xs = [p["train_s"] / 60 for p in e["curve"]]
        ax.plot(xs, [100 * p["accuracy"] for p in e["curve"]], "o-", ms=3, label=f"{name} (per epoch, no TTA)")
        ax.plot(
            [e["train_s"] / 60],
            [100 * e["metrics"]["accuracy_tta"]],
            "*",
            ms=12,
            label=f"{name} final with TTA: {100 * e['metrics']['accuracy_tta']:.2f}%",
        )
    for t in THRESHOLDS:
        ax.axhline(100 * t, color="grey", lw=0.6, ls=":")
    ax.axvline(7, color="tab:red", lw=0.8, ls="--", label="7 min")
    ax.axvline(20, color="tab:red", lw=0.8, ls="-.", label="20 min")
    ax.set_xlabel("training wall-clock (minutes; evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(
        bottom=max(0, min([100 * p["accuracy"] for r in runs.values() for p in r["entry"]["curve"]] or [0]) - 5)
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# vision bench: {doc['dataset']}",
        "",
        doc["protocol"],
        "",
        f"Load average before/after: {doc['load_before']} / {doc['load_after']} "
        f"({doc['machine'].get('cpu_count')} CPUs, {doc['machine'].get('cpu_model')}); "
        "precision (measured per run): "
        + ", ".join(f"{k} {(m.get('precision') or {}).get('name', '?')}" for k, m in doc["models"].items())
        + ".",
        "",
        "| run | epochs | train s | test acc (TTA) | no TTA | top-5 | train img/s | infer img/s | "
        "to 85% | to 90% | to 92% |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in doc["models"].items():
        t, met = m["time_to"], m["metrics"]
        lines.append(
            f"| {name} | {m['epochs']} | {m['train_s']} | {met['accuracy_tta']:.4f} | {met['accuracy']:.4f}"
            f" | {met['top5_accuracy_tta']:.4f} | {met['train_images_per_s']} | {met['infer_images_per_s']}"
            f" | {t['85%']} | {t['90%']} | {t['92%']} |"
        )
    for name, a in doc["published"].items():
        lines.append(f"| {name} (published) | | {a['train_s']} | {a['accuracy_tta']} | | | | | | | |")
    s = doc.get("serving") or {}
    if s:
        lines += [
            "",
            f"Served vs raw torch, batch of {s['batch']} images: {s['served_s']} s vs "
            f"{s['raw_torch_s']} s (ratio {s['overhead_ratio']}; {s['served_images_per_s']} images/s "
            "through HTTP).",
        ]
    for name, m in doc["models"].items():
        e = m.get("efficiency")
        if e:
            lines.append(
                f"\n{name}: {e['train_gflop_per_image']} GFLOP per training image x "
                f"{m['metrics']['train_images_per_s']} images/s = {e['train_gflops_per_s']} GFLOP/s, "
                f"{100 * e['fraction_of_peak']:.0f} % of this machine's measured {e['peak_dtype']} GEMM peak "
                f"({e['peak_gflops_per_s']} GFLOP/s); precision {m['precision']['name']} ({m['precision']['source']}: "
                + ", ".join(f"{k} {v:,.0f} img/s" for k, v in (m["precision"].get("rates") or {}).items())
                + ")."
            )
            prof = e.get("step_profile")
            if prof:
                lines.append(
                    f"Self time of a training step ({prof['step_s']} s at batch {prof['batch']}): "
                    + ", ".join(f"{g} {100 * f:.0f} %" for g, f in prof["fraction"].items())
                    + "."
                )
    if doc.get("cpu_kinds"):
        lines += [
            "",
            "Per CPU kind (the latest run on each):",
            "",
            "| CPU kind | CPU | run | precision | epochs | test acc (TTA) | train s | train img/s | % of peak | "
            "to 90% | to 92% | load |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for kind, k in doc["cpu_kinds"].items():
            for name, m in k["models"].items():
                met, eff = m["metrics"], m.get("efficiency") or {}
                acc = f"{met['accuracy_tta']:.4f}" + (
                    f" ± {met['accuracy_tta_std']:.4f}" if "accuracy_tta_std" in met else ""
                )
                frac = eff.get("fraction_of_peak")
                lines.append(
                    f"| {kind} | {k['cpu_model']} ({k['cpu_count']} CPUs) | {name} | {m['precision']['name']} | "
                    f"{m['epochs']} | {acc} | {m['train_s']} | {met['train_images_per_s']} | "
                    f"{'' if frac is None else f'{100 * frac:.0f} %'} | {m['time_to']['90%']} | "
                    f"{m['time_to']['92%']} | {k['load_before']} / {k['load_after']} |"
                )
    lines += ["", "Per-epoch curve points:", ""]
    for name, m in doc["models"].items():
        lines.append(f"- {name}: " + ", ".join(f"{p['train_s']:.0f}s {100 * p['accuracy']:.1f}%" for p in m["curve"]))
    return "\n".join(lines) + "\n"


def limited(train: ImageSet, test: ImageSet, limit: int) -> tuple[ImageSet, ImageSet]:
    """A quick check's data: ``limit`` training images drawn at random (seed 0, kept in order) and the first
    ``limit`` test images."""
    g = torch.Generator().manual_seed(0)
    train = train.subset(torch.randperm(len(train), generator=g)[:limit].sort().values.numpy())
    return train, test.subset(np.arange(min(limit, len(test))))


def run_bench(
    dataset: str | None = None,
    *,
    ws: Workspace | None = None,
    output: Path | None = None,
    runs: tuple[str, ...] = ("short", "long"),
    budget_s: float = 1080.0,
    short_budget_s: float = 400.0,
    epochs: int | None = None,
    cfg: Config | None = None,
    limit: int | None = None,
    progress: bool = True,
    write: bool = True,
    seeds: int = 1,
) -> dict[str, Any]:
    """Run the benchmark and write ``output`` (JSON) with a ``.png`` curve and ``.md`` table beside it.

    ``epochs`` (with ``seeds``): one fixed schedule per seed, reported as the mean and std over seeds; without it
    the ``runs`` are sized to their time budgets. The JSON keeps a ``cpu_kinds`` section per CPU kind it has
    seen (AMX, AVX-512, AVX2): a run on another kind adds its own instead of erasing the others.

    ``limit``: use only the first ``limit`` training and test images per split (a quick check of the pipeline).
    ``ws``: where CIFAR-10 is looked for (its data directory; default: the environment's).
    """
    cfg = cfg or BENCH_CONFIG
    ws = ws or Workspace.from_env()
    load_before = _load_avg()
    t0 = time.perf_counter()
    ds = load(dataset or CIFAR10, image_size=cfg.image_size, progress=progress, data_dir=ws.data_dir)
    data_s = time.perf_counter() - t0
    train, val, test = (
        train_val_test(ds, 0.0, cfg.test_fraction, cfg.seed) if ds.test is None else (ds.train, None, ds.test)
    )
    if val is not None and len(val):  # no validation needed: the recipe is fixed; keep those images for training
        train = ImageSet(
            torch.cat([train.images, val.images]),
            torch.cat([train.labels, val.labels]),
            train.classes,
            train.paths + val.paths,
            np.concatenate([train.sizes, val.sizes]),
        )
    if limit:
        train, test = limited(train, test, limit)
    results: dict[str, dict[str, Any]] = {}
    if epochs:  # one fixed schedule (the hardware-independent quality target), repeated over seeds
        runs = (f"{epochs}ep",)
    for name in runs:
        if name not in ("short", "long") and not epochs:
            raise ValueError(f"unknown run {name!r}: use short and/or long")
        per_seed = []
        for i in range(seeds):
            run_cfg = replace(copy.deepcopy(cfg), seed=cfg.seed + i, **({"epochs": epochs} if epochs else {}))
            budget = None if epochs else (budget_s if name == "long" else short_budget_s)
            per_seed.append(run_one(name, run_cfg, train, test, budget_s=budget, progress=progress))
        results[name] = _over_seeds(per_seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    flops = train_flops_per_image(cfg, train)
    peaks = {"float32": gemm_peak(torch.float32, device)}
    for r in results.values():
        p = r["entry"]["precision"]
        if p["amp"] and p["dtype"] not in peaks:
            peaks[p["dtype"]] = gemm_peak(getattr(torch, p["dtype"]), device)
        r["entry"]["efficiency"] = efficiency(r["entry"], flops, peaks)
        r["entry"]["efficiency"]["step_profile"] = step_profile(cfg, train, p)
    best = max(results.values(), key=lambda r: r["entry"]["metrics"]["accuracy_tta"])
    serving = served_vs_raw(best["model"], test, cfg)
    # the JPEG copy is read as its folder, `cifar10-jpeg`; without it `load` gives torchvision's lossless batches
    # under the name `cifar10`: a different dataset, reported and written apart from the JPEG copy's results
    lossless = dataset is None and ds.name == CIFAR10
    name = ds.name if dataset else ("cifar10-lossless" if lossless else "cifar10-jpeg")
    doc = {
        "app": APP,
        "dataset": f"{name}: {len(train)} training / {len(test)} test images, {len(train.classes)} classes, "
        f"{cfg.image_size}px"
        + {"cifar10-jpeg": " (JPEG-75 copy of CIFAR-10)", "cifar10-lossless": " (CIFAR-10 as published)"}.get(name, ""),
        "protocol": (
            "the dataset's own test split; AirNet (airbench94 recipe) trained from scratch on the CPU; "
            + (
                f"{epochs} epochs per run; "
                if epochs
                else f"'short' and 'long' = complete schedules sized to {short_budget_s:.0f} s and "
                f"{budget_s:.0f} s of training (epochs set by a throughput probe); "
            )
            + "test accuracy "
            "with flip + translate TTA; train_s = training wall-clock (evaluation excluded)"
            + ("; JPEG-75 costs accuracy against the published lossless numbers" if name == "cifar10-jpeg" else "")
        ),
        "models": {f"airnet-{k}": r["entry"] for k, r in results.items()},
        "seeds": seeds,
        "peak_gflops_per_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "cpu_kind": cpu_kind(),
        "published": ANCHORS,
        "serving": serving,
        "data_s": round(data_s, 1),
        "problems": len(ds.problems),
        "torch_threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": _load_avg(),
        "machine": machine_info(),
    }
    doc["cpu_kinds"] = {}
    if write:
        out = cli.bench_output(APP, None if dataset is None and not lossless else name, None, output)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc["cpu_kinds"] = kinds_section(out, doc)
        doc["figure"] = str(save_figure(curve_figure(results, doc["dataset"]), out.with_suffix(".png")))
        write_text(out.with_suffix(".md"), markdown(doc))
        doc["output"] = str(write_json(out, doc))
    return doc

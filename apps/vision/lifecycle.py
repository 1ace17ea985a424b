"""Registry, batch scoring, monitoring and retraining of the vision model, on top of ``common/``.

- :func:`register` saves the model with its exports (TorchScript, ONNX) and a monitoring reference: image
  statistics (brightness, contrast, sharpness, original width/height, channel means), the first principal
  components of the penultimate-layer embedding (PCA fitted on the training images, stored in ``pca.json``), the
  predicted class and the top-1 confidence.
- :func:`batch_score` classifies every image of a folder or archive into CSV/parquet, written atomically (no
  partial output), reading one file and scoring one chunk at a time; unreadable files get a row with the reason.
- :func:`monitor` compares new images with that reference through :func:`common.monitoring.run_check` (PSI per
  statistic and component, prediction drift) and adds a confidence-drop alert.
- :func:`retrain` fine-tunes the champion on newly labelled images and promotes the result only if it beats the
  champion on the latest labelled images (a stratified hold-out of the new set neither model trained on). Images
  have no timestamps, so "neither model saw the window" is checked by content: each version stores the hashes of
  every image it was trained on (``seen_images.npy``), the hold-out is drawn only from images the champion never
  saw, and a set without such images to hold out is refused ("no fair comparison").
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from apps.vision.config import REGISTRY_NAME, Config
from apps.vision.data import ImageSet, content_hashes, iter_images, split
from apps.vision.evaluate import calibrate, evaluate_model
from apps.vision.export import export
from apps.vision.model import VisionModel
from apps.vision.train import fit_model, to_vision_model
from common import monitoring, registry, retraining
from common.data import DataError, fingerprint, write_table

log = logging.getLogger(__name__)

PCA_FILE = "pca.json"
SEEN_FILE = "seen_images.npy"  # content hashes of every image the model was trained on (retrain fairness)
N_COMPONENTS = 3
STAT_FEATURES = ["brightness", "contrast", "sharpness", "width", "height", "mean_r", "mean_g", "mean_b"]
REFERENCE_IMAGES = 5000


# ------------------------------------------------------------------------------------------ statistics


def image_stats(images: ImageSet, *, batch_size: int = 256) -> pd.DataFrame:
    """Per image: brightness (mean luma, 0..255), contrast (luma std), sharpness (variance of the Laplacian of
    the luma), original width and height (pixels) and the R, G, B means. Read ``batch_size`` images at a time
    (float copies of one batch only: 5,000 images at 224 px would be 3 GB at once)."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("brightness", "contrast", "sharpness", "r", "g", "b")}
    for chunk in images.images.split(batch_size):
        if not len(chunk):  # torch splits an empty tensor into one empty chunk
            continue
        x = chunk.float()
        luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        cols["brightness"].append(luma.mean(dim=(1, 2, 3)).numpy())
        cols["contrast"].append(luma.std(dim=(1, 2, 3)).numpy())
        cols["sharpness"].append(torch.nn.functional.conv2d(luma, kernel).var(dim=(1, 2, 3)).numpy())
        for c, name in enumerate("rgb"):
            cols[name].append(x[:, c].mean(dim=(1, 2)).numpy())
    joined = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.float32) for k, v in cols.items()}
    sizes = images.sizes if len(images.sizes) == len(images) else np.zeros((len(images), 2))
    return pd.DataFrame(
        {
            "brightness": joined["brightness"],
            "contrast": joined["contrast"],
            "sharpness": joined["sharpness"],
            "width": sizes[:, 0].astype(float),
            "height": sizes[:, 1].astype(float),
            "mean_r": joined["r"],
            "mean_g": joined["g"],
            "mean_b": joined["b"],
        }
    )


def fit_pca(embeddings: np.ndarray, k: int = N_COMPONENTS) -> dict[str, list]:
    """Mean and top-``k`` principal directions of ``embeddings[N, D]`` (SVD)."""
    mean = embeddings.mean(0)
    _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    return {"mean": mean.tolist(), "components": vt[:k].tolist()}


def project(embeddings: np.ndarray, pca: dict[str, list]) -> np.ndarray:
    return (embeddings - np.asarray(pca["mean"])) @ np.asarray(pca["components"]).T


def monitoring_frame(model: VisionModel, images: ImageSet, pca: dict[str, list]) -> pd.DataFrame:
    """What is monitored per image: statistics, embedding components, predicted class and confidence."""
    frame = image_stats(images)
    pcs = project(model.embed(images.images).numpy(), pca)
    for j in range(pcs.shape[1]):
        frame[f"embedding_pc{j + 1}"] = pcs[:, j]
    probs = model.predict_proba(images.images)
    frame["prediction"] = [model.classes[i] for i in probs.argmax(1).tolist()]
    frame["confidence"] = probs.max(1).values.numpy()
    return frame


# ------------------------------------------------------------------------------------------ registry


def register(
    model: VisionModel,
    train: ImageSet,
    *,
    metrics: dict[str, float],
    dataset: str,
    alias: str | None = None,
    seen: np.ndarray | None = None,
) -> registry.ModelVersion:
    """Save ``model`` + exports + monitoring reference (from up to 5,000 training images) and register it.

    ``seen``: content hashes of images the model learnt from before ``train`` (a fine-tuned model inherits its
    parent's); stored with ``train``'s in ``seen_images.npy``.
    """
    t0 = time.perf_counter()
    seen_all = np.union1d(content_hashes(train), seen if seen is not None else np.zeros(0, np.uint64))
    log.info("register: content hashes of %d training images in %.1f s", len(train), time.perf_counter() - t0)
    g = torch.Generator().manual_seed(0)
    ref = train.subset(torch.randperm(len(train), generator=g)[:REFERENCE_IMAGES].sort().values.numpy())
    t0 = time.perf_counter()
    pca = fit_pca(model.embed(ref.images).numpy())
    log.info("register: embeddings and PCA of %d reference images in %.1f s", len(ref), time.perf_counter() - t0)
    t0 = time.perf_counter()
    frame = monitoring_frame(model, ref, pca)
    log.info("register: monitoring reference (statistics, components, predictions) in %.1f s", time.perf_counter() - t0)
    model.meta["reference_confidence"] = float(frame["confidence"].mean())

    def build(path: Path) -> None:
        model.save(path)
        t0 = time.perf_counter()
        export(path)
        log.info("register: TorchScript and ONNX exports written in %.1f s", time.perf_counter() - t0)
        (path / PCA_FILE).write_text(json.dumps(pca))
        np.save(path / SEEN_FILE, seen_all.astype(np.uint64), allow_pickle=False)
        monitoring.ReferenceProfile.from_frame(frame, categorical=["prediction"]).save(path / monitoring.REFERENCE_FILE)

    clean = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and np.isfinite(v)}
    params = {
        "arch": model.meta.get("arch"),
        "classes": len(model.classes),
        "image_size": model.image_size,
        "temperature": round(model.temperature, 4),
        "tta": model.tta,
    }
    digest = fingerprint(pd.DataFrame({"path": train.paths, "label": train.labels.numpy()}))
    return registry.register_dir(
        REGISTRY_NAME,
        build,
        metrics=clean,
        params=params,
        data_fingerprint=digest,
        tags={"dataset": dataset, "classes": ",".join(model.classes)[:500]},
        alias=alias,
    )


def seen_images(version: registry.ModelVersion) -> np.ndarray | None:
    """Content hashes of the images ``version`` was trained on, or ``None`` for a version without the record."""
    path = registry.fetch_model_dir(version) / SEEN_FILE
    return np.load(path, allow_pickle=False) if path.is_file() else None


def load_version(ref: str = registry.CHAMPION, backend: str = "torch") -> tuple[VisionModel, registry.ModelVersion]:
    """The model of an alias or version number (hash-verified by the registry)."""
    return registry.load(REGISTRY_NAME, ref, lambda p: VisionModel.load(p, backend))


# ------------------------------------------------------------------------------------------ batch


def predictions_frame(model: VisionModel, images: ImageSet, k: int) -> pd.DataFrame:
    """``path, prediction, confidence, top_k`` (``label:prob`` pairs, ``;``-separated), ``error`` per image."""
    probs = model.predict_proba(images.images)
    k = min(k, len(model.classes))
    top = probs.topk(k, dim=1)
    rows = {
        "path": images.paths,
        "prediction": [model.classes[i] for i in top.indices[:, 0].tolist()],
        "confidence": top.values[:, 0].numpy().astype(float),
        "top_k": [
            ";".join(f"{model.classes[i]}:{p:.4f}" for i, p in zip(ix, pv, strict=True))
            for ix, pv in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ],
        "error": [""] * len(images),
    }
    if (images.labels >= 0).any():
        rows["label"] = [model.classes[i] if i >= 0 else "" for i in images.labels.tolist()]
    return pd.DataFrame(rows)


def batch_score(
    model: VisionModel,
    input_path: Path,
    output: Path,
    *,
    k: int = 5,
    chunksize: int = 1000,
    max_pixels: int = 40_000_000,
) -> dict[str, Any]:
    """Classify every image under ``input_path`` (folder or archive) into ``output`` (.csv/.parquet), atomically.

    Files that cannot be read are rows with an empty prediction and the reason in ``error``.
    """
    if output.suffix.lower() not in (".csv", ".parquet", ".pq") and not output.name.endswith(".csv.gz"):
        raise DataError(f"--output {output}: use .csv, .csv.gz or .parquet")
    parts: list[pd.DataFrame] = []
    problems = []
    scored = 0
    # one file's bytes and one chunk of decoded images at a time: memory does not grow with the input's size
    for chunk in iter_images(input_path, image_size=model.image_size, chunksize=chunksize, max_pixels=max_pixels):
        if len(chunk):
            parts.append(predictions_frame(model, chunk, k))
            scored += len(chunk)
        problems.extend(chunk.problems)
    if not scored:
        detail = f"; first problem: {problems[0].path}: {problems[0].reason}" if problems else ""
        raise DataError(f"{input_path}: no readable images ({len(problems)} file(s) skipped){detail}")
    bad = pd.DataFrame(
        {
            "path": [p.path for p in problems],
            "prediction": "",
            "confidence": np.nan,
            "top_k": "",
            "error": [p.reason for p in problems],
        }
    )
    frame = pd.concat([*parts, bad], ignore_index=True) if len(bad) else pd.concat(parts, ignore_index=True)
    write_table(frame, output)
    return {"rows": len(frame), "scored": scored, "skipped": len(problems), "output": str(output)}


# ------------------------------------------------------------------------------------------ monitoring


def monitor(
    model: VisionModel,
    model_dir: Path,
    images: ImageSet,
    out_dir: Path | None,
    *,
    cfg: Config | None = None,
    version: str | None = None,
) -> monitoring.MonitorVerdict:
    """Drift of ``images`` against the model's training reference; report in ``out_dir``."""
    cfg = cfg or Config()
    pca = json.loads((model_dir / PCA_FILE).read_text())
    frame = monitoring_frame(model, images, pca)
    ref_conf = float(model.meta.get("reference_confidence", float("nan")))
    cur_conf = float(frame["confidence"].mean())
    alerts = []
    if np.isfinite(ref_conf) and ref_conf - cur_conf > cfg.confidence_drop:
        alerts.append(
            f"mean top-1 confidence dropped from {ref_conf:.3f} to {cur_conf:.3f} (> {cfg.confidence_drop} drop)"
        )
    stats = {
        "images": len(images),
        "reference_confidence": ref_conf,
        "current_confidence": cur_conf,
        "skipped_files": len(images.problems),
    }
    if (images.labels >= 0).all() and len(images):
        stats["accuracy"] = float((model.predict_proba(images.images).argmax(1) == images.labels).float().mean())
    return monitoring.run_check(
        model_dir,
        frame,
        out_dir,
        title=f"{REGISTRY_NAME}: new images vs training",
        thresholds=monitoring.DriftThresholds(psi=cfg.monitor_psi),
        extra_alerts=alerts,
        stats=stats,
        model_version=version,
    )


# ------------------------------------------------------------------------------------------ retraining


def retrain(
    new: ImageSet, cfg: Config, *, dataset: str, margin: float = 0.0, holdout: float = 0.3, progress: bool = False
) -> retraining.Decision:
    """Fine-tune the champion on ``new`` labelled images (minus a stratified ``holdout``) and promote the result
    only if its accuracy on that hold-out (the latest labelled images, unseen by both) beats the champion's.

    The hold-out comes only from images the champion was not trained on (by content hash); images it has seen
    go to the fine-tuning part. No unseen image left to hold out: the retrain is refused and recorded, nothing
    trained.
    """
    champion, mv = load_version()
    if len(new) < 4:
        raise DataError(f"{dataset}: {len(new)} labelled image(s); need at least 4 to fine-tune and compare")
    metric = "latest_accuracy"
    seen = seen_images(mv)
    if seen is None:
        reason = f"champion v{mv.version} has no {SEEN_FILE}, so it may have been trained on any of these images"
        return retraining.refuse(
            REGISTRY_NAME, f"{retraining.NO_FAIR_COMPARISON}: {reason}", metric=metric, margin=margin
        )
    hashes = content_hashes(new)
    fresh = np.flatnonzero(~np.isin(hashes, seen))
    hold_idx = fresh[split(new.labels[fresh], (holdout,), cfg.seed)[1]] if len(fresh) else fresh
    tune_idx = np.setdiff1d(np.arange(len(new)), hold_idx)
    hold_idx = hold_idx[~np.isin(hashes[hold_idx], hashes[tune_idx])]  # a duplicate file must not leak across
    if len(hold_idx) == 0:
        reason = (
            f"{len(new) - len(fresh)} of the {len(new)} labelled images are in champion v{mv.version}'s training "
            "images, too few new ones are left to hold out; bring newly labelled images"
        )
        return retraining.refuse(
            REGISTRY_NAME, f"{retraining.NO_FAIR_COMPARISON}: {reason}", metric=metric, margin=margin
        )
    if len(fresh) < len(new):
        log.warning(
            "%d of %d images were in champion v%s's training images: used for fine-tuning, never for the comparison",
            len(new) - len(fresh),
            len(new),
            mv.version,
        )
    tune, hold = new.subset(tune_idx), new.subset(hold_idx)
    base = Config.from_dict(champion.meta.get("config", {}))
    base.fine_tune_epochs, base.fine_tune_lr_scale, base.seed = cfg.fine_tune_epochs, cfg.fine_tune_lr_scale, cfg.seed
    base.whiten_bias_epochs = 0  # the whitening layer stays as trained
    net = champion.net
    net.train()
    log.info(
        "retrain: fine-tuning champion v%s on %d images for %d epoch(s); comparing on %d images neither model saw",
        mv.version,
        len(tune),
        base.fine_tune_epochs,
        len(hold),
    )
    fit_model(net, tune, None, base, epochs=base.fine_tune_epochs, lr_scale=base.fine_tune_lr_scale, progress=progress)
    challenger = to_vision_model(net, tune, base, fine_tuned_from=mv.version)
    challenger.classes = list(champion.classes)
    calibrate(challenger, hold)
    acc = evaluate_model(challenger, hold)["accuracy"]
    cv = register(challenger, tune, metrics={metric: acc}, dataset=dataset, seen=seen)

    def evaluate(version: registry.ModelVersion) -> float:
        model, _ = load_version(version.version)
        return evaluate_model(model, hold)["accuracy"]

    return retraining.champion_vs_challenger(REGISTRY_NAME, cv, evaluate, metric=metric, margin=margin)


def summary(decision: retraining.Decision) -> dict[str, Any]:
    return {
        k: decision.to_dict()[k]
        for k in ("champion_version", "challenger_version", "champion_score", "challenger_score", "promoted", "reason")
    }

"""The whole lifecycle on scikit-learn's digits, offline: ``python -m apps.vision demo``.

digits (upscaled to 32x32 RGB) -> train AirNet, calibrate on validation, evaluate against the prior baseline
(report with confusion matrix, reliability diagram, confident mistakes) -> register the champion (with TorchScript
and ONNX exports) -> serve over HTTP in-process (a good upload and a rejected non-image) -> batch-score a folder ->
a new camera (32x32 files, darker, blurred, noisy) -> monitor (drift) -> retrain on labelled images from it ->
promote or keep. Every stage is a pipeline function the command line runs too (``pipeline.py``), in the demo's own
workspace; reports go to its ``reports/`` (a directory per run, ``latest`` links, ``index.html``).
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from apps.vision.config import Config
from apps.vision.data import DIGITS, Dataset, Images, ImageSet, alter, digits, write_image_folder
from common import registry
from common.app import evaluate_pipeline, monitor_pipeline, train_pipeline
from common.workspace import Workspace

if TYPE_CHECKING:
    from apps.vision.pipeline import VisionApp

log = logging.getLogger(__name__)

DEMO_CONFIG = Config(widths=(32, 64, 128), epochs=12, batch_size=128, tta=1)
TINY_CONFIG = Config(widths=(16, 32, 32), image_size=16, epochs=4, batch_size=64, tta=1, fine_tune_epochs=2, tiny=True)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _step(what: str, t0: float) -> float:
    log.info("demo: %s in %.1f s", what, time.perf_counter() - t0)
    return time.perf_counter()


def run_demo(ws: Workspace, cfg: Config, app: VisionApp) -> dict[str, Any]:
    """Run every stage of ``app`` (``pipeline.APP_IMPL``, which calls this from its ``demo``) in the workspace
    ``ws`` (a demo's own) through the same pipeline functions as the CLI; returns a summary (what the end-to-end
    test checks). ``cfg.tiny``: a small, fast variant."""
    from fastapi.testclient import TestClient

    if cfg.tiny:
        cfg = replace(TINY_CONFIG, seed=cfg.seed)
    seed = cfg.seed
    t0 = t = time.perf_counter()
    work = ws.work_dir(app.name)
    out: dict[str, Any] = {}

    # 1. data; training (a tracking run) with calibration and a report, registered as champion (with TorchScript +
    # ONNX exports and the monitoring reference); that model against the prior baseline on the test split
    images = digits(cfg.image_size)
    if cfg.tiny:  # every other image: half the work
        images = images.subset(np.arange(0, len(images), 2))
    data = Images.split(DIGITS, DIGITS, Dataset(DIGITS, images), cfg.val_fraction, cfg.test_fraction, seed)
    trained = train_pipeline(app, ws, DIGITS, cfg, data=data, promote=True)
    evaluation = evaluate_pipeline(app, ws, DIGITS, cfg, data=data, fitted=trained.fitted)
    keys = ("accuracy", "top5_accuracy", "ece", "ece_uncalibrated", "temperature")
    out["evaluation"] = {k: evaluation.metrics[k] for k in keys}
    model = trained.fitted.model
    out["train_seconds"] = round(sum(h["train_time_s"] for h in model.meta.get("history", [])), 1)
    out["precision"] = trained.fitted.summary["precision"]
    out["report"] = str(evaluation.report)
    out["champion_version"] = trained.version
    t = _step("trained, evaluated and registered the champion", t)

    # 2. serve in-process: a good upload (multipart), the same as base64 JSON, and a rejected non-image
    te = data.test
    with TestClient(app.service(ws, refresh_interval_s=None, cfg=cfg)) as client:
        png = _png(te.images[0].numpy())
        good = client.post("/v1/images:classify", files={"file": ("digit.png", png, "image/png")})
        as_json = client.post(
            "/v1/images:classify", json={"images": [{"name": "digit.png", "data": base64.b64encode(png).decode()}]}
        )
        bad = client.post("/v1/images:classify", files={"file": ("notes.txt", b"not an image", "text/plain")})
    out["serve"] = {
        "good": good.status_code,
        "top1": good.json()["predictions"][0]["labels"][0],
        "true_label": te.classes[int(te.labels[0])],
        "json": as_json.status_code,
        "bad": bad.status_code,
        "bad_message": bad.json().get("detail"),
    }

    # 3. batch-score a folder of images (plus one corrupt file, reported in the output)
    folder = write_image_folder(te, work / "incoming", labelled=False)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    champion, _ = app.load_model(ws)
    out["batch"] = app.batch(ws, champion, folder, work / "predictions.csv", chunksize=app.batch_chunk[0], k=3)
    t = _step("served and batch-scored", t)

    # 4. a new camera: 32x32 files (the digits were 8x8), darker, blurred, noisier -> monitor against the training
    # reference (labelled folders, so the accuracy on them is measured too)
    recent = write_image_folder(alter(te, seed=seed), work / "new_camera")
    verdict, _ = monitor_pipeline(app, ws, recent)
    out["monitor"] = {
        "alerts": verdict.alerts,
        "drifted_features": verdict.stats["drifted_features"],
        "accuracy_on_drifted": verdict.stats.get("accuracy"),
        "report": str(verdict.report),
    }
    t = _step("monitored the new camera's images", t)

    # 5. labels arrive for images from the new camera: fine-tune the champion, promote only if it wins
    tr, va = data.train, data.val
    new = alter(va.subset(np.arange(len(va))), seed=seed + 1)
    new_all = alter(tr.subset(np.arange(min(len(tr), 600))), seed=seed + 2)
    merged = ImageSet(
        torch.cat([new.images, new_all.images]),
        torch.cat([new.labels, new_all.labels]),
        list(tr.classes),
        new.paths + new_all.paths,
        np.concatenate([new.sizes, new_all.sizes]),
    )
    labelled = write_image_folder(merged, work / "new_camera_labelled")
    out["retrain"] = app.retrain(ws, str(labelled), cfg, margin=0.0)
    out["champion_after"] = registry.version_of(app.registry_name, registry.CHAMPION)
    _step("retrained on the new camera's labelled images", t)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    log.info("demo finished in %.1f s", out["seconds"])
    return out

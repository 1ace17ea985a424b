"""The whole lifecycle on scikit-learn's digits, offline: ``python -m apps.vision demo``.

digits (upscaled to 32x32 RGB) -> train AirNet, calibrate on validation, evaluate against the prior baseline
(report with confusion matrix, reliability diagram, confident mistakes) -> register the champion (with TorchScript
and ONNX exports) -> serve over HTTP in-process (a good upload and a rejected non-image) -> batch-score a folder ->
altered images (darker, blurred, noisy) -> monitor (drift) -> retrain on labelled altered images -> promote or keep.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from apps.vision.config import APP, Config
from apps.vision.data import DIGITS, Dataset, ImageSet, alter, digits, train_val_test, write_image_folder
from apps.vision.evaluate import calibrate, prior_baseline, write_evaluation
from apps.vision.lifecycle import batch_score, load_version, monitor, register, retrain, summary
from apps.vision.service import build_app
from apps.vision.train import train
from common import registry
from common.config import get_settings, seed_everything

log = logging.getLogger(__name__)

DEMO_CONFIG = Config(widths=(32, 64, 128), epochs=12, batch_size=128, tta=1)
TINY_CONFIG = Config(widths=(16, 32, 32), image_size=16, epochs=4, batch_size=64, tta=1, fine_tune_epochs=2)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def run_demo(*, seed: int = 42, tiny: bool = False) -> dict[str, Any]:
    """Run every stage; returns a summary (what the end-to-end test checks). ``tiny``: a small, fast variant."""
    from fastapi.testclient import TestClient

    seed_everything(seed)
    t0 = time.perf_counter()
    cfg = replace(TINY_CONFIG if tiny else DEMO_CONFIG, seed=seed)
    home = get_settings().home
    out: dict[str, Any] = {}

    # 1. data, training, calibration, evaluation against the baseline
    images = digits(cfg.image_size)
    if tiny:  # every other image: half the work
        images = images.subset(np.arange(0, len(images), 2))
    tr, va, te = train_val_test(Dataset(DIGITS, images), cfg.val_fraction, cfg.test_fraction, seed)
    model, fit = train(tr, va, cfg, progress=False)
    calibrate(model, va)
    report, res = write_evaluation(
        home / "reports" / APP / "demo",
        model,
        te,
        dataset=DIGITS,
        info={
            "arch": cfg.arch,
            "widths": list(cfg.widths),
            "epochs": cfg.epochs,
            "temperature": round(model.temperature, 3),
            "precision": (fit.info.get("precision") or {}).get("name"),
        },
        baselines={"prior": prior_baseline(tr, te)},
    )
    out["evaluation"] = {k: res[k] for k in ("accuracy", "top5_accuracy", "ece", "ece_uncalibrated", "temperature")}
    out["train_seconds"] = round(sum(h["train_time_s"] for h in fit.history), 1)
    out["precision"] = fit.info.get("precision")
    out["report"] = str(report)

    # 2. champion (with TorchScript + ONNX exports and the monitoring reference)
    mv1 = register(
        model,
        tr,
        metrics={f"test_{k}": v for k, v in out["evaluation"].items()},
        dataset=DIGITS,
        alias=registry.CHAMPION,
    )
    out["champion_version"] = mv1.version

    # 3. serve in-process: a good upload (multipart), the same as base64 JSON, and a rejected non-image
    with TestClient(build_app(refresh_interval_s=None, cfg=cfg)) as client:
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

    # 4. batch-score a folder of images (plus one corrupt file, reported in the output)
    folder = write_image_folder(te, home / "work" / APP / "incoming", labelled=False)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    champion, _ = load_version()
    out["batch"] = batch_score(champion, folder, home / "work" / APP / "predictions.csv", k=3)

    # 5. a new camera: darker, blurred, noisier images -> monitor against the training reference
    drifted = alter(te, seed=seed)
    verdict = monitor(
        champion,
        registry.fetch_model_dir(mv1),
        drifted,
        home / "reports" / APP / "monitor",
        cfg=cfg,
        version=mv1.version,
    )
    out["monitor"] = {
        "alerts": verdict.alerts,
        "drifted_features": verdict.drifted_features,
        "accuracy_on_drifted": verdict.stats.get("accuracy"),
    }

    # 6. labels arrive for images from the new camera: fine-tune the champion, promote only if it wins
    new = alter(va.subset(np.arange(len(va))), seed=seed + 1)
    new_all = alter(tr.subset(np.arange(min(len(tr), 600))), seed=seed + 2)
    merged = ImageSet(
        torch.cat([new.images, new_all.images]),
        torch.cat([new.labels, new_all.labels]),
        list(tr.classes),
        new.paths + new_all.paths,
        np.concatenate([new.sizes, new_all.sizes]),
    )
    decision = retrain(merged, cfg, dataset="digits-altered")
    out["retrain"] = summary(decision)
    out["champion_after"] = registry.version_of(APP, registry.CHAMPION)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out

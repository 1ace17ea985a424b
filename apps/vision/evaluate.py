"""Evaluation: top-1/top-5 accuracy, per-class precision and recall, a confusion matrix, calibration (ECE and a
reliability diagram, before and after temperature scaling fitted on validation) and the most confident mistakes.

Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` minimising the negative log-likelihood of
``softmax(logits / T)`` on the validation set; accuracy is unchanged. ECE here is the top-label ECE:
``sum_b (n_b / n) |acc(b) - conf(b)|`` over 15 equal-width bins of the top-1 confidence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from apps.vision.data import ImageSet
from apps.vision.model import VisionModel
from common.metrics.classification import expected_calibration_error
from common.reports import write_report

ECE_BINS = 15


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 100) -> float:
    """The ``T`` minimising NLL of ``softmax(logits / T)`` (LBFGS on log T, clipped to [0.05, 20])."""
    if len(labels) == 0:
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    x, y = logits.float().detach(), labels.long()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    return t if np.isfinite(t) else 1.0


def calibrate(model: VisionModel, val: ImageSet) -> float:
    """Fit and set ``model.temperature`` on labelled validation images; returns it."""
    if len(val) == 0:
        return model.temperature
    model.temperature = fit_temperature(model.logits(val.images), val.labels)
    return model.temperature


def top_k_accuracy(probs: Tensor, labels: Tensor, k: int) -> float:
    k = min(k, probs.shape[1])
    return float((probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean())


def confusion(labels: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """``m[i, j]`` = images of true class i predicted as j."""
    return np.bincount(labels * n + pred, minlength=n * n).reshape(n, n)


def scores(probs: Tensor, labels: Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, top-5, macro precision/recall, NLL, ECE and per-class precision/recall of ``probs[N, C]``."""
    y = labels.numpy()
    pred = probs.argmax(1).numpy()
    cm = confusion(y, pred, len(classes))
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    conf = probs.max(1).values.numpy()
    nll = float(-torch.log(probs[torch.arange(len(y)), labels].clamp_min(1e-12)).mean()) if len(y) else float("nan")
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "top5_accuracy": top_k_accuracy(probs, labels, 5) if len(y) else float("nan"),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "nll": nll,
        "ece": expected_calibration_error((pred == y).astype(float), conf, ECE_BINS) if len(y) else 0.0,
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "support": int(s)}
            for c, p, r, s in zip(classes, precision, recall, cm.sum(1), strict=True)
        },
        "confusion": cm.tolist(),
    }


def evaluate_model(model: VisionModel, test: ImageSet) -> dict[str, Any]:
    """Calibrated and uncalibrated scores of ``model`` on labelled ``test`` images, plus its raw outputs."""
    logits = model.logits(test.images)
    cal = torch.softmax(logits / model.temperature, 1)
    raw = torch.softmax(logits, 1)
    out = scores(cal, test.labels, model.classes)
    out["ece_uncalibrated"] = scores(raw, test.labels, model.classes)["ece"]
    out["temperature"] = model.temperature
    out["_probs"], out["_raw_probs"] = cal, raw
    return out


# ------------------------------------------------------------------------------------------ figures


def confusion_figure(cm: np.ndarray, classes: list[str]) -> Figure:
    n = len(classes)
    fig = Figure(figsize=(min(2 + 0.5 * n, 14), min(1.6 + 0.5 * n, 13)))
    ax = fig.subplots()
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="share of the true class")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    return fig


def reliability_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = ECE_BINS) -> Figure:
    """Accuracy against top-1 confidence per equal-width bin, one line per (correct, confidence) pair."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for name, (correct, conf) in curves.items():
        idx = np.minimum((conf * bins).astype(int), bins - 1)
        n = np.bincount(idx, minlength=bins)
        acc = np.bincount(idx, weights=correct, minlength=bins) / np.maximum(n, 1)
        mid = np.bincount(idx, weights=conf, minlength=bins) / np.maximum(n, 1)
        ece = expected_calibration_error(correct, conf, bins)
        ax.plot(mid[n > 0], acc[n > 0], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("top-1 confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Reliability diagram (test)")
    fig.tight_layout()
    return fig


def mistakes_figure(images: ImageSet, probs: Tensor, classes: list[str], n: int = 16) -> Figure | None:
    """A grid of the ``n`` most confident mistakes (true -> predicted, confidence)."""
    pred = probs.argmax(1)
    wrong = torch.nonzero(pred != images.labels).flatten()
    if len(wrong) == 0:
        return None
    conf = probs.max(1).values[wrong]
    top = wrong[conf.argsort(descending=True)[:n]]
    cols = min(8, len(top))
    rows = (len(top) + cols - 1) // cols
    fig = Figure(figsize=(1.6 * cols, 1.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, top.tolist(), strict=False):
        ax.imshow(images.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(
            f"{classes[int(images.labels[i])]}->{classes[int(pred[i])]}\n{float(probs[i].max()):.2f}", fontsize=7
        )
    fig.suptitle("Most confident mistakes (true->predicted, confidence)", fontsize=9)
    fig.tight_layout()
    return fig


def write_evaluation(
    out_dir: Path,
    model: VisionModel,
    test: ImageSet,
    *,
    dataset: str,
    info: dict[str, Any],
    baselines: dict[str, dict[str, float]] | None = None,
    extra_sections: dict[str, str] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate ``model`` on ``test`` and write the report (markdown + PNGs + metrics.json); returns both."""
    res = evaluate_model(model, test)
    correct = (res["_probs"].argmax(1) == test.labels).numpy().astype(float)
    figures: dict[str, Any] = {
        "confusion_matrix": confusion_figure(np.asarray(res["confusion"]), model.classes),
        "reliability": reliability_figure(
            {
                "uncalibrated": (correct, res["_raw_probs"].max(1).values.numpy()),
                f"temperature {model.temperature:.2f}": (correct, res["_probs"].max(1).values.numpy()),
            }
        ),
    }
    grid = mistakes_figure(test, res["_probs"], model.classes)
    if grid is not None:
        figures["confident_mistakes"] = grid
    keys = ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "nll", "ece", "ece_uncalibrated")
    table = {"model": {k: res[k] for k in keys}, **(baselines or {})}
    per_class = "| class | precision | recall | support |\n| :--- | ---: | ---: | ---: |\n" + "\n".join(
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |" for c, v in res["per_class"].items()
    )
    sections = {"Per-class precision and recall": per_class, **(extra_sections or {})}
    path = write_report(
        out_dir,
        title=f"vision on {dataset}",
        metrics=table,
        figures=figures,
        sections=sections,
        model_info=info,
        baselines=list(baselines or {}),
        champion="model",
        higher_is_better={"accuracy": True, "top5_accuracy": True, "ece": False, "nll": False},
        intended_use="Image classification of your own labelled images (product photos, defects, "
        "scanned documents); probabilities are temperature-calibrated on validation.",
        limitations="Trained and calibrated on the data above only: new cameras, lighting or "
        "classes shift the inputs (run `monitor`). Calibration holds on average "
        "(ECE), not for every class.",
        data={"test_images": len(test), "classes": len(model.classes), "image_size": model.image_size},
    )
    return path, {k: v for k, v in res.items() if not k.startswith("_")}


def prior_baseline(train: ImageSet, test: ImageSet) -> dict[str, float]:
    """Predict the most frequent training class for everything: what any model must beat."""
    counts = torch.bincount(train.labels, minlength=len(train.classes)).float()
    probs = (counts / counts.sum()).expand(len(test), -1)
    s = scores(probs, test.labels, train.classes)
    return {k: s[k] for k in ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "nll", "ece")}
